"""Service definitions and calls (spec 1.3; scenarios of spec 5.2): steps, errors, clients."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator
from twisted.internet.task import Clock

from kraken.pipeline.clients.base import ClientContext, ClientError
from kraken.pipeline.clients.registry import register_client
from kraken.pipeline.definitions.mapping import DefinitionError, compile_code
from kraken.pipeline.definitions.schema import _fast_predicate, compile_schema, full_schema
from kraken.pipeline.expr import ExprError, evaluate
from kraken.pipeline.lambdas.registry import register_lambda
from kraken.pipeline.lifecycle import ApiError
from kraken.pipeline.services import CallError, ServiceRegistry
from tests.unit.pipeline_fixtures import SIMPLE_MATH, done


class Echo:
    @staticmethod
    def foo(args: dict[str, Any]) -> Any:
        return {"out": args["in"] + "baz"}

    @staticmethod
    def fail(args: Any) -> Any:
        raise RuntimeError("boom!")

    @staticmethod
    def text(args: Any) -> Any:
        return "just text"


register_lambda("EchoForTests", Echo)


class Failing:
    """A client that returns errors as values (like an HTTP transport failure)."""

    def __init__(self, ctx: ClientContext, service: str) -> None:
        pass

    def start(self, config: dict[str, Any]) -> Any:
        return {}

    def stop(self, config: dict[str, Any]) -> None:
        return None

    def state(self) -> Any:
        return {}

    def call(self, prepared: Any, config: dict[str, Any]) -> Any:
        return ClientError(config.get("error", "some_error"), config.get("message", ":some_error"))


register_client(["FailingForTests"], Failing)  # type: ignore[arg-type]


def registry(**ctx: Any) -> ServiceRegistry:
    return ServiceRegistry(ClientContext(Clock(), **ctx))


def echo_service(**function: Any) -> dict[str, Any]:
    return {
        "name": "echo",
        "client": {"module": "Octopus.Lambda", "start": {"module": "EchoForTests"}},
        "interface": {"foo": {"call": {"function": "foo"}, **function}},
    }


def ready(reg: ServiceRegistry, definition: dict[str, Any]) -> ServiceRegistry:
    done(reg.define(definition))
    done(reg.start(definition["name"]))
    return reg


def test_step_chain_prepare_call_transform() -> None:
    reg = ready(
        registry(),
        echo_service(
            input={"foo": {"type": "string"}},
            prepare={"in": "'the_' <> args['foo']"},
            transform={"x": "args['out'] <> 'barxxx'", "y": 2},
            output={"x": {"type": "string"}},
        ),
    )
    assert reg.call("echo", "foo", {"foo": "foo"}) == {"x": "the_foobazbarxxx", "y": 2}


@pytest.mark.parametrize(
    ("function", "args", "step", "message"),
    [
        (
            {"input": {"in": {"type": "string"}}},
            {"in": 1},
            "input",
            "#/in:Type mismatch. Expected String but got Integer.",
        ),
        ({"input": {"required": ["baz"]}}, {"in": "a"}, "input", "Required property baz was not present."),
        (
            {"input": {"properties": {"in": {"type": "string"}}, "required": ["in"]}},
            {},
            "input",
            "Required property in was not present.",
        ),
        (
            {"output": {"out": {"type": "number"}}},
            {"in": "a"},
            "output",
            "#/out:Type mismatch. Expected Number",
        ),
        ({"prepare": {"in": "File.read(args)"}}, {"in": "a"}, None, None),
        ({"prepare": {"in": "args['in'] + 1"}}, {"in": "a"}, "prepare", "ArithmeticError"),
        ({"transform": {"x": "args['out'] / 0"}}, {"in": "a"}, "transform", "ArithmeticError"),
        ({}, "not-an-object", "input", "Expected Object but got String"),
        ({}, {"no_in": 1}, "call", "KeyError"),
    ],
)
def test_errors_name_their_step(
    function: dict[str, Any], args: Any, step: str | None, message: str | None
) -> None:
    reg = registry()
    if step is None:
        with pytest.raises(DefinitionError, match="Non local call"):
            reg.define(echo_service(**function))
        return
    ready(reg, echo_service(**function))
    with pytest.raises(CallError) as info:
        reg.call("echo", "foo", args)
    assert info.value.step == step
    assert message in info.value.message
    assert f"step: :{step}" in info.value.inspect()


def test_invalid_schema_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError) as info:
        registry().define(echo_service(input={"in": {"type": "strin"}}))
    assert info.value.field == "interface.foo.input"
    assert "schema did not pass validation" in info.value.message


def test_error_step_turns_returned_errors_into_results() -> None:
    reg = registry()
    definition = {
        "name": "error-service",
        "client": {"module": "FailingForTests"},
        "interface": {
            "with_error_step": {
                "call": {"message": "non-existing domain"},
                "error": {"error": True, "message": "args['message']", "step": "args['step']"},
            },
            "without": {"call": {}},
            "broken_error_step": {"call": {}, "error": {"x": "args['message'] + 1"}},
        },
    }
    ready(reg, definition)
    assert reg.call("error-service", "with_error_step", {}) == {
        "error": True,
        "message": "non-existing domain",
        "step": "call",
    }
    with pytest.raises(CallError) as info:
        reg.call("error-service", "without", {})
    assert info.value.step == "call" and info.value.message == ":some_error"
    with pytest.raises(CallError) as info:
        reg.call("error-service", "broken_error_step", {})
    assert info.value.step == "error"


def test_raised_exceptions_bypass_the_error_step() -> None:
    reg = ready(
        registry(),
        {
            "name": "echo",
            "client": {"module": "lambda", "start": {"module": "EchoForTests"}},
            "interface": {"fail": {"call": {"function": "fail"}, "error": {"rescued": True}}},
        },
    )
    with pytest.raises(CallError) as info:
        reg.call("echo", "fail", {})
    assert info.value.step == "call" and "boom!" in info.value.message


def test_lifecycle_and_queries() -> None:
    reg = registry()
    assert reg.status("simple-math") == ":undefined"
    with pytest.raises(ApiError, match=":undefined"):
        reg.call("simple-math", "add", {})
    assert done(reg.define(SIMPLE_MATH)) == "simple-math"
    assert reg.status("SimpleMath") == ":not_ready"
    assert reg.definition("simple_math") == SIMPLE_MATH
    with pytest.raises(ApiError, match=":not_ready"):
        reg.state("simple-math")
    with pytest.raises(ApiError, match=":not_ready"):
        reg.call("simple-math", "add", {"a": 1, "b": 2})
    assert done(reg.start("simple-math")) == "SimpleMath"
    with pytest.raises(ApiError, match=":already_started"):
        done(reg.start("simple-math"))
    with pytest.raises(ApiError, match=":already_started"):
        done(reg.define(SIMPLE_MATH))
    assert reg.call("simple-math", "add", {"a": 1, "b": 2}) == {"sum": 3}
    with pytest.raises(ApiError, match="UndefinedFunctionError"):
        reg.call("simple-math", "nope", {})
    assert done(reg.stop("simple-math")) == "ok"
    with pytest.raises(ApiError, match=":not_ready"):
        done(reg.stop("simple-math"))
    done(reg.start("simple-math"))
    assert done(reg.delete("simple-math")) == "ok"
    assert reg.names() == []


def test_define_many_is_all_or_nothing() -> None:
    reg = registry()
    with pytest.raises(DefinitionError) as info:
        reg.define_many([SIMPLE_MATH, {"client": {"module": "lambda"}, "interface": {}}])
    assert info.value.field == "[1].name"
    assert reg.names() == []
    assert done(reg.define_many([SIMPLE_MATH, {**SIMPLE_MATH, "name": "another"}])) == [
        "simple-math",
        "another",
    ]
    assert reg.names() == ["another", "simple-math"]


@pytest.mark.parametrize(
    ("definition", "field", "message"),
    [
        ({"client": {"module": "lambda"}, "interface": {}}, "name", "Missing service name!"),
        ({"name": "s", "interface": {}}, "client", "Missing client definition!"),
        (
            {"name": "s", "client": {"module": "NoSuchClient"}, "interface": {}},
            "client.module",
            "Module 'NoSuchClient' doesn't exist!",
        ),
        ({"name": "s", "client": {"module": "lambda"}}, "interface", "Missing interface definition!"),
        (
            {"name": "s", "client": {"module": "lambda"}, "interface": {}, "helpers": ["Nope"]},
            "helpers[0]",
            "doesn't exist",
        ),
        (
            {"name": "s", "client": {"module": "lambda"}, "interface": {"f": {"prepare": ["args"]}}},
            "interface.f.prepare",
            "must be a JSON object",
        ),
    ],
)
def test_bad_service_definitions_name_the_field(definition: Any, field: str, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        registry().define(definition)
    assert info.value.field == field and message in info.value.message


def test_lambda_start_modes() -> None:
    reg = registry()
    done(
        reg.define(
            {
                "name": "both",
                "client": {"module": "lambda", "start": {"module": "X", "code": "y"}},
                "interface": {},
            }
        )
    )
    with pytest.raises(ApiError, match="Ether"):
        done(reg.start("both"))
    code = ["def add(args):", "    return {'sum': args['a'] + args['b']}"]
    coded = {
        "name": "coded",
        "client": {"module": "lambda", "start": {"code": code}},
        "interface": {"add": {"call": {"module": "SimpleMath", "function": "add"}}},
    }
    done(reg.define(coded))
    with pytest.raises(ApiError, match="disabled"):
        done(reg.start("coded"))
    allowed = registry(allow_code=True)
    done(allowed.define(coded))
    assert done(allowed.start("coded")).startswith("def add(args):")
    assert allowed.call("coded", "add", {"a": 1, "b": 2}) == {"sum": 3}
    done(
        reg.define({"name": "m", "client": {"module": "lambda", "start": {"module": "os"}}, "interface": {}})
    )
    with pytest.raises(ApiError, match="doesn't exist"):
        done(reg.start("m"))
    done(reg.define({"name": "m2", "client": {"module": "lambda"}, "interface": {}}))
    assert done(reg.start("m2", {"module": "Greeter"})) == "Greeter"


def test_kv_store_client() -> None:
    reg = ready(
        registry(),
        {
            "name": "kv-store",
            "client": {"module": "MyApp.Kraken.Clients.KVStore"},
            "interface": {
                "set": {
                    "input": {"required": ["key", "value"]},
                    "prepare": {"operation": "set", "key": "args['key']", "value": "args['value']"},
                    "transform": {"ok": "args"},
                    "output": {"ok": {}},
                },
                "get": {
                    "input": {"required": ["key"]},
                    "prepare": {"operation": "get", "key": "args['key']"},
                    "transform": {"value": "args"},
                },
                "wrong": {"prepare": {"operation": "nope", "key": "k"}},
            },
        },
    )
    assert reg.call("kv-store", "get", {"key": "a"}) == {"value": None}
    assert reg.call("kv-store", "set", {"key": "a", "value": 1}) == {"ok": "ok"}
    assert reg.call("kv-store", "get", {"key": "a"}) == {"value": 1}
    with pytest.raises(CallError, match="Required property value"):
        reg.call("kv-store", "set", {"key": "a"})
    with pytest.raises(CallError) as info:
        reg.call("kv-store", "wrong", {})
    assert info.value.step == "call" and "invalid_operation" in info.value.message


SCHEMAS = [
    {"a": {"type": "number"}, "b": {"type": "integer"}, "required": ["a"]},
    {"s": {"type": ["string", "null"]}, "l": {"type": "array"}, "o": {"type": "object"}, "x": {}},
    {"properties": {"t": {"type": "boolean"}}, "required": ["t"]},
]
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SCHEMAS), st.dictionaries(st.sampled_from("abslotx"), _JSON, max_size=5) | _JSON)
def test_fast_schema_checks_agree_with_jsonschema(spec: dict[str, Any], value: Any) -> None:
    schema = full_schema(spec, "f")
    fast = _fast_predicate(schema)
    assert fast is not None
    assert fast(value) == Draft7Validator(schema).is_valid(value)
    assert (compile_schema(spec, "f")(value) is None) == fast(value)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["a", "b"]), _JSON, max_size=2),
    st.sampled_from(["args", "args['a']", 'args["a"]["b"]', "args['b']['a']['b']"]),
)
def test_plain_lookups_agree_with_the_interpreter(args: dict[str, Any], source: str) -> None:
    fast = compile_code(source, {}, "f")
    try:
        expected: Any = evaluate(source, args)
    except ExprError as e:
        expected = e.kind
    try:
        got: Any = fast(args)
    except ExprError as e:
        got = e.kind
    assert got == expected
