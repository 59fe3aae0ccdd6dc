"""Blob bodies over twisted.web: one responder for every server that sends a file.

:func:`send_body` sends a slice of an open file as the response body, the headers being
set: with ``os.sendfile`` when a :class:`SendfileSender` has a free worker and the connection
is plain TCP, else through :class:`FileRangeProducer` (push producer, back-pressure from the
transport). :func:`serve_file` answers a whole-file request for a path: ``GET`` without
``Range`` by :func:`send_body` where sendfile can take it, everything else (``HEAD``, ranges,
conditional requests) by ``twisted.web.static.File``. The registry, whose range rules are its
protocol's, parses ``Range`` itself and calls :func:`send_body`.

Sendfile: the reactor thread copies every byte through Python when it streams a file; on a
plain TCP connection the kernel can do it instead, and the workers (``sendfile`` releases the
GIL) use other cores. The response headers go out through twisted.web as usual; once the
transport's buffer is empty a worker sends the body on a duplicate of the socket (so a
connection closed meanwhile can never make it write into a reused descriptor) and the request
finishes in the reactor. TLS connections, small bodies and busy workers use the producer.
"""

from __future__ import annotations

import errno
import os
import select
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web import static
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from kraken.core.reactor import IServerReactor

log = Logger(namespace="kraken.core.sendfile")

MIN_SIZE = 512 * 1024
STALL_TIMEOUT = 120.0


class _Cancelled:
    stop = False


def _pump(sock: int, fd: int, offset: int, length: int, flag: _Cancelled) -> int:
    """Send *length* bytes of *fd* from *offset* on the non-blocking socket *sock*."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    sent = 0
    while sent < length and not flag.stop:
        try:
            n = os.sendfile(sock, fd, offset + sent, min(length - sent, 16 * 1024 * 1024))
        except BlockingIOError:
            if not poller.poll(STALL_TIMEOUT * 1000):
                break
            continue
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            break
        if n == 0:
            break
        sent += n
    return sent


class SendfileSender:
    """Sends blob bodies with ``os.sendfile`` while one of *workers* threads is free."""

    def __init__(self, reactor: IServerReactor, workers: int = 4) -> None:
        self.reactor = reactor
        self.workers = workers
        self.active = 0
        self.pool: ThreadPool | None = None

    def usable(self, request: Request, length: int) -> bool:
        transport = getattr(getattr(request, "channel", None), "transport", None)
        return (
            length >= MIN_SIZE
            and self.active < self.workers
            and isinstance(transport, tcp.Connection)
            and hasattr(os, "sendfile")
        )

    def _start_pool(self) -> ThreadPool:
        if self.pool is None:
            self.pool = ThreadPool(0, self.workers, name="kraken-sendfile")
            self.pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self.pool.stop)
        return self.pool

    async def send(self, request: Request, f: Any, start: int, length: int) -> None:
        """Write the headers, then *length* bytes of *f* from *start*; finishes the request."""
        transport = request.channel.transport
        assert isinstance(transport, tcp.Connection)  # usable() said so
        self.active += 1
        flag = _Cancelled()
        request.notifyFinish().addErrback(lambda _: setattr(flag, "stop", True))
        sock = -1
        try:
            request.write(b"")
            # A transport with bytes still buffered stays registered as a writer until it drains.
            while transport in self.reactor.getWriters():
                if flag.stop:
                    return
                await deferLater(self.reactor, 0.001, lambda: None)
            if flag.stop or transport.disconnected:
                return
            try:
                sock = os.dup(transport.fileno())
            except OSError:  # closed between the check and here
                return
            pool = self._start_pool()
            d: Deferred[int] = deferToThreadPool(
                self.reactor, pool, _pump, sock, f.fileno(), start, length, flag
            )
            sent = await d
        finally:
            self.active -= 1
            if sock >= 0:
                os.close(sock)
            f.close()
        if flag.stop or request.finished:
            return
        if sent == length:
            request.finish()
        else:
            log.info("blob body stopped after {sent} of {length} bytes", sent=sent, length=length)
            transport.abortConnection()


@implementer(IPushProducer)
class FileRangeProducer:
    """Streams ``length`` bytes of an open file from ``start``, then finishes the request.

    A push producer: it writes until the transport's buffer is full and pauses, and the
    transport resumes it once the socket drained, so at most one read's worth sits in memory.
    """

    read_size = 1024 * 1024

    def __init__(self, request: Request, f: Any, start: int, length: int) -> None:
        self.request: Request | None = request
        self.file = f
        self.left = length
        self.paused = False
        f.seek(start)

    def start(self) -> None:
        assert self.request is not None
        self.request.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.request is not None:
            data = self.file.read(min(self.read_size, self.left))
            self.left -= len(data)
            if data:
                self.request.write(data)
            if self.request is not None and (self.left <= 0 or not data):
                request, self.request = self.request, None
                request.unregisterProducer()
                request.finish()
                self.file.close()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.request = None
        self.file.close()


def send_body(request: Request, f: Any, start: int, length: int, sender: SendfileSender | None) -> str:
    """Send *length* bytes of the open file *f* from *start* as the body; says how.

    The status and headers must be set. The request is finished and *f* closed when the body
    is out: ``"sendfile"`` when a sendfile worker sends it, ``"stream"`` otherwise.
    """
    if length == 0:
        f.close()
        request.finish()
        return "stream"
    if sender is not None and sender.usable(request, length):
        ensureDeferred(sender.send(request, f, start, length)).addErrback(_send_failed, request)
        return "sendfile"
    FileRangeProducer(request, f, start, length).start()
    return "stream"


def _send_failed(failure: Failure, request: Request) -> None:
    log.failure("sending a blob body failed", failure)
    transport = getattr(request.channel, "transport", None)
    if transport is not None:
        transport.abortConnection()


def serve_file(request: Request, path: str, sender: SendfileSender | None = None) -> str:
    """Answer with the file at *path* as an ``application/octet-stream``; says how it is sent.

    The request is finished (or will be) either way: render methods return ``NOT_DONE_YET``.
    """
    if sender is not None and request.method == b"GET" and not request.getHeader("range"):
        f = open(path, "rb")
        size = os.fstat(f.fileno()).st_size
        if sender.usable(request, size):
            request.setHeader("Content-Type", "application/octet-stream")
            request.setHeader("Content-Length", str(size))
            request.setHeader("Accept-Ranges", "bytes")
            return send_body(request, f, 0, size, sender)
        f.close()
    resource = static.File(path, defaultType="application/octet-stream")
    resource.type, resource.encoding = "application/octet-stream", None
    result = resource.render(request)
    if result is not NOT_DONE_YET:
        if result:
            request.write(result)
        request.finish()
    return "stream"
