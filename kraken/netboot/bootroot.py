"""Which bytes a boot request names: files under the boot root, and per-node iPXE scripts.

A TFTP filename (or an HTTP path) is confined to the boot root: NUL bytes, ``..`` components
and symbolic links that lead outside are refused as access violations, never followed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from kraken.netboot.tftp_transfer import BytesSource, DiskSource, FileSource

SCRIPT_NAME = "kraken.ipxe"


class BootFileError(Exception):
    """A request the boot root refuses; ``missing`` tells a missing file from a forbidden one."""

    def __init__(self, message: str, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


def confined(root: Path, name: str) -> Path:
    """The real path of *name* under *root*, or :class:`BootFileError` if it would leave it."""
    if "\0" in name or "\\" in name:
        raise BootFileError(f"{name!r}: illegal character in file name", missing=False)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise BootFileError(f"{name!r}: path leaves the boot root", missing=False)
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(real_root.joinpath(*parts)))
    if not real.is_relative_to(real_root):
        raise BootFileError(f"{name!r}: path leaves the boot root", missing=False)
    if not real.is_file():
        raise BootFileError(f"{name!r}: no such file under the boot root", missing=True)
    return real


class BootFiles:
    """Opens what a client asks for: its own iPXE script by :data:`SCRIPT_NAME`, else a file.

    *script_for* renders the script of the node at a client address, or returns ``None`` when
    the address belongs to no node that boots from this server.
    """

    def __init__(self, root: Path, script_for: Callable[[str], bytes | None]) -> None:
        self.root = root
        self.script_for = script_for

    def open(self, name: str, client_ip: str) -> FileSource:
        if name.lstrip("/") == SCRIPT_NAME:
            script = self.script_for(client_ip)
            if script is None:
                raise BootFileError(f"no node boots from this server at {client_ip}", missing=True)
            return BytesSource(script)
        path = confined(self.root, name)
        try:
            return DiskSource(str(path))
        except OSError as e:
            raise BootFileError(f"{name!r}: {e.strerror}", missing=True) from None
