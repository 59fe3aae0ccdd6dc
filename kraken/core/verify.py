"""Whether a stored blob may be served: its verified mark, or a fresh hash in a thread.

Every server that answers for blobs in a :class:`~kraken.core.cas.CAStore` asks
:meth:`BlobVerifier.check` before it says "I have it" (``HEAD``, ``GET``, P2P seeding,
upload refusals), so one verification decides them all. A blob whose verified mark still
holds costs one ``stat``; any other is hashed in a worker thread (one hash per digest at a
time, however many requests wait). A copy that no longer matches its digest is quarantined
by the store, counted in ``corrupt_blobs``, logged, and the listeners are told, so the
owner drops what it derived from the copy and fetches it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.core.cas import CAStore, Verdict
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics

log = Logger(namespace="kraken.core.verify")

# run(function, *args) -> Deferred of its result, computed off the reactor thread
Runner = Callable[..., "Deferred[Any]"]


class BlobVerifier:
    """Checks blobs of *cas* before they are served; *enabled* False trusts every stored copy."""

    def __init__(
        self,
        reactor: IReactorThreads,
        cas: CAStore,
        metrics: Metrics,
        enabled: bool = True,
        run: Runner | None = None,
    ) -> None:
        self.cas = cas
        self.enabled = enabled
        self.run: Runner = run or (lambda f, *a: deferToThreadPool(reactor, reactor.getThreadPool(), f, *a))
        self.hashing: dict[str, list[Deferred[bool]]] = {}
        self.listeners: list[Callable[[Digest], None]] = []
        self.m_corrupt = metrics.counter(
            "corrupt_blobs", "stored blobs that no longer matched their digest and were quarantined"
        )

    def on_corrupt(self, listener: Callable[[Digest], None]) -> None:
        """Call *listener(digest)* after a copy was quarantined (in the reactor thread)."""
        self.listeners.append(listener)

    def check(self, d: Digest) -> Deferred[bool]:
        """True when the stored copy of *d* is there and matches; False when absent or corrupt."""
        if not self.enabled:
            return succeed(self.cas.has(d))
        if self.cas.is_verified(d):
            return succeed(True)
        if not self.cas.has(d):
            return succeed(False)
        waiter: Deferred[bool] = Deferred()
        if d.hex in self.hashing:
            self.hashing[d.hex].append(waiter)
            return waiter
        self.hashing[d.hex] = [waiter]
        self.run(self.cas.verify, d).addBoth(self._hashed, d)
        return waiter

    def _hashed(self, result: Verdict | Failure, d: Digest) -> None:
        waiters = self.hashing.pop(d.hex, [])
        if isinstance(result, Failure):
            log.failure("could not hash the stored copy of {digest}", result, digest=d)
            ok = False
        else:
            ok = result is Verdict.OK
            if result is Verdict.CORRUPT:
                self.corrupt(d, "hashing it before serving")
        for waiter in waiters:
            waiter.callback(ok)

    def found_corrupt(self, d: Digest, how: str) -> None:
        """Someone else (a piece check) found the copy of *d* corrupt: quarantine it."""
        self.cas.quarantine(d)
        self.corrupt(d, how)

    def corrupt(self, d: Digest, how: str) -> None:
        self.m_corrupt.inc()
        log.error(
            "the stored copy of {digest} does not match its digest ({how}): quarantined in {where}",
            digest=d, how=how, where=str(self.cas.quarantine_dir),
        )
        for listener in list(self.listeners):
            try:
                listener(d)
            except Exception:
                log.failure("a corrupt-blob listener failed for {digest}", digest=d)
