"""Pathological JSON (deep nesting, endless integers) is a clean refusal in every reader:
the core JSON reader, the HTTP body reader, the state sync codec and the state websocket."""

from __future__ import annotations

import io
import json

import pytest
from twisted.web.test.requesthelper import DummyRequest

from kraken.core import jsonlimits
from kraken.core.http import HTTPError, read_json
from kraken.core.jsonlimits import MAX_DEPTH, JSONLimitError
from kraken.state.sync_wire import Decoder, Kind, WireError, encode
from kraken.state.websocket import CommandError, parse_command
from tests.hostile.rig import huge_int, nested
from tests.unit.test_state_sync import KID, connect_child, parent_rig, received

PATHOLOGICAL = {
    "nested just over the limit": nested(MAX_DEPTH + 1),
    "nested 900 deep (parses, breaks walkers)": nested(900),
    "nested 100000 deep (breaks the parser)": nested(100_000),
    "5000-digit integer": huge_int(5000),
    "5000-digit integer inside an object": b'{"id": ' + huge_int(5000) + b"}",
    "nested inside an object": b'{"id": ' + nested(5000) + b"}",
}


@pytest.mark.parametrize("raw", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_loads_refuses_with_a_value_error(raw: bytes) -> None:
    with pytest.raises(JSONLimitError):
        jsonlimits.loads(raw)


def test_loads_takes_what_is_within_the_limits() -> None:
    assert jsonlimits.loads(nested(MAX_DEPTH)) == json.loads(nested(MAX_DEPTH))
    assert jsonlimits.loads("[" + "9" * 4000 + "]") == [int("9" * 4000)]
    wide = {"nodes": [{"id": i, "services": [{}]} for i in range(2000)]}
    assert jsonlimits.loads(json.dumps(wide).encode()) == wide


@pytest.mark.parametrize("raw", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_read_json_answers_400_bad_json(raw: bytes) -> None:
    request = DummyRequest([b""])
    request.content = io.BytesIO(raw)
    with pytest.raises(HTTPError) as caught:
        read_json(request)
    assert caught.value.status == 400 and caught.value.code == "BAD_JSON"


@pytest.mark.parametrize("raw", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_sync_decoder_reports_a_wire_error(raw: bytes) -> None:
    frame = len(raw + b"x").to_bytes(4, "big") + bytes([Kind.HELLO]) + raw
    with pytest.raises(WireError) as caught:
        list(Decoder().feed(frame))
    assert caught.value.reason.startswith("HELLO body")


@pytest.mark.parametrize("raw", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_parent_answers_a_pathological_hello_with_an_error_frame(raw: bytes) -> None:
    _, _, factory = parent_rig()
    link, transport = connect_child(factory)
    link.dataReceived(len(raw + b"x").to_bytes(4, "big") + bytes([Kind.HELLO]) + raw)
    (error,) = received(transport)
    assert error.kind is Kind.ERROR and "HELLO body" in error.body["message"]
    assert transport.disconnecting and KID not in factory.children
    assert encode(Kind.HELLO, {"id": KID})  # the codec still encodes normal messages


def test_websocket_commands_are_small_enough_to_stay_harmless() -> None:
    deepest = nested(256)  # 512 bytes: the largest message the event websocket takes
    with pytest.raises(CommandError):
        parse_command(deepest)
    with pytest.raises(CommandError):
        parse_command(b'{"command": ' + huge_int(500) + b', "type": 1}')


STRICTLY_REFUSED = {
    "NaN": b'{"x": NaN}',
    "Infinity": b"[Infinity]",
    "-Infinity": b"[-Infinity]",
    "a repeated key": b'{"layers": [], "layers": [1]}',
    "a repeated key deep inside": b'{"a": [{"b": {"c": 1, "c": 2}}]}',
    "bytes that are not UTF-8": b'{"x": "\xff"}',
    "an encoded surrogate": b'{"x": "\xed\xa0\x80"}',
    "UTF-16": '{"x": 1}'.encode("utf-16"),
}


@pytest.mark.parametrize("raw", STRICTLY_REFUSED.values(), ids=STRICTLY_REFUSED.keys())
def test_strict_loads_refuses_what_readers_disagree_on(raw: bytes) -> None:
    with pytest.raises(ValueError):
        jsonlimits.loads(raw, strict=True)


def test_strict_loads_keeps_the_limits_and_takes_plain_json() -> None:
    with pytest.raises(JSONLimitError):
        jsonlimits.loads(nested(MAX_DEPTH + 1), strict=True)
    with pytest.raises(JSONLimitError):
        jsonlimits.loads(huge_int(5000), strict=True)
    document = {"schemaVersion": 2, "layers": [{"digest": "sha256:" + "a" * 64, "size": 1}], "x": "é"}
    assert jsonlimits.loads(json.dumps(document, ensure_ascii=False).encode(), strict=True) == document
    assert jsonlimits.loads('{"x": NaN}') == {"x": pytest.approx(float("nan"), nan_ok=True)}
