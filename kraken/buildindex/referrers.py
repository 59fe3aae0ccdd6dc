"""The build-index's referrers index (OCI 1.1), shared by the proxy (writes) and the agents (reads).

- ``PUT /referrers/{repo}/subjects/{subject}``: body = the referrer's descriptor (JSON);
  records it (idempotent). ``403 TOO_MANY_REFERRERS`` past the per-subject limit.
- ``GET /referrers/{repo}/subjects/{subject}?artifactType=&last=``:
  ``{"referrers": [descriptor...], "next": <last of the next page> | null}``; an unknown
  subject has no referrers (``200``, empty list).
- ``DELETE /referrers/{repo}/subjects/{subject}/manifests/{digest}``: forget one referrer
  (``200``; ``404`` when there was none).
- ``PUT``/``DELETE /internal/duplicate/referrers/...`` (same shapes): a neighbour's copy,
  applied without being passed on; ``build-index`` certificates only.

Every change a client makes is copied to the neighbours of ``buildindex.cluster`` by the
tags' :class:`~kraken.buildindex.duplicate.Duplicator` (the durable queue ``referrer_copies``:
retried with backoff until it lands, resumed after a restart), keyed by
``<subject>/<referrer>`` so the latest change of one referrer (added, then removed) is the one
that lands.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from kraken.buildindex.duplicate import Duplicator
from kraken.core.digest import Digest
from kraken.core.http import HTTPError, Response, Router, digest_param, query_arg, read_json
from kraken.core.httpclient import HTTPStatusError, base_url
from kraken.core.metrics import Metrics
from kraken.core.tls import TLSSettings, request_identity
from kraken.registry import referrers as rf
from kraken.registry.errors import RegistryError
from kraken.registry.names import check_name
from kraken.registry.referrerstore import ReferrerStore, TooManyReferrers

SUBJECT = "/referrers/{repo:path}/subjects/{subject}"
COPY = "/internal/duplicate" + SUBJECT
REMOVED = ""  # the copy of a removal carries no descriptor


def _repo(raw: str) -> str:
    repo = unquote(raw)
    try:
        return check_name(repo)
    except RegistryError:
        raise HTTPError(400, "NAME_INVALID", f"invalid repository name {repo[:200]!r}") from None


def _from_neighbour(request: Request) -> None:
    peer = request_identity(request)
    if peer is None or peer.role != "build-index":
        raise HTTPError(403, "FORBIDDEN", "only build-index peers may send copies")


class HTTPReferrerSender:
    """The Duplicator's send for referrers: ``key`` is ``<subject>/<referrer>``, ``payload`` the
    descriptor's JSON (or empty for a removal); anything but ``200`` (``404`` for a removal) fails."""

    def __init__(self, http: HTTPClient, tls: TLSSettings | None) -> None:
        self.http = http
        self.tls = tls

    def __call__(self, neighbour: str, repo: str, key: str, payload: str) -> Deferred[None]:
        subject, _, referrer = key.partition("/")
        url = f"{base_url(neighbour, self.tls)}/internal/duplicate/referrers/{quote(repo)}/subjects/{subject}"
        if payload == REMOVED:
            url += f"/manifests/{referrer}"
            sent: Deferred[Any] = self.http.delete(url)
            ok: tuple[int, ...] = (200, 404)
        else:
            json_type = Headers({"Content-Type": ["application/json"]})
            sent = self.http.put(url, data=payload.encode(), headers=json_type)
            ok = (200,)

        def check(response: Any) -> Deferred[None]:
            def read(body: bytes) -> None:
                if response.code not in ok:
                    raise HTTPStatusError("PUT" if payload else "DELETE", url, response.code, body)

            body: Deferred[bytes] = response.content()
            return body.addCallback(read)

        return sent.addCallback(check)


class ReferrersAPI:
    def __init__(self, store: ReferrerStore, metrics: Metrics, copies: Duplicator | None = None) -> None:
        self.store = store
        self.copies = copies
        self.updates = metrics.counter("referrer_updates", "referrers index changes", ["outcome"])

    def register(self, router: Router) -> None:
        router.route("PUT", SUBJECT, self.put)
        router.route("GET", SUBJECT, self.get)
        router.route("DELETE", SUBJECT + "/manifests/{digest}", self.delete)
        router.route("PUT", COPY, self.put_copy)
        router.route("DELETE", COPY + "/manifests/{digest}", self.delete_copy)

    def _add(self, request: Request, repo: str, subject: str) -> tuple[str, Digest, dict[str, Any]]:
        name, target = _repo(repo), digest_param(subject)
        entry = read_json(request, rf.MAX_DESCRIPTOR)
        try:
            self.store.add(name, target, entry)
        except TooManyReferrers as e:
            self.updates.labels("refused").inc()
            raise HTTPError(403, "TOO_MANY_REFERRERS", str(e)) from None
        except ValueError as e:
            self.updates.labels("invalid").inc()
            raise HTTPError(400, "DESCRIPTOR_INVALID", str(e)) from None
        return name, target, entry

    def put(self, request: Request, repo: str, subject: str) -> Any:
        name, target, entry = self._add(request, repo, subject)
        self.updates.labels("added").inc()
        if self.copies is not None:
            payload = json.dumps(entry, separators=(",", ":"), sort_keys=True)
            self.copies.tag_stored(name, f"{target}/{entry['digest']}", payload)
        return {"subject": str(target), "digest": entry["digest"]}

    def put_copy(self, request: Request, repo: str, subject: str) -> Any:
        _from_neighbour(request)
        _, target, entry = self._add(request, repo, subject)
        self.updates.labels("copy_added").inc()
        return {"subject": str(target), "digest": entry["digest"]}

    def get(self, request: Request, repo: str, subject: str) -> Any:
        name, target = _repo(repo), digest_param(subject)
        artifact_type = query_arg(request, "artifactType") or None
        last = query_arg(request, "last") or None
        page, following = self.store.page(name, target, artifact_type, last)
        return {"referrers": page, "next": following}

    def _remove(self, repo: str, subject: str, digest: str) -> tuple[str, Digest, Digest, bool]:
        name, target, referrer = _repo(repo), digest_param(subject), digest_param(digest)
        return name, target, referrer, self.store.remove(name, target, referrer)

    def forget(self, name: str, target: Digest, referrer: Digest) -> bool:
        """Remove one referrer here and at the neighbours; whether it was recorded here."""
        removed = self.store.remove(name, target, referrer)
        if self.copies is not None:  # also when absent here: a neighbour may hold a copy in flight
            self.copies.tag_stored(name, f"{target}/{referrer}", REMOVED)
        return removed

    # garbage collection's view of the index (kraken.buildindex.gc.ReferrerView)
    def subjects(self) -> list[tuple[str, Digest]]:
        return self.store.subjects()

    def referrers(self, name: str, target: Digest) -> list[Digest]:
        return [Digest.parse(entry["digest"]) for entry in self.store.entries(name, target)]

    def recorded_at(self, name: str, target: Digest, referrer: Digest) -> float | None:
        return self.store.recorded_at(name, target, referrer)

    def delete(self, request: Request, repo: str, subject: str, digest: str) -> Any:
        name, target, referrer = _repo(repo), digest_param(subject), digest_param(digest)
        removed = self.forget(name, target, referrer)
        if not removed:
            raise HTTPError(404, "REFERRER_UNKNOWN", f"{referrer} is no referrer of {target} in {name}")
        self.updates.labels("removed").inc()
        return Response(200, {"subject": str(target), "digest": str(referrer)})

    def delete_copy(self, request: Request, repo: str, subject: str, digest: str) -> Any:
        _from_neighbour(request)
        _, target, referrer, removed = self._remove(repo, subject, digest)
        if not removed:
            raise HTTPError(404, "REFERRER_UNKNOWN", f"{referrer} is no referrer of {target}")
        self.updates.labels("copy_removed").inc()
        return Response(200, {"subject": str(target), "digest": str(referrer)})
