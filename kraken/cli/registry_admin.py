"""``kraken registry hash-password`` (a hash for the accounts file) and ``kraken registry gc``."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any
from urllib.parse import urlencode

from twisted.internet import error as net_error
from twisted.internet.interfaces import IReactorTime

from kraken.cli.blob import _tls_args, run_reactor, tls_of
from kraken.cli.hints import unreachable
from kraken.cli.progress import human_bytes
from kraken.core.tls import TLSConfigError
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
    add_gc(rsub)


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


GC_EXAMPLE = """examples:
  kraken registry gc --dry-run             # what would go; nothing is removed
  kraken registry gc --grace 2h            # sweep blobs nothing references and nobody used for 2 hours"""


def add_gc(rsub: Any) -> None:
    gc = rsub.add_parser(
        "gc",
        help="garbage-collect blobs no tag references, on every origin and backend (via the build-index)",
        epilog=GC_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gc.add_argument("--dry-run", action="store_true", help="report what would be swept; change nothing")
    gc.add_argument("--grace", help="spare blobs written or asked about this recently (seconds, or 30m, 2h, "
                                    "7d) [the build-index's buildindex.gc_grace]")
    gc.add_argument("--build-index", default="127.0.0.1:15004", help="build-index host:port [%(default)s]")
    gc.add_argument("--json", action="store_true", help="print the whole report as JSON")
    _tls_args(gc)
    gc.set_defaults(func=_gc)


def _gc(args: argparse.Namespace) -> int:
    import treq

    from kraken.core.httpclient import base_url, make_http_client

    try:
        tls = tls_of(args)
    except TLSConfigError as e:
        print(f"kraken registry gc: {e}", file=sys.stderr)
        return 1
    query = {"dry_run": "true" if args.dry_run else "false"}
    if args.grace is not None:
        query["grace"] = args.grace
    url = f"{base_url(args.build_index, tls)}/gc?{urlencode(query)}"

    async def run(reactor: IReactorTime) -> int:
        http = make_http_client(reactor, tls, {"build-index"})
        try:
            response = await http.post(url, data=b"")
            body = await treq.content(response)
        except (ConnectionRefusedError, net_error.ConnectionRefusedError) as e:
            print(f"kraken registry gc: {unreachable(args.build_index, e)}", file=sys.stderr)
            return 1
        except Exception as e:
            print(f"kraken registry gc: {e}", file=sys.stderr)
            return 1
        try:
            report = json.loads(body)
        except ValueError:
            report = None
        if response.code != 200 or not isinstance(report, dict):
            error = report.get("error", {}).get("message") if isinstance(report, dict) else None
            print(f"kraken registry gc: the build-index answered {response.code}: "
                  f"{error or body[:300].decode('utf-8', 'replace')}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(report, indent=2))
            return 0
        reclaimed = report.get("reclaimed_bytes", {})
        verb = "would sweep" if report.get("dry_run") else "swept"
        print(f"{report.get('live')} blobs referenced by tags; {verb} {report.get('swept_count')} blobs: "
              f"{human_bytes(reclaimed.get('store', 0))} on origins, "
              f"{human_bytes(reclaimed.get('backend', 0))} in backends")
        for address, origin in sorted((report.get("origins") or {}).items()):
            for item in origin.get("swept", []):
                print(f"  {address} {item['where']:<7} {item['digest']} {human_bytes(item['bytes'])}")
        for tag in report.get("dangling_tags", []):
            print(f"  tag without a manifest: {tag}")
        return 0

    return run_reactor(run)
