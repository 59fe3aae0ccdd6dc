"""The ``/v2/`` HTTP resource: routing, the error envelope, manifests, blobs, uploads, listings.

Request bodies of uploads never pass through memory or a spool file:
:class:`kraken.core.streaming.StreamingRequest` asks :meth:`RegistryResource.body_sink` for a
sink when the headers arrive, and chunks are hashed and written to the upload session as they come.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from kraken.core.digest import Digest
from kraken.core.http import Response
from kraken.core.httplimits import client_name, log_refusal
from kraken.core.metrics import Metrics
from kraken.core.reactor import IServerReactor
from kraken.core.sendfile import SendfileSender, send_body
from kraken.core.streaming import BodyRefused, BodySink, BufferedBody
from kraken.registry import manifests as mf
from kraken.registry import referrers as rf
from kraken.registry.auth import TOKEN_PATH, Authenticator
from kraken.registry.errors import RegistryError, blob_unknown, manifest_unknown
from kraken.registry.names import check_name, check_tag, is_digest, parse_digest
from kraken.registry.paths import METHODS, WRITES, Route, parse_v2_path
from kraken.registry.ranges import parse_chunk_range, parse_get_range, progress_header
from kraken.registry.storage import RegistryStorage
from kraken.registry.uploads import ChunkSink, UploadManager, UploadSession

log = Logger(namespace="kraken.registry.api")

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
MAX_PAGE = 10000
MAX_TAG_PARAMS = 100
TAG_HEADER = "OCI-Tag"
KNOWN_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})


def _arg(request: Request, name: str) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def _tag_params(request: Request) -> list[str]:
    """The ``?tag=`` parameters of a manifest put by digest (distribution spec: tags pushed with it)."""
    raw = request.args.get(b"tag", [])
    if len(raw) > MAX_TAG_PARAMS:
        raise RegistryError("MANIFEST_INVALID", f"at most {MAX_TAG_PARAMS} tag parameters per request",
                            status=414)
    return list(dict.fromkeys(check_tag(t.decode("utf-8", "replace")) for t in raw))


def _header(request: Request, name: str) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _client(request: Request) -> str:
    """Who sent *request*, as upload limits count clients (certificate name, else address)."""
    return client_name(request.channel.transport if request.channel is not None else None)


def _page(request: Request, items: list[str], link_path: str) -> tuple[list[str], dict[str, str]]:
    """Apply ``n``/``last``; return the page and a ``Link`` header when more follow."""
    n_text, last = _arg(request, "n"), _arg(request, "last")
    items = sorted(items)
    if last:
        items = [i for i in items if i > last]
    if n_text is None:
        return items, {}
    try:
        n = int(n_text)
    except ValueError:
        n = -1
    if n < 0:
        raise RegistryError("PAGINATION_NUMBER_INVALID", f"n must be a non-negative integer, got {n_text!r}")
    n = min(n, MAX_PAGE)
    page = items[:n]
    headers = {}
    if n and len(items) > n:
        query = urlencode({"n": n, "last": page[-1]})
        headers["Link"] = f'<{link_path}?{query}>; rel="next"'
    return page, headers


class RegistryResource(Resource):
    """Serves the registry API over *storage*; *uploads* is ``None`` for a read-only registry."""

    isLeaf = True

    def __init__(
        self,
        storage: RegistryStorage,
        uploads: UploadManager | None,
        metrics: Metrics,
        read_only_hint: str = "this registry is read-only",
        allow_cidrs: Sequence[str] | None = None,
        reactor: IServerReactor | None = None,
        sendfile_workers: int = 4,
        referrers: rf.ReferrerIndex | None = None,
        name_for: Callable[[Request, str], str] | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        super().__init__()
        self.auth = auth
        self.name_for = name_for  # maps a client's repository name (a mirror's ?ns=) to ours
        self.storage = storage
        self.referrers = referrers
        self.uploads = uploads
        self.read_only_hint = read_only_hint
        self.sender = SendfileSender(reactor, sendfile_workers) if reactor and sendfile_workers > 0 else None
        # called (repository, digest) after a manifest is deleted by digest (its referrers entry
        # is already gone); each may return a Deferred, which the 202 waits for
        self.on_manifest_deleted: list[Callable[[str, Digest], object]] = []
        self.networks = [ipaddress.ip_network(c, strict=False) for c in allow_cidrs] if allow_cidrs else None
        self.requests = metrics.counter("registry_requests", "registry API requests", ["endpoint", "method",
                                                                                        "status"])
        self.blob_bytes = metrics.counter("registry_blob_bytes_sent", "blob bytes sent (before ranges)")
        self.sendfile_bodies = metrics.counter("registry_sendfile_bodies", "blob bodies sent with sendfile")
        self.upload_bytes = metrics.counter("registry_upload_bytes", "blob bytes received in uploads")
        self.limit_refusals = metrics.counter("registry_limit_refusals", "requests refused at their headers "
                                              "for a body over a size limit", ["limit"])

    # -- request body routing (called from StreamingRequest.gotLength) --------------------------

    def body_sink(self, request: Request, method: bytes, uri: bytes, length: int | None) -> BodySink | None:
        path, _, query = uri.partition(b"?")
        try:
            route = parse_v2_path(path.decode("utf-8"))
        except UnicodeDecodeError:
            route = None
        monolithic = method == b"POST" and b"digest=" in query and b"mount=" not in query
        uploading = self.uploads is not None and route is not None and route.name is not None and (
            (route.kind == "upload" and method in (b"PATCH", b"PUT") and route.ref)
            or (route.kind == "uploads" and monolithic)
        )
        if not uploading:
            if length is not None and length > mf.MAX_MANIFEST_SIZE:
                what = "manifest" if route is not None and route.kind == "manifest" else "request body"
                self._refuse_body(request, f"{what} over {mf.MAX_MANIFEST_SIZE} bytes", "manifest_size")
            return BufferedBody(mf.MAX_MANIFEST_SIZE)  # also bounds chunked bodies
        assert self.uploads is not None and route is not None and route.name is not None
        try:
            check_name(route.name)
        except RegistryError as e:
            return ChunkSink(self.uploads, None, e)
        if self.auth is not None and not self.auth.may_upload(request, route):
            # the body is discarded; the handler's check answers 401/403 (or, for a password not
            # checked yet, asks for the chunk again)
            retry = RegistryError("UNAUTHORIZED", "credentials were not verified before the body; "
                                  "send it again")
            return ChunkSink(self.uploads, None, retry)
        if route.kind == "upload":
            assert route.ref is not None
            session = self.uploads.sessions.get(route.ref)
            if session is not None and session.name == route.name and length is not None \
                    and session.size + length > self.uploads.max_size:
                self._refuse_body(request, f"blob larger than the limit of {self.uploads.max_size} bytes",
                                  "blob_size")
            if session is not None and session.name == route.name and not session.busy and method == b"PUT":
                self._hash_as_claimed(session, query)  # POST, then the whole body with the PUT
            sink = self.uploads.open_chunk(route.name, route.ref)
            header = request.requestHeaders.getRawHeaders(b"content-range")
            if sink.session is not None and header:
                try:
                    sink.expected = parse_chunk_range(header[0].decode("latin-1"), sink.session.size, length)
                except RegistryError as e:
                    sink.rollback()
                    return ChunkSink(self.uploads, None, e)
            return sink
        if length is not None and length > self.uploads.max_size:
            too_big = f"blob larger than the limit of {self.uploads.max_size} bytes"
            self._refuse_body(request, too_big, "blob_size")
        try:
            session = self.uploads.create(route.name, _client(request))
        except RegistryError as e:
            return ChunkSink(self.uploads, None, e)
        self._hash_as_claimed(session, query)
        sink = self.uploads.open_chunk(route.name, session.id)
        sink.owns_session = True
        return sink

    def _hash_as_claimed(self, session: UploadSession, query: bytes) -> None:
        """Hash an empty session's body with the algorithm of the request's ``?digest=``."""
        assert self.uploads is not None
        claimed = parse_qs(query.decode("latin-1")).get("digest", [""])[0]
        try:
            self.uploads.hash_with(session, Digest.parse(claimed).algo)
        except ValueError:
            pass  # the request is answered DIGEST_INVALID once its body is in

    def _refuse_body(self, request: Request, message: str, limit: str) -> None:
        """Answer ``413 SIZE_INVALID`` at once, before any body byte is read, and close."""
        self.limit_refusals.labels(limit).inc()
        log_refusal(limit, _client(request), message)
        error = RegistryError("SIZE_INVALID", message, status=413)
        raise BodyRefused(error.status, error.body())

    # -- dispatch ------------------------------------------------------------------------------

    def render(self, request: Request) -> Any:
        request.setHeader(API_VERSION[0], API_VERSION[1])
        endpoint = "other"
        try:
            if self.auth is not None and request.path == TOKEN_PATH:
                endpoint = "token"
                d = self._token(request)
            else:
                route = self._route(request)
                endpoint = route.kind
                if self.auth is not None:
                    method = request.method.decode("ascii")
                    d = self.auth.authorize(request, route, method).addCallback(
                        lambda _: self._handle(request, route))
                else:
                    d = maybeDeferred(self._handle, request, route)
        except RegistryError as e:
            d = Deferred()
            d.errback(Failure(e))
        method = request.method.decode("ascii", "replace")
        if method not in KNOWN_METHODS:
            method = "other"  # keeps the metric's label set bounded
        d.addCallbacks(lambda r: self._done(request, r), lambda f: self._failed(request, f))
        d.addBoth(lambda _: self.requests.labels(endpoint, method, str(request.code)).inc())
        request.notifyFinish().addErrback(lambda _: d.cancel())
        return NOT_DONE_YET

    def _token(self, request: Request) -> Deferred[Any]:
        assert self.auth is not None
        if request.method not in (b"GET", b"HEAD"):
            raise RegistryError("UNSUPPORTED", "the token endpoint answers GET",
                                headers={"Allow": "GET, HEAD"})
        return self.auth.token(request).addCallback(
            lambda body: Response(200, body, {"Cache-Control": "no-store"}))

    def _route(self, request: Request) -> Route:
        content = request.content
        if isinstance(content, BufferedBody) and content.overflowed:
            self.limit_refusals.labels("manifest_size").inc()
            raise RegistryError("SIZE_INVALID", f"request body over {content.limit} bytes", status=413)
        if self.networks is not None:
            host = request.getClientAddress()
            address = getattr(host, "host", None)
            try:
                allowed = address is not None and any(
                    ipaddress.ip_address(address) in net for net in self.networks
                )
            except ValueError:
                allowed = False
            if not allowed:
                raise RegistryError("DENIED", f"client address {address} is not allowed here")
        try:
            path = request.path.decode("utf-8")
        except UnicodeDecodeError:
            raise RegistryError("NAME_INVALID", "request path is not UTF-8") from None
        route = parse_v2_path(path)
        if route is None:
            raise RegistryError("NOT_FOUND", f"no registry endpoint at {path[:200]}", status=404)
        method = request.method.decode("ascii", "replace")
        if method not in METHODS[route.kind]:
            raise RegistryError(
                "UNSUPPORTED", f"{method} is not supported on this endpoint",
                headers={"Allow": ", ".join(METHODS[route.kind])},
            )
        if route.name is not None:
            check_name(route.name)
            if self.name_for is not None:
                route = Route(route.kind, self.name_for(request, route.name), route.ref)
        if (route.kind, method) in WRITES and self.uploads is None:
            raise RegistryError("UNSUPPORTED", self.read_only_hint)
        return route

    def _handle(self, request: Request, route: Route) -> Any:
        method = request.method.decode("ascii")
        if route.kind == "base":
            return Response(200, b"{}", {"Content-Type": "application/json"})
        handler: Callable[..., Any] = getattr(self, f"_{route.kind}_{method.lower()}", None) or getattr(
            self, f"_{route.kind}_get"
        )
        return ensureDeferred(handler(request, route))

    def _done(self, request: Request, result: Any) -> None:
        if result is NOT_DONE_YET or request.finished or request.channel is None:
            return
        if not isinstance(result, Response):
            result = Response(200, result)
        self._write(request, result.status, result.body, result.headers)

    def _failed(self, request: Request, failure: Failure) -> None:
        sink = request.content
        if isinstance(sink, ChunkSink):
            sink.abort()
        if request.finished or request.channel is None:
            return
        if isinstance(failure.value, RegistryError):
            error = failure.value
        else:
            log.failure("unhandled error in {method} {path}", failure, method=request.method,
                        path=request.path)
            error = RegistryError("UNKNOWN", "internal error; see the server log")
        headers = {"Content-Type": "application/json", **error.headers}
        self._write(request, error.status, error.body(), headers)

    def _write(self, request: Request, status: int, body: Any, headers: dict[str, str]) -> None:
        if not isinstance(body, bytes):
            body = json.dumps(body, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", **headers}
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name, str(value))
        if "Content-Length" not in headers:
            request.setHeader("Content-Length", str(len(body)))
        if request.method != b"HEAD" and body:
            request.write(body)
        request.finish()

    # -- manifests -----------------------------------------------------------------------------

    async def _resolve(self, name: str, reference: str) -> Digest:
        if is_digest(reference):
            return parse_digest(reference)
        check_tag(reference)
        digest = await self.storage.resolve_tag(name, reference)
        if digest is None:
            raise manifest_unknown(reference)
        try:
            return Digest.parse(digest)
        except ValueError:  # tag sources keep digests they checked; a damaged one names nothing
            raise manifest_unknown(reference) from None

    async def _read_manifest(self, name: str, digest: Digest, reference: str) -> tuple[bytes, mf.Manifest]:
        try:
            path = await self.storage.blob_path(name, digest)
        except RegistryError as e:
            if e.code == "BLOB_UNKNOWN":
                raise manifest_unknown(reference) from None
            raise
        with open(path, "rb") as f:
            body = f.read(mf.MAX_MANIFEST_SIZE + 1)
        try:
            return body, mf.parse_manifest(body)
        except RegistryError:
            raise manifest_unknown(reference) from None

    async def _manifest_get(self, request: Request, route: Route) -> Response:
        assert route.name is not None and route.ref is not None
        digest = await self._resolve(route.name, route.ref)
        body, manifest = await self._read_manifest(route.name, digest, route.ref)
        accepted = mf.parse_accept([h.decode("latin-1") for h in request.requestHeaders.getRawHeaders(
            b"accept", [])])
        if not mf.accepts(accepted, manifest.media_type):
            child = mf.pick_platform(manifest) if manifest.is_list else None
            if child is not None and not is_digest(route.ref):
                digest = Digest.parse(child)
                body, manifest = await self._read_manifest(route.name, digest, child)
            if not mf.accepts(accepted, manifest.media_type):
                raise RegistryError(
                    "MANIFEST_UNKNOWN",
                    f"the manifest is {manifest.media_type}, which the Accept header does not include",
                    detail={"reference": route.ref, "mediaType": manifest.media_type},
                )
        return Response(200, body, {
            "Content-Type": manifest.media_type,
            "Docker-Content-Digest": str(digest),
            "Etag": f'"{digest}"',
        })

    async def _manifest_put(self, request: Request, route: Route) -> Response:
        assert route.name is not None and route.ref is not None and self.uploads is not None
        content = request.content
        assert content is not None
        content.seek(0)
        body = content.read(mf.MAX_MANIFEST_SIZE + 1)
        digest = Digest.of_bytes(body)
        tags: list[str] = []
        if is_digest(route.ref):
            reference = parse_digest(route.ref)
            digest = Digest.of_bytes(body, reference.algo)  # kept under the algorithm the client named
            if reference != digest:
                raise RegistryError("DIGEST_INVALID", "the manifest does not match the digest in the URL",
                                    detail={"expected": route.ref, "actual": str(digest)})
            tags = _tag_params(request)
        else:
            tags = [check_tag(route.ref)]
        manifest = mf.parse_manifest(body, _header(request, "content-type"))
        for ref in (*manifest.blobs, *manifest.children):
            if await self.storage.blob_size(route.name, Digest.parse(ref)) is None:
                raise RegistryError("MANIFEST_BLOB_UNKNOWN", "manifest references an unknown blob",
                                    detail={"digest": ref})
        fd, tmp = tempfile.mkstemp(dir=self.uploads.directory, suffix=".manifest")
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        await self.storage.commit_blob(route.name, digest, Path(tmp))
        headers = {"Location": f"/v2/{route.name}/manifests/{digest}", "Docker-Content-Digest": str(digest)}
        if manifest.subject is not None and self.referrers is not None:
            entry = rf.descriptor(manifest, digest, len(body))
            await self.referrers.add(route.name, Digest.parse(manifest.subject), entry)
            headers[rf.SUBJECT_HEADER] = manifest.subject
        for tag in tags:
            await self.storage.put_tag(route.name, tag, digest)
        if is_digest(route.ref) and tags:
            headers[TAG_HEADER] = ", ".join(tags)
        return Response(201, b"", headers)

    def forget_referrer(self, name: str, digest: Digest, body: bytes) -> Deferred[Any]:
        """Drop the referrers entry of manifest *digest* of *name* (bytes *body*), if it has one.

        A manifest delete calls this before removing the manifest.
        """
        if self.referrers is None:
            return succeed(None)
        return rf.forget_manifest(self.referrers, name, digest, body)

    async def _manifest_delete(self, request: Request, route: Route) -> Response:
        """By digest: the manifest and every tag of the repository on it; by tag: the tag alone."""
        assert route.name is not None and route.ref is not None
        if not is_digest(route.ref):
            if not await self.storage.delete_tag(route.name, check_tag(route.ref)):
                raise manifest_unknown(route.ref)
            return Response(202, b"", {})
        digest = parse_digest(route.ref)
        body, _ = await self._read_manifest(route.name, digest, route.ref)  # MANIFEST_UNKNOWN: 404
        await self.forget_referrer(route.name, digest, body)
        if not await self.storage.delete_manifest(route.name, digest):
            raise manifest_unknown(route.ref)
        for forget in self.on_manifest_deleted:
            await maybeDeferred(forget, route.name, digest)
        return Response(202, b"", {})

    # -- referrers (OCI 1.1) ---------------------------------------------------------------------

    async def _referrers_get(self, request: Request, route: Route) -> Response:
        assert route.name is not None
        subject = parse_digest(route.ref)
        if self.referrers is None:
            raise RegistryError("UNSUPPORTED", "no referrers index here (registry.build_index is not set)",
                                status=404)
        artifact_type = _arg(request, "artifactType") or None
        last = _arg(request, "last") or None
        if last is not None:
            last = str(parse_digest(last))
        page, following = await self.referrers.page(route.name, subject, artifact_type, last)
        headers = {"Content-Type": mf.OCI_INDEX}
        if artifact_type is not None:
            headers[rf.FILTER_HEADER] = "artifactType"
        if following is not None:
            query = urlencode({k: v for k, v in (("artifactType", artifact_type), ("last", following)) if v})
            headers["Link"] = f'</v2/{quote(route.name)}/referrers/{subject}?{query}>; rel="next"'
        return Response(200, rf.index_document(page), headers)

    # -- blobs ---------------------------------------------------------------------------------

    async def _blob_head(self, request: Request, route: Route) -> Response:
        assert route.name is not None
        digest = parse_digest(route.ref)
        size = await self.storage.blob_size(route.name, digest)
        if size is None:
            raise blob_unknown(str(digest))
        return Response(200, b"", {
            "Content-Length": str(size),
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": str(digest),
            "Accept-Ranges": "bytes",
            "Etag": f'"{digest}"',
        })

    async def _blob_get(self, request: Request, route: Route) -> Any:
        assert route.name is not None
        digest = parse_digest(route.ref)
        path = await self.storage.blob_path(route.name, digest)
        f = open(path, "rb")
        try:
            size = os.fstat(f.fileno()).st_size
            wanted = parse_get_range(_header(request, "range"), size)
        except BaseException:
            f.close()
            raise
        request.setHeader("Content-Type", "application/octet-stream")
        request.setHeader("Docker-Content-Digest", str(digest))
        request.setHeader("Accept-Ranges", "bytes")
        request.setHeader("Etag", f'"{digest}"')
        start, length = wanted if wanted is not None else (0, size)
        if wanted is not None:
            request.setResponseCode(206)
            request.setHeader("Content-Range", f"bytes {start}-{start + length - 1}/{size}")
        request.setHeader("Content-Length", str(length))
        self.blob_bytes.inc(length)
        if send_body(request, f, start, length, self.sender) == "sendfile":
            self.sendfile_bodies.inc()
        return NOT_DONE_YET

    async def _blob_delete(self, request: Request, route: Route) -> Response:
        assert route.name is not None
        digest = parse_digest(route.ref)
        if not await self.storage.delete_blob(route.name, digest):
            raise blob_unknown(str(digest))
        return Response(202, b"", {})

    # -- uploads -------------------------------------------------------------------------------

    def _session_headers(self, name: str, sid: str, size: int) -> dict[str, str]:
        return {
            "Location": f"/v2/{name}/blobs/uploads/{sid}",
            "Range": progress_header(size),
            "Docker-Upload-UUID": sid,
        }

    async def _uploads_post(self, request: Request, route: Route) -> Response:
        assert route.name is not None and self.uploads is not None
        name = route.name
        mount = _arg(request, "mount")
        if mount is not None:
            digest = parse_digest(mount)
            source = _arg(request, "from")
            if source is not None:
                check_name(source)
            readable = self.auth is None or self.auth.permits(request, source or name, "pull")
            if readable and await self.storage.mount_blob(source, name, digest):
                return Response(201, b"", {"Location": f"/v2/{name}/blobs/{digest}",
                                           "Docker-Content-Digest": str(digest)})
        if isinstance(request.content, ChunkSink):
            return await self._commit(request, name, self._sink(request))
        session = self.uploads.create(name, _client(request), persistent=True)
        try:
            await self.uploads.sync_new(session)
        except OSError:
            self.uploads.discard(session)
            raise RegistryError("UNKNOWN", "could not store the upload session", status=500) from None
        return Response(202, b"", self._session_headers(name, session.id, 0))

    def _sink(self, request: Request) -> ChunkSink:
        sink = request.content
        if not isinstance(sink, ChunkSink):
            raise RegistryError("BLOB_UPLOAD_INVALID", "upload body was not received")
        if sink.error is not None:
            raise sink.error
        expected = sink.expected
        if expected is not None and sink.received != expected:
            message = f"Content-Range announced {expected} bytes, got {sink.received}"
            raise RegistryError("RANGE_INVALID", message, status=416,
                                headers={"Range": progress_header(sink.start)})
        return sink

    async def _upload_patch(self, request: Request, route: Route) -> Response:
        assert route.name is not None
        sink = self._sink(request)
        assert sink.session is not None and self.uploads is not None
        await self.uploads.commit_chunk(sink)  # the 202 promises the chunk survives a crash
        self.upload_bytes.inc(sink.received)
        return Response(202, b"", self._session_headers(route.name, sink.session.id, sink.session.size))

    async def _upload_put(self, request: Request, route: Route) -> Response:
        assert route.name is not None
        return await self._commit(request, route.name, self._sink(request))

    async def _commit(self, request: Request, name: str, sink: ChunkSink) -> Response:
        assert self.uploads is not None
        session = sink.session
        assert session is not None
        try:
            digest = parse_digest(_arg(request, "digest"))
        except RegistryError:
            sink.abort()
            raise
        self.upload_bytes.inc(sink.received)
        sink.release()
        session.busy = True  # no other request may write while a sha512 digest is computed
        try:
            actual = await self.uploads.digest_as(session, digest.algo)
        finally:
            session.busy = False
        if actual != digest:
            self.uploads.discard(session)
            raise RegistryError("DIGEST_INVALID", "uploaded content does not match the digest",
                                detail={"expected": str(digest), "actual": str(actual)})
        path = self.uploads.finish(session)
        try:
            await self.storage.commit_blob(name, digest, path)
        finally:
            path.unlink(missing_ok=True)
        return Response(201, b"", {"Location": f"/v2/{name}/blobs/{digest}",
                                   "Docker-Content-Digest": str(digest)})

    async def _upload_get(self, request: Request, route: Route) -> Response:
        assert route.name is not None and route.ref is not None and self.uploads is not None
        session = self.uploads.get(route.name, route.ref)
        return Response(204, b"", self._session_headers(route.name, session.id, session.size))

    async def _upload_delete(self, request: Request, route: Route) -> Response:
        assert route.name is not None and route.ref is not None and self.uploads is not None
        session = self.uploads.get(route.name, route.ref)
        if session.busy:
            raise RegistryError("BLOB_UPLOAD_INVALID", "the upload is receiving data", status=409)
        self.uploads.discard(session)
        return Response(204, b"", {})

    # -- listings ------------------------------------------------------------------------------

    async def _tags_get(self, request: Request, route: Route) -> Any:
        assert route.name is not None
        tags = await self.storage.list_tags(route.name)
        if tags is None:
            raise RegistryError("NAME_UNKNOWN", "repository name not known to registry",
                                detail={"name": route.name})
        page, headers = _page(request, tags, f"/v2/{quote(route.name)}/tags/list")
        return Response(200, {"name": route.name, "tags": page}, headers)

    async def _catalog_get(self, request: Request, route: Route) -> Any:
        repos = await self.storage.list_repositories()
        if self.auth is not None:
            repos = self.auth.visible(request, repos)
        page, headers = _page(request, repos, "/v2/_catalog")
        return Response(200, {"repositories": page}, headers)
