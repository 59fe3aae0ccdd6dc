"""Serving a blob file over twisted.web: streamed by a producer, with Range and HEAD support."""

from __future__ import annotations

from typing import Any

from twisted.web import static
from twisted.web.server import NOT_DONE_YET, Request


def serve_file(request: Request, path: str) -> Any:
    """Stream the file at *path* as the response; returns ``NOT_DONE_YET``."""
    resource = static.File(path, defaultType="application/octet-stream")
    resource.type, resource.encoding = "application/octet-stream", None
    result = resource.render(request)
    if result is NOT_DONE_YET:
        return NOT_DONE_YET
    if result:
        request.write(result)
    request.finish()
    return NOT_DONE_YET
