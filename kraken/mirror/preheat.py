"""The proxy's preheat webhook and prefetch endpoints (Uber kraken's, and what Harbor calls).

- ``POST /registry/notifications``: a docker-registry notification envelope (or Harbor's Kraken
  preheat provider's, whose keys are capitalised: keys match case-insensitively). For each
  ``push`` of a manifest the origins fetch the manifest and every blob it references (one level
  into an index); a tag, when the event names one, is then looked up through the build-index,
  which keeps it (for a mirrored upstream: resolves and keeps it). ``200`` at once; the work
  goes on in the background, at most ``MAX_INFLIGHT`` images at a time (``503`` beyond, which a
  docker-registry retries).
- ``POST /proxy/v1/registry/prefetch`` and ``/proxy/v2/registry/prefetch``: body
  ``{"tag": "<host>/<repo>:<tag>", "trace_id": "..."}``; the tag is resolved, the manifest read,
  blobs outside ``[min_size, max_size]`` skipped, and the origins asked to fetch the rest: v1
  answers once the blob list is known and prefetches in the background, v2 answers after every
  origin accepted its prefetch. Bodies: ``{"tag", "prefetched": true, "status": "success",
  "message", "trace_id"}``, errors ``{"error", "prefetched": false, "status": "failure",
  "message", "trace_id"}`` with ``400`` (bad request), ``404`` (unknown tag or manifest) or
  ``500``/``503`` (lookups failing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.web.server import Request

from kraken.backends.base import BlobNotFound
from kraken.core.digest import Digest
from kraken.core.http import HTTPError, Response, Router, read_json
from kraken.core.metrics import Metrics
from kraken.mirror.config import Upstream, mirrored_name
from kraken.mirror.warm import MANIFEST_RETRIES, Blob, NotAManifest, Warmer
from kraken.registry.accounts import ANONYMOUS
from kraken.registry.auth import Authenticator
from kraken.registry.errors import RegistryError
from kraken.registry.names import check_name, check_tag

log = Logger(namespace="kraken.mirror.preheat")

MANIFEST_TYPES = frozenset({
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
})
MAX_EVENTS = 1000  # per envelope
MAX_INFLIGHT = 256  # images being preheated at once
DEFAULT_MAX_BLOB_SIZE = 50 * 1024**3


class Tags(Protocol):
    def get(self, repo: str, tag: str) -> Deferred[str | None]: ...


def _field(obj: Any, name: str) -> Any:
    """*obj*[*name*] matching the key case-insensitively (Go's encoding/json does; Harbor relies on it)."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


@dataclass(frozen=True)
class PushEvent:
    repository: str
    digest: str
    tag: str | None
    host: str | None  # registry host of the event's target URL


def push_events(envelope: Any) -> list[PushEvent]:
    """The manifest pushes of a notification envelope; others (pulls, blobs, deletes) are skipped."""
    events = _field(envelope, "events")
    if not isinstance(events, list):
        raise HTTPError(400, "BAD_ENVELOPE", "expected a notification envelope {\"events\": [...]}")
    if len(events) > MAX_EVENTS:
        raise HTTPError(413, "TOO_MANY_EVENTS", f"at most {MAX_EVENTS} events per envelope")
    out = []
    for event in events:
        target = _field(event, "target")
        if _field(event, "action") != "push" or _field(target, "mediaType") not in MANIFEST_TYPES:
            continue
        repo, digest, tag, url = (_field(target, k) for k in ("repository", "digest", "tag", "url"))
        try:
            check_name(repo if isinstance(repo, str) else "")
            Digest.parse(digest if isinstance(digest, str) else "")
            if tag not in (None, ""):
                check_tag(tag if isinstance(tag, str) else "")
        except (RegistryError, ValueError):
            log.warn("skipping a push event without a valid repository, digest or tag: {target!r}",
                     target=str(target)[:300])
            continue
        host = urlsplit(url).netloc or None if isinstance(url, str) else None
        out.append(PushEvent(repo, digest, tag or None, host))
    return out


def split_prefetch_tag(text: Any) -> tuple[str | None, str, str]:
    """``<host>/<repo>:<tag>`` -> (host, repo, tag); ``HTTPError(400)`` when it is not that."""
    if not isinstance(text, str) or not text:
        raise HTTPError(400, "BAD_TAG", 'expected "tag": "<host>/<repository>:<tag>"')
    host, sep, rest = text.partition("/")
    repo, colon, tag = rest.rpartition(":")
    if not sep or not colon or "/" in tag:
        expected = "expected <host>/<repository>:<tag>"
        raise HTTPError(400, "BAD_TAG", f"invalid tag format {text[:200]!r}: {expected}")
    try:
        check_name(repo)
        check_tag(tag)
    except RegistryError as e:
        raise HTTPError(400, "BAD_TAG", f"invalid tag format {text[:200]!r}: {e.message}") from None
    return host, repo, tag


class PreheatAPI:
    def __init__(
        self,
        warmer: Warmer | None,
        tags: Tags,
        mirrors: dict[str, Upstream],
        metrics: Metrics,
        min_size: int = 0,
        max_size: int = DEFAULT_MAX_BLOB_SIZE,
    ) -> None:
        self.warmer = warmer
        self.tags = tags
        self.mirrors = mirrors
        self.min_size = min_size
        self.max_size = max_size
        self.inflight = 0
        self.m_events = metrics.counter("preheat_events", "manifest push events received", ["outcome"])
        self.m_blobs = metrics.counter("prefetch_blobs", "blobs the origins were asked to fetch", ["outcome"])

    def register(self, router: Router, auth: Authenticator | None = None) -> None:
        """The preheat and prefetch routes; with *auth*, only a caller who logged in (a password,
        a token or a client certificate) may make the origins fetch."""
        routes: list[tuple[str, Callable[[Request], Any]]] = [
            ("/registry/notifications", self.notifications),
            ("/proxy/v1/registry/prefetch", lambda r: self.prefetch(r, wait=False)),
            ("/proxy/v2/registry/prefetch", lambda r: self.prefetch(r, wait=True)),
        ]
        for path, handler in routes:
            router.route("POST", path, handler if auth is None else _logged_in(auth, handler))

    def _namespace(self, host: str | None, repo: str) -> str:
        if host is not None and host in self.mirrors:
            return mirrored_name(self.mirrors, host, repo)
        return repo

    def _need_warmer(self) -> Warmer:
        if self.warmer is None:
            raise HTTPError(503, "NO_ORIGINS", "this proxy has no origins (proxy.origins) to warm")
        return self.warmer

    # -- preheat ---------------------------------------------------------------------------------

    def notifications(self, request: Request) -> Any:
        events = push_events(read_json(request))
        warmer = self._need_warmer()
        if self.inflight + len(events) > MAX_INFLIGHT:
            self.m_events.labels("refused").inc(len(events))
            raise HTTPError(503, "BUSY", f"{self.inflight} images are being preheated; retry later",
                            {"Retry-After": "5"})
        for event in events:
            self.inflight += 1
            self.m_events.labels("accepted").inc()
            self._preheat(warmer, event).addBoth(self._preheated)
        return {"accepted": len(events)}

    def _preheated(self, result: Any) -> None:
        self.inflight -= 1
        if hasattr(result, "getErrorMessage"):
            log.warn("preheat failed: {error}", error=result.getErrorMessage())

    @inlineCallbacks
    def _preheat(self, warmer: Warmer, event: PushEvent) -> Any:
        namespace = self._namespace(event.host, event.repository)
        blobs = yield warmer.image_blobs(namespace, event.digest, MANIFEST_RETRIES)
        triggered, failures = yield warmer.prefetch_all(namespace, blobs)
        self.m_blobs.labels("triggered").inc(triggered)
        self.m_blobs.labels("failed").inc(len(failures))
        if event.tag is not None:
            yield self.tags.get(namespace, event.tag)  # the build-index keeps (or resolves) it now
        log.info("preheated {ns}@{digest}: {n} blobs", ns=namespace, digest=event.digest, n=triggered)

    # -- prefetch --------------------------------------------------------------------------------

    @inlineCallbacks
    def prefetch(self, request: Request, wait: bool) -> Any:
        trace_id: Any = None
        given: Any = None
        try:
            body = read_json(request)
            trace_id = _field(body, "trace_id")
            given = _field(body, "tag")
            host, repo, tag = split_prefetch_tag(given)
            namespace = self._namespace(host, repo)
            warmer = self._need_warmer()
            digest = yield self._resolve(namespace, tag)
            blobs = yield self._image(warmer, namespace, digest)
            chosen = [b for b in blobs if self.min_size <= b.size <= self.max_size]
            skipped = len(blobs) - len(chosen)
            self.m_blobs.labels("skipped_size").inc(skipped)
            if wait:
                triggered, failures = yield warmer.prefetch_all(namespace, chosen)
                self.m_blobs.labels("triggered").inc(triggered)
                if failures:
                    self.m_blobs.labels("failed").inc(len(failures))
                    raise HTTPError(500, "PREFETCH_FAILED", f"{len(failures)} of {len(chosen)} prefetches "
                                    f"failed: {'; '.join(failures)[:500]}")
                message = f"prefetch triggered on the origins for {triggered} blobs of {digest}"
            else:
                self._background(warmer, namespace, chosen)
                message = f"prefetching {len(chosen)} blobs of {digest} in the background"
            if skipped:
                message += f" ({skipped} outside the size limits skipped)"
        except HTTPError as e:
            return Response(e.status, {"error": e.code, "prefetched": False, "status": "failure",
                                       "message": e.message, "trace_id": trace_id})
        return {"tag": given, "prefetched": True, "status": "success", "message": message,
                "trace_id": trace_id}

    def _background(self, warmer: Warmer, namespace: str, blobs: list[Blob]) -> None:
        def done(result: Any) -> None:
            if isinstance(result, tuple):
                self.m_blobs.labels("triggered").inc(result[0])
                self.m_blobs.labels("failed").inc(len(result[1]))

        warmer.prefetch_all(namespace, blobs).addCallback(done)

    @inlineCallbacks
    def _resolve(self, namespace: str, tag: str) -> Any:
        try:
            digest = yield self.tags.get(namespace, tag)
        except RegistryError as e:
            raise HTTPError(e.status if e.status >= 500 else 500, "TAG_LOOKUP_FAILED", e.message) from None
        except Exception as e:
            raise HTTPError(500, "TAG_LOOKUP_FAILED", f"tag lookup failed: {str(e)[:300]}") from None
        if digest is None:
            raise HTTPError(404, "TAG_UNKNOWN", f"no tag {namespace}:{tag}")
        return digest

    @inlineCallbacks
    def _image(self, warmer: Warmer, namespace: str, digest: str) -> Any:
        try:
            blobs = yield warmer.image_blobs(namespace, digest)
        except BlobNotFound:
            raise HTTPError(404, "MANIFEST_UNKNOWN", f"the origins find no manifest {namespace}@{digest}") \
                from None
        except NotAManifest as e:
            raise HTTPError(500, "MANIFEST_INVALID", f"{namespace}@{digest} is not a manifest: {e}") from None
        except Exception as e:
            raise HTTPError(500, "ORIGINS_FAILED", f"reading {namespace}@{digest}: {str(e)[:300]}") from None
        return blobs


def _logged_in(auth: Authenticator, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    def refused(error: RegistryError) -> HTTPError:
        return HTTPError(error.status, error.code, error.message, error.headers)

    @inlineCallbacks
    def guarded(request: Request) -> Any:
        try:
            identity = yield auth.identify(request)
        except RegistryError as e:
            raise refused(e) from None
        if identity.principal == ANONYMOUS:
            raise refused(auth.unauthorized("log in to preheat or prefetch", request=request))
        result = yield handler(request)
        return result

    return guarded


def preheat_router(api: PreheatAPI, auth: Authenticator | None = None) -> Router:
    router = Router()
    api.register(router, auth)
    return router

