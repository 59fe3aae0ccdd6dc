"""``kraken certs``: a development CA and certificates for kraken roles."""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import Any

from kraken.core import certs


def add_parser(sub: Any) -> None:
    p = sub.add_parser("certs", help="create a dev CA and issue certificates for roles")
    csub = p.add_subparsers(dest="certs_command", metavar="ACTION", required=True)

    init = csub.add_parser("init", help="create a CA (ca.pem, ca.key) in DIR")
    init.add_argument("dir")
    init.add_argument("--name", default="kraken dev CA", help="the CA's common name")
    init.add_argument("--days", type=int, default=certs.CA_VALIDITY.days)
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(func=_init)

    issue = csub.add_parser("issue", help="issue NAME.pem/NAME.key for a role, signed by DIR's CA")
    issue.add_argument("dir")
    issue.add_argument("name")
    issue.add_argument("--role", required=True, choices=certs.ROLES)
    issue.add_argument(
        "--host",
        action="append",
        default=[],
        help="DNS name or IP the holder serves (repeatable; default localhost, 127.0.0.1, ::1)",
    )
    issue.add_argument("--days", type=int, default=certs.LEAF_VALIDITY.days)
    issue.set_defaults(func=_issue)

    dev = csub.add_parser("dev", help="CA plus one certificate per role (named after it) in DIR")
    dev.add_argument("dir")
    dev.set_defaults(func=_dev)


def _init(args: argparse.Namespace) -> int:
    try:
        files = certs.create_ca(args.dir, args.name, args.force, datetime.timedelta(days=args.days))
    except certs.CertificateError as e:
        print(f"kraken certs: {e}", file=sys.stderr)
        return 1
    print(f"CA certificate: {files.cert}\nCA key:         {files.key}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    try:
        files = certs.issue(args.dir, args.name, args.role, args.host, datetime.timedelta(days=args.days))
    except certs.CertificateError as e:
        print(f"kraken certs: {e}", file=sys.stderr)
        return 1
    print(f"certificate: {files.cert}\nkey:         {files.key}")
    return 0


def _dev(args: argparse.Namespace) -> int:
    certs.ensure_dev_pki(args.dir, {role: role for role in certs.ROLES})
    print(f"dev CA and one certificate per role ({', '.join(certs.ROLES)}) in {args.dir}")
    return 0
