"""Services: named clients with interface functions (input → prepare → call → error →
transform → output), their lifecycle, and calls by name.

A call returns its result directly when every step is synchronous (lambdas, the KV store)
and a Deferred only when the client answers later (HTTP, CLI). Failures raise
:class:`CallError` naming the step; unknown or stopped services raise :class:`ApiError`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.pipeline.clients.base import Client, ClientContext, ClientError, ClientStartError
from kraken.pipeline.clients.registry import find_client
from kraken.pipeline.definitions.helpers import resolve_helpers
from kraken.pipeline.definitions.mapping import DefinitionError, Template, compile_mapping
from kraken.pipeline.definitions.schema import Check, compile_schema
from kraken.pipeline.expr import ExprError, LimitError
from kraken.pipeline.incidents import record
from kraken.pipeline.lifecycle import ALREADY_STARTED, NOT_READY, READY, UNDEFINED, ApiError, KeyedLock
from kraken.pipeline.names import modulize
from kraken.pipeline.secretrefs import NO_SECRETS, SecretError, Secrets, resolve

log = Logger(namespace="kraken.pipeline.services")


class CallError(Exception):
    """A service function failed at *step* (input, prepare, call, error, transform, output)."""

    def __init__(
        self, step: str, error: Any, message: str, error_id: str | None = None, limit: str | None = None
    ) -> None:
        super().__init__(message)
        self.step, self.error, self.message, self.error_id = step, error, message, error_id
        self.limit = limit  # the limit that refused the step, when one did

    def inspect(self) -> str:
        message = self.message.replace("\\", "\\\\").replace('"', '\\"')
        return f'%Octopus.CallError{{step: :{self.step}, message: "{message}"}}'

    def to_json(self) -> dict[str, Any]:
        body = {"step": self.step, "error": self.error, "message": self.message, "stacktrace": ""}
        if self.error_id is not None:
            body["error_id"] = self.error_id
        return body


@dataclass
class Function:
    name: str
    check_input: Check
    prepare: Template | None
    call_config: dict[str, Any]
    on_error: Template | None
    transform: Template | None
    check_output: Check


@dataclass
class Service:
    name: str
    key: str
    definition: dict[str, Any]
    client_factory: Callable[[ClientContext, str], Client]
    functions: dict[str, Function]
    start_config: dict[str, Any]
    stop_config: dict[str, Any]
    client: Client | None = None
    state: Any = None
    calls: dict[str, int] = field(default_factory=dict)


def _object(value: Any, field_name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DefinitionError("must be a JSON object", field_name)
    return value


def compile_service(definition: Any) -> Service:
    if not isinstance(definition, dict):
        raise DefinitionError("a service definition must be a JSON object")
    name = definition.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError("Missing service name!", "name")
    client = definition.get("client")
    if not isinstance(client, dict):
        raise DefinitionError("Missing client definition!", "client")
    module = client.get("module")
    if not isinstance(module, str):
        raise DefinitionError("Missing client module!", "client.module")
    factory = find_client(module)
    if factory is None:
        raise DefinitionError(f"Module '{module}' doesn't exist!", "client.module")
    interface = definition.get("interface")
    if not isinstance(interface, dict):
        raise DefinitionError("Missing interface definition!", "interface")
    helpers = resolve_helpers(definition.get("helpers"), "helpers")
    functions = {}
    for fname, spec in interface.items():
        where = f"interface.{fname}"
        spec = _object(spec, where)
        functions[fname] = Function(
            name=fname,
            check_input=compile_schema(spec.get("input"), f"{where}.input"),
            prepare=compile_mapping(spec.get("prepare"), helpers, f"{where}.prepare"),
            call_config=_object(spec.get("call"), f"{where}.call"),
            on_error=compile_mapping(spec.get("error"), helpers, f"{where}.error"),
            transform=compile_mapping(spec.get("transform"), helpers, f"{where}.transform"),
            check_output=compile_schema(spec.get("output"), f"{where}.output"),
        )
    return Service(
        name=name,
        key=modulize(name),
        definition=copy.deepcopy(definition),
        client_factory=factory,
        functions=functions,
        start_config=_object(client.get("start"), "client.start"),
        stop_config=_object(client.get("stop"), "client.stop"),
    )


def unexpected(step: str, e: BaseException, secrets: Secrets = NO_SECRETS) -> CallError:
    """A call error for an exception nobody expected: its traceback stays in the server log."""
    error_id = record(e, f"service step {step} raised", secrets.text if secrets else None)
    message = f"{type(e).__name__}: {e} (error id {error_id}: the traceback is in the server log)"
    return CallError(step, type(e).__name__, message, error_id)


def _step(step: str, fn: Callable[[Any], Any], value: Any) -> Any:
    try:
        return fn(value)
    except LimitError as e:
        raise CallError(step, e.kind, str(e), limit=e.limit) from None
    except ExprError as e:
        raise CallError(step, e.kind, str(e)) from None
    except CallError:
        raise
    except Exception as e:
        raise unexpected(step, e) from None


def _finish(function: Function, result: Any, secrets: Secrets = NO_SECRETS) -> Any:
    if isinstance(result, ClientError):
        if secrets:
            result = ClientError(secrets.redact(result.error), secrets.text(result.message))
        if function.on_error is None:
            raise CallError("call", result.error, result.message)
        args = {"step": "call", "error": result.error, "message": result.message, "stacktrace": ""}
        return _step("error", function.on_error, args)
    if function.transform is not None:
        result = _step("transform", function.transform, result)
    problem = function.check_output(result)
    if problem is not None:
        raise CallError("output", problem, problem)
    return result


def call_function(client: Client, function: Function, args: Any) -> Any:
    """Run one interface function; a value, or a Deferred when the client is asynchronous."""
    problem = function.check_input(args)
    if problem is not None:
        raise CallError("input", problem, problem)
    prepared = args if function.prepare is None else _step("prepare", function.prepare, args)
    try:
        result = client.call(prepared, function.call_config)
    except Exception as e:
        raise unexpected("call", e, client.secrets) from None
    if isinstance(result, defer.Deferred):

        def failed(f: Any) -> Any:
            if f.check(CallError):
                return f
            raise CallError("call", type(f.value).__name__, f"{type(f.value).__name__}: {f.value}")

        return result.addCallbacks(lambda r: _finish(function, r, client.secrets), failed)
    return _finish(function, result, client.secrets)


class ServiceRegistry:
    """Every defined service by canonical name; management operations are serialised per name."""

    def __init__(
        self, ctx: ClientContext, on_change: Callable[[str, Service | None], None] | None = None
    ) -> None:
        self.ctx = ctx
        self.services: dict[str, Service] = {}
        self.locks = KeyedLock()
        self.on_change = on_change or (lambda key, svc: None)

    # -- queries ---------------------------------------------------------------------------------
    def get(self, name: str) -> Service:
        svc = self.services.get(modulize(name))
        if svc is None:
            raise ApiError(UNDEFINED)
        return svc

    def status(self, name: str) -> str:
        svc = self.services.get(modulize(name))
        if svc is None:
            return UNDEFINED
        return READY if svc.client is not None else NOT_READY

    def names(self) -> list[str]:
        return sorted(s.name for s in self.services.values())

    def definition(self, name: str) -> dict[str, Any]:
        return self.get(name).definition

    def state(self, name: str) -> Any:
        svc = self.get(name)
        if svc.client is None:
            raise ApiError(NOT_READY)
        return svc.client.secrets.redact(svc.client.state())

    # -- management ------------------------------------------------------------------------------
    def define(self, definition: Any) -> defer.Deferred[str]:
        svc = compile_service(definition)
        return self.locks.run(svc.key, self._define, svc)

    def define_many(self, definitions: list[Any]) -> defer.Deferred[list[str]]:
        """Define all or none: every definition is checked before any is stored."""
        compiled = []
        for i, d in enumerate(definitions):
            try:
                compiled.append(compile_service(d))
            except DefinitionError as e:
                raise DefinitionError(e.message, f"[{i}].{e.field}" if e.field else f"[{i}]") from None
        for svc in compiled:
            if self.status(svc.name) == READY:
                raise ApiError(ALREADY_STARTED, {"service": svc.name})
        return defer.gatherResults(
            [self.locks.run(s.key, self._define, s) for s in compiled], consumeErrors=True
        )

    def _define(self, svc: Service) -> str:
        old = self.services.get(svc.key)
        if old is not None and old.client is not None:
            raise ApiError(ALREADY_STARTED)
        self.services[svc.key] = svc
        self.on_change(svc.key, svc)
        log.info("service {name} defined", name=svc.name)
        return svc.name

    def start(self, name: str, args: dict[str, Any] | None = None) -> defer.Deferred[Any]:
        return self.locks.run(modulize(name), self._start, name, args or {})

    @defer.inlineCallbacks
    def _start(self, name: str, args: dict[str, Any]) -> Any:
        svc = self.get(name)
        if svc.client is not None:
            raise ApiError(ALREADY_STARTED)
        try:
            config, secrets = resolve({**svc.start_config, **args}, self.ctx.secret_policy)
        except SecretError as e:
            raise ApiError(f'%RuntimeError{{message: "{e}"}}') from None
        client = svc.client_factory(self.ctx, svc.name)
        client.secrets = secrets
        try:
            state = yield defer.maybeDeferred(client.start, config)
        except ClientStartError as e:
            raise ApiError(f'%RuntimeError{{message: "{secrets.text(str(e))}"}}') from None
        except Exception as e:
            error_id = record(e, f"service {svc.name} failed to start", secrets.text if secrets else None)
            message = secrets.text(f"{type(e).__name__}: {e}")
            raise ApiError(f'%RuntimeError{{message: "{message} (error id {error_id})"}}') from None
        svc.client, svc.state = client, secrets.redact(state)
        self.on_change(svc.key, svc)
        log.info("service {name} started", name=svc.name)
        return svc.state

    def stop(self, name: str, args: dict[str, Any] | None = None) -> defer.Deferred[str]:
        return self.locks.run(modulize(name), self._stop, name, args or {}, False)

    def delete(self, name: str) -> defer.Deferred[str]:
        return self.locks.run(modulize(name), self._stop, name, {}, True)

    @defer.inlineCallbacks
    def _stop(self, name: str, args: dict[str, Any], delete: bool) -> Any:
        svc = self.get(name)
        if svc.client is None and not delete:
            raise ApiError(NOT_READY)
        if svc.client is not None:
            client, svc.client = svc.client, None
            try:
                yield defer.maybeDeferred(client.stop, {**svc.stop_config, **args})
            except Exception:
                log.failure("service {name} failed to stop cleanly", name=svc.name)
        if delete:
            del self.services[svc.key]
            self.on_change(svc.key, None)
        else:
            self.on_change(svc.key, svc)
        return "ok"

    # -- calls -----------------------------------------------------------------------------------
    def call(self, name: str, function: str, args: Any) -> Any:
        svc = self.services.get(modulize(name))
        if svc is None:
            raise ApiError(UNDEFINED)
        client = svc.client
        if client is None:
            raise ApiError(NOT_READY)
        fn = svc.functions.get(function)
        if fn is None:
            raise ApiError(f"%UndefinedFunctionError{{function: {function}/1, service: {svc.name}}}")
        svc.calls[function] = svc.calls.get(function, 0) + 1
        if not client.secrets:
            return call_function(client, fn, args)
        return _hiding(client.secrets, fn, client, args)


def _hide(secrets: Secrets, e: CallError) -> CallError:
    hidden = CallError(e.step, secrets.redact(e.error), secrets.text(e.message), e.error_id, e.limit)
    return hidden


def _hiding(secrets: Secrets, fn: Function, client: Client, args: Any) -> Any:
    """A call of a service holding secrets: its errors never quote them."""
    try:
        result = call_function(client, fn, args)
    except CallError as e:
        raise _hide(secrets, e) from None
    if isinstance(result, defer.Deferred):

        def hidden(f: Failure) -> Any:
            if isinstance(f.value, CallError):
                raise _hide(secrets, f.value)
            return f

        return result.addErrback(hidden)
    return result
