"""``kraken registry hash-password``: a password hash for the registry's accounts file."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from kraken.registry.accounts import hash_password

HASH_EXAMPLE = """example:
  kraken registry hash-password            # asks twice, prints the argon2 hash
  echo -n "$PASSWORD" | kraken registry hash-password --stdin"""


def add_subcommands(rsub: Any) -> None:
    hashing = rsub.add_parser(
        "hash-password",
        help="print an argon2 hash of a password for the accounts file (auth.accounts)",
        epilog=HASH_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hashing.add_argument("--stdin", action="store_true", help="read the password from standard input")
    hashing.set_defaults(func=_hash_password)


def _hash_password(args: argparse.Namespace) -> int:
    if args.stdin:
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("kraken registry hash-password: the passwords differ", file=sys.stderr)
            return 1
    if not password:
        print("kraken registry hash-password: an empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0
