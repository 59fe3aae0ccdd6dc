"""A module's own pool of daemon threads for blocking BMC clients (pyghmi, sushy).

The engine never waits on a BMC: each call runs in the pool and answers with a Deferred in
the reactor thread. The pool is stopped in a side thread at shutdown, so a BMC that stopped
answering mid-call cannot hold the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class BlockingCalls:
    def __init__(self, name: str, threads: int) -> None:
        self.pool = ThreadPool(minthreads=0, maxthreads=threads, name=name)
        self.name = name
        self.reactor: IReactorTime | None = None

    def start(self, reactor: IReactorTime, on_shutdown: Callable[[], None]) -> None:
        self.reactor = reactor
        self.pool.start()
        if IReactorCore.providedBy(reactor):
            reactor.addSystemEventTrigger("during", "shutdown", on_shutdown)

    def stop(self) -> None:
        if self.pool.started:
            threading.Thread(target=self.pool.stop, name=f"{self.name}-stop", daemon=True).start()

    def call(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        assert self.reactor is not None, "start() first"
        return deferToThreadPool(IReactorFromThreads(self.reactor), self.pool, fn, *args)
