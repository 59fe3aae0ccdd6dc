"""``kraken state image``: push a boot image (kernel + initrd) into the swarm, assign it, list them.

An image is two kraken blobs and a kernel command line. ``push`` uploads both files to the
origins (namespace ``boot`` by default, the one the ``pxe`` module's scripts fetch from) and,
with ``--node``, writes the image into each node's Cfg (``PXE.Client`` Image, Kernel, Initrd,
Cmdline), keeping the node's other boot settings; with ``--group``, into the group's values,
which its members inherit. ``list`` reads every node's Cfg and shows
each image with the nodes assigned to it: the Cfg is the one place an assignment lives.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from typing import Any
from urllib.parse import quote

from kraken.core.digest import Digest
from kraken.core.tls import TLSConfigError

PXE_TYPE = "type.googleapis.com/PXE.Client"
EXAMPLE = """examples:
  kraken state image push rocky9 --kernel vmlinuz --initrd initrd.img --cmdline "console=ttyS0" --node n1
  kraken state image list"""


def add_parser(ssub: Any, run: Any, resolve: Any) -> None:
    p = ssub.add_parser(
        "image", help="boot images for the pxe module: push (and assign), list",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    isub = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    push = isub.add_parser("push", help="upload kernel and initrd to the origins; assign to --node")
    push.add_argument("name", help="the image's name, shown by list")
    push.add_argument("--kernel", required=True, help="kernel file")
    push.add_argument("--initrd", required=True, help="initrd file")
    push.add_argument("--cmdline", default="", help="kernel command line")
    push.add_argument("--node", action="append", default=[], help="node id or name to boot it (repeatable)")
    push.add_argument("--group", action="append", default=[],
                      help="group whose members (and its sub-groups' members) boot it (repeatable)")
    push.add_argument("--origin", default="127.0.0.1:15002", help="any origin's host:port [%(default)s]")
    push.add_argument("--namespace", default="boot", help="blob namespace [%(default)s]")
    push.set_defaults(func=lambda args: _push(args, run, resolve))
    listing = isub.add_parser("list", help="images in the nodes' Cfg and the nodes that boot each")
    listing.set_defaults(func=lambda args: run(args, _list))


def _push(args: argparse.Namespace, run: Any, resolve: Any) -> int:
    from kraken.cli import blob

    digests: dict[str, Digest] = {}
    for role in ("kernel", "initrd"):
        path = getattr(args, role)
        try:
            digests[role] = Digest.of_file(path)
        except OSError as e:
            print(f"kraken state image push: cannot read {role} {path}: {e.strerror}", file=sys.stderr)
            return 1
    try:
        tls = blob.tls_of(args)
    except TLSConfigError as e:
        print(f"kraken state image push: {e}", file=sys.stderr)
        return 1

    async def upload(reactor: Any) -> int:
        for role, digest in digests.items():
            await blob.push_file(reactor, args.origin, tls, args.namespace, getattr(args, role), digest)
            print(f"{role} {digest}")
        return 0

    if blob.run_reactor(upload) != 0:
        return 1
    image = {"image": args.name, "kernel": str(digests["kernel"]), "initrd": str(digests["initrd"]),
             "cmdline": args.cmdline}  # fmt: skip

    def assign(api: Any) -> None:
        for group in args.group:
            values = {f"{PXE_TYPE}/{key.capitalize()}": value for key, value in image.items()}
            api.post(f"/group/{quote(group, safe='')}/set", {"values": values})
            print(f"assigned {args.name} to group {group}")
        for name in args.node:
            node_id = resolve(api, name)
            node = api.get(f"/cfg/node/{node_id}")
            extensions = node.setdefault("extensions", [])
            pxe = next((e for e in extensions if e.get("@type") == PXE_TYPE), None)
            if pxe is None:
                pxe = {"@type": PXE_TYPE}
                extensions.append(pxe)
            pxe.update(image)
            api.put(f"/cfg/node/{node_id}", node)
            print(f"assigned {args.name} to {node.get('nodename') or node_id}")

    return int(run(args, assign)) if args.node or args.group else 0


def images_of(nodes: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], list[str]]:
    """(name, kernel, initrd, cmdline) → the names of the nodes whose Cfg boots that image."""
    found: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    for node in nodes:
        for ext in node.get("extensions", []):
            if ext.get("@type") == PXE_TYPE and ext.get("kernel"):
                key = (str(ext.get("image", "")), str(ext["kernel"]), str(ext.get("initrd", "")),
                       str(ext.get("cmdline", "")))  # fmt: skip
                found[key].append(str(node.get("nodename") or node["id"]))
    return found


def _list(api: Any) -> None:
    images = images_of(api.get("/cfg/nodes")["nodes"])
    if not images:
        print("no node has a boot image (kraken state image push NAME --kernel F --initrd F --node N)")
        return
    for (name, kernel, initrd, cmdline), nodes in sorted(images.items()):
        print(f"{name or '(unnamed)'}  kernel {kernel[:19]}  initrd {initrd[:19]}  cmdline {cmdline!r}")
        print(f"  {len(nodes)} node(s): {', '.join(sorted(nodes))}")
