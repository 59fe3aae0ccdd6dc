"""``kraken blob push FILE`` / ``kraken blob pull DIGEST``: move blobs in and out of the P2P network."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime

from kraken.core.config import TLSSection
from kraken.core.digest import Digest
from kraken.core.tls import TLSConfigError, TLSSettings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("blob", help="push a file to the origins, pull a blob through an agent")
    bsub = p.add_subparsers(dest="blob_command", metavar="ACTION", required=True)

    push = bsub.add_parser("push", help="upload FILE to the origin that owns its digest; prints the digest")
    push.add_argument("file")
    push.add_argument("--origin", default="127.0.0.1:15002", help="any origin's host:port [%(default)s]")
    push.add_argument("--namespace", default="default", help="namespace (picks the backend) [%(default)s]")
    _tls_args(push)
    push.set_defaults(func=_push)

    pull = bsub.add_parser("pull", help="download DIGEST through the local agent into a file")
    pull.add_argument("digest", help="sha256:<hex> (or bare hex)")
    pull.add_argument("-o", "--output", help="output file (default: the digest's hex)")
    pull.add_argument("--agent", default="127.0.0.1:16000", help="agent host:port (default %(default)s)")
    pull.add_argument("--namespace", default="default", help="namespace [%(default)s]")
    pull.set_defaults(func=_pull)


def _tls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pki", default="run/pki", help="directory with ca.pem and NAME.pem/.key [%(default)s]")
    p.add_argument("--cert-name", default="client", help="certificate name in --pki [%(default)s]")


def _tls(args: argparse.Namespace) -> TLSSettings:
    base = args.pki
    settings = TLSSettings.from_config(
        TLSSection(
            ca=os.path.join(base, "ca.pem"),
            cert=os.path.join(base, f"{args.cert_name}.pem"),
            key=os.path.join(base, f"{args.cert_name}.key"),
        )
    )
    assert settings is not None
    return settings


def _run(coro_fn: Callable[[IReactorTime], Coroutine[Any, Any, int]]) -> int:
    from twisted.internet import task

    result: list[int] = [1]

    def main(reactor: IReactorTime) -> Deferred[None]:
        async def wrapped() -> None:
            result[0] = await coro_fn(reactor)

        return ensureDeferred(wrapped())

    try:
        task.react(main)
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    return result[0]


def _push(args: argparse.Namespace) -> int:
    from kraken.p2p.origins import OriginClient

    if not os.path.isfile(args.file):
        print(f"kraken blob push: no such file: {args.file}", file=sys.stderr)
        return 1
    try:
        tls = _tls(args)
    except TLSConfigError as e:
        print(f"kraken blob push: {e}", file=sys.stderr)
        return 1
    digest = Digest.of_file(args.file)

    async def push(reactor: IReactorTime) -> int:
        client = OriginClient(reactor, args.origin, tls)
        try:
            owners = await client.locations(digest)
            target = OriginClient(reactor, owners[0], tls, client.http) if owners else client
            await target.upload(args.namespace, digest, args.file)
        except Exception as e:
            print(f"kraken blob push: upload failed: {e}", file=sys.stderr)
            return 1
        print(digest)
        return 0

    return _run(push)


def _pull(args: argparse.Namespace) -> int:
    import treq
    from twisted.web.client import Agent

    try:
        digest = Digest.parse_loose(args.digest)
    except ValueError as e:
        print(f"kraken blob pull: {e}", file=sys.stderr)
        return 2
    output = args.output or digest.hex
    url = f"http://{args.agent}/namespace/{quote(args.namespace, safe='')}/blobs/{digest}"

    async def pull(reactor: IReactorTime) -> int:
        tmp = f"{output}.part"
        try:
            response = await treq.get(url, unbuffered=True, agent=Agent(reactor))
            if response.code != 200:
                body = await response.text()
                print(f"kraken blob pull: agent answered {response.code}: {body.strip()}", file=sys.stderr)
                return 1
            with open(tmp, "wb") as f:
                def write(data: bytes) -> None:
                    f.write(data)

                await treq.collect(response, write)
        except Exception as e:
            print(f"kraken blob pull: {e}", file=sys.stderr)
            return 1
        if Digest.of_file(tmp) != digest:
            os.unlink(tmp)
            print(f"kraken blob pull: received bytes do not match {digest}", file=sys.stderr)
            return 1
        os.replace(tmp, output)
        print(output)
        return 0

    return _run(pull)
