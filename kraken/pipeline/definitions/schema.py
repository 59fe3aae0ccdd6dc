"""Input/output schemas of service functions (JSON Schema via ``jsonschema``).

The original's shorthand is accepted: an object with ``properties`` is a full schema (with
``"type": "object"`` forced); otherwise the object is the properties map and an optional
``required`` list is taken out of it. Values must always be JSON objects. Messages follow
ex_json_schema: ``#/b:Type mismatch. Expected Number but got String.``
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError

from kraken.pipeline.definitions.mapping import DefinitionError

Check = Callable[[Any], "str | None"]

_TYPE_NAMES = {
    "string": "String",
    "integer": "Integer",
    "number": "Number",
    "boolean": "Boolean",
    "null": "Null",
    "array": "Array",
    "object": "Object",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    return "Object"


def _message(err: Any) -> str:
    path = "#" + "".join(f"/{p}" for p in err.absolute_path)
    if err.validator == "type":
        expected = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        names = ", ".join(_TYPE_NAMES.get(t, str(t)) for t in expected)
        return f"{path}:Type mismatch. Expected {names} but got {_json_type(err.instance)}."
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return f"Required property {missing} was not present."
    return f"{path}:{err.message}"


def full_schema(spec: Any, field: str) -> dict[str, Any]:
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise DefinitionError("a schema must be a JSON object", field)
    if "properties" in spec:
        schema = {**spec, "type": "object"}
    else:
        props = dict(spec)
        required = props.pop("required", [])
        schema = {"type": "object", "properties": props, "required": required}
    try:
        Draft7Validator.check_schema(schema)
    except SchemaError as e:
        where = "/".join(str(p) for p in e.path)
        raise DefinitionError(
            f"schema did not pass validation: {e.message} (at {where or 'top'})", field
        ) from None
    return schema


def compile_schema(spec: Any, field: str) -> Check:
    """A check returning ``None`` for a valid value or the error message."""
    schema = full_schema(spec, field)
    trivial = (
        not schema.get("properties")
        and not schema.get("required")
        and set(schema) <= {"type", "properties", "required"}
    )

    def check_object(value: Any) -> str | None:
        if isinstance(value, dict):
            return None
        return f"#:Type mismatch. Expected Object but got {_json_type(value)}."

    if trivial:
        return check_object
    validator = Draft7Validator(schema)
    is_valid = _fast_predicate(schema) or validator.is_valid

    def check(value: Any) -> str | None:
        if is_valid(value):
            return None
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        return "; ".join(_message(e) for e in errors)

    return check


def _is_integer(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": _is_integer,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _any_of(tests: list[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    return lambda v: any(test(v) for test in tests)


def _fast_predicate(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """A plain-Python validity test for the common shape (properties with only ``type``,
    ``required``); ``None`` when the schema needs the full validator. Messages for invalid
    values still come from jsonschema."""
    if set(schema) - {"type", "properties", "required"}:
        return None
    required = schema.get("required") or []
    props = schema.get("properties") or {}
    if not isinstance(props, dict) or not isinstance(required, list):
        return None
    tests: list[tuple[str, Callable[[Any], bool]]] = []
    for name, sub in props.items():
        if not isinstance(sub, dict) or set(sub) - {"type"}:
            return None
        if "type" not in sub:
            continue
        kinds = sub["type"] if isinstance(sub["type"], list) else [sub["type"]]
        if not all(k in _TYPE_TESTS for k in kinds):
            return None
        fns = [_TYPE_TESTS[k] for k in kinds]
        tests.append((name, fns[0] if len(fns) == 1 else _any_of(fns)))

    def valid(value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        for name in required:
            if name not in value:
                return False
        for name, test in tests:
            if name in value and not test(value[name]):
                return False
        return True

    return valid
