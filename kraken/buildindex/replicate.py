"""Replication of tags to the build-indexes of other clusters, blobs first.

``remotes`` maps a remote build-index (``host:port``) to the ``repo:tag`` patterns it takes.
For each stored tag that matches, a task (a :class:`Duplicator`'s: durable in the journal,
retried with backoff until it lands) asks the remote for the tag; if it already points at the
same digest nothing is done.
Otherwise the remote names its origin cluster (``GET /origin``), every blob the manifest
needs that the remote origins lack is copied there from ours (namespace = repository), and
the tag is ``PUT`` on the remote build-index, which checks it and replicates it onwards.
Unlike the original, a remote holding the tag with another digest is updated.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kraken.buildindex.duplicate import Duplicator
from kraken.buildindex.tags import TagService
from kraken.core.digest import Digest
from kraken.core.httpclient import HTTPStatusError, base_url
from kraken.core.journal import Journal
from kraken.core.tls import TLSSettings
from kraken.p2p.origins import OriginCluster

log = Logger(namespace="kraken.buildindex.replicate")


class Replicator:
    def __init__(
        self,
        remotes: dict[str, list[str]],
        tags: TagService,
        http: HTTPClient,
        tls: TLSSettings | None,
        clock: IReactorTime,
        scratch: Path,
        journal: Journal,
        on_result: Callable[[str], None] | None = None,
        legacy_markers: Path | None = None,
        on_corrupt: Callable[[], None] | None = None,
        retry: tuple[float, float] = (0.5, 60.0),
    ) -> None:
        self.tags = tags
        self.http = http
        self.tls = tls
        self.reactor = clock
        self.scratch = scratch
        self.routes = {remote: [re.compile(p) for p in patterns] for remote, patterns in remotes.items()}
        self.queue = Duplicator(list(remotes), self.replicate, journal, "tag_replication", retry[0], retry[1],
                                on_result=on_result, legacy_markers=legacy_markers, on_corrupt=on_corrupt)

    def resume(self) -> int:
        """Start the replications a previous run left pending (see :meth:`Duplicator.resume`)."""
        return self.queue.resume()

    def tag_stored(self, repo: str, tag: str, digest: str, delay: float = 0.0) -> None:
        """Queue the replication of the tag to every remote whose patterns match it (durably)."""
        name = f"{repo}:{tag}"
        remotes = [r for r, patterns in self.routes.items() if any(p.match(name) for p in patterns)]
        if remotes:
            self.queue.tag_stored(repo, tag, digest, remotes, delay)

    def stop(self) -> None:
        self.queue.stop()

    @inlineCallbacks
    def _get(self, url: str, ok: tuple[int, ...] = (200,)) -> Any:
        response = yield self.http.get(url)
        body = yield response.content()
        if response.code not in ok:
            raise HTTPStatusError("GET", url, response.code, body)
        return response.code, body

    @inlineCallbacks
    def replicate(self, remote: str, repo: str, tag: str, digest: str) -> Any:
        base = base_url(remote, self.tls)
        tag_url = f"{base}/tags/{quote(f'{repo}:{tag}', safe='')}"
        code, body = yield self._get(tag_url, (200, 404))
        if code == 200 and body.decode().strip() == digest:
            return
        _, origin = yield self._get(f"{base}/origin")
        remote_origins = OriginCluster(self.reactor, [origin.decode().strip()], self.tls)
        local = self.tags.origins
        deps = yield self.tags.dependencies(repo, digest)
        for dep in deps:
            d = Digest.parse(dep)
            size = yield remote_origins.stat(repo, d)
            if size is not None:
                continue
            fd, name = tempfile.mkstemp(dir=self.scratch, suffix=".replica")
            os.close(fd)
            try:
                assert local is not None  # dependencies() lists nothing without origins
                yield local.download(repo, d, name)
                yield remote_origins.upload(repo, d, name)
            finally:
                Path(name).unlink(missing_ok=True)
        url = f"{tag_url}/digest/{digest}"
        response = yield self.http.put(url, data=b"")
        body = yield response.content()
        if response.code != 200:
            raise HTTPStatusError("PUT", url, response.code, body)
        log.info("replicated {repo}:{tag} ({digest}) to {remote}", repo=repo, tag=tag, digest=digest,
                 remote=remote)
