"""HTTP/JSON plumbing every kraken HTTP server shares.

:class:`Router` maps ``(method, path pattern)`` to handlers. A pattern segment ``{name}``
matches one path segment, ``{name:path}`` one or more (repository names such as
``test/alpine``), ``{name:REGEX}`` a regular expression. A handler gets the request and the
matched values as keyword arguments and returns:

- a JSON-able value (sent as ``200`` ``application/json``),
- a :class:`Response` (status, body bytes or JSON value, headers),
- ``NOT_DONE_YET`` after taking over the request (streaming),
- or a ``Deferred`` of any of these.

Raising :class:`HTTPError` (or returning a failed Deferred with one) sends the uniform error
body ``{"error": {"code": ..., "message": ...}}``; any other exception is logged with its
traceback and answered ``500`` without one. ``HEAD`` falls back to the ``GET`` handler.

:func:`make_site` mounts ``/health`` and ``/metrics`` beside a router, and serves it with
:class:`KrakenHTTPChannel`: request headers must be complete within ``http.header_timeout`` of
the connection's start or of the client having the previous response (slowloris), and the
connections waiting for headers are capped per site and per client address
(:mod:`kraken.core.pending`). A response the client takes no byte of for ``http.send_timeout``
is aborted; one it reads slowly is not (:mod:`kraken.core.sendwatch`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IReactorTime, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from kraken.core import jsonlimits
from kraken.core.config import HTTPSection
from kraken.core.digest import Digest
from kraken.core.httplimits import LimitedChannel, RefusalCounter
from kraken.core.jsonlimits import MAX_DEPTH, JSONLimitError
from kraken.core.metrics import Metrics
from kraken.core.offenders import OffenderLog
from kraken.core.pending import PendingConnections, PendingLimits, socket_of, source_of, unread_bytes
from kraken.core.reactor import default_reactor
from kraken.core.sendwatch import SendWatch, send_state
from kraken.core.streaming import BodyRouter, streaming_requests

log = Logger(namespace="kraken.http")

Handler = Callable[..., Any]


class HTTPError(Exception):
    """An error answer: HTTP status, a machine-readable code and a message for people."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, detail: Any = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.detail = detail

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"error": error}


@dataclass
class Response:
    """A complete answer; *body* bytes are sent as they are, anything else as JSON."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def read_json(request: Request, limit: int = 16 * 1024 * 1024, max_depth: int = MAX_DEPTH) -> Any:
    """The request body parsed as JSON, or a ``400`` naming what is wrong with it (also when it
    nests deeper than *max_depth* or holds an integer too long to convert)."""
    content = request.content
    assert content is not None  # twisted.web sets it once the headers are in
    content.seek(0, 2)
    if content.tell() > limit:
        raise HTTPError(413, "BODY_TOO_LARGE", f"request body over {limit} bytes")
    content.seek(0)
    raw = content.read()
    if not raw.strip():
        raise HTTPError(400, "BAD_JSON", "request body is empty; a JSON document is expected")
    try:
        return jsonlimits.loads(raw, max_depth)
    except JSONLimitError as e:
        raise HTTPError(400, "BAD_JSON", f"request body {e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise HTTPError(400, "BAD_JSON", f"request body is not valid JSON: {e}") from None


def query_arg(request: Request, name: str, default: str | None = None) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else default


def query_int(request: Request, name: str, default: int | None = None, minimum: int = 0) -> int | None:
    text = query_arg(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HTTPError(400, "BAD_PARAMETER", f"query parameter {name!r} must be an integer") from None
    if value < minimum:
        raise HTTPError(400, "BAD_PARAMETER", f"query parameter {name!r} must be at least {minimum}")
    return value


def digest_param(text: str, loose: bool = False) -> Digest:
    """A digest from a URL path segment (percent-decoded), or a ``400 BAD_DIGEST`` naming the fault.

    *loose* also accepts a bare hex digest, as agents do.
    """
    try:
        text = unquote(text)
        return Digest.parse_loose(text) if loose else Digest.parse(text)
    except ValueError as e:
        raise HTTPError(400, "BAD_DIGEST", str(e)) from None


def write_response(request: Request, result: Any) -> None:
    """Send *result* (a :class:`Response`, bytes-free JSON value) and finish the request."""
    if not isinstance(result, Response):
        result = Response(200, result)
    request.setResponseCode(result.status)
    body = result.body
    if not isinstance(body, bytes):
        body = json_bytes(body)
        request.setHeader(b"content-type", b"application/json")
    for name, value in result.headers.items():
        request.setHeader(name.encode("latin-1"), str(value).encode("latin-1"))
    request.setHeader(b"content-length", str(len(body)).encode())
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def write_error(request: Request, error: HTTPError) -> None:
    write_response(request, Response(error.status, error.body(), error.headers))


_SEGMENT = re.compile(r"\{(\w+)(?::([^}]+))?\}")


def _compile(pattern: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _SEGMENT.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        name, kind = m.group(1), m.group(2)
        regex = "[^/]+" if kind is None else ".+?" if kind == "path" else kind
        out.append(f"(?P<{name}>{regex})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(out) + "$")


class Router(Resource):
    """A resource that dispatches every path below it through a route table."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self._routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        self._index: dict[str, dict[str, Handler]] = {}

    def route(self, method: str | Iterable[str], pattern: str, handler: Handler) -> None:
        methods = [method] if isinstance(method, str) else list(method)
        if pattern not in self._index:
            self._index[pattern] = {}
            self._routes.append((_compile(pattern), self._index[pattern]))
        for m in methods:
            self._index[pattern][m.upper()] = handler

    def _match(self, path: str) -> tuple[dict[str, Handler], dict[str, str]] | None:
        for regex, handlers in self._routes:
            m = regex.match(path)
            if m:
                return handlers, m.groupdict()
        return None

    def handler_for(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        """The handler *method* on *path* would reach (no ``HEAD`` fallback) and its parameters."""
        found = self._match(path)
        if found is None or method.upper() not in found[0]:
            return None
        return found[0][method.upper()], found[1]

    def render(self, request: Request) -> Any:
        try:
            path = request.path.decode("utf-8")
        except UnicodeDecodeError:
            write_error(request, HTTPError(400, "BAD_PATH", "path is not UTF-8"))
            return NOT_DONE_YET
        found = self._match(path)
        if found is None:
            write_error(request, HTTPError(404, "NOT_FOUND", f"no such resource: {path}"))
            return NOT_DONE_YET
        handlers, params = found
        method = request.method.decode("ascii", "replace")
        handler = handlers.get(method) or (handlers.get("GET") if method == "HEAD" else None)
        if handler is None:
            allowed = ", ".join(sorted(handlers))
            write_error(
                request,
                HTTPError(405, "METHOD_NOT_ALLOWED", f"{method} not allowed on {path}", {"Allow": allowed}),
            )
            return NOT_DONE_YET
        d = maybeDeferred(handler, request, **params)
        lost: list[Failure] = []

        def connection_lost(reason: Failure) -> None:
            lost.append(reason)
            d.cancel()

        request.notifyFinish().addErrback(connection_lost)
        d.addCallbacks(
            lambda result: self._done(request, result, lost), lambda f: self._failed(request, f, lost)
        )
        return NOT_DONE_YET

    def _done(self, request: Request, result: Any, lost: list[Failure]) -> None:
        if result is NOT_DONE_YET or request.finished or lost:
            return
        write_response(request, result)

    def _failed(self, request: Request, failure: Failure, lost: list[Failure]) -> None:
        if request.finished or lost:
            return
        if isinstance(failure.value, HTTPError):
            write_error(request, failure.value)
            return
        log.failure("unhandled error in {method} {path}", failure, method=request.method, path=request.path)
        write_error(request, HTTPError(500, "INTERNAL", "internal error; see the server log"))


class HealthResource(Resource):
    """``/health``: ``200 {"status": "ok"}`` while every check passes, else ``503``.

    Mounted as ``/ready`` too (readiness: whether the server can serve now), with its own checks
    and ``"not ready"`` for a failing one."""

    isLeaf = True

    def __init__(
        self, checks: dict[str, Callable[[], bool]] | None = None, failing_word: str = "unhealthy"
    ) -> None:
        super().__init__()
        self.checks = checks or {}
        self.failing_word = failing_word

    def render_GET(self, request: Request) -> bytes:
        failing = sorted(name for name, check in self.checks.items() if not check())
        status = 503 if failing else 200
        body: dict[str, Any] = {"status": "ok" if not failing else self.failing_word}
        if failing:
            body["failing"] = failing
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json_bytes(body)


class _Root(Resource):
    def __init__(self, app: Resource, extra: dict[bytes, Resource]) -> None:
        super().__init__()
        self.app = app
        self.extra = extra

    def getChildWithDefault(self, name: bytes, request: Request) -> Resource:
        assert request.postpath is not None and request.prepath is not None  # set while traversing
        if name in self.extra and len(request.postpath) == 0:
            return self.extra[name]
        request.postpath.insert(0, name)
        request.prepath.pop()
        return self.app


class KrakenHTTPChannel(LimitedChannel):
    """An HTTP/1.1 channel whose request headers have a deadline that trickled bytes do not move,
    and whose responses must keep moving (and, as :class:`~kraken.core.httplimits.LimitedChannel`,
    answers 414/431 for heads over the limits).

    From the connection's start, and again once the client has each response on a persistent
    connection (every byte acknowledged, not merely handed to our buffers), the connection is
    pending in its site's :class:`PendingConnections` until a request's headers are all in; past
    the deadline, or pushed out by the caps, it is aborted. While bytes of a response wait for
    the client, a :class:`SendWatch` aborts the connection when the client takes none of them
    for the site's ``send_timeout``; what it takes also counts as activity for twisted.web's
    own ``timeOut`` (an idle timeout that every byte received resets).
    """

    send_watch: SendWatch | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        site = self.kraken_site()
        if site is not None and site.send_timeout is not None and self.transport is not None:
            sock = socket_of(self.transport)
            self.send_watch = SendWatch(
                site.reactor, lambda: send_state(sock), site.send_timeout, self.send_stalled,
                on_progress=self.resetTimeout,
            )
        self.await_headers()

    def allHeadersReceived(self) -> None:
        self.headers_in()
        super().allHeadersReceived()

    def requestDone(self, request: HTTPRequest) -> None:
        if self.persistent:  # before twisted.web replays a pipelined request's bytes
            if self.send_watch is not None:
                self.send_watch.when_delivered(self.await_headers)
            else:
                self.await_headers()
        super().requestDone(request)

    def pauseProducing(self) -> None:
        if self.send_watch is not None:
            self.send_watch.blocked()
        super().pauseProducing()

    def resumeProducing(self) -> None:
        if self.send_watch is not None:
            self.send_watch.unblocked()
        super().resumeProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.send_watch is not None:
            self.send_watch.stop()
        self.log_cut_responses(reason)
        self.headers_in()
        super().connectionLost(reason)

    def log_cut_responses(self, reason: Failure) -> None:
        """Log a response the connection's loss cut short (once per address a minute), whoever
        closed it: a client's failed download then has its line in our log."""
        site = self.kraken_site()
        if site is None or self.transport is None:
            return
        for request in self.requests:
            if request.finished or not request.startedWriting:
                continue
            source = source_of(self.transport.getPeer())
            unlogged = site.offenders.should_log(("cut", source))
            if unlogged is None:
                continue
            declared = request.responseHeaders.getRawHeaders(b"content-length") or [b"?"]
            log.info(
                "the connection from {source} was lost {sent} bytes into a {length}-byte response "
                "body ({method} {uri}): {reason}; {unlogged} more from it were not logged in the last "
                "interval",
                source=source, sent=request.sentLength, length=declared[0].decode("latin-1"),
                method=request.method.decode("ascii", "replace"), uri=request.uri.decode("utf-8", "replace"),
                reason=reason.getErrorMessage(), unlogged=unlogged,
            )

    def send_stalled(self) -> None:
        """The client took no byte we owe it for ``send_timeout``: abort, count and log (once per
        address and interval)."""
        site = self.kraken_site()
        transport = self.transport
        if site is None or transport is None:
            return
        source = source_of(transport.getPeer())
        if site.aborted is not None:
            site.aborted.labels("http_send_stalled").inc()
        unlogged = site.offenders.should_log(("send_stalled", source))
        if unlogged is not None:
            log.warn(
                "aborted a connection from {source}: it took no byte of a response for {timeout:g}s; "
                "{unlogged} more from it were not logged in the last interval",
                source=source, timeout=site.send_timeout, unlogged=unlogged,
            )
        tcp = ITCPTransport(transport, None)
        if tcp is not None:
            tcp.abortConnection()
        else:
            transport.loseConnection()

    def await_headers(self) -> None:
        pending = self.pending()
        transport = self.transport
        if pending is not None and transport is not None:
            tcp = ITCPTransport(transport, None)
            abort = tcp.abortConnection if tcp is not None else transport.loseConnection
            sock = socket_of(transport)
            pending.admit(self, source_of(transport.getPeer()), abort, lambda: unread_bytes(sock) == 0)

    def headers_in(self) -> None:
        if self.send_watch is not None:
            self.send_watch.forget_delivered()
        pending = self.pending()
        if pending is not None:
            pending.done(self)

    def pending(self) -> PendingConnections | None:
        site = self.kraken_site()
        return site.pending if site is not None else None

    def kraken_site(self) -> QuietSite | None:
        site = getattr(self, "site", None)
        return site if isinstance(site, QuietSite) else None


class QuietSite(Site):
    """A ``Site`` that logs requests through ``twisted.logger`` at debug level.

    Its channels answer over-long request lines and headers with ``414``/``431``, counted in
    ``refusals``, and give request headers a deadline; *pending* (when given) holds the
    connections still awaiting headers. With *send_timeout*, a connection whose client takes
    no byte of a response for that long is aborted, counted in *aborted* (by reason).
    """

    protocol = KrakenHTTPChannel  # type: ignore[assignment]  # HTTP/1.1 (no h2 installed), limits answered
    refusals: RefusalCounter | None = None

    def __init__(
        self,
        resource: Resource,
        pending: PendingConnections | None = None,
        send_timeout: float | None = None,
        aborted: RefusalCounter | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, **kwargs)
        self.pending = pending
        self.send_timeout = send_timeout
        self.aborted = aborted
        self.offenders = OffenderLog(self.reactor)

    def log(self, request: HTTPRequest) -> None:
        log.debug(
            "{method} {uri} {code}",
            method=request.method.decode("ascii", "replace"),
            uri=request.uri.decode("utf-8", "replace"),
            code=request.code,
        )


def make_site(
    app: Resource,
    metrics: Metrics,
    health_checks: dict[str, Callable[[], bool]] | None = None,
    extra: dict[str, Resource] | None = None,
    body_router: BodyRouter | None = None,
    http: HTTPSection | None = None,
    reactor: IReactorTime | None = None,
    channel: type[KrakenHTTPChannel] = KrakenHTTPChannel,
    ready_checks: dict[str, Callable[[], bool]] | None = None,
) -> Site:
    """A site serving *app*, with ``/health``, ``/ready`` and ``/metrics`` (and *extra*) beside it.

    ``/ready`` asks *ready_checks* (default: the health checks).

    With *body_router*, request bodies stream to the sinks it opens (:mod:`kraken.core.streaming`).
    *http* (the server's ``http`` section; its defaults when ``None``) sets the header deadline,
    the caps on connections awaiting headers, the send timeout (aborts counted in
    ``connections_aborted_total``) and the idle timeout; timers run on *reactor*. Connections are
    served by *channel*.
    """
    limits = http if http is not None else HTTPSection()
    clock = reactor if reactor is not None else default_reactor()
    mounts = {
        b"health": HealthResource(health_checks),
        b"ready": HealthResource(health_checks if ready_checks is None else ready_checks, "not ready"),
        b"metrics": metrics.resource(),
    }
    for name, resource in (extra or {}).items():
        mounts[name.encode()] = resource
    pending = PendingConnections(
        clock,
        "http_headers",
        PendingLimits(limits.header_timeout, limits.max_pending, limits.max_pending_per_source),
        metrics.connections_aborted,
    )
    root = _Root(app, mounts)
    aborted = metrics.connections_aborted
    if body_router is not None:
        site = QuietSite(
            root, pending, limits.send_timeout, aborted, requestFactory=streaming_requests(body_router),
            timeout=limits.idle_timeout, reactor=clock,
        )
    else:
        site = QuietSite(
            root, pending, limits.send_timeout, aborted, timeout=limits.idle_timeout, reactor=clock
        )
    site.protocol = channel
    site.noisy = False
    site.refusals = metrics.counter("http_refused", "requests refused at their head (414, 431)", ["status"])
    return site
