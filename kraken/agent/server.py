"""The agent's own HTTP API: download a blob (through P2P), delete it, readiness, blacklist,
and the swarm view (per blob: progress, pieces from and to each peer) for dashboards."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request

from kraken.agent.blobs import AgentBlobs
from kraken.backends.base import BlobNotFound
from kraken.core.http import HTTPError, Response, Router, digest_param
from kraken.core.httpclient import BadJSONResponse
from kraken.core.metrics import Metrics
from kraken.core.sendfile import SendfileSender, serve_file
from kraken.p2p.scheduler import Scheduler

log = Logger(namespace="kraken.agent.server")



class AgentAPI:
    def __init__(
        self, blobs: AgentBlobs, scheduler: Scheduler, metrics: Metrics, sender: SendfileSender | None = None
    ) -> None:
        self.blobs = blobs
        self.scheduler = scheduler
        self.sender = sender
        self.m_bodies = metrics.counter("blob_bodies", "blob bodies served, by how", ["how"])

    def router(self) -> Router:
        r = Router()
        r.route("GET", "/readiness", self.readiness)
        r.route("GET", "/namespace/{ns}/blobs/{digest}", self.get_blob)
        r.route("DELETE", "/blobs/{digest}", self.delete_blob)
        r.route("GET", "/x/blacklist", lambda req: self.scheduler.blacklist_view())
        r.route("GET", "/x/swarm", lambda req: self.scheduler.swarm_view())
        return r

    def readiness(self, request: Request) -> Any:
        if not self.scheduler.probe():
            raise HTTPError(503, "NOT_READY", "scheduler is not running")
        return {"status": "ok"}

    @inlineCallbacks
    def get_blob(self, request: Request, ns: str, digest: str) -> Any:
        d = digest_param(digest, loose=True)
        try:
            path = yield self.blobs.fetch(unquote(ns), str(d))
        except BlobNotFound:
            raise HTTPError(404, "BLOB_UNKNOWN", f"no blob {d} on the origins or their backends") from None
        except HTTPError:
            raise
        except BadJSONResponse as e:
            log.warn("download of {d} failed: {e}", d=d, e=e)
            raise HTTPError(502, "BAD_UPSTREAM_ANSWER", f"download of {d} failed: {e}") from None
        except Exception as e:
            log.warn("download of {d} failed: {e}", d=d, e=e)
            raise HTTPError(500, "DOWNLOAD_FAILED", f"download of {d} failed: {e}") from None
        self.m_bodies.labels(serve_file(request, path, self.sender)).inc()
        return NOT_DONE_YET

    def delete_blob(self, request: Request, digest: str) -> Response:
        d = digest_param(digest, loose=True)
        existed = self.blobs.delete(d)
        return Response(200, {"deleted": existed})
