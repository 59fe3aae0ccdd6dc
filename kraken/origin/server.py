"""The origin's HTTP API: chunked uploads, blob and metainfo reads (202 while fetching), locations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request

from kraken.backends.base import BlobNotFound
from kraken.core.cas import DigestMismatch, UnknownUpload
from kraken.core.digest import Digest
from kraken.core.http import HTTPError, Response, Router, digest_param, read_json
from kraken.core.sendfile import serve_file
from kraken.core.streaming import BodySink
from kraken.core.tls import request_identity
from kraken.origin.blobs import FetchFailed, OriginBlobs, State
from kraken.origin.gc import HEX, GCBusy, OriginSweeper
from kraken.origin.uploads import PatchSink, RefusedBody, UploadSessions, parse_range

log = Logger(namespace="kraken.origin.server")
COPY_CHUNK = 1 << 20
DEFAULT_MAX_UPLOAD = 64 * 1024**3


class OriginAPI:
    def __init__(
        self,
        blobs: OriginBlobs,
        locations: Callable[[Digest], list[str]],
        self_address: Callable[[], str],
        peer_context: Callable[[], dict[str, Any]],
        write_roles: set[str],
        replicate: Callable[[Digest], object] | None = None,
        max_upload_size: int = DEFAULT_MAX_UPLOAD,
        sweeper: OriginSweeper | None = None,
    ) -> None:
        self.sweeper = sweeper
        self.blobs = blobs
        self.uploads = UploadSessions(blobs.cas, max_upload_size)
        self.owners = locations
        self.self_address = self_address
        self.peer_context = peer_context
        self.write_roles = write_roles
        self.replicate = replicate
        self.routes = self._routes()

    def router(self) -> Router:
        return self.routes

    def _routes(self) -> Router:
        r = Router()
        blob = "/namespace/{ns}/blobs/{digest}"
        r.route("GET", "/readiness", lambda req: {"status": "ok"})
        r.route("GET", "/blobs/{digest}/locations", self.locations)
        r.route("POST", blob + "/uploads", self.start_upload)
        r.route("PATCH", blob + "/uploads/{uid}", self.patch_upload)
        r.route("PUT", blob + "/uploads/{uid}", self.commit_upload)
        r.route("POST", "/internal/blobs/{digest}/uploads", self.start_upload)
        r.route("PATCH", "/internal/blobs/{digest}/uploads/{uid}", self.patch_upload)
        r.route("PUT", "/internal/blobs/{digest}/uploads/{uid}", self.commit_upload)
        r.route("GET", blob, self.get_blob)
        r.route("DELETE", blob, self.delete_blob)
        r.route("GET", blob + "/metainfo", self.get_metainfo)
        r.route("POST", blob + "/prefetch", self.prefetch)
        r.route("HEAD", "/internal/namespace/{ns}/blobs/{digest}", self.stat)
        r.route("GET", "/internal/peercontext", lambda req: self.peer_context())
        r.route("GET", "/x/swarm", self.swarm)
        r.route("GET", "/internal/cluster", self.cluster)
        r.route("POST", "/internal/gc", self.collect_garbage)
        return r

    def swarm(self, request: Request) -> Any:
        """The blobs this origin seeds, and the pieces sent to each peer (read-only)."""
        if self.blobs.scheduler is None:
            raise HTTPError(503, "NOT_READY", "the scheduler is not running")
        return self.blobs.scheduler.swarm_view()

    # -- helpers ----------------------------------------------------------------------------------
    def _check_writer(self, request: Request) -> None:
        who = request_identity(request)
        if who is None:
            raise HTTPError(403, "FORBIDDEN", "writes need a client certificate")
        if who.role not in self.write_roles:
            raise HTTPError(403, "FORBIDDEN", f"role {who.role!r} may not write blobs here")

    @inlineCallbacks
    def _ensure(self, ns: str, d: Digest) -> Any:
        try:
            state = yield self.blobs.ensure(unquote(ns), d)
        except BlobNotFound:
            raise HTTPError(404, "BLOB_UNKNOWN", f"no blob {d}") from None
        except FetchFailed as e:
            raise HTTPError(500, "BACKEND_ERROR", str(e)) from None
        except HTTPError:
            raise
        except Exception as e:
            log.warn("backend stat of {d} failed: {e}", d=d, e=e)
            raise HTTPError(502, "BACKEND_ERROR", f"backend error: {e}") from None
        return state

    def _asked_for(self, d: Digest) -> None:
        if self.sweeper is not None:
            self.sweeper.asked_for(d)
        else:
            self.blobs.cas.touch(d)

    # -- routes -----------------------------------------------------------------------------------
    def locations(self, request: Request, digest: str) -> Response:
        d = digest_param(digest)
        hosts = self.owners(d)
        return Response(200, b"", {"Origin-Locations": ",".join(hosts)})

    @inlineCallbacks
    def start_upload(self, request: Request, digest: str, ns: str | None = None) -> Any:
        self._check_writer(request)
        d = digest_param(digest)
        present = yield self.blobs.verifier.check(d)  # a corrupt copy is replaced by the upload
        if present:
            self._asked_for(d)  # the client will rely on this copy instead of uploading
            if ns is not None:
                self.blobs.write_back(unquote(ns), d)
            raise HTTPError(409, "BLOB_EXISTS", f"{d} is already stored")
        uid = self.blobs.cas.start_upload()
        return Response(200, {"uid": uid}, {"Location": uid})

    # -- PATCH bodies stream into the upload file (StreamingRequest asks body_sink) ----------------
    def body_sink(self, request: Request, method: bytes, uri: bytes, length: int | None) -> BodySink | None:
        if method != b"PATCH":
            return None
        try:
            found = self.routes.handler_for("PATCH", uri.split(b"?", 1)[0].decode("utf-8"))
        except UnicodeDecodeError:
            return None
        if found is None or found[0] != self.patch_upload:
            return None
        try:
            return self._open_patch(request, found[1]["digest"], found[1]["uid"], length)
        except HTTPError as e:
            return RefusedBody(e)
        except Exception:
            log.failure("could not open an upload for {uri}", uri=uri.decode("utf-8", "replace"))
            return RefusedBody(HTTPError(500, "INTERNAL", "internal error; see the server log"))

    def _open_patch(self, request: Request, digest: str, uid: str, length: int | None) -> PatchSink:
        self._check_writer(request)
        d = digest_param(digest)
        start, end = parse_range(request.getHeader("content-range"), length)
        if self.blobs.cas.has(d):
            raise HTTPError(409, "BLOB_EXISTS", f"{d} is already stored")
        return self.uploads.open_patch(uid, start, end)

    def patch_upload(self, request: Request, digest: str, uid: str, ns: str | None = None) -> Response:
        sink = request.content
        if isinstance(sink, RefusedBody):
            raise sink.error
        if not isinstance(sink, PatchSink):  # a body twisted.web buffered (a site without StreamingRequest)
            assert sink is not None
            buffered = sink
            buffered.seek(0, 2)
            sink = self._open_patch(request, digest, uid, buffered.tell())
            buffered.seek(0)
            while chunk := buffered.read(COPY_CHUNK):
                sink.write(chunk)
        sink.finish()
        return Response(200, {"uid": uid, "received": sink.end})

    @inlineCallbacks
    def commit_upload(self, request: Request, digest: str, uid: str, ns: str | None = None) -> Any:
        self._check_writer(request)
        d = digest_param(digest)
        if uid in self.uploads.busy:
            raise HTTPError(409, "UPLOAD_BUSY", f"a PATCH is still writing to upload {uid}")
        if self.blobs.cas.has(d):
            self.blobs.cas.abort_upload(uid)
            raise HTTPError(409, "BLOB_EXISTS", f"{d} is already stored")
        try:
            yield self.blobs.commit_upload(uid, d)
        except UnknownUpload:
            raise HTTPError(404, "UPLOAD_UNKNOWN", f"no upload {uid}") from None
        except DigestMismatch as e:
            raise HTTPError(400, "DIGEST_INVALID", str(e)) from None
        if ns is not None:
            self.blobs.write_back(unquote(ns), d)
            if self.replicate is not None:
                self.replicate(d)
        return Response(201, {"digest": str(d)})

    @inlineCallbacks
    def get_blob(self, request: Request, ns: str, digest: str) -> Any:
        d = digest_param(digest)
        if (request.args.get(b"local") or [b""])[0] == b"true":  # another origin repairing its copy
            present = yield self.blobs.verifier.check(d)
            if not present:
                raise HTTPError(404, "BLOB_UNKNOWN", f"no blob {d} in this origin's store")
        state = yield self._ensure(ns, d)
        if state is State.FETCHING:
            return _fetching(d)
        self.blobs.cas.touch(d)
        serve_file(request, str(self.blobs.cas.blob_path(d)))
        return NOT_DONE_YET

    @inlineCallbacks
    def delete_blob(self, request: Request, ns: str, digest: str) -> Any:
        """``202`` once the blob is gone from this origin and the namespace's backend; ``404`` if absent."""
        self._check_writer(request)
        d = digest_param(digest)
        try:
            found = yield self.blobs.delete(unquote(ns), d)
        except BlobNotFound:
            found = False
        except Exception as e:
            log.warn("delete of {d} failed: {e}", d=d, e=e)
            raise HTTPError(502, "BACKEND_ERROR", f"backend error: {e}") from None
        if not found:
            raise HTTPError(404, "BLOB_UNKNOWN", f"no blob {d}")
        return Response(202, {"deleted": str(d)})

    @inlineCallbacks
    def get_metainfo(self, request: Request, ns: str, digest: str) -> Any:
        d = digest_param(digest)
        state = yield self._ensure(ns, d)
        if state is State.FETCHING:
            return _fetching(d)
        mi = yield self.blobs.metainfo(d)
        if mi is None:
            raise HTTPError(404, "BLOB_UNKNOWN", f"no blob {d}")
        return Response(200, mi.to_dict())

    @inlineCallbacks
    def prefetch(self, request: Request, ns: str, digest: str) -> Any:
        d = digest_param(digest)
        state = yield self._ensure(ns, d)
        return Response(200 if state is State.READY else 202, {"status": state.value})

    @inlineCallbacks
    def stat(self, request: Request, ns: str, digest: str) -> Any:
        d = digest_param(digest)
        present = yield self.blobs.verifier.check(d)  # as GET would decide
        size = self.blobs.cas.size(d) if present else None
        if size is None and (request.args.get(b"local") or [b""])[0] != b"true":
            backend = self.blobs.backends.for_namespace(unquote(ns))
            if backend is not None:
                try:
                    size = yield backend.stat(unquote(ns), d.hex)
                except BlobNotFound:
                    size = None
        if size is None:
            raise HTTPError(404, "BLOB_UNKNOWN", f"no blob {d}")
        self._asked_for(d)  # a push about to skip this upload, or a tag about to reference it
        request.setResponseCode(200)
        request.setHeader(b"kraken-blob-size", str(size).encode())
        request.setHeader(b"content-length", str(size).encode())
        request.finish()
        return NOT_DONE_YET


    def cluster(self, request: Request) -> Any:
        """``{"members": [host:port, ...]}``: every origin of this one's cluster."""
        members = self.sweeper.members() if self.sweeper is not None else [self.self_address()]
        return {"members": members}

    @inlineCallbacks
    def collect_garbage(self, request: Request) -> Any:
        """``POST /internal/gc`` ``{"live": [hex, ...], "grace": s, "dry_run": bool}`` from a build-index."""
        who = request_identity(request)
        if who is None or who.role != "build-index":
            raise HTTPError(403, "FORBIDDEN", "only a build-index runs garbage collection")
        if self.sweeper is None:
            raise HTTPError(404, "NOT_FOUND", "garbage collection is not set up here")
        body = read_json(request)
        live, grace, dry_run = body.get("live") if isinstance(body, dict) else None, 0.0, True
        if not isinstance(live, list) or not all(isinstance(h, str) and HEX.fullmatch(h) for h in live):
            raise HTTPError(400, "BAD_REQUEST", "live must be a list of sha256 hex digests")
        grace, dry_run = body.get("grace"), body.get("dry_run")
        if not isinstance(grace, (int, float)) or isinstance(grace, bool) or grace < 0:
            raise HTTPError(400, "BAD_REQUEST", "grace must be a non-negative number of seconds")
        if not isinstance(dry_run, bool):
            raise HTTPError(400, "BAD_REQUEST", "dry_run must be true or false")
        try:
            report = yield self.sweeper.sweep(set(live), float(grace), dry_run)
        except GCBusy as e:
            raise HTTPError(409, "GC_RUNNING", str(e)) from None
        return report.to_dict()


def _fetching(d: Digest) -> Response:
    """``202``: the blob is on its way from the backend; ask again shortly."""
    return Response(202, {"status": "fetching", "digest": str(d)}, {"Retry-After": "1"})
