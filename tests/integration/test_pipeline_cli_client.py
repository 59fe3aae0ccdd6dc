"""The CLI service client: real programs through spawnProcess, no shell, allow-list only."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from kraken.pipeline.clients.base import ClientContext
from kraken.pipeline.services import CallError, ServiceRegistry

FILES = {
    "name": "files",
    "client": {"module": "OctopusClientCliRambo"},
    "interface": {
        "echo": {
            "prepare": {"command": "echo", "args": "args['words']"},
            "call": {"split_by_newline": False},
        },
        "lines": {"prepare": {"command": "printf", "args": ["a\\nb\\n"]}, "call": {"split_by_newline": True}},
        "count": {
            "prepare": {"command": "wc", "args": ["-c"], "input": "args['text']"},
            "transform": {"bytes": "String.to_integer(String.trim(args['out']))"},
        },
        "fail": {
            "prepare": {"command": "false"},
            "error": {"failed": True, "status": "args['error']['status']"},
        },
        "shell": {"prepare": {"command": "sh", "args": ["-c", "echo hacked"]}},
    },
}


@pytest_twisted.inlineCallbacks
def test_programs_run_without_a_shell() -> Any:
    services = ServiceRegistry(ClientContext(reactor, cli_commands=["echo", "printf", "wc", "false"]))
    yield services.define(FILES)
    yield services.start("files")
    echoed = yield services.call("files", "echo", {"words": ["hello", "$HOME;", "*"]})
    assert echoed == {"status": 0, "out": "hello $HOME; *\n"}
    lines = yield services.call("files", "lines", {})
    assert lines == {"status": 0, "out": ["a", "b"]}
    counted = yield services.call("files", "count", {"text": "12345"})
    assert counted == {"bytes": 5}
    failed = yield services.call("files", "fail", {})
    assert failed == {"failed": True, "status": 1}
    with pytest.raises(CallError) as info:
        yield services.call("files", "shell", {})
    assert info.value.step == "call" and "not in pipeline.cli_commands" in info.value.message
