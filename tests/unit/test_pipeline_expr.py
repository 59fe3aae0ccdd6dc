"""The expression interpreter: the spec's corpus, Elixir semantics, errors and limits, fuzzing."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kraken.pipeline.expr import Budget, ExprError, LimitError, compile_expression, evaluate

HELPERS = {
    "fetch": lambda args, key: args[key],
    "get": lambda args, key: args.get(key),
    "yes_or_no": lambda args, path: "yes" if _get_path(args, path) not in (None, False) else "no",
    "inc_by_one": lambda x: x + 1,
    "mult_by_two": lambda x: x * 2,
    "dec_by_five": lambda args: args["x"] - 5,
}


def _get_path(data: Any, path: list[str]) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


ARGS = {
    "name": "Anton",
    "limit": 0,
    "counter": 2,
    "username": "antonmi",
    "x": 1,
    "y": 2,
    "number": 3,
    "report": None,
    "followers": ["a", "b", "c"],
    "bar": "héllo",
    "baz": 42,
    "foo": "foo",
    "list": [3, 1, 2],
    "map": {"b": 2, "a": 1},
    "greeted": {"value": True},
    "body": {"age": 33, "items": [{"login": "u1"}, {"login": "u2"}], "total_count": 2},
    "headers": {"x-request-id": "req-1"},
    "usernames": ["first", "second"],
    "rows": [[1, "Ann", 30], [2, "Bob", 40]],
    "user": {"name": "Alice"},
}

# (expression, args overrides, expected JSON result): every corpus form of spec section 1.2
CORPUS: list[tuple[str, dict[str, Any], Any]] = [
    ("args", {}, ARGS),
    ("args['name']", {}, "Anton"),
    ("args['limit'] || 10", {}, 0),
    ("args['limit'] || 10", {"limit": None}, 10),
    ("args['counter'] + 1", {}, 3),
    ("length(args['followers'])", {}, 3),
    ("'/users/' <> args['username']", {}, "/users/antonmi"),
    ("'users/' <> args['username'] <> '/followers'", {}, "users/antonmi/followers"),
    ("get_in(args, ['body', 'age'])", {}, 33),
    ("get_in(args, ['headers', 'x-request-id'])", {}, "req-1"),
    ("get_in(args, ['body', 'items', Access.all(), 'login'])", {}, ["u1", "u2"]),
    (
        "get_in(args, ['body', Access.all(), 'login'])",
        {"body": [{"login": "f1"}, {"login": "f2"}]},
        ["f1", "f2"],
    ),
    ("get_in(args, ['usernames', Access.at(0)])", {}, "first"),
    ("get_in(args, ['usernames', Access.at(5)])", {}, None),
    ("get_in(args['rows'], [Access.at(0), Access.at(2)])", {}, 30),
    ("get_in(args, [Access.key('user'), Access.key('name')])", {}, "Alice"),
    ('if args[\'report\'], do: "output", else: "next-steps"', {}, "next-steps"),
    ('if args[\'report\'], do: "output", else: "next-steps"', {"report": True}, "output"),
    (
        "if args['counter'] > 0 && args['counter'] < args['limit'], do: \"continue\", else: \"done\"",
        {"limit": 3},
        "continue",
    ),
    (
        "if args['counter'] > 0 && args['counter'] < args['limit'], do: \"continue\", else: \"done\"",
        {"limit": 2},
        "done",
    ),
    ('if args[\'number\'] <= 3, do: "branch1", else: "branch2"', {}, "branch1"),
    ('if args[\'number\'] <= 3, do: "branch1", else: "branch2"', {"number": 4}, "branch2"),
    ("args['x'] <= 3", {}, True),
    ("args['x'] > 2", {}, False),
    ("args['missing'] > 2", {}, True),  # nil > 2 in Erlang term order
    ("true", {}, True),
    ("(fetch(args, 'x') + get(args, 'x')) <= 5", {}, True),
    ("yes_or_no(args, ['greeted', 'value'])", {}, "yes"),
    ("yes_or_no(args, ['greeted', 'value'])", {"greeted": {"value": None}}, "no"),
    ("inc_by_one(args['x'])", {}, 2),
    ('mult_by_two(args["y"])', {}, 4),
    ("dec_by_five(args)", {}, -4),
    ("String.length(args['bar'])", {}, 5),
    ("to_string(args['baz'])", {}, "42"),
    ("args['foo'] <> 'baz'", {}, "foobaz"),
    ("List.first(args['list'], 5)", {}, 3),
    ("List.first(args['list'], 5)", {"list": []}, 5),
    ("Enum.min(args['list'])", {}, 1),
    ("Enum.reduce(args['list'], &(&1 + &2))", {}, 6),
    ("Map.get(args['map'], 'a')", {}, 1),
    ("Map.keys(args['map'])", {}, ["a", "b"]),
    ('{args["x"], args["y"], "path/#{args["x"]}"}', {}, [1, 2, "path/1"]),
    ('case args["x"] do 1 -> true; 2 -> false end', {}, True),
    ('case args["x"] do 1 -> true; 2 -> false end', {"x": 2}, False),
    ('cond do args["x"] == 1 -> true; true -> nil end', {}, True),
    ('cond do args["x"] == 1 -> true; true -> nil end', {"x": 5}, None),
]


@pytest.mark.parametrize(("source", "overrides", "expected"), CORPUS)
def test_corpus(source: str, overrides: dict[str, Any], expected: Any) -> None:
    assert evaluate(source, {**ARGS, **overrides}, HELPERS) == expected


SEMANTICS: list[tuple[str, Any]] = [
    ("0 || 1", 0),
    ("nil || false", False),
    ("false && 1", False),
    ('"" && 1', 1),
    ("[] || 2", []),
    ("1 / 2", 0.5),
    ("4 / 2", 2.0),
    ("div(7, 2)", 3),
    ("div(-7, 2)", -3),
    ("rem(-7, 2)", -1),
    ("1 == 1.0", True),
    ("1 === 1.0", False),
    ("1 != 1.0", False),
    ("1 !== 1.0", True),
    ("[1, 2] ++ [3]", [1, 2, 3]),
    ("[1, 2, 1] -- [1]", [2, 1]),
    ("1 < :a", True),
    ("nil < {1}", True),
    ("{1, 2} < %{}", True),
    ("%{} < []", True),
    ('[] < ""', True),
    ("if nil, do: 1", None),
    ("unless false, do: 1, else: 2", 1),
    ("if 0 do\n  :zero\nelse\n  :none\nend", "zero"),
    ("case [1, 2, 3] do\n  [h | t] when h > 0 -> {h, t}\n  _ -> :other\nend", [1, [2, 3]]),
    ('case %{"a" => 1} do %{"a" => a} -> a end', 1),
    ("Enum.map([1, 2, 3], fn x -> x * 2 end)", [2, 4, 6]),
    ("Enum.filter([1, 2, 3, 4], &(rem(&1, 2) == 0))", [2, 4]),
    ("Enum.map([1, 2], &inc_by_one/1)", [2, 3]),
    ('Enum.map(%{"a" => 1}, fn {k, v} -> k <> to_string(v) end)', ["a1"]),
    ("Enum.sort([3, 1, 2], :desc)", [3, 2, 1]),
    ('Enum.sort_by(["bb", "a"], &String.length/1)', ["a", "bb"]),
    ('Enum.join([1, 2, 3], "-")', "1-2-3"),
    ("Enum.sum([1, 2.5])", 3.5),
    ("Enum.at([1, 2], -1)", 2),
    ('Enum.min_by([%{"d" => 3}, %{"d" => 1}], & &1["d"])', {"d": 1}),
    ("List.flatten([1, [2, [3]]])", [1, 2, 3]),
    ("List.last([])", None),
    ('Map.put(%{}, "k", 1)', {"k": 1}),
    ("Map.merge(%{a: 1}, %{b: 2})", {"a": 1, "b": 2}),
    ('Map.values(%{"b" => 2, "a" => 1})', [1, 2]),
    ('String.split("a b  c")', ["a", "b", "c"]),
    ('String.split("a,b", ",")', ["a", "b"]),
    ('String.upcase("abc")', "ABC"),
    ('String.replace("aXbX", "X", "-")', "a-b-"),
    ('inspect(%{"a" => [1, nil]})', '%{"a" => [1, nil]}'),
    ("to_string(1.5)", "1.5"),
    ('"#{1}-#{:ok}-#{nil}"', "1-ok-"),
    ("x = 2; x * 3", 6),
    ('args |> Map.get("x") |> inc_by_one()', 2),
    ('put_in(%{"a" => %{"b" => 1}}, ["a", "b"], 2)', {"a": {"b": 2}}),
    ('update_in(%{"l" => [1, 2]}, ["l", Access.all()], &(&1 * 10))', {"l": [10, 20]}),
    ('get_in([%{"v" => 1}, %{"v" => 2}], [Access.filter(&(&1["v"] > 1)), "v"])', [2]),
    ("elem({1, 2}, 1)", 2),
    ("hd([1, 2])", 1),
    ("tl([1, 2])", [2]),
    ('max(1, "a")', "a"),
    ("round(2.5)", 3),
    ("trunc(-2.7)", -2),
    ("abs(-3)", 3),
    ("is_map(%{})", True),
    ("is_nil(nil)", True),
    ('%{args | "x" => 9}["x"]', 9),
    ('"line\\n"', "line\n"),
    ('-args["x"]', -1),
    ("fn a, b -> a - b end.(5, 3)", 2),
    ("1..3 |> Enum.map(&(&1 * &1))", [1, 4, 9]),
    ("Enum.member?([1, 2], 2)", True),
    ("2 in [1, 2]", True),
    ("!nil", True),
    ('String.length("abc") # a comment', 3),
]


@pytest.mark.parametrize(("source", "expected"), SEMANTICS)
def test_elixir_semantics(source: str, expected: Any) -> None:
    assert evaluate(source, ARGS, HELPERS) == expected


ERRORS: list[tuple[str, str, str]] = [
    ("File.read('/etc/passwd')", "RuntimeError", "Non local call"),
    (":os.cmd('ls')", "SyntaxError", ""),
    ("args.in", "RuntimeError", "Non local call"),
    ("eval('1')", "CompileError", "not allowed"),
    ("my_string()", "CompileError", "undefined function my_string/0 (there is no such import)"),
    ("unknown_var + 1", "CompileError", "undefined variable unknown_var"),
    ("ifffff args['x'] > 3, do: 1", "SyntaxError", ""),
    ("1 +", "SyntaxError", "unexpected end"),
    ("'it''s'", "SyntaxError", "unexpected"),
    ("'unterminated", "SyntaxError", "missing terminator"),
    ("Enum.nope([])", "UndefinedFunctionError", "Enum.nope/1"),
    ("length(1, 2)", "UndefinedFunctionError", "length/2"),
]


@pytest.mark.parametrize(("source", "kind", "fragment"), ERRORS)
def test_compile_errors_name_kind_and_position(source: str, kind: str, fragment: str) -> None:
    with pytest.raises(ExprError) as info:
        evaluate(source, ARGS, HELPERS)
    assert info.value.kind == kind
    assert fragment in str(info.value)
    assert repr(source[:20])[1:-1][:10] in str(info.value) or source[:10] in str(info.value)


RUNTIME_ERRORS: list[tuple[str, str]] = [
    ('1 + "a"', "ArithmeticError"),
    ('"a" <> 1', "ArgumentError"),
    ("args['list'][0]", "ArgumentError"),
    ("1 / 0", "ArithmeticError"),
    ("hd([])", "ArgumentError"),
    ("case 3 do 1 -> 1 end", "CaseClauseError"),
    ("cond do false -> 1 end", "CondClauseError"),
    ("Enum.min([])", "Enum.EmptyError"),
    ('"#{%{}}"', "Protocol.UndefinedError"),
    ("length(nil)", "ArgumentError"),
]


@pytest.mark.parametrize(("source", "kind"), RUNTIME_ERRORS)
def test_runtime_errors(source: str, kind: str) -> None:
    expr = compile_expression(source, HELPERS)
    with pytest.raises(ExprError) as info:
        expr(ARGS)
    assert info.value.kind == kind
    assert " at 1:" in str(info.value)


HOSTILE = [
    "Enum.map(1..100000, fn x -> Enum.map(1..100000, fn y -> x * y end) end)",
    'String.duplicate("a", 100000000)',
    "2 ** 100000000",
    "f = fn g, n -> g.(g, n + 1) end; f.(f, 0)",
    "List.duplicate(1, 1000000000)",
    'Enum.reduce(1..1000000, "", fn _, acc -> acc <> "xxxxxxxxxx" end)',
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_expressions_are_bounded(source: str) -> None:
    start = time.monotonic()
    with pytest.raises(LimitError):
        compile_expression(source, HELPERS).evaluate(ARGS, Budget(max_steps=200_000))
    assert time.monotonic() - start < 5


def test_deep_nesting_is_a_syntax_error_not_a_crash() -> None:
    with pytest.raises(ExprError, match="nested"):
        compile_expression("(" * 500 + "1" + ")" * 500)
    with pytest.raises(ExprError, match=r"nested|too deep"):
        compile_expression("[" * 2000 + "]" * 2000)


def test_source_size_is_limited() -> None:
    with pytest.raises(ExprError, match="longer than"):
        compile_expression("1 + " * 10_000 + "1")


_ATOMS = st.sampled_from(
    [
        "args",
        "args['x']",
        "1",
        "2.5",
        "nil",
        "true",
        "'s'",
        "[1, 2]",
        '%{"a" => 1}',
        "{1, 2}",
        ":ok",
        "fn x -> x end",
        "&(&1)",
        "Enum",
        "get_in(",
        "if",
        "do:",
        "else:",
        "case",
        "cond",
        "do",
        "end",
        "->",
        "+",
        "-",
        "*",
        "/",
        "<>",
        "++",
        "||",
        "&&",
        "==",
        "<",
        "|>",
        ",",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        "%{",
        "|",
        "=>",
        "=",
        ";",
        "\n",
        "#{",
        '"',
        "Access.all()",
        "x",
        "_",
        "&1",
        "..",
        "!",
        "^",
        "'",
    ]
)


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ATOMS, max_size=25).map(" ".join))
def test_fuzz_token_soup_never_crashes(source: str) -> None:
    _check_bounded(source)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_fuzz_arbitrary_text_never_crashes(source: str) -> None:
    _check_bounded(source)


def _check_bounded(source: str) -> None:
    start = time.monotonic()
    try:
        expr = compile_expression(source, HELPERS)
        expr.evaluate(ARGS, Budget(max_steps=20_000))
    except ExprError as e:
        assert str(e)
    assert time.monotonic() - start < 1.5
