"""Whether an agent can serve: one of its trackers and its build-index (if any) answer ``/health``.

Probed on a timer (:class:`~kraken.core.health.ActiveHealthCheck`); ``/ready`` is ``503`` until
each has answered, and while every tracker, or the build-index, has failed its last checks.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from kraken.core.health import ActiveHealthCheck, HealthTable
from kraken.core.httpclient import HTTPStatusError, base_url, make_http_client
from kraken.core.tls import TLSSettings


class AgentReadiness:
    def __init__(
        self,
        reactor: IReactorTime,
        trackers: list[str],
        build_index: str | None,
        tls: TLSSettings | None,
        interval: float = 2.0,
        timeout: float = 2.0,
    ) -> None:
        self.trackers = [base_url(t, tls) for t in trackers]
        self.build_index = base_url(build_index, tls) if build_index else None
        self.http = make_http_client(reactor, tls, {"tracker", "build-index"})
        self.table = HealthTable(fails=2, passes=1)
        members = self.trackers + ([self.build_index] if self.build_index else [])
        self.checker = ActiveHealthCheck(reactor, lambda: members, self.probe, self.table, interval, timeout)

    def probe(self, base: str) -> Any:
        url = f"{base}/health"

        def check(response: Any) -> Any:
            def code(body: bytes) -> None:
                if response.code != 200:
                    raise HTTPStatusError("GET", url, response.code, body)

            return response.content().addCallback(code)

        return self.http.get(url).addCallback(check)

    def tracker_answers(self) -> bool:
        return any(self.table.checked_healthy(t) for t in self.trackers)

    def build_index_answers(self) -> bool:
        return self.build_index is None or self.table.checked_healthy(self.build_index)
