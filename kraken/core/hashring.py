"""Rendezvous (highest random weight) hashing: which nodes own a key.

Every node gets a score for a key, ``-weight / ln(u)`` with ``u`` uniform in (0, 1) drawn
from SHA-256(key ‖ 0 ‖ node); nodes ordered by falling score own the key. Adding or removing
one node moves only the keys that node wins or loses.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable


def _score(key: str, node: str, weight: float) -> float:
    h = hashlib.sha256(key.encode() + b"\0" + node.encode()).digest()
    bits = int.from_bytes(h[:8], "big") >> 11
    u = (bits + 0.5) / float(1 << 53)
    return -weight / math.log(u)


class Ring:
    """Nodes (``host:port`` labels) with weights; :meth:`locations` picks owners of a key."""

    def __init__(self, nodes: Iterable[str], max_replica: int = 3, weights: dict[str, float] | None = None):
        self.nodes = sorted(set(nodes))
        if not self.nodes:
            raise ValueError("a hash ring needs at least one node")
        if max_replica < 1:
            raise ValueError("max_replica must be at least 1")
        self.max_replica = max_replica
        self.weights = weights or {}

    def ranked(self, key: str) -> list[str]:
        """All nodes, best owner first."""
        return sorted(self.nodes, key=lambda n: (-_score(key, n, self.weights.get(n, 100.0)), n))

    def locations(self, key: str, healthy: Callable[[str], bool] | None = None) -> list[str]:
        """Healthy nodes among the top ``max_replica``; else the next healthy one; else the top one."""
        ranked = self.ranked(key)
        if healthy is None:
            return ranked[: self.max_replica]
        top = [n for n in ranked[: self.max_replica] if healthy(n)]
        if top:
            return top
        rest = [n for n in ranked[self.max_replica :] if healthy(n)]
        return rest[:1] or ranked[:1]

    def owns(self, node: str, key: str) -> bool:
        return node in self.ranked(key)[: self.max_replica]
