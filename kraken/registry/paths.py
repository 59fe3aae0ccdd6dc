"""Which ``/v2/`` endpoint a request path names (sans-IO).

Repository names contain ``/``, so the path is matched from the right: the last
``/manifests/``, ``/blobs/``, ``/tags/list`` or ``/referrers/`` decides, and what precedes it is the name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERNS = (
    ("uploads", re.compile(r"/v2/(?P<name>.+)/blobs/uploads/?")),
    ("upload", re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<ref>[^/]+)")),
    ("blob", re.compile(r"/v2/(?P<name>.+)/blobs/(?P<ref>[^/]+)")),
    ("manifest", re.compile(r"/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)")),
    ("tags", re.compile(r"/v2/(?P<name>.+)/tags/list")),
    ("referrers", re.compile(r"/v2/(?P<name>.+)/referrers/(?P<ref>[^/]+)")),
)

# what each endpoint answers; HEAD is listed where GET is
METHODS = {
    "base": ("GET", "HEAD"),
    "catalog": ("GET", "HEAD"),
    "tags": ("GET", "HEAD"),
    "manifest": ("GET", "HEAD", "PUT", "DELETE"),
    "blob": ("GET", "HEAD", "DELETE"),
    "uploads": ("POST",),
    "upload": ("GET", "PATCH", "PUT", "DELETE"),
    "referrers": ("GET", "HEAD"),
}
WRITES = {("manifest", "PUT"), ("manifest", "DELETE"), ("blob", "DELETE"), ("uploads", "POST"),
          ("upload", "GET"), ("upload", "PATCH"), ("upload", "PUT"), ("upload", "DELETE")}


@dataclass(frozen=True)
class Route:
    kind: str
    name: str | None = None
    ref: str | None = None


def parse_v2_path(path: str) -> Route | None:
    """The endpoint *path* names, or ``None`` when it is not a registry API path."""
    if path in ("/v2", "/v2/"):
        return Route("base")
    if path in ("/v2/_catalog", "/v2/_catalog/"):
        return Route("catalog")
    for kind, pattern in _PATTERNS:
        m = pattern.fullmatch(path)
        if m:
            return Route(kind, m.group("name"), m.groupdict().get("ref"))
    return None
