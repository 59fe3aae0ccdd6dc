"""Lambdas the pipeline integration tests load into a real server
(``pipeline.lambda_modules: [tests.integration.pipeline_test_lambdas]``)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater


def later(args: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
    """Answers ``{"later": n}`` a few milliseconds later: events wait here, in flight."""
    return deferLater(reactor, float(args.get("delay", 0.005)), lambda: {"later": args.get("n")})
