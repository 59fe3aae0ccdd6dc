"""``kraken registry demo-image DIR``: a small multi-platform OCI image layout, built offline;
``kraken registry mirror-config HOST...``: containerd ``hosts.toml`` files for the agent's mirror.

The image has one layer per platform (a gzip'd tar holding ``/hello.txt``), written byte for byte
the same on every run: tar and gzip times are 0, owners are root, so the digests are stable.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kraken.cli import registry_admin

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
PLATFORMS = (("linux", "amd64"), ("linux", "arm64"))

MIRROR_EXAMPLE = """example:
  kraken registry mirror-config docker.io ghcr.io --dir /etc/containerd/certs.d
  kraken registry mirror-config 127.0.0.1:5000=http://127.0.0.1:5000 --agent http://127.0.0.1:5055"""
EXAMPLE = """example:
  kraken registry demo-image demo --tag v1
  skopeo copy --all --dest-tls-verify=false oci:demo:v1 docker://127.0.0.1:15000/demo/hello:v1"""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def json(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "registry",
        help="registry tools: demo image, containerd mirror config, account password hashes, garbage "
             "collection",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rsub = p.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    demo = rsub.add_parser(
        "demo-image",
        help="write a small linux/amd64 + linux/arm64 OCI image layout into DIR",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("dir", help="the OCI layout directory (created; other tags in it are kept)")
    demo.add_argument("--tag", default="v1", help="the reference name in index.json [%(default)s]")
    demo.set_defaults(func=_demo_image)
    mirror = rsub.add_parser(
        "mirror-config",
        help="print or write containerd hosts.toml files pulling the given registries through the agent",
        epilog=MIRROR_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mirror.add_argument("upstreams", nargs="+", metavar="HOST[=URL]",
                        help="registry host as images name it (docker.io, ghcr.io, reg:5000); URL of its "
                             "server when not https://HOST (docker.io: https://registry-1.docker.io)")
    mirror.add_argument("--agent", default="http://127.0.0.1:5055",
                        help="the agent's registry port as containerd reaches it [%(default)s]")
    mirror.add_argument("--dir", help="write DIR/<host>/hosts.toml (containerd's config_path, e.g. "
                                      "/etc/containerd/certs.d) instead of printing them")
    mirror.set_defaults(func=_mirror_config)
    registry_admin.add_subcommands(rsub)


def _mirror_config(args: argparse.Namespace) -> int:
    from kraken.core.cas import write_atomically
    from kraken.mirror.hoststoml import hosts_toml, parse_upstream

    if not re.fullmatch(r"https?://[^\s\"/]+/?", args.agent):
        print(f"kraken registry mirror-config: --agent {args.agent!r}: expected http(s)://HOST:PORT",
              file=sys.stderr)
        return 2
    try:
        files = [hosts_toml(*parse_upstream(spec), args.agent.rstrip("/")) for spec in args.upstreams]
    except ValueError as e:
        print(f"kraken registry mirror-config: {e}", file=sys.stderr)
        return 2
    for hosts in files:
        if args.dir is None:
            print(f"# {hosts.relative_path}\n{hosts.text}")
            continue
        path = Path(args.dir) / hosts.relative_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, hosts.text.encode())
        except OSError as e:
            print(f"kraken registry mirror-config: {path}: {e}", file=sys.stderr)
            return 1
        print(f"wrote {path}")
    return 0


def _demo_image(args: argparse.Namespace) -> int:
    try:
        index = write_demo_image(Path(args.dir), args.tag)
    except (OSError, ValueError) as e:
        print(f"kraken registry demo-image: {e}", file=sys.stderr)
        return 1
    print(f"oci:{args.dir}:{args.tag} {index.digest}")
    return 0


def layer_tar(os_name: str, arch: str) -> bytes:
    """An uncompressed tar with ``hello.txt`` naming the platform; the same bytes every time."""
    content = f"hello from kraken's demo image ({os_name}/{arch})\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def gzip_stable(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as f:
        f.write(data)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


class _Blobs:
    def __init__(self, layout: Path) -> None:
        self.dir = layout / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)

    def put(self, media_type: str, data: bytes) -> Descriptor:
        digest = _sha256(data)
        path = self.dir / digest.removeprefix("sha256:")
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        return Descriptor(media_type, digest, len(data))


def write_demo_image(layout: Path, tag: str) -> Descriptor:
    """Write the demo image into the OCI layout *layout* under *tag*; returns the image index."""
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"bad tag {tag!r}")
    blobs = _Blobs(layout)
    manifests = []
    for os_name, arch in PLATFORMS:
        tar = layer_tar(os_name, arch)
        layer = blobs.put(OCI_LAYER_GZIP, gzip_stable(tar))
        config = blobs.put(
            OCI_CONFIG,
            _canonical(
                {
                    "architecture": arch,
                    "os": os_name,
                    "config": {"Cmd": ["/bin/cat", "/hello.txt"]},
                    "rootfs": {"type": "layers", "diff_ids": [_sha256(tar)]},
                    "history": [{"created_by": "kraken registry demo-image"}],
                }
            ),
        )
        manifest = blobs.put(
            OCI_MANIFEST,
            _canonical(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": config.json(),
                    "layers": [layer.json()],
                }
            ),
        )
        manifests.append(manifest.json(platform={"architecture": arch, "os": os_name}))
    index_document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    index = blobs.put(OCI_INDEX, _canonical(index_document))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    top_path = layout / "index.json"
    top: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
    if top_path.exists():
        top = json.loads(top_path.read_text())
    kept = [m for m in top.get("manifests", []) if m.get("annotations", {}).get(REF_NAME) != tag]
    top["manifests"] = [*kept, index.json(annotations={REF_NAME: tag})]
    top_path.write_text(json.dumps(top, indent=2) + "\n")
    return index
