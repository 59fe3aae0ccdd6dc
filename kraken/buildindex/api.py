r"""The build-index HTTP API (JSON errors from kraken.core.http).

- ``PUT /tags/{repo:tag}/digest/{digest}``: store, after checking the manifest and its blobs
  exist on the origins. ``repo:tag`` may be percent-encoded (``test%2Fhello:v1``) or not.
- ``GET``/``HEAD /tags/{repo:tag}``: ``200`` with the digest as plain text, or ``404``.
- ``DELETE /tags/{repo:tag}[?digest=D]``: remove (only while it points at D); ``200`` or ``404``.
- ``POST /gc[?dry_run=true&grace=S]``: garbage collection over the origins; a report.
- ``POST /retention[?dry_run=true]``: apply the retention rules now; the ``repo:tag``\ s removed.
- ``GET /list/{prefix}?limit=N&offset=TOKEN``: ``repo:tag`` entries in order, paginated.
- ``GET /repositories/{repo}/tags``: the tags of one repository.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

from kraken.buildindex.gc import Collector, GCError
from kraken.buildindex.tags import MissingDependency, TagService
from kraken.core.digest import Digest
from kraken.core.http import HTTPError, Response, Router, query_arg, query_int
from kraken.core.metrics import Metrics
from kraken.core.reactor import default_reactor
from kraken.core.tls import request_identity
from kraken.registry.errors import RegistryError
from kraken.registry.names import check_name, is_tag
from kraken.registry.policy import TagImmutable, parse_duration

MAX_LIMIT = 10000


def split_tag(raw: str) -> tuple[str, str]:
    text = unquote(raw)
    repo, sep, tag = text.rpartition(":")
    if not sep or "/" in tag or not is_tag(tag):
        raise HTTPError(400, "TAG_INVALID", f"expected <repository>:<tag>, got {text[:200]!r}")
    try:
        check_name(repo)
    except RegistryError:
        raise HTTPError(400, "NAME_INVALID", f"invalid repository name {repo[:200]!r}") from None
    return repo, tag


def _refuse_agents(request: Request) -> None:
    """Agents read tags; removing them is for proxies, operators and other build-indexes."""
    peer = request_identity(request)
    if peer is not None and peer.role == "agent":
        raise HTTPError(403, "FORBIDDEN", "agents may not remove tags")


class BuildIndexAPI:
    def __init__(self, tags: TagService, metrics: Metrics, origin: str | None = None,
                 clock: IReactorTime | None = None, collector: Collector | None = None,
                 gc_grace: float = 3600.0) -> None:
        self.tags = tags
        self.collector = collector
        self.gc_grace = gc_grace
        self.clock: IReactorTime = clock or default_reactor()
        self.expired = metrics.counter("tags_expired", "tags removed by retention rules")
        self.origin_address = origin
        self.puts = metrics.counter("tag_puts", "tags stored", ["outcome"])
        self.deletes = metrics.counter("tag_deletes", "tags removed")
        self.router = Router()
        self.router.route("PUT", "/tags/{tag:path}/digest/{digest}", self.put_tag)
        self.router.route("PUT", "/internal/duplicate/tags/{tag:path}/digest/{digest}", self.put_duplicate)
        self.router.route("DELETE", "/internal/duplicate/tags/{tag:path}", self.delete_duplicate)
        self.router.route("GET", "/tags/{tag:path}", self.get_tag)
        self.router.route("DELETE", "/tags/{tag:path}", self.delete_tag)
        self.router.route("GET", "/list/{prefix:path}", self.list)
        self.router.route("GET", "/list/", self.list)
        self.router.route("GET", "/repositories/{repo:path}/tags", self.repo_tags)
        self.router.route("GET", "/origin", self.origin)
        self.router.route("POST", "/retention", self.retention)
        self.router.route("POST", "/gc", self.collect_garbage)

    @inlineCallbacks
    def put_tag(self, request: Request, tag: str, digest: str) -> Any:
        repo, name = split_tag(tag)
        try:
            parsed = str(Digest.parse(unquote(digest)))
        except ValueError as e:
            raise HTTPError(400, "DIGEST_INVALID", str(e)) from None
        try:
            yield self.tags.put(repo, name, parsed)
        except TagImmutable as e:
            self.puts.labels("immutable").inc()
            raise HTTPError(403, "TAG_IMMUTABLE", str(e), detail={"digest": e.digest}) from None
        except MissingDependency as e:
            self.puts.labels("missing_dependency").inc()
            raise HTTPError(424, "MISSING_DEPENDENCY", str(e), detail={"missing": e.missing}) from None
        except ValueError as e:
            self.puts.labels("invalid").inc()
            raise HTTPError(400, "MANIFEST_INVALID", str(e)) from None
        self.puts.labels("stored").inc()
        return Response(200, {"tag": f"{repo}:{name}", "digest": parsed})

    @inlineCallbacks
    def put_duplicate(self, request: Request, tag: str, digest: str) -> Any:
        peer = request_identity(request)
        if peer is None or peer.role != "build-index":
            raise HTTPError(403, "FORBIDDEN", "only build-index peers may send duplicates")
        repo, name = split_tag(tag)
        try:
            parsed = str(Digest.parse(unquote(digest)))
        except ValueError as e:
            raise HTTPError(400, "DIGEST_INVALID", str(e)) from None
        yield self.tags.put(repo, name, parsed, duplicate=True)
        self.puts.labels("duplicate").inc()
        return Response(200, {"tag": f"{repo}:{name}", "digest": parsed})

    @inlineCallbacks
    def delete_duplicate(self, request: Request, tag: str) -> Any:
        peer = request_identity(request)
        if peer is None or peer.role != "build-index":
            raise HTTPError(403, "FORBIDDEN", "only build-index peers may send duplicates")
        repo, name = split_tag(tag)
        digest = yield self.tags.delete(repo, name, duplicate=True)
        if digest is None:
            raise HTTPError(404, "TAG_UNKNOWN", f"no tag {repo}:{name}")
        return Response(200, {"tag": f"{repo}:{name}", "digest": digest})

    @inlineCallbacks
    def get_tag(self, request: Request, tag: str) -> Any:
        repo, name = split_tag(tag)
        digest = yield self.tags.get(repo, name)
        if digest is None:
            raise HTTPError(404, "TAG_UNKNOWN", f"no tag {repo}:{name}")
        return Response(200, digest.encode(), {"Content-Type": "text/plain"})

    @inlineCallbacks
    def delete_tag(self, request: Request, tag: str) -> Any:
        """Remove a tag; with ``?digest=D`` only while it still points at D (else ``404``)."""
        _refuse_agents(request)
        repo, name = split_tag(tag)
        expected = query_arg(request, "digest", None)
        if expected is not None:
            try:
                expected = str(Digest.parse(expected))
            except ValueError as e:
                raise HTTPError(400, "DIGEST_INVALID", str(e)) from None
        try:
            digest = yield self.tags.delete(repo, name, expected)
        except TagImmutable as e:
            raise HTTPError(403, "TAG_IMMUTABLE", str(e), detail={"digest": e.digest}) from None
        if digest is None:
            at = f" at {expected}" if expected else ""
            raise HTTPError(404, "TAG_UNKNOWN", f"no tag {repo}:{name}{at}")
        self.deletes.inc()
        return Response(200, {"tag": f"{repo}:{name}", "digest": digest})

    @inlineCallbacks
    def list(self, request: Request, prefix: str = "") -> Any:
        prefix = unquote(prefix)
        limit = query_int(request, "limit", MAX_LIMIT, minimum=1)
        assert limit is not None
        limit = min(limit, MAX_LIMIT)
        offset = query_arg(request, "offset", "") or ""
        entries = yield self.tags.list(prefix)
        if offset:
            entries = [e for e in entries if e > offset]
        page = entries[:limit]
        next_offset = page[-1] if len(entries) > limit else None
        links = {"self": request.uri.decode("utf-8", "replace"), "next": None}
        if next_offset is not None:
            token = quote(next_offset, safe="")
            links["next"] = f"/list/{quote(prefix, safe='')}?limit={limit}&offset={token}"
        return {"links": links, "size": len(page), "result": page, "next_offset": next_offset}

    @inlineCallbacks
    def retention(self, request: Request) -> Any:
        """Apply the retention rules now; ``?dry_run=true`` only lists what would go."""
        _refuse_agents(request)
        dry_run = (query_arg(request, "dry_run", "false") or "").lower() in ("1", "true", "yes")
        expired = yield self.tags.apply_retention(self.clock.seconds(), dry_run)
        if not dry_run:
            self.expired.inc(len(expired))
        return {"dry_run": dry_run, "expired": expired}

    @inlineCallbacks
    def collect_garbage(self, request: Request) -> Any:
        """Mark from every tag, have every origin sweep the rest; ``?dry_run=true``, ``?grace=S``."""
        _refuse_agents(request)
        if self.collector is None:
            raise HTTPError(404, "NO_ORIGINS", "garbage collection needs buildindex.origins")
        dry_run = (query_arg(request, "dry_run", "false") or "").lower() in ("1", "true", "yes")
        grace = self.gc_grace
        text = query_arg(request, "grace")
        if text is not None:
            try:
                grace = parse_duration(text, "grace")
            except ValueError as e:
                raise HTTPError(400, "BAD_REQUEST", str(e)) from None
        try:
            report = yield self.collector.run(grace, dry_run)
        except GCError as e:
            raise HTTPError(503, "GC_FAILED", str(e)) from None
        return report

    def origin(self, request: Request) -> Any:
        if not self.origin_address:
            raise HTTPError(404, "NO_ORIGIN", "this build-index knows no origin cluster")
        return Response(200, self.origin_address.encode(), {"Content-Type": "text/plain"})

    @inlineCallbacks
    def repo_tags(self, request: Request, repo: str) -> Any:
        repo = unquote(repo)
        entries = yield self.tags.list(f"{repo}:")
        return {"size": len(entries), "result": [e[len(repo) + 1 :] for e in entries]}
