"""The ``make`` fixture: a pub/sub harness as one node, a proxy node in front of one, a chain
of three nodes and a 3-node cluster (clients spread over the nodes), for tests that must hold
for each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kraken.pubsub.testing import Harness, Mesh, Tree

MakeHarness = Callable[..., Harness]


def build(topology: str, **kwargs: Any) -> Harness:
    if topology == "node":
        return Harness(**kwargs)
    if topology == "cluster3":
        return Mesh(3, **kwargs)
    return Tree(levels=2 if topology == "proxy" else 3, **kwargs)


@pytest.fixture(params=["node", "proxy", "tree3", "cluster3"])
def make(request: pytest.FixtureRequest) -> MakeHarness:
    return lambda **kwargs: build(request.param, **kwargs)
