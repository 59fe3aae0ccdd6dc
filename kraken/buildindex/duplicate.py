"""Copies of every stored tag to the neighbour build-indexes of the same cluster.

After a tag is stored (not when it arrives as a duplicate), each neighbour gets
``PUT /internal/duplicate/tags/<repo:tag>/digest/<d>``. Each copy is a task of a durable queue
of the build-index's journal (:mod:`kraken.core.journal`): committed before the tag is
acknowledged, retried with capped exponential backoff until it lands, resumed at every start.
A newer digest for the same tag replaces a pending older one, so neighbours never move a tag
back. A removal travels the same way (digest :data:`DELETED`, sent as
``DELETE /internal/duplicate/tags/<repo:tag>``) and replaces a pending copy of that tag.
The same :class:`Duplicator` carries the cross-cluster replication
(:mod:`kraken.buildindex.replicate`) with another *send*.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.core.httpclient import HTTPStatusError, base_url
from kraken.core.journal import Journal, import_markers
from kraken.core.tls import TLSSettings

log = Logger(namespace="kraken.buildindex.duplicate")

Send = Callable[[str, str, str, str], "Deferred[Any]"]
DELETED = "-"  # the digest of a pending removal


class HTTPTagSender:
    """The :data:`Send` of a cluster: ``PUT`` to the neighbour, anything but ``200`` fails."""

    def __init__(self, http: HTTPClient, tls: TLSSettings | None) -> None:
        self.http = http
        self.tls = tls

    def __call__(self, neighbour: str, repo: str, tag: str, digest: str) -> Deferred[None]:
        url = f"{base_url(neighbour, self.tls)}/internal/duplicate/tags/{quote(f'{repo}:{tag}', safe='')}"
        if digest == DELETED:
            removed: Deferred[Any] = self.http.delete(url)
            return removed.addCallback(self._expect_ok, url, "DELETE", (200, 404))
        sent: Deferred[Any] = self.http.put(f"{url}/digest/{digest}", data=b"")
        return sent.addCallback(self._expect_ok, url)

    def _expect_ok(self, response: Any, url: str, method: str = "PUT",
                   ok: tuple[int, ...] = (200,)) -> Deferred[None]:
        def check(body: bytes) -> None:
            if response.code not in ok:
                raise HTTPStatusError(method, url, response.code, body)

        body: Deferred[bytes] = response.content()
        return body.addCallback(check)


def task_key(neighbour: str, repo: str, tag: str) -> str:
    return f"{neighbour}/{repo}:{tag}"


class Duplicator:
    """Copies of stored tags to *neighbours*: the queue *name* of *journal*, retried until they land."""

    def __init__(
        self,
        neighbours: list[str],
        send: Send,
        journal: Journal,
        name: str = "tag_copies",
        first_delay: float = 0.5,
        max_delay: float = 60.0,
        on_result: Callable[[str], None] | None = None,
        legacy_markers: Path | None = None,
        on_corrupt: Callable[[], None] | None = None,
    ) -> None:
        self.neighbours = neighbours
        self.send = send
        self.on_result = on_result or (lambda outcome: None)
        self.legacy_markers = legacy_markers
        self.on_corrupt = on_corrupt
        self.queue = journal.queue(name, self._copy, first_delay, max_delay)
        self.queue.on_done.append(lambda key, payload, result: self.on_result(result))

    @property
    def pending(self) -> dict[str, dict[str, Any]]:
        """Copies not yet made, by task key."""
        return {t.key: t.payload for t in self.queue.tasks.values()}

    def tag_stored(
        self, repo: str, tag: str, digest: str, neighbours: Iterable[str] | None = None, delay: float = 0.0
    ) -> None:
        """Queue the copy of ``repo:tag -> digest`` to *neighbours* (default all), committed on return;
        the first attempt *delay* seconds later."""
        targets = self.neighbours if neighbours is None else neighbours
        self.queue.add_many(
            ((task_key(n, repo, tag), {"neighbour": n, "repo": repo, "tag": tag, "digest": digest})
             for n in targets), delay)

    def tag_deleted(self, repo: str, tag: str) -> None:
        """Queue the removal of ``repo:tag`` at every neighbour (it replaces a pending copy)."""
        self.tag_stored(repo, tag, DELETED)

    def resume(self) -> int:
        """Start the copies a previous run left for our neighbours (others wait in the journal); how many."""
        if self.legacy_markers is not None:
            import_markers(self.legacy_markers, self.queue, _legacy_task, self.on_corrupt)
        return self.queue.resume(lambda payload: payload.get("neighbour") in self.neighbours)

    def _copy(self, payload: dict[str, Any]) -> Deferred[Any]:
        sent = maybeDeferred(self.send, str(payload["neighbour"]), str(payload["repo"]), str(payload["tag"]),
                             str(payload["digest"]))
        return sent.addCallbacks(lambda _: "ok", self._failed, errbackArgs=(payload,))

    def _failed(self, failure: Failure, payload: dict[str, Any]) -> Failure:
        self.on_result("retry")
        return failure

    def stop(self) -> None:
        self.queue.stop()


def _legacy_task(record: dict[str, Any], path: Path) -> list[tuple[str, dict[str, Any]]]:
    neighbour, repo, tag, digest = (str(record[k]) for k in ("neighbour", "repo", "tag", "digest"))
    payload = {"neighbour": neighbour, "repo": repo, "tag": tag, "digest": digest}
    return [(task_key(neighbour, repo, tag), payload)]
