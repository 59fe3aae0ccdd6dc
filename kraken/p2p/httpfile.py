"""Serving a blob file over twisted.web: streamed by a producer, with Range and HEAD support.

A whole-file GET on plain TCP goes out with ``sendfile`` when a :class:`SendfileSender` is
given and has a free worker: the kernel copies the bytes instead of the reactor thread.
"""

from __future__ import annotations

import os

from twisted.internet.defer import ensureDeferred
from twisted.web import static
from twisted.web.server import NOT_DONE_YET, Request

from kraken.core.sendfile import SendfileSender


def serve_file(request: Request, path: str, sender: SendfileSender | None = None) -> str:
    """Stream the file at *path* as the response; says how: ``"sendfile"`` or ``"stream"``.

    The request is finished (or will be) either way: render methods return ``NOT_DONE_YET``.
    """
    if sender is not None and request.method == b"GET" and not request.getHeader("range"):
        f = open(path, "rb")
        size = os.fstat(f.fileno()).st_size
        if sender.usable(request, size):
            request.setHeader("Content-Type", "application/octet-stream")
            request.setHeader("Content-Length", str(size))
            request.setHeader("Accept-Ranges", "bytes")
            d = ensureDeferred(sender.send(request, f, 0, size))
            d.addErrback(lambda _: request.channel.transport.abortConnection())
            return "sendfile"
        f.close()
    resource = static.File(path, defaultType="application/octet-stream")
    resource.type, resource.encoding = "application/octet-stream", None
    result = resource.render(request)
    if result is not NOT_DONE_YET:
        if result:
            request.write(result)
        request.finish()
    return "stream"
