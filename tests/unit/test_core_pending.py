"""The pending-connection bookkeeping (deadline, caps, eviction of the oldest, offender log) on a Clock."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter
from twisted.internet.task import Clock

from kraken.core.offenders import OffenderLog
from kraken.core.pending import PendingConnections, PendingLimits


class Conns:
    def __init__(self, limits: PendingLimits) -> None:
        self.clock = Clock()
        self.aborted: list[str] = []
        self.registry = CollectorRegistry()
        self.counter = Counter("aborted", "", ["reason"], registry=self.registry)
        self.pending = PendingConnections(self.clock, "tls_handshake", limits, self.counter)

    def admit(self, name: str, source: str = "10.0.0.1") -> None:
        self.pending.admit(name, source, lambda: self.aborted.append(name))

    def count(self, reason: str) -> float:
        return self.registry.get_sample_value("aborted_total", {"reason": reason}) or 0.0


def test_a_connection_is_aborted_at_its_deadline_unless_done() -> None:
    conns = Conns(PendingLimits(timeout=10))
    conns.admit("a")
    conns.clock.advance(5)
    conns.admit("b")
    conns.clock.advance(5)
    assert conns.aborted == ["a"]
    assert conns.pending.done("b") is True
    conns.clock.advance(100)
    assert conns.aborted == ["a"]
    assert conns.pending.done("a") is False  # aborted ones are no longer pending
    assert conns.count("tls_handshake_timeout") == 1
    assert len(conns.pending) == 0 and not conns.clock.getDelayedCalls()


def test_an_address_over_its_cap_loses_its_oldest_stalled_connections_after_the_grace() -> None:
    conns = Conns(PendingLimits(timeout=10, max_per_source=2, grace=1))
    conns.admit("other", source="10.0.0.2")
    for name in ("a1", "a2", "a3", "a4"):
        conns.admit(name)
    assert conns.aborted == []  # a burst is not cut while it is young
    conns.clock.advance(1)
    assert conns.aborted == ["a1", "a2"]
    assert conns.count("tls_handshake_per_source") == 2
    assert len(conns.pending) == 3
    conns.admit("a5")  # a newcomer is admitted; a3, old enough now, makes room at once
    assert conns.aborted == ["a1", "a2", "a3"]


def test_a_full_listener_loses_its_oldest_stalled_connection() -> None:
    conns = Conns(PendingLimits(timeout=10, max_pending=2, grace=1))
    conns.admit("a", source="10.0.0.1")
    conns.admit("b", source="10.0.0.2")
    conns.pending.done("a")
    conns.admit("c", source="10.0.0.3")
    conns.admit("d", source="10.0.0.4")
    conns.clock.advance(1)
    assert conns.aborted == ["b"]
    assert conns.count("tls_handshake_full") == 1


def test_connections_making_progress_are_left_to_their_deadline() -> None:
    conns = Conns(PendingLimits(timeout=10, max_per_source=1, grace=1))
    progressing = {"x", "y"}
    for name in ("x", "y", "z"):
        conns.pending.admit(name, "10.0.0.1", lambda n=name: conns.aborted.append(n),
                            stalled=lambda n=name: n not in progressing)
    conns.clock.advance(1)
    assert conns.aborted == ["z"]
    conns.clock.advance(9)
    assert conns.aborted == ["z", "x", "y"]
    assert conns.count("tls_handshake_timeout") == 2


def test_readmitting_a_connection_restarts_its_deadline() -> None:
    conns = Conns(PendingLimits(timeout=10))
    conns.admit("keep-alive")
    conns.clock.advance(9)
    conns.admit("keep-alive")  # e.g. the next request on an HTTP connection
    conns.clock.advance(9)
    assert conns.aborted == []
    assert len(conns.clock.getDelayedCalls()) == 1


def test_offenders_are_logged_once_per_interval_and_forgotten_when_too_many() -> None:
    clock = Clock()
    offenders = OffenderLog(clock, interval=60, max_offenders=2)
    assert offenders.should_log("x") == 0
    assert offenders.should_log("x") is None
    assert offenders.should_log("x") is None
    clock.advance(60)
    assert offenders.should_log("x") == 2  # two were not logged since
    offenders.should_log("y")
    offenders.should_log("z")  # x, the least recent, is forgotten
    assert offenders.should_log("x") == 0


def test_every_server_exposes_the_aborted_connections_counter() -> None:
    from kraken.core.metrics import Metrics

    metrics = Metrics("build-index")
    assert b"# TYPE kraken_build_index_connections_aborted_total counter" in metrics.render()


def test_a_burst_over_the_cap_costs_a_bounded_scan_and_a_stalled_one_is_still_found() -> None:
    conns = Conns(PendingLimits(timeout=10, max_per_source=1, grace=0.1))
    scanned: list[str] = []

    def busy(name: str) -> bool:
        scanned.append(name)
        return False

    for i in range(100):
        conns.pending.admit(f"busy{i}", "10.0.0.1", lambda: None, stalled=lambda n=f"busy{i}": busy(n))
    conns.admit("silent")
    conns.clock.advance(0.1)
    assert len(scanned) <= 64  # one trim looks at a bounded number of members
    conns.clock.advance(0.1)
    conns.clock.advance(0.1)
    assert conns.aborted == ["silent"]
