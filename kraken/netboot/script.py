"""The iPXE script a node boots with: its kernel and initrd from a kraken agent, then a report.

The kernel and initrd are kraken blobs named by digest; the node fetches them through an agent
(``GET /namespace/<ns>/blobs/<digest>``), which gets them from the swarm, so a whole cluster
booting at once pulls each image from its peers instead of from one server. After both are
loaded the script chains ``/boot/<node>/fetched`` on the state server, which records that the
image arrived and answers with ``boot``. The kernel is told where to report that it booted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from kraken.core.digest import Digest

_SAFE_ARG = re.compile(r"^[\w.,:=/@+-]*$")


class BootScriptError(ValueError):
    """A node's boot settings that cannot make a script; the message names the field."""


@dataclass(frozen=True)
class BootImage:
    kernel: str  # digests, "sha256:<hex>"
    initrd: str
    cmdline: str = ""


def checked_image(node_id: str, kernel: object, initrd: object, cmdline: object) -> BootImage:
    for name, value in (("kernel", kernel), ("initrd", initrd)):
        if not isinstance(value, str) or not value:
            field = f"PXE.Client/{name.capitalize()}"
            raise BootScriptError(f"node {node_id} has no boot image: {field} is unset")
        try:
            Digest.parse(value)
        except ValueError as e:
            raise BootScriptError(f"node {node_id}: PXE.Client/{name.capitalize()}: {e}") from None
    args = str(cmdline or "")
    if not all(_SAFE_ARG.match(word) for word in args.split()):
        raise BootScriptError(f"node {node_id}: PXE.Client/Cmdline holds characters iPXE would interpret")
    return BootImage(str(kernel), str(initrd), args)


def render(
    node_id: str, nodename: str, image: BootImage, agent_url: str, boot_url: str, namespace: str
) -> bytes:
    blobs = f"{agent_url.rstrip('/')}/namespace/{quote(namespace, safe='')}/blobs"
    report = f"{boot_url.rstrip('/')}/boot/{node_id}"
    lines = [
        "#!ipxe",
        f"echo kraken: booting {nodename or node_id}",
        " ".join(
            ["kernel", f"{blobs}/{image.kernel}", *image.cmdline.split(),
             f"kraken.node={node_id}", f"kraken.report={report}/booted"]
        ),
        f"initrd {blobs}/{image.initrd}",
        f"chain {report}/fetched",
        "",
    ]
    return "\n".join(lines).encode("ascii")


def failing(node_id: str, reason: str) -> bytes:
    """A script that tells the console why the node cannot boot, then stops (the node times out)."""
    text = re.sub(r"[^\w .,:/=@+-]", "?", reason)
    return f"#!ipxe\necho kraken: node {node_id} cannot boot: {text}\nexit 1\n".encode("ascii")
