"""Copies of every stored tag to the neighbour build-indexes of the same cluster.

After a tag is stored (not when it arrives as a duplicate), each neighbour gets
``PUT /internal/duplicate/tags/<repo:tag>/digest/<d>``; failures are retried with exponential
backoff on the injected clock, up to ``attempts`` times, and then counted and logged. A newer
digest for the same tag replaces a pending older one, so neighbours never move a tag back.

With a *journal* directory each pending copy is also a marker file there, written (synced)
before the tag is acknowledged and removed when the copy is done or given up: copies a crash
interrupted start again at the next start (:meth:`Duplicator.resume`). An unreadable marker is
set aside as ``.bad``, logged and counted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from kraken.core.cas import write_atomically
from kraken.core.httpclient import HTTPStatusError, base_url
from kraken.core.tls import TLSSettings

log = Logger(namespace="kraken.buildindex.duplicate")

Send = Callable[[str, str, str, str], "Deferred[Any]"]


class HTTPTagSender:
    """The :data:`Send` of a cluster: ``PUT`` to the neighbour, anything but ``200`` fails."""

    def __init__(self, http: HTTPClient, tls: TLSSettings | None) -> None:
        self.http = http
        self.tls = tls

    def __call__(self, neighbour: str, repo: str, tag: str, digest: str) -> Deferred[None]:
        url = f"{base_url(neighbour, self.tls)}/internal/duplicate/tags/{quote(f'{repo}:{tag}', safe='')}"
        sent: Deferred[Any] = self.http.put(f"{url}/digest/{digest}", data=b"")
        return sent.addCallback(self._expect_ok, url)

    def _expect_ok(self, response: Any, url: str) -> Deferred[None]:
        def check(body: bytes) -> None:
            if response.code != 200:
                raise HTTPStatusError("PUT", url, response.code, body)

        body: Deferred[bytes] = response.content()
        return body.addCallback(check)


def _marker_name(task: _Task) -> str:
    key = "\0".join((task.neighbour, task.repo, task.tag)).encode()
    return hashlib.sha256(key).hexdigest()[:32] + ".json"


@dataclass
class _Task:
    neighbour: str
    repo: str
    tag: str
    digest: str
    attempt: int = 0
    call: IDelayedCall | None = None


class Duplicator:
    def __init__(
        self,
        neighbours: list[str],
        send: Send,
        clock: IReactorTime,
        attempts: int = 8,
        first_delay: float = 0.5,
        max_delay: float = 60.0,
        on_result: Callable[[str], None] | None = None,
        journal: Path | None = None,
        on_corrupt: Callable[[], None] | None = None,
    ) -> None:
        self.journal = journal
        if journal is not None:
            journal.mkdir(parents=True, exist_ok=True)
        self.on_corrupt = on_corrupt or (lambda: None)
        self.neighbours = neighbours
        self.send = send
        self.clock = clock
        self.attempts = attempts
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.on_result = on_result or (lambda outcome: None)
        self.pending: dict[tuple[str, str, str], _Task] = {}

    def tag_stored(self, repo: str, tag: str, digest: str) -> None:
        for neighbour in self.neighbours:
            key = (neighbour, repo, tag)
            old = self.pending.pop(key, None)
            if old is not None and old.call is not None and old.call.active():
                old.call.cancel()
            task = _Task(neighbour, repo, tag, digest)
            self.pending[key] = task
            self._record(task)
            self._try(task)

    def resume(self) -> int:
        """Start the copies whose markers a previous run left (for our neighbours); how many."""
        if self.journal is None:
            return 0
        started = 0
        for path in sorted(self.journal.glob("*.json")):
            try:
                record = json.loads(path.read_bytes())
                task = _Task(str(record["neighbour"]), str(record["repo"]), str(record["tag"]),
                             str(record["digest"]))
                if path.name != _marker_name(task):
                    raise ValueError("marker name does not match its content")
            except (OSError, ValueError, KeyError, TypeError) as e:
                aside = path.with_suffix(".bad")
                os.replace(path, aside)
                self.on_corrupt()
                log.error("unreadable tag-copy marker moved to {aside}: {error}", aside=str(aside),
                          error=str(e))
                continue
            key = (task.neighbour, task.repo, task.tag)
            if task.neighbour not in self.neighbours or key in self.pending:
                continue
            self.pending[key] = task
            self._try(task)
            started += 1
        if started:
            log.info("resumed {n} pending tag copies", n=started)
        return started

    def _record(self, task: _Task) -> None:
        if self.journal is not None:
            record = {"neighbour": task.neighbour, "repo": task.repo, "tag": task.tag, "digest": task.digest}
            write_atomically(self.journal / _marker_name(task), json.dumps(record).encode())

    def _forget(self, task: _Task) -> None:
        del self.pending[(task.neighbour, task.repo, task.tag)]
        if self.journal is not None:
            (self.journal / _marker_name(task)).unlink(missing_ok=True)

    def _try(self, task: _Task) -> None:
        task.call = None
        task.attempt += 1
        d = maybeDeferred(self.send, task.neighbour, task.repo, task.tag, task.digest)
        d.addCallbacks(lambda _: self._done(task), lambda f: self._failed(task, f))

    def _current(self, task: _Task) -> bool:
        return self.pending.get((task.neighbour, task.repo, task.tag)) is task

    def _done(self, task: _Task) -> None:
        if self._current(task):
            self._forget(task)
        self.on_result("ok")

    def _failed(self, task: _Task, failure: Any) -> None:
        if not self._current(task):
            return
        if task.attempt >= self.attempts:
            self._forget(task)
            log.error("gave up copying {repo}:{tag} to {neighbour} after {n} attempts: {error}",
                      repo=task.repo, tag=task.tag, neighbour=task.neighbour, n=task.attempt,
                      error=failure.getErrorMessage())
            self.on_result("gave_up")
            return
        delay = min(self.first_delay * 2 ** (task.attempt - 1), self.max_delay)
        log.warn("copying {repo}:{tag} to {neighbour} failed ({error}); retry in {delay}s",
                 repo=task.repo, tag=task.tag, neighbour=task.neighbour, error=failure.getErrorMessage(),
                 delay=delay)
        self.on_result("retry")
        task.call = self.clock.callLater(delay, self._try, task)

    def stop(self) -> None:
        for task in self.pending.values():
            if task.call is not None and task.call.active():
                task.call.cancel()
        self.pending.clear()
