"""Token buckets for per-host bandwidth limits (one for egress, one for ingress)."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


class TokenBucket:
    """*rate* bytes per second with bursts up to *burst* bytes; time from *clock*.

    :meth:`consume` always takes the tokens (the balance may go negative) and returns how
    long the caller should wait before moving more bytes, so a sender never stalls
    mid-chunk and the average rate still holds.
    """

    def __init__(self, rate: float, burst: float, clock: IReactorTime) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock.seconds()

    def _refill(self) -> None:
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def consume(self, n: int) -> float:
        self._refill()
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def delay(self) -> float:
        """Seconds until the balance is back to zero (0 when tokens are available)."""
        self._refill()
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def bucket_from_config(bits_per_sec: int | None, clock: IReactorTime) -> TokenBucket | None:
    if not bits_per_sec:
        return None
    rate = bits_per_sec / 8
    return TokenBucket(rate, max(rate / 10, 256 * 1024), clock)
