"""``kraken containerd hosts``: point containerd's registry mirror config at a kraken agent.

containerd (with ``config_path`` set, or ``ctr --hosts-dir``) reads ``DIR/<registry>/hosts.toml``:
pulls of ``<registry>/repo:tag`` try the agent's read-only registry first and fall back to
the registry itself when the agent answers 404. Each file is replaced atomically, so a
containerd reading it meanwhile sees the old or the new one, never half.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

# Where a registry's own API lives when that differs from its name.
UPSTREAM = {"docker.io": "https://registry-1.docker.io"}
REGISTRY_NAME = re.compile(r"^(_default|[A-Za-z0-9.-]+(:[0-9]{1,5})?)$")
MIRROR_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


class MirrorError(ValueError):
    """A registry name or mirror address that would not make a valid hosts.toml."""


def hosts_toml(registry: str, mirror: str) -> str:
    """The hosts.toml for *registry* that sends pulls to *mirror* (``http://HOST:PORT``) first."""
    if not REGISTRY_NAME.match(registry):
        raise MirrorError(f"not a registry host name: {registry!r}")
    if not MIRROR_URL.match(mirror):
        raise MirrorError(f"mirror must be http(s)://HOST:PORT, got {mirror!r}")
    lines = []
    if registry != "_default":
        lines += [f'server = "{UPSTREAM.get(registry, f"https://{registry}")}"', ""]
    lines += [f'[host."{mirror}"]', '  capabilities = ["pull", "resolve"]']
    return "\n".join(lines) + "\n"


def write_hosts(directory: Path, registries: list[str], mirror: str) -> list[Path]:
    """Write ``directory/<registry>/hosts.toml`` for each of *registries*; the paths written."""
    contents = {registry: hosts_toml(registry, mirror) for registry in registries}
    written = []
    for registry, text in contents.items():
        target = directory / registry / "hosts.toml"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(".hosts.toml.tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, target)
        written.append(target)
    return written


def add_parser(sub: Any) -> None:
    p = sub.add_parser("containerd", help="containerd mirror config pointing at a kraken agent")
    csub = p.add_subparsers(dest="containerd_command", metavar="ACTION", required=True)
    hosts = csub.add_parser("hosts", help="write DIR/<registry>/hosts.toml for each --registry")
    hosts.add_argument("dir", help="containerd's hosts directory (config_path), e.g. /etc/containerd/certs.d")
    hosts.add_argument("--mirror", required=True, help="the agent's registry, http://HOST:PORT")
    hosts.add_argument(
        "--registry",
        action="append",
        default=[],
        help="registry whose pulls go through the agent (repeatable; _default: all) [docker.io]",
    )
    hosts.set_defaults(func=_hosts)


def _hosts(args: argparse.Namespace) -> int:
    try:
        written = write_hosts(Path(args.dir), args.registry or ["docker.io"], args.mirror)
    except (MirrorError, OSError) as e:
        print(f"kraken containerd: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
