"""Client of the origin HTTP API: chunked upload, stat, download (polling 202), locations.

``OriginClient(reactor, base_url, tls)`` talks to one origin; :class:`OriginCluster` asks any
origin which ring members own a digest and uploads to the first of them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import treq
from treq.client import HTTPClient
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.web.client import FileBodyProducer

from kraken.backends.base import BlobNotFound
from kraken.core.digest import Digest
from kraken.core.files import FileWindow, write_into
from kraken.core.health import PassiveFilter, healthy_first
from kraken.core.httpclient import (
    BadJSONResponse,
    HTTPStatusError,
    base_url,
    json_body,
    make_http_client,
    read_body,
)
from kraken.core.tls import TLSSettings
from kraken.p2p.metainfo import MAX_METAINFO_BYTES

CHUNK_SIZE = 32 * 1024 * 1024
_HEX40 = re.compile(r"[0-9a-f]{40}")
ORIGIN_ROLES = frozenset({"origin"})  # what an origin's certificate must name


def ns_path(namespace: str) -> str:
    return quote(namespace, safe="")


class _Counted:
    """A file window that reports each read's size (upload progress)."""

    def __init__(self, window: FileWindow, progress: Callable[[int], None]) -> None:
        self.window = window
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self.window.read(n)
        self.progress(len(data))
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.window.seek(offset, whence)

    def tell(self) -> int:
        return self.window.tell()

    def close(self) -> None:
        self.window.close()


class OriginClient:
    def __init__(
        self,
        reactor: IReactorTime,
        base: str,
        tls: TLSSettings | None,
        http: HTTPClient | None = None,
        chunk_size: int = CHUNK_SIZE,
        poll_interval: float = 0.2,
        poll_timeout: float = 900.0,
    ) -> None:
        self.reactor = reactor
        self.tls = tls
        self.base = base_url(base, tls)
        self.http = http or make_http_client(reactor, tls, ORIGIN_ROLES)
        self.chunk_size = chunk_size
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout

    def _blob_url(self, namespace: str, digest: Digest, suffix: str = "") -> str:
        return f"{self.base}/namespace/{ns_path(namespace)}/blobs/{digest}{suffix}"

    @inlineCallbacks
    def _call(self, method: str, url: str, ok: tuple[int, ...], **kwargs: Any) -> Any:
        response = yield self.http.request(method, url, **kwargs)
        if response.code not in ok:
            body = yield response.content()
            raise HTTPStatusError(method, url, response.code, body)
        return response

    def upload(
        self, namespace: str, digest: Digest, path: str, progress: Callable[[int], None] | None = None
    ) -> Any:
        """Chunked upload of the file at *path*; an origin that already has it counts as success.
        *progress* is called with the byte count of each piece read for sending."""
        return self._upload(self._blob_url(namespace, digest, "/uploads"), path, progress)

    @inlineCallbacks
    def delete(self, namespace: str, digest: Digest) -> Any:
        """Remove *digest* from this origin and its backend; ``False`` when it had none."""
        url = self._blob_url(namespace, digest)
        response = yield self._call("DELETE", url, (200, 202, 204, 404))
        yield response.content()
        return response.code != 404

    @inlineCallbacks
    def cluster_members(self) -> Any:
        """Every origin of this one's cluster (``host:port``)."""
        url = f"{self.base}/internal/cluster"
        response = yield self._call("GET", url, (200,))
        body = yield json_body(response, url)
        members = body.get("members") if isinstance(body, dict) else None
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise BadJSONResponse(f"{url} sent no member list")
        return members

    @inlineCallbacks
    def collect_garbage(self, live: list[str], grace: float, dry_run: bool) -> Any:
        """Have this origin sweep what *live* (digest hexes) does not name; its report."""
        url = f"{self.base}/internal/gc"
        response = yield self._call("POST", url, (200,), data=json.dumps(
            {"live": live, "grace": grace, "dry_run": dry_run}).encode(),
            headers={"Content-Type": ["application/json"]})
        report = yield json_body(response, url)
        return report

    def transfer(self, digest: Digest, path: str) -> Any:
        """Origin-to-origin copy (no write-back, no further replication)."""
        return self._upload(f"{self.base}/internal/blobs/{digest}/uploads", path)

    @inlineCallbacks
    def _upload(self, url: str, path: str, progress: Callable[[int], None] | None = None) -> Any:
        response = yield self._call("POST", url, (200, 201, 202, 409))
        if response.code == 409:
            yield response.content()
            return
        uid = response.headers.getRawHeaders("location", [""])[0].rsplit("/", 1)[-1]
        yield response.content()
        size = os.path.getsize(path)
        start = 0
        while start < size or (size == 0 and start == 0):
            length = min(self.chunk_size, size - start)
            window = FileWindow(path, start, length)
            body = _Counted(window, progress) if progress else window
            try:
                response = yield self._call(
                    "PATCH",
                    f"{url}/{uid}",
                    (200, 202, 204, 409),
                    data=FileBodyProducer(body, readSize=256 * 1024),
                    headers={"Content-Range": f"{start}-{start + length}"},
                )
            finally:
                window.close()
            yield response.content()
            if response.code == 409:
                return
            start += length
            if size == 0:
                break
        response = yield self._call("PUT", f"{url}/{uid}", (200, 201, 204, 409))
        yield response.content()

    @inlineCallbacks
    def stat(self, namespace: str, digest: Digest) -> Any:
        """Size of the blob on the origin or its backend, or ``None`` when neither has it."""
        url = f"{self.base}/internal/namespace/{ns_path(namespace)}/blobs/{digest}"
        response = yield self._call("HEAD", url, (200, 404))
        yield response.content()
        if response.code == 404:
            return None
        return int(response.headers.getRawHeaders("kraken-blob-size", ["0"])[0])

    @inlineCallbacks
    def locations(self, digest: Digest) -> Any:
        """``host:port`` of the origins owning *digest*, best first."""
        response = yield self._call("GET", f"{self.base}/blobs/{digest}/locations", (200,))
        yield response.content()
        raw = response.headers.getRawHeaders("origin-locations", [""])[0]
        return [h.strip() for h in raw.split(",") if h.strip()]

    @inlineCallbacks
    def _poll(self, method: str, url: str, **kwargs: Any) -> Any:
        """Repeat while the origin answers 202 (fetching from its backend)."""
        waited = 0.0
        interval = self.poll_interval
        while True:
            response = yield self.http.request(method, url, **kwargs)
            if response.code != 202:
                return response
            yield response.content()
            if waited >= self.poll_timeout:
                raise HTTPStatusError(method, url, 202, b"still fetching from the backend; gave up")
            yield deferLater(self.reactor, interval, lambda: None)
            waited += interval
            interval = min(interval * 1.3, 2.0)

    @inlineCallbacks
    def download(self, namespace: str, digest: Digest, dest_path: str, local: bool = False) -> Any:
        """Stream the blob into *dest_path*; fails with :class:`BlobNotFound` on 404.

        With *local* the origin answers from its own store only (404 rather than a fetch).
        """
        url = self._blob_url(namespace, digest, "?local=true" if local else "")
        response = yield self._poll("GET", url, unbuffered=True)
        if response.code == 404:
            yield response.content()
            raise BlobNotFound(str(digest))
        if response.code != 200:
            body = yield response.content()
            raise HTTPStatusError("GET", url, response.code, body)
        with open(dest_path, "wb") as f:
            yield treq.collect(response, write_into(f))

    @inlineCallbacks
    def metainfo(self, namespace: str, digest: Digest) -> Any:
        """``(status, body)`` of one metainfo request (200 JSON, 202 fetching, 404 unknown)."""
        url = self._blob_url(namespace, digest, "/metainfo")
        response = yield self.http.get(url)
        body = yield read_body(response, url, MAX_METAINFO_BYTES)
        return response.code, body

    @inlineCallbacks
    def peer_context(self) -> Any:
        """``{"peer_id", "ip", "port"}`` of the origin's seeder; :class:`BadJSONResponse` if unusable."""
        url = f"{self.base}/internal/peercontext"
        response = yield self._call("GET", url, (200,))
        data = yield json_body(response, url)
        if not _is_peer_context(data):
            raise BadJSONResponse(f"{url} sent no peer context (peer_id of 40 hex digits, ip, port)")
        return data


def _is_peer_context(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    peer_id, ip, port = data.get("peer_id"), data.get("ip"), data.get("port")
    return (
        isinstance(peer_id, str) and _HEX40.fullmatch(peer_id) is not None
        and isinstance(ip, str) and 0 < len(ip) <= 255
        and isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
    )


def member_failed(error: BaseException) -> bool:
    """Whether *error* says the origin itself is in trouble (unreachable, 5xx), not the request."""
    if isinstance(error, HTTPStatusError):
        return error.status >= 500
    return not isinstance(error, (BlobNotFound, BadJSONResponse))


class OriginCluster:
    """The origins one component knows (agent-side tracker, proxy, build-index, CLI).

    Owners are asked of any reachable member (each origin's answer already routes around the
    members its active health checks found down). Every request goes to the owners in turn,
    healthy ones first by a :class:`~kraken.core.health.PassiveFilter`: an origin that failed
    (unreachable or 5xx) is tried last for ``fail_timeout`` seconds.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        addresses: list[str],
        tls: TLSSettings | None,
        health: PassiveFilter | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("an origin cluster needs at least one address")
        self.reactor = reactor
        self.tls = tls
        self.http = make_http_client(reactor, tls, ORIGIN_ROLES)
        self.health = health if health is not None else PassiveFilter(reactor)
        self.clients: dict[str, OriginClient] = {}
        self.members: list[str] = []
        self.set_members(addresses)

    def set_members(self, addresses: list[str]) -> None:
        """The configured origins (a membership change read on reload)."""
        self.members = list(addresses)
        for a in addresses:
            self.client(a)

    def client(self, address: str) -> OriginClient:
        if address not in self.clients:
            self.clients[address] = OriginClient(self.reactor, address, self.tls, self.http)
        return self.clients[address]

    def _address(self, client: OriginClient) -> str:
        return next((a for a, c in self.clients.items() if c is client), client.base)

    def failed(self, client: OriginClient, error: BaseException) -> None:
        """Tell the passive filter that a request to *client* failed with *error* (for callers that
        walk the owners themselves)."""
        if member_failed(error):
            self.health.failed(self._address(client))

    @inlineCallbacks
    def owners(self, digest: Digest) -> Any:
        """Clients of the origins owning *digest*, passively healthy ones first (asks members in turn)."""
        last: Exception | None = None
        for address in healthy_first(self.members, self.health.healthy):
            client = self.client(address)
            try:
                hosts = yield client.locations(digest)
            except Exception as e:
                self.failed(client, e)
                last = e
                continue
            self.health.succeeded(address)
            if hosts:
                return [self.client(h) for h in healthy_first(hosts, self.health.healthy)]
        raise last or RuntimeError("no origin answered the locations request")

    @inlineCallbacks
    def _each_owner(self, digest: Digest, attempt: Callable[[OriginClient], Any]) -> Any:
        """*attempt* on each owner in turn until one gives an answer that is not ``_NEXT``."""
        owners = yield self.owners(digest)
        last: Exception | None = None
        for client in owners:
            try:
                result = yield attempt(client)
            except Exception as e:
                self.failed(client, e)
                last = e
                continue
            if result is not _NEXT:
                return result
        if last is not None:
            raise last
        return _NEXT

    @inlineCallbacks
    def upload(
        self, namespace: str, digest: Digest, path: str, progress: Callable[[int], None] | None = None
    ) -> Any:
        """Upload to the first owner that accepts it (next owner on failure); the owner's base URL."""

        @inlineCallbacks
        def attempt(client: OriginClient) -> Any:
            yield client.upload(namespace, digest, path, progress)
            return client.base

        base = yield self._each_owner(digest, attempt)
        return base

    @inlineCallbacks
    def cluster_members(self) -> Any:
        """Every origin of the cluster, as the first reachable configured member knows it."""
        last: Exception | None = None
        for address in healthy_first(self.members, self.health.healthy):
            try:
                members = yield self.client(address).cluster_members()
            except Exception as e:
                last = e
                continue
            return members
        raise last or RuntimeError("no origin answered the cluster request")

    @inlineCallbacks
    def delete(self, namespace: str, digest: Digest) -> Any:
        """Remove *digest* from every owner (and their backends); ``True`` if any held it."""
        owners = yield self.owners(digest)
        found = False
        for client in owners:
            deleted = yield client.delete(namespace, digest)
            found = found or deleted
        return found

    @inlineCallbacks
    def stat(self, namespace: str, digest: Digest) -> Any:
        """Size of the blob on the first owner (or its backend) that has it, ``None`` if none has."""

        @inlineCallbacks
        def attempt(client: OriginClient) -> Any:
            size = yield client.stat(namespace, digest)
            return _NEXT if size is None else size

        size = yield self._each_owner(digest, attempt)
        return None if size is _NEXT else size

    @inlineCallbacks
    def download(self, namespace: str, digest: Digest, dest_path: str) -> Any:
        """Stream the blob from the first owner that has it; :class:`BlobNotFound` if none has."""
        found = yield self._each_owner(digest, lambda c: c.download(namespace, digest, dest_path))
        if found is _NEXT:
            raise BlobNotFound(str(digest))

    @inlineCallbacks
    def metainfo(self, namespace: str, digest: Digest) -> Any:
        """``(status, body, owner base)`` of the first owner answering 200 or 202; else its 404."""
        answers: list[tuple[int, bytes, str]] = []

        @inlineCallbacks
        def attempt(client: OriginClient) -> Any:
            status, body = yield client.metainfo(namespace, digest)
            if status >= 500:
                raise HTTPStatusError("GET", client.base, status, body)
            answers.append((status, body, client.base))
            return _NEXT if status == 404 else (status, body, client.base)

        answer = yield self._each_owner(digest, attempt)
        return answers[0] if answer is _NEXT else answer


_NEXT = object()  # "ask the next owner"
