"""Byte budgets of pipeline values (issue 15, item 3), JSON in and out of the API (items 10
and 13), and tracebacks that stay in the server log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer

from kraken.pipeline.answers import BadBody, TooLarge, encode, parse_body
from kraken.pipeline.expr import Budget, ExprError, LimitError, compile_expression
from kraken.pipeline.expr.functions import ValueLimits, set_value_limits
from kraken.pipeline.lambdas.registry import register_lambda
from tests.unit.pipeline_fixtures import World, done

MB = "String.duplicate(\"a\", 1000000)"

AMPLIFIERS = [
    # the reproduction, and each way to print or encode what it built
    f"l = List.duplicate({MB}, 2500); byte_size(inspect(l))",
    f"l = List.duplicate({MB}, 2500); to_string(l)",
    f"List.duplicate({MB}, 2500)",
    f"List.duplicate(List.duplicate({MB}, 50), 50)",
    # doubling shared references with every constructor
    f"s = {MB}; a = [s, s]; b = [a, a]; c = [b, b]; d = [c, c]; e = [d, d]; [e, e]",
    "Enum.reduce(1..60, [1], fn _, acc -> [acc, acc] end)",
    "Enum.reduce(1..60, {1}, fn _, acc -> {acc, acc} end)",
    "Enum.reduce(1..60, %{\"a\" => 1}, fn _, acc -> %{\"l\" => acc, \"r\" => acc} end)",
    "Enum.reduce(1..60, %{\"a\" => 1}, fn i, acc -> Map.put(acc, i, acc) end)",
    "Enum.reduce(1..60, [a: 1], fn _, acc -> [l: acc, r: acc] end)",
    "Enum.reduce(1..60, [1], fn _, acc -> acc ++ acc end)",
    "Enum.reduce(1..60, [1], fn _, acc -> Enum.concat(acc, acc) end)",
    "Enum.reduce(1..60, [1], fn _, acc -> Enum.map([1, 2], fn _ -> acc end) end)",
    "Enum.reduce(1..60, [1], fn _, acc -> Enum.zip(acc, acc) end)",
    "Enum.reduce(1..60, [1], fn _, acc -> put_in(%{\"a\" => acc}, [\"b\"], acc) end)",
    f"s = {MB}; Enum.map(1..50, fn _ -> s end)",
    f"s = {MB}; Enum.with_index(List.duplicate(s, 40))",
    # strings that join many copies
    f"Enum.join(Enum.to_list(1..90000), {MB})",
    f"Enum.map_join(1..90000, {MB}, fn x -> x end)",
    f"s = {MB}; \"#{{s}}#{{s}}\"",
    # many large values alive at once, or built again and again
    "a = 1..1000000; b = 1..1000000; c = 1..1000000; d = 1..1000000; e = 1..1000000; "
    "f = 1..1000000; g = 1..1000000; h = 1..1000000; i = 1..1000000; j = 1..1000000; "
    "k = 1..1000000; l = 1..1000000; m = 1..1000000; n = 1..1000000; o = 1..1000000; "
    "p = 1..1000000; q = 1..1000000; r = 1..1000000; length(r)",
    "Enum.reduce(1..8000, [], fn x, acc -> acc ++ [x] end)",
    # nesting
    "Enum.reduce(1..200, [1], fn _, acc -> [acc] end)",
]


@pytest.mark.parametrize("source", AMPLIFIERS)
def test_amplification_is_refused_before_it_is_built(source: str) -> None:
    start = time.monotonic()
    with pytest.raises(LimitError) as info:
        compile_expression(source)({})
    assert time.monotonic() - start < 20  # seconds, on a loaded machine; most take milliseconds
    assert "MemoryError" not in str(info.value)

DOUBLE = {"l": "args", "r": "args"}  # the event twice: its size doubles on every turn


def test_values_within_the_budget_still_work() -> None:
    assert compile_expression(f"byte_size(inspect(List.duplicate({MB}, 10)))")({}) == 10_000_040
    assert compile_expression("length(Enum.reduce(1..5000, [], fn x, acc -> acc ++ [x] end))")({}) == 5000
    assert compile_expression("length(1..1000000)")({}) == 1_000_000
    assert compile_expression("Enum.reduce(1..10, [1], fn _, acc -> [acc, acc] end)")({}) is not None


@pytest.fixture
def small_limits() -> Iterator[int]:
    old = (ValueLimits.max_bytes, ValueLimits.max_nesting)
    set_value_limits(20_000, 30)
    try:
        yield 20_000
    finally:
        set_value_limits(*old)


_LEAVES = st.sampled_from(["s", "args['items']", "[1, 2]", '%{"k" => "v"}', "{1, 2}", "args", '"abc"'])


def _grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, inner).map(lambda p: f"[{p[0]}, {p[1]}]"),
        st.tuples(inner, inner).map(lambda p: f"{{{p[0]}, {p[1]}}}"),
        st.tuples(inner, inner).map(lambda p: f'%{{"a" => {p[0]}, "b" => {p[1]}}}'),
        inner.map(lambda x: f"List.duplicate({x}, 7)"),
        inner.map(lambda x: f"Enum.map(1..9, fn _ -> {x} end)"),
        inner.map(lambda x: f"Map.put(%{{}}, 1, {x})"),
        inner.map(lambda x: f"[{x}] ++ [{x}]"),
        inner.map(lambda x: f"inspect({x})"),
        inner.map(lambda x: f"Enum.reduce(1..4, {x}, fn _, acc -> [acc, acc, acc] end)"),
    )


PROGRAMS = st.recursive(_LEAVES, _grow, max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(PROGRAMS)
def test_any_composition_stays_within_the_budget_or_is_refused(small_limits: int, source: str) -> None:
    """Whatever the constructors are nested into, the value that comes out encodes within a
    small factor of the byte budget (escaping can add a few characters), or is refused."""
    args = {"items": ["x" * 100] * 10}
    program = f's = "{"y" * 500}"; {source}'
    try:
        result = compile_expression(program)(args)
    except LimitError:
        return
    except ExprError as e:  # e.g. to_string of a map: not our concern here
        assert e.kind != "MemoryError"
        return
    assert len(json.dumps(result)) <= 3 * small_limits


def test_mapping_that_doubles_its_input_in_a_loop_gives_an_error_event() -> None:
    world = World()
    rt = world.pipeline(
        {
            "name": "doubler",
            "components": [
                {"type": "goto-point", "name": "top"},
                {"type": "stage", "name": "double", "prepare": DOUBLE, "transform": {"y": "args"}},
                {"type": "goto", "name": "again", "to": "top"},
            ],
        }
    )
    assert rt is not None
    start = time.monotonic()
    result = rt.call({"payload": "p" * 10_000})
    for _ in range(1000):
        if not isinstance(result, defer.Deferred) or result.called:
            break
        world.clock.advance(0)
    if isinstance(result, defer.Deferred):
        result = done(result)
    assert time.monotonic() - start < 10
    assert result["type"] == "error_ip"
    assert result["error"]["__struct__"] == "LimitError"
    assert "expands to more than" in result["error"]["message"]
    assert world.services.ctx.refusals.counts["value_bytes"] >= 1
    encode(result)  # the error event itself can be answered


CPU_BOUND = [
    "l = Enum.to_list(1..30000); length(l -- Enum.reverse(l))",  # 450 million comparisons
    "length(Enum.uniq(Enum.map(1..20000, fn x -> [x] end)))",  # 200 million comparisons
    "m = Map.new(Enum.map(1..20000, fn x -> {x, x} end)); map_size(Map.drop(m, Map.keys(m)))",
]


@pytest.mark.parametrize("source", CPU_BOUND)
def test_quadratic_builtins_count_their_comparisons(source: str) -> None:
    start = time.monotonic()
    try:
        compile_expression(source)({})
    except LimitError:
        pass
    assert time.monotonic() - start < 5


def test_uniq_keeps_strict_equality() -> None:
    assert compile_expression("Enum.uniq([1, 1.0, 1, :a, :a, nil, [1], [1], {1}, {1.0}])")({}) == [
        1, 1.0, "a", None, [1], [1], [1.0]
    ]


# -- JSON in and out ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 300 + b"1" + b"}" * 300,
        b"9" * 5000,
        b'{"x": NaN}',
        b"[Infinity]",
    ],
)
def test_hostile_bodies_are_bad_bodies(raw: bytes) -> None:
    with pytest.raises(BadBody):
        parse_body(raw)


def test_bodies_within_limits_parse() -> None:
    assert parse_body(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    assert parse_body(b"[" * 150 + b"]" * 150) is not None


def test_non_finite_floats_are_written_as_null() -> None:
    out = encode({"x": float("nan"), "y": [float("inf"), -float("inf"), 1.5]})
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in output")) == {
        "x": None,
        "y": [None, None, 1.5],
    }


def test_an_answer_over_the_limit_is_refused_before_encoding() -> None:
    s = "a" * 1_000_000
    shared = [s] * 2500  # 2.5 GB of JSON in 20 kB of memory
    start = time.monotonic()
    with pytest.raises(TooLarge):
        encode({"result": shared}, 64 * 1024 * 1024)
    assert time.monotonic() - start < 1
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(TooLarge):
        encode(looped)


# -- tracebacks --------------------------------------------------------------------------------
class Broken:
    def fail(self, args: Any) -> Any:
        raise KeyError("secret-internal-detail")


def test_unexpected_errors_carry_an_error_id_not_a_traceback() -> None:
    register_lambda("BrokenForTests", Broken())
    world = World()
    world.service(
        {
            "name": "broken",
            "client": {"module": "lambda", "start": {"module": "BrokenForTests"}},
            "interface": {"fail": {"call": {"function": "fail"}}},
        }
    )
    rt = world.pipeline(
        {"name": "p", "components": [{"type": "stage", "service": {"name": "broken", "function": "fail"}}]}
    )
    assert rt is not None
    event = rt.call({"x": 1})
    text = json.dumps(event)
    assert "Traceback" not in text and 'File "' not in text
    assert event["stacktrace"] == []
    assert "error id" in event["error"]["message"]


def test_budget_defaults_follow_the_configured_limits(small_limits: int) -> None:
    assert Budget().max_bytes == small_limits
    with pytest.raises(LimitError):
        compile_expression('String.duplicate("x", 30000) |> List.wrap()')({})


# -- every failure is answered -----------------------------------------------------------------
def _request() -> Any:
    from twisted.web.test.requesthelper import DummyRequest

    request = DummyRequest([b"pipelines", b"call", b"p"])
    request.method = b"POST"
    request.path = b"/pipelines/call/p"
    return request


def _answer(fn: Any) -> Any:
    from kraken.pipeline.api import Answers
    from kraken.pipeline.refusals import Refusals

    answers = Answers(1024 * 1024, Refusals())
    result = answers.handler(fn)(_request())
    if isinstance(result, defer.Deferred):
        result = done(result)
    return result


@pytest.mark.parametrize(
    "failure", [MemoryError(), RecursionError(), KeyError("internal"), ZeroDivisionError("x")]
)
def test_any_failure_is_an_answer_with_a_json_body(failure: BaseException) -> None:
    def raising(request: Any) -> Any:
        raise failure

    def failing_later(request: Any) -> Any:
        return defer.fail(failure)

    for fn in (raising, failing_later):
        response = _answer(fn)
        assert response.status in (400, 500)
        body = json.loads(response.body)
        assert "Traceback" not in response.body.decode()
        if response.status == 500:
            assert body["error"] == ":internal_error" and len(body["details"]["error_id"]) == 12


def test_answers_are_measured_and_finite() -> None:
    big = _answer(lambda request: {"x": ["a" * 1000] * 5000})
    assert big.status == 400 and json.loads(big.body)["details"]["limit"] == "response_bytes"
    nan = _answer(lambda request: defer.succeed({"x": float("nan")}))
    assert nan.status == 200 and nan.body == b'{"x":null}'


def test_a_mapping_of_lookups_is_measured_only_when_its_bound_could_pass_the_limit(small_limits: int) -> None:
    from kraken.pipeline.definitions.mapping import MeasuredMapping, compile_mapping

    mapping = compile_mapping({"l": "args", "r": "args['x']", "k": [1, "two"]}, {}, "prepare")
    assert isinstance(mapping, MeasuredMapping) and mapping.lookups == 2
    small = {"x": "y" * 100}
    assert mapping.bounded(small, (110, 1)) == {"l": small, "r": "y" * 100, "k": [1, "two"]}
    large = {"x": "y" * 15_000}
    with pytest.raises(LimitError):
        mapping.bounded(large, (15_010, 1))  # 2 x 15,010 > 20,000: measured, and over
    with pytest.raises(LimitError):
        mapping.bounded(large, None)
    expression = compile_mapping({"x": "Enum.reverse(args['l'])"}, {}, "prepare")
    assert isinstance(expression, MeasuredMapping) and expression.lookups == -1
