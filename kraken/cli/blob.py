"""``kraken blob push FILE`` / ``kraken blob pull DIGEST``: move blobs in and out of the P2P network.

On a terminal both draw a progress line on standard error (bytes, rate, ETA); a pull ends with
how many pieces the agent fetched from peers and from origins for it (from the agent's
``/metrics``, so other pulls at the same time count too)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime

from kraken.cli.hints import missing_certificate, unreachable
from kraken.cli.progress import Progress, human_bytes
from kraken.core.config import TLSSection
from kraken.core.digest import Digest
from kraken.core.tls import TLSConfigError, TLSSettings

EXAMPLE = """examples:
  digest=$(kraken blob push some.bin)
  kraken blob pull "$digest" -o copy.bin"""
PIECES_METRIC = "kraken_agent_pieces_received_total"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "blob",
        help="push a file to the origins, pull a blob through an agent",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bsub = p.add_subparsers(dest="blob_command", metavar="ACTION", required=True)

    push = bsub.add_parser(
        "push",
        help="upload FILE to the origin that owns its digest; prints the digest",
        epilog="example:\n  kraken blob push some.bin",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("file")
    push.add_argument("--origin", default="127.0.0.1:15002",
                      help="any origin's host:port, or several, comma-separated, tried in turn [%(default)s]")
    push.add_argument("--namespace", default="default", help="namespace (picks the backend) [%(default)s]")
    _tls_args(push)
    _quiet_arg(push)
    push.set_defaults(func=_push)

    pull = bsub.add_parser(
        "pull",
        help="download DIGEST through the local agent into a file",
        epilog="example:\n  kraken blob pull sha256:<hex> -o copy.bin",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pull.add_argument("digest", help="sha256:<hex> or sha512:<hex> (or bare hex)")
    pull.add_argument("-o", "--output", help="output file (default: the digest's hex)")
    pull.add_argument("--agent", default="127.0.0.1:16000", help="agent host:port (default %(default)s)")
    pull.add_argument("--namespace", default="default", help="namespace [%(default)s]")
    _quiet_arg(pull)
    pull.set_defaults(func=_pull)


def _quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line and no summary")


def _tls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pki", default="run/pki", help="directory with ca.pem and NAME.pem/.key [%(default)s]")
    p.add_argument("--cert-name", default="client", help="certificate name in --pki [%(default)s]")


def tls_of(args: argparse.Namespace) -> TLSSettings:
    base = args.pki
    for name in ("ca.pem", f"{args.cert_name}.pem", f"{args.cert_name}.key"):
        hint = missing_certificate(os.path.join(base, name))
        if hint:
            raise TLSConfigError(hint)
    settings = TLSSettings.from_config(
        TLSSection(
            ca=os.path.join(base, "ca.pem"),
            cert=os.path.join(base, f"{args.cert_name}.pem"),
            key=os.path.join(base, f"{args.cert_name}.key"),
        )
    )
    assert settings is not None
    return settings


def run_reactor(coro_fn: Callable[[IReactorTime], Coroutine[Any, Any, int]]) -> int:
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


async def push_file(
    reactor: IReactorTime,
    origin: str,
    tls: TLSSettings,
    namespace: str,
    path: str,
    digest: Digest,
    advance: Callable[[int], None] | None = None,
) -> None:
    """Upload *path* to the first owner of *digest* that takes it, asking *origin* (any member, or
    several, comma-separated, tried in turn) who the owners are."""
    from kraken.p2p.origins import OriginCluster

    cluster = OriginCluster(reactor, [a.strip() for a in origin.split(",") if a.strip()], tls)
    await cluster.upload(namespace, digest, path, advance)


def _push(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.file):
        print(f"kraken blob push: no such file: {args.file}", file=sys.stderr)
        return 1
    try:
        tls = tls_of(args)
    except TLSConfigError as e:
        print(f"kraken blob push: {e}", file=sys.stderr)
        return 1
    digest = Digest.of_file(args.file)

    progress = Progress.for_terminal("push", os.path.getsize(args.file), sys.stderr, args.quiet)

    async def push(reactor: IReactorTime) -> int:
        try:
            await push_file(reactor, args.origin, tls, args.namespace, args.file, digest, progress.advance)
        except (ConnectionRefusedError, net_error.ConnectionRefusedError) as e:
            print(f"kraken blob push: {unreachable(args.origin, e)}", file=sys.stderr)
            return 1
        except Exception as e:
            print(f"kraken blob push: upload failed: {e}", file=sys.stderr)
            return 1
        progress.finish()
        print(digest)
        return 0

    return run_reactor(push)


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

    metrics_url = f"http://{args.agent}/metrics"

    async def pull(reactor: IReactorTime) -> int:
        tmp = f"{output}.part"
        http = Agent(reactor)
        try:
            before = None if args.quiet else await _pieces_by_role(http, metrics_url)
            response = await treq.get(url, unbuffered=True, agent=http)
            if response.code != 200:
                body = await response.text()
                print(f"kraken blob pull: agent answered {response.code}: {body.strip()}", file=sys.stderr)
                return 1
            total = response.length if isinstance(response.length, int) else None
            progress = Progress.for_terminal("pull", total, sys.stderr, args.quiet)
            with open(tmp, "wb") as f:
                def write(data: bytes) -> None:
                    f.write(data)
                    progress.advance(len(data))

                await treq.collect(response, write)
            progress.finish()
            after = None if args.quiet else await _pieces_by_role(http, metrics_url)
        except (ConnectionRefusedError, net_error.ConnectionRefusedError) as e:
            print(f"kraken blob pull: {unreachable(args.agent, e)}", file=sys.stderr)
            return 1
        except Exception as e:
            print(f"kraken blob pull: {e}", file=sys.stderr)
            return 1
        if Digest.of_file(tmp, digest.algo) != digest:
            os.unlink(tmp)
            print(f"kraken blob pull: received bytes do not match {digest}", file=sys.stderr)
            return 1
        os.replace(tmp, output)
        print(output)
        if before is not None and after is not None:
            print(source_summary(os.path.getsize(output), before, after), file=sys.stderr)
        return 0

    return run_reactor(pull)


async def _pieces_by_role(http: Any, url: str) -> dict[str, float] | None:
    """The agent's received-piece counters by sending role, or ``None`` if it does not say."""
    import treq

    try:
        response = await treq.get(url, agent=http)
        text = await response.text()
    except Exception:
        return None
    return pieces_by_role(text) if response.code == 200 else None


def pieces_by_role(metrics: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith(PIECES_METRIC + "{"):
            labels, _, value = line.partition("} ")
            role = labels.partition('from_role="')[2].partition('"')[0]
            counts[role] = counts.get(role, 0.0) + float(value)
    return counts


def source_summary(size: int, before: dict[str, float], after: dict[str, float]) -> str:
    """One line: how many pieces came from peers (agents) and from origins during the pull."""
    delta = {role: after.get(role, 0.0) - before.get(role, 0.0) for role in after}
    origins = int(delta.get("origin", 0))
    peers = int(sum(v for role, v in delta.items() if role != "origin"))
    if origins + peers == 0:
        return f"pulled {human_bytes(size)}: already on the agent (no pieces fetched)"
    share = 100 * peers / (origins + peers)
    return (
        f"pulled {human_bytes(size)}: {peers} piece{'s' if peers != 1 else ''} from peers, "
        f"{origins} from origins ({share:.0f} % from peers)"
    )
