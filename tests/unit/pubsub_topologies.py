"""The ``make`` fixture: a pub/sub harness as one node, a proxy node in front of one, and a
chain of three nodes (clients spread over the nodes), for tests that must hold for each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kraken.pubsub.testing import Harness, Tree

MakeHarness = Callable[..., Harness]


@pytest.fixture(params=["node", "proxy", "tree3"])
def make(request: pytest.FixtureRequest) -> MakeHarness:
    def build(**kwargs: Any) -> Harness:
        if request.param == "node":
            return Harness(**kwargs)
        return Tree(levels=2 if request.param == "proxy" else 3, **kwargs)

    return build
