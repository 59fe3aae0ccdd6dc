"""Zero-copy blob bodies on plain TCP: ``os.sendfile`` from a few worker threads.

The reactor thread copies every byte through Python when it streams a file; on a plain TCP
connection the kernel can do it instead, and the workers (``sendfile`` releases the GIL) use
other cores. The response headers go out through twisted.web as usual; once the transport's
buffer is empty a worker sends the body on a duplicate of the socket (so a connection closed
meanwhile can never make it write into a reused descriptor) and the request finishes in the
reactor. TLS connections, small bodies and busy workers use the ordinary producer.
"""

from __future__ import annotations

import errno
import os
import select
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Request

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

    def __init__(self, reactor: Any, workers: int = 4) -> None:
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
            and hasattr(transport, "dataBuffer")
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
        self.active += 1
        flag = _Cancelled()
        request.notifyFinish().addErrback(lambda _: setattr(flag, "stop", True))
        sock = -1
        try:
            request.write(b"")
            while len(transport.dataBuffer) - transport.offset or transport._tempDataLen:
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
