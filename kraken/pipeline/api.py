"""The HTTP JSON API of spec section 2: services, pipelines, routes, type-routed events,
plus stats and a live span stream.

Errors keep the original's bodies: ``400 {"error": ":undefined"}`` and friends, with a
``details`` object where we know more (the field of a bad definition). Errors inside a
pipeline are ``200`` error events. Streams are NDJSON: one JSON document per line.

Every request gets an answer: bodies are read with limits (:mod:`kraken.pipeline.answers`),
answers are measured before they are encoded, an answer over a limit is a ``400`` naming the
limit, and anything unexpected (``MemoryError`` included) is a ``500`` carrying an error id
whose traceback is in the server log.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from kraken.core.http import Response, Router, json_bytes, query_arg
from kraken.pipeline import diff
from kraken.pipeline.answers import (
    ENVELOPE_DEPTH,
    MAX_JSON_DEPTH,
    MAX_RESPONSE_BYTES,
    BadBody,
    TooLarge,
    encode,
    parse_body,
)
from kraken.pipeline.definitions.mapping import DefinitionError
from kraken.pipeline.engine.graph import ErrorRoute
from kraken.pipeline.engine.runtime import Pipeline
from kraken.pipeline.incidents import record
from kraken.pipeline.journal import MAX_LOOKUP, Journal
from kraken.pipeline.lifecycle import ApiError
from kraken.pipeline.pipelines import PipelineRegistry
from kraken.pipeline.refusals import Refusals
from kraken.pipeline.replays import Replays
from kraken.pipeline.routes import Routes, call_many, routing_error
from kraken.pipeline.secretrefs import REFERENCE
from kraken.pipeline.services import CallError, ServiceRegistry
from kraken.pipeline.triggers.registry import TriggerRegistry

log = Logger(namespace="kraken.pipeline.api")

MAX_BODY = 16 * 1024 * 1024
NDJSON = b"application/x-ndjson"
JSON = {"Content-Type": "application/json"}


class BadRequest(Exception):
    def __init__(self, error: str, details: Any = None, limit: str | None = None) -> None:
        super().__init__(error)
        self.error, self.details = error, details
        self.limit = limit  # the limit that refused the request, when one did


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _error_response(e: BaseException, struct: str = "RuntimeError") -> Response:
    if isinstance(e, ApiError):
        body: dict[str, Any] = {"error": e.error}
        if e.details is not None:
            body["details"] = e.details
        return Response(400, body)
    if isinstance(e, DefinitionError):
        return Response(
            400,
            {
                "error": f'%{struct}{{message: "{_quote(str(e))}"}}',
                "details": {"field": e.field, "message": e.message},
            },
        )
    if isinstance(e, CallError):
        return Response(400, {"error": e.inspect(), "details": e.to_json()})
    if isinstance(e, BadRequest):
        body = {"error": e.error}
        if e.details is not None:
            body["details"] = e.details
        return Response(400, body)
    raise e


def raw_body(request: Request) -> bytes:
    """The request's bytes, or ``BadRequest`` over ``MAX_BODY``."""
    content = request.content
    if content is None:
        return b""
    content.seek(0, 2)
    if content.tell() > MAX_BODY:
        raise BadRequest(f"request body over {MAX_BODY} bytes", limit="body_bytes")
    content.seek(0)
    return bytes(content.read())


def body(request: Request, default: Any = None, max_depth: int = MAX_JSON_DEPTH) -> Any:
    raw = raw_body(request)
    if not raw.strip():
        if default is not None:
            return default
        raise BadRequest('%Jason.DecodeError{message: "unexpected end of input: the body is empty"}')
    try:
        return parse_body(raw, max_depth)
    except BadBody as e:
        raise BadRequest(f'%Jason.DecodeError{{message: "{_quote(str(e))}"}}', limit=e.limit) from None


def _flag(request: Request, name: str) -> bool:
    value = query_arg(request, name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise BadRequest(f"query parameter {name} must be true or false")
    return value == "true"


def _timeout(request: Request) -> float | None:
    value = query_arg(request, "timeout")
    if value is None:
        return None
    try:
        ms = int(value)
    except ValueError:
        raise BadRequest("query parameter timeout must be an integer number of milliseconds") from None
    if not 1 <= ms <= 3_600_000:
        raise BadRequest("query parameter timeout must be between 1 and 3600000 ms")
    return ms / 1000.0


def _route(route: ErrorRoute) -> dict[str, Any]:
    return {"kind": route.kind, "target": route.target}


def _synced(pipeline: Pipeline | None, answer: Any) -> Any:
    """*answer*, once a durable pipeline's journal holds what it accepted (a 2xx is durable)."""
    if pipeline is None or pipeline.journal is None:
        return answer
    journal = pipeline.journal

    def synced(value: Any) -> defer.Deferred[Any]:
        return journal.synced().addCallback(lambda _: value)

    return defer.maybeDeferred(lambda: answer).addCallback(synced)


def _int_arg(request: Request, name: str, default: int) -> int:
    value = query_arg(request, name)
    if value is None:
        return default
    if not value.isdigit():
        raise BadRequest(f"query parameter {name} must be a non-negative integer", {"field": name})
    return int(value)


def _version(text: str) -> int:
    if not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise BadRequest("a version is a positive integer", {"field": "version"})
    return int(text)


def _entry_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise BadRequest("a dead-letter id is a positive integer", {"field": "id"})
    return int(text)


def _replay_from(request: Request, data: Any) -> bool:
    """True: replay from the start; False (the default): at the component that failed."""
    if not isinstance(data, dict):
        raise BadRequest("replay options must be a JSON object")
    where = data.get("from", query_arg(request, "from", "component"))
    if where not in ("component", "start"):
        raise BadRequest('from must be "component" or "start"', {"field": "from"})
    return where == "start"


@implementer(IPushProducer)
class _Stream:
    """Writes NDJSON lines to a request; notices pauses (slow reader) and disconnects.
    A result that cannot be written becomes an error line in its place."""

    def __init__(self, request: Request, answers: Answers) -> None:
        self.request = request
        self.answers = answers
        self.paused = False
        self.closed = False
        self.dropped = 0
        request.setResponseCode(200)
        request.setHeader(b"content-type", NDJSON)
        self.on_close: list[Callable[[], None]] = []
        self.on_resume: list[Callable[[], None]] = []
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._gone)

    def _gone(self, _: Any) -> None:
        self.closed = True
        for cb in self.on_close:
            cb()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        for resume in list(self.on_resume):
            resume()

    def stopProducing(self) -> None:
        self.closed = True

    def write(self, value: Any) -> None:
        if not self.closed:
            self.request.write(self.answers.line(value, self.request))

    def finish(self) -> None:
        if not self.closed:
            self.closed = True
            self.request.unregisterProducer()
            self.request.finish()


class Answers:
    """Turns handler results and failures into complete answers, within the answer limits."""

    def __init__(self, max_response_bytes: int, refusals: Refusals, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.max_response_bytes = max_response_bytes
        self.max_depth = max_depth + ENVELOPE_DEPTH
        self.refusals = refusals

    def handler(self, fn: Callable[..., Any], struct: str = "RuntimeError") -> Callable[..., Any]:
        """Run *fn*; API errors (raised now or later) become the original's 400 bodies, results
        are encoded here, anything else is a 500 with an error id."""

        def run(request: Request, **params: Any) -> Any:
            try:
                result = fn(request, **params)
            except Exception as e:
                return self.failed(e, request, struct)
            if isinstance(result, defer.Deferred):
                return result.addCallbacks(
                    self.answer,
                    lambda f: self.failed(f.value, request, struct),
                    callbackArgs=(request,),
                )
            return self.answer(result, request)

        return run

    def answer(self, result: Any, request: Request) -> Any:
        if result is NOT_DONE_YET:
            return result
        try:
            if not isinstance(result, Response):
                return Response(200, encode(result, self.max_response_bytes, self.max_depth), JSON)
            if isinstance(result.body, bytes):
                return result
            encoded = encode(result.body, self.max_response_bytes, self.max_depth)
            return Response(result.status, encoded, {**JSON, **result.headers})
        except Exception as e:
            return self.failed(e, request)

    def failed(self, e: BaseException, request: Request, struct: str = "RuntimeError") -> Response:
        if isinstance(e, (ApiError, DefinitionError, CallError, BadRequest)):
            if isinstance(e, (CallError, BadRequest)) and e.limit is not None:
                self.refusals.refuse(e.limit, _offender(request), str(e))
            return self._small(_error_response(e, struct))
        if isinstance(e, TooLarge):
            self.refusals.refuse(e.limit, _offender(request), str(e))
            return self._small(_limit_response(e.limit, str(e)))
        if isinstance(e, defer.CancelledError):  # the client went away; nobody reads this
            return Response(499, b"")
        if isinstance(e, RecursionError):
            return self._small(_error_response(BadRequest("the request nests too deeply"), struct))
        method, path = request.method.decode("latin-1"), request.path.decode("latin-1")
        error_id = record(e, f"{method} {path} failed")
        details = {"error_id": error_id, "message": "unexpected error; the traceback is in the server log"}
        return self._small(Response(500, {"error": ":internal_error", "details": details}))

    def _small(self, response: Response) -> Response:
        """An error answer we wrote, encoded here (measured all the same: it may quote input)."""
        try:
            body = encode(response.body, self.max_response_bytes, self.max_depth)
        except TooLarge as e:
            body = json_bytes(_limit_response(e.limit, str(e)).body)
        return Response(response.status, body, {**JSON, **response.headers})

    def line(self, value: Any, request: Request) -> bytes:
        """One NDJSON line; a result that cannot be written is replaced by an error line."""
        try:
            return encode(value, self.max_response_bytes, self.max_depth) + b"\n"
        except TooLarge as e:
            self.refusals.refuse(e.limit, _offender(request), str(e))
            error = _limit_response(e.limit, str(e)).body
        except Exception as e:
            error_id = record(e, "a stream result could not be written")
            error = {"error": ":internal_error", "details": {"error_id": error_id}}
        return json_bytes(error) + b"\n"


def _limit_response(limit: str, message: str) -> Response:
    return Response(400, {"error": ":limit", "details": {"limit": limit, "message": message}})


def _offender(request: Request) -> str:
    peer = request.getClientAddress()
    host = getattr(peer, "host", "?")
    return f"{host} {request.path.decode('latin-1', 'replace')[:200]}"


class GuardedRouter(Router):

    """A router that, when *token* is set, admits only ``Authorization: Bearer <token>``."""

    def __init__(self, token: str | None) -> None:
        super().__init__()
        self.token = f"Bearer {token}".encode() if token else None

    def render(self, request: Request) -> Any:
        if self.token is not None and not request.path.startswith(b"/hooks/"):  # webhooks are signed
            given = request.getHeader(b"authorization") or b""
            if not hmac.compare_digest(given, self.token):
                request.setResponseCode(401)
                request.setHeader(b"content-type", b"application/json")
                request.setHeader(b"www-authenticate", b"Bearer")
                return json_bytes({"error": ":unauthorized"})
        return super().render(request)


class Api:
    def __init__(
        self,
        services: ServiceRegistry,
        pipelines: PipelineRegistry,
        routes: Routes,
        metrics: Any = None,
        token: str | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_json_depth: int = MAX_JSON_DEPTH,
        refusals: Refusals | None = None,
        replays: Replays | None = None,
        journal: Journal | None = None,
        triggers: TriggerRegistry | None = None,
    ) -> None:
        self._journal = journal
        self._triggers = triggers
        self.replays = replays
        self.token = token
        self.max_json_depth = max_json_depth
        self.refusals = refusals if refusals is not None else Refusals()
        self.answers = Answers(max_response_bytes, self.refusals, max_json_depth)
        self.services = services
        self.pipelines = pipelines
        self.routes = routes
        self.events = (
            metrics.counter("events_total", "events injected through the API", ["pipeline", "mode"])
            if metrics is not None
            else None
        )

    def _count(self, pipeline: Pipeline, mode: str, n: int = 1) -> None:
        if self.events is not None:
            self.events.labels(pipeline.name, mode).inc(n)

    def router(self) -> Router:
        r = GuardedRouter(self.token)
        s = lambda fn: self.answers.handler(fn, "Octopus.Error")  # noqa: E731
        p = self.answers.handler
        r.route("GET", "/", lambda req: Response(200, b"Hey! I'm Kraken!", {"Content-Type": "text/plain"}))
        r.route(
            "GET",
            "/favicon.ico",
            lambda req: Response(200, b"sorry, no icon", {"Content-Type": "text/plain"}),
        )
        r.route("POST", "/services/define", s(self.service_define))
        r.route("GET", "/services", s(lambda req: self.services.names()))
        r.route(
            ["GET", "POST"],
            "/services/status/{name}",
            s(lambda req, name: {"status": self.services.status(name)}),
        )
        r.route("GET", "/services/definition/{name}", s(lambda req, name: self.services.definition(name)))
        r.route("GET", "/services/state/{name}", s(lambda req, name: self.services.state(name)))
        r.route("POST", "/services/start/{name}", s(self.service_start))
        r.route("POST", "/services/stop/{name}", s(self.service_stop))
        r.route("POST", "/services/restart/{name}", s(self.service_restart))
        r.route(
            "POST",
            "/services/delete/{name}",
            s(lambda req, name: self.services.delete(name).addCallback(lambda ok: {"ok": ok})),
        )
        r.route("POST", "/services/call/{name}/{function}", s(self.service_call))
        r.route("POST", "/pipelines/define", p(self.pipeline_define))
        r.route("GET", "/pipelines", p(lambda req: self.pipelines.names()))
        r.route(
            ["GET", "POST"],
            "/pipelines/status/{name}",
            p(lambda req, name: {"status": self.pipelines.status(name)}),
        )
        r.route(
            "GET", "/pipelines/definition/{name}", p(lambda req, name: self.pipelines.get(name).definition)
        )
        r.route("POST", "/pipelines/start/{name}", p(self.pipeline_start))
        r.route("POST", "/pipelines/define_version", p(self.version_define))
        r.route("GET", "/pipelines/versions/{name}", p(lambda req, name: self.pipelines.versions(name)))
        r.route("GET", "/pipelines/version/{name}/{version}", p(self.version_definition))
        r.route("POST", "/pipelines/start/{name}/{version}", p(self.version_start))
        r.route("POST", "/pipelines/stop/{name}/{version}", p(self.version_stop))
        r.route("POST", "/pipelines/call/{name}/{version}", p(self.version_call))
        r.route("POST", "/pipelines/switch/{name}/{version}", p(self.version_switch))
        r.route("POST", "/pipelines/rollback/{name}", p(lambda req, name: self.pipelines.switch(name, None)))
        r.route("GET", "/pipelines/diff/{name}", p(self.version_diff))
        r.route(
            "POST",
            "/pipelines/stop/{name}",
            p(lambda req, name: self.pipelines.stop(name).addCallback(lambda ok: {"ok": ok})),
        )
        r.route(
            "POST",
            "/pipelines/delete/{name}",
            p(lambda req, name: self.pipelines.delete(name).addCallback(lambda ok: {"ok": ok})),
        )
        r.route("POST", "/pipelines/call/{name}", p(self.pipeline_call))
        r.route("POST", "/pipelines/cast/{name}", p(self.pipeline_cast))
        r.route("POST", "/pipelines/stream/{name}", p(self.pipeline_stream))
        r.route("GET", "/pipelines/stats/{name}", p(lambda req, name: self.pipelines.runtime(name).stats()))
        r.route("GET", "/pipelines/components/{name}", p(self.pipeline_components))
        r.route("GET", "/pipelines/spans/{name}", p(self.pipeline_spans))
        r.route("POST", "/routes/define", p(lambda req: {"ok": self.routes.define(self.body(req))}))
        r.route("GET", "/routes", p(lambda req: self.routes.get()))
        r.route("POST", "/triggers/define", p(lambda req: {"ok": self.triggers.define(self.body(req))}))
        r.route("GET", "/triggers", p(lambda req: self.triggers.names()))
        r.route("GET", "/triggers/status/{name}", p(lambda req, name: self.triggers.status(name)))
        r.route("GET", "/triggers/definition/{name}", p(self.trigger_definition))
        r.route("POST", "/triggers/delete/{name}", p(lambda req, name: {"ok": self.triggers.delete(name)}))
        r.route("POST", "/hooks/{name}", p(self.webhook))
        r.route("POST", "/events/lookup", p(self.events_lookup))
        r.route("GET", "/events/summary/{name}", p(lambda req, name: self.journal.summary(name)))
        r.route("GET", "/events/{event_id}", p(lambda req, event_id: self.journal.event(event_id)))
        r.route("GET", "/dead_letters", p(self.dead_letter_list))
        r.route("GET", "/dead_letters/entry/{entry}", p(self.dead_letter_entry))
        r.route("POST", "/dead_letters/replay/{entry}", p(self.dead_letter_replay))
        r.route("POST", "/dead_letters/delete/{entry}", p(self.dead_letter_delete))
        r.route("POST", "/dead_letters/replay", p(self.dead_letter_replay_many))
        r.route("POST", "/call", p(self.routed_call))
        r.route("POST", "/cast", p(self.routed_cast))
        r.route("POST", "/stream", p(self.routed_stream))
        return r

    def body(self, request: Request, default: Any = None) -> Any:
        return body(request, default, self.max_json_depth)

    # -- services ----------------------------------------------------------------------------------
    def service_define(self, request: Request) -> Any:
        data = self.body(request)
        if isinstance(data, list):
            return self.services.define_many(data).addCallback(lambda names: {"ok": names})
        return self.services.define(data).addCallback(lambda name: {"ok": name})

    def service_start(self, request: Request, name: str) -> Any:
        args = self.body(request, {})
        if not isinstance(args, dict):
            raise BadRequest("start arguments must be a JSON object")
        return self.services.start(name, args).addCallback(lambda state: {"ok": state})

    def service_stop(self, request: Request, name: str) -> Any:
        args = self.body(request, {})
        if not isinstance(args, dict):
            raise BadRequest("stop arguments must be a JSON object")
        return self.services.stop(name, args).addCallback(lambda ok: {"ok": ok})

    def service_restart(self, request: Request, name: str) -> Any:
        """Octopus agent's restart: stop (when running), then start with the given args."""
        args = self.body(request, {})
        if not isinstance(args, dict):
            raise BadRequest("start arguments must be a JSON object")
        stopping = self.services.stop(name) if self.services.status(name) == ":ready" else defer.succeed("ok")
        return stopping.addCallback(lambda _: self.services.start(name, args)).addCallback(
            lambda state: {"ok": state}
        )

    def service_call(self, request: Request, name: str, function: str) -> Any:
        args = self.body(request, {})
        result = self.services.call(name, function, args)
        if isinstance(result, defer.Deferred):
            return result.addCallback(lambda r: {"ok": r})
        return {"ok": result}

    # -- pipelines ---------------------------------------------------------------------------------
    def pipeline_define(self, request: Request) -> Any:
        return self.pipelines.define(self.body(request)).addCallback(lambda name: {"ok": name})

    def pipeline_start(self, request: Request, name: str) -> Any:
        opts = self.body(request, {})
        if not isinstance(opts, dict):
            raise BadRequest("start options must be a JSON object")
        flags = {}
        for key in ("sync", "telemetry"):
            value = opts.get(key, query_arg(request, key, "false"))
            if value in (True, "true"):
                flags[key] = True
            elif value in (False, "false", None):
                flags[key] = False
            else:
                raise BadRequest(f"{key} must be true or false", {"field": key})
        return self.pipelines.start(name, **flags).addCallback(lambda module: {"ok": module})

    def pipeline_call(self, request: Request, name: str) -> Any:
        debug, timeout = _flag(request, "debug"), _timeout(request)
        data = self.body(request)
        pipeline = self.pipelines.runtime(name)
        if isinstance(data, list):
            out: list[Any] = []
            self._count(pipeline, "call", len(data))
            running = pipeline.stream(data, out.append, debug=debug, timeout=timeout)
            return _synced(pipeline, running.addCallback(lambda _: out))
        self._count(pipeline, "call")
        return _synced(pipeline, pipeline.call(data, debug=debug, timeout=timeout))

    def pipeline_cast(self, request: Request, name: str) -> Any:
        data = self.body(request)
        pipeline = self.pipelines.runtime(name)
        if isinstance(data, list):
            self._count(pipeline, "cast", len(data))
            return _synced(pipeline, {"ok": [pipeline.cast(e) for e in data]})
        self._count(pipeline, "cast")
        return _synced(pipeline, {"ok": pipeline.cast(data)})

    def pipeline_stream(self, request: Request, name: str) -> Any:
        debug, timeout = _flag(request, "debug"), _timeout(request)
        data = self.body(request)
        events = data if isinstance(data, list) else [data]
        pipeline = self.pipelines.runtime(name)
        self._count(pipeline, "stream", len(events))
        out = _Stream(request, self.answers)
        running = pipeline.stream(events, out.write, debug=debug, timeout=timeout, held=lambda: out.paused)
        out.on_close.append(running.cancel)
        out.on_resume.append(running.resume)
        running.addBoth(lambda _: out.finish())
        return NOT_DONE_YET

    def pipeline_components(self, request: Request, name: str) -> Any:
        found = self.pipelines.get(name)
        comps = found.runtime.components if found.runtime is not None else found.compiled.components
        return [
            {
                "name": c.name,
                "type": c.kind,
                "count": c.count,
                "next": c.next.name if c.next is not None else None,
                **(
                    {"branches": {k: (v.name if v else None) for k, v in c.branches.items()}}
                    if hasattr(c, "branches")
                    else {}
                ),
                **({"to": c.to} if hasattr(c, "to") and isinstance(c.to, str) else {}),
                **({"on_error": _route(c.on_error)} if c.on_error is not None else {}),
            }
            for c in comps
        ]

    def pipeline_spans(self, request: Request, name: str) -> Any:
        pipeline = self.pipelines.runtime(name)
        limit = query_arg(request, "limit")
        remaining = [int(limit)] if limit and limit.isdigit() else [None]
        out = _Stream(request, self.answers)
        request.write(b"")

        def sink(record: dict[str, Any]) -> None:
            if out.closed:
                return
            if out.paused:
                out.dropped += 1
                return
            out.write(record)
            if remaining[0] is not None:
                remaining[0] -= 1
                if remaining[0] <= 0:
                    unsubscribe()
                    out.finish()

        unsubscribe = pipeline.subscribe(sink)
        out.on_close.append(unsubscribe)
        return NOT_DONE_YET

    # -- versions ----------------------------------------------------------------------------------
    def version_define(self, request: Request) -> Any:
        return self.pipelines.define_version(self.body(request))

    def version_definition(self, request: Request, name: str, version: str) -> Any:
        return self.pipelines.version_definition(name, _version(version))

    def version_start(self, request: Request, name: str, version: str) -> Any:
        number = _version(version)
        return self.pipelines.start_version(name, number).addCallback(
            lambda module: {"ok": module, "version": number}
        )

    def version_stop(self, request: Request, name: str, version: str) -> Any:
        return self.pipelines.stop_version(name, _version(version)).addCallback(lambda ok: {"ok": ok})

    def version_call(self, request: Request, name: str, version: str) -> Any:
        debug, timeout = _flag(request, "debug"), _timeout(request)
        data = self.body(request)
        pipeline = self.pipelines.version_runtime(name, _version(version))
        if isinstance(data, list):
            out: list[Any] = []
            return pipeline.stream(data, out.append, debug=debug, timeout=timeout).addCallback(lambda _: out)
        return pipeline.call(data, debug=debug, timeout=timeout)

    def version_switch(self, request: Request, name: str, version: str) -> Any:
        return self.pipelines.switch(name, _version(version))

    def version_diff(self, request: Request, name: str) -> Any:
        versions = [v["version"] for v in self.pipelines.versions(name)]
        live = next((v["version"] for v in self.pipelines.versions(name) if v["live"]), versions[-1])
        older = [v for v in versions if v < live]
        default_from = older[-1] if older else versions[0]
        a = _version(query_arg(request, "from") or str(default_from))
        b = _version(query_arg(request, "to") or str(live if live != default_from else versions[-1]))
        old, new = self.pipelines.version_definition(name, a), self.pipelines.version_definition(name, b)
        return {
            "pipeline": name,
            "from": a,
            "to": b,
            "changes": diff.changes(old, new),
            "diff": diff.unified(old, new, f"{name} v{a}", f"{name} v{b}"),
        }

    # -- triggers ----------------------------------------------------------------------------------
    @property
    def triggers(self) -> TriggerRegistry:
        if self._triggers is None:
            raise ApiError(":no_triggers")
        return self._triggers

    def trigger_definition(self, request: Request, name: str) -> Any:
        definition = dict(self.triggers.get(name).trig.definition)
        secret = definition.get("secret")
        if isinstance(secret, str) and not REFERENCE.fullmatch(secret):
            definition["secret"] = "(hidden)"
        return definition

    def webhook(self, request: Request, name: str) -> Any:
        hook, active = self.triggers.webhook(name)
        raw = raw_body(request)
        if not hook.verify(raw, request.getHeader(hook.header.encode())):
            return Response(401, {"error": ":bad_signature", "details": {"header": hook.header}})
        data = self.body(request)
        events = data if isinstance(data, list) else [data]
        return self.triggers.deliver(active, events).addCallback(lambda results: {"ok": results})

    # -- durable events ----------------------------------------------------------------------------
    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise ApiError(":no_journal")
        return self._journal

    def events_lookup(self, request: Request) -> Any:
        data = self.body(request)
        ids = data.get("ids") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > MAX_LOOKUP:
            raise BadRequest(f"ids must be a list of at most {MAX_LOOKUP} event ids", {"field": "ids"})
        return self.journal.lookup(ids)

    # -- dead letters ------------------------------------------------------------------------------
    def _replays(self) -> Replays:
        if self.replays is None:
            raise ApiError(":no_dead_letters")
        return self.replays

    def dead_letter_list(self, request: Request) -> Any:
        after, limit = _int_arg(request, "after", 0), _int_arg(request, "limit", 100)
        return self._replays().store.summaries(query_arg(request, "pipeline"), after, limit)

    def dead_letter_entry(self, request: Request, entry: str) -> Any:
        return self._replays().entry(_entry_id(entry))

    def dead_letter_replay(self, request: Request, entry: str) -> Any:
        start = _replay_from(request, self.body(request, {}))
        return self._replays().replay(_entry_id(entry), start, _timeout(request))

    def dead_letter_replay_many(self, request: Request) -> Any:
        data = self.body(request, {})
        start = _replay_from(request, data)
        replays = self._replays()
        ids = data.get("ids")
        if ids is None:
            ids = replays.store.ids(data.get("pipeline") if isinstance(data.get("pipeline"), str) else None)
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise BadRequest("ids must be a list of dead-letter ids", {"field": "ids"})
        return replays.replay_many(ids, start).addCallback(lambda summary: {"ok": summary})

    def dead_letter_delete(self, request: Request, entry: str) -> Any:
        entry_id = _entry_id(entry)
        if not self._replays().store.delete(entry_id):
            raise ApiError(":not_found", {"dead_letter": entry_id})
        return {"ok": "ok"}

    # -- type-routed events ------------------------------------------------------------------------
    def routed_call(self, request: Request) -> Any:
        debug, timeout = _flag(request, "debug"), _timeout(request)
        data = self.body(request)
        if isinstance(data, list):
            return call_many(self.routes.groups(data), debug, timeout)
        pipeline = self.routes.resolve(data)
        self._count(pipeline, "call")
        return _synced(pipeline, pipeline.call(data, debug=debug, timeout=timeout))

    def routed_cast(self, request: Request) -> Any:
        data = self.body(request)
        if isinstance(data, list):
            refs: list[Any] = []
            durable: Pipeline | None = None
            for event in data:
                try:
                    pipeline = self.routes.resolve(event)
                    refs.append(pipeline.cast(event))
                    durable = pipeline if pipeline.journal is not None else durable
                except ApiError as e:
                    refs.append(routing_error(e.error))
            return _synced(durable, {"ok": refs})
        pipeline = self.routes.resolve(data)
        self._count(pipeline, "cast")
        return _synced(pipeline, {"ok": pipeline.cast(data)})

    def routed_stream(self, request: Request) -> Any:
        debug, timeout = _flag(request, "debug"), _timeout(request)
        data = self.body(request)
        events = data if isinstance(data, list) else [data]
        out = _Stream(request, self.answers)
        running: list[defer.Deferred[None]] = []
        for pipeline, group, error in self.routes.groups(events):
            if pipeline is None:
                out.write(routing_error(error or ":no_type"))
                continue
            part = pipeline.stream(group, out.write, debug=debug, timeout=timeout, held=lambda: out.paused)
            out.on_resume.append(part.resume)
            running.append(part)
        out.on_close.extend(d.cancel for d in running)
        defer.DeferredList(running).addBoth(lambda _: out.finish())
        return NOT_DONE_YET
