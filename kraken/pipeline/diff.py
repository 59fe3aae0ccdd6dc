"""Differences between two pipeline versions: a unified diff of their pretty JSON for people,
and the changed paths (``components[1].transform.z``) with both values for programs."""

from __future__ import annotations

import difflib
import json
from typing import Any

MAX_CHANGES = 1000


def changes(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """Each changed leaf (or whole value, when the types differ), in document order."""
    out: list[dict[str, Any]] = []
    _walk(old, new, path, out)
    return out[:MAX_CHANGES]


_MISSING: Any = object()


def _walk(old: Any, new: Any, path: str, out: list[dict[str, Any]]) -> None:
    if len(out) > MAX_CHANGES:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            _walk(old.get(key, _MISSING), new.get(key, _MISSING), f"{path}.{key}" if path else str(key), out)
        return
    if isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            before = old[i] if i < len(old) else _MISSING
            _walk(before, new[i] if i < len(new) else _MISSING, f"{path}[{i}]", out)
        return
    if old is _MISSING or new is _MISSING or old != new or type(old) is not type(new):
        change: dict[str, Any] = {"path": path}
        if old is not _MISSING:
            change["from"] = old
        if new is not _MISSING:
            change["to"] = new
        out.append(change)


def unified(old: Any, new: Any, old_label: str, new_label: str) -> str:
    lines = difflib.unified_diff(
        json.dumps(old, indent=2, sort_keys=True).splitlines(keepends=True),
        json.dumps(new, indent=2, sort_keys=True).splitlines(keepends=True),
        old_label,
        new_label,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
