"""The preload endpoint's ctr command and its answers, with the process runner injected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from kraken.core.http import HTTPError
from kraken.mirror.config import parse_mirrors
from kraken.mirror.preload import MAX_RUNNING, PreloadAPI, pull_command

UPSTREAMS = parse_mirrors({"docker.io": None, "reg.local:5000": {"url": "http://reg.local:5000"}})


def test_pull_commands(tmp_path: Path) -> None:
    plain = pull_command("ctr", "/run/c.sock", "k8s.io", "team/app", "v1", 5055, UPSTREAMS, tmp_path)
    assert plain.argv == ["ctr", "--address", "/run/c.sock", "--namespace", "k8s.io", "images", "pull",
                          "--plain-http", "127.0.0.1:5055/team/app:v1"]
    assert plain.hosts is None
    hub = pull_command("ctr", "/s", "default", "docker.io/library/alpine", "3.20", 5055, UPSTREAMS, tmp_path)
    assert hub.reference == "docker.io/library/alpine:3.20"
    assert hub.argv[-3:] == ["--hosts-dir", str(tmp_path), "docker.io/library/alpine:3.20"]
    assert hub.hosts is not None and hub.hosts[0] == "docker.io"
    assert 'server = "https://registry-1.docker.io"' in hub.hosts[1]
    assert '[host."http://127.0.0.1:5055"]' in hub.hosts[1]
    local = pull_command("ctr", "/s", "default", "reg.local-5000/a/b", "v", 1, UPSTREAMS, tmp_path)
    assert local.reference == "reg.local:5000/a/b:v"


def _request(**args: str) -> DummyRequest:
    request = DummyRequest([b""])
    for key, value in args.items():
        request.addArg(key.encode(), value.encode())
    return request


def _answer(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def test_answers(tmp_path: Path) -> None:
    runs: list[list[str]] = []
    pending: list[Deferred[Any]] = []

    def run(argv: list[str], timeout: float) -> Deferred[Any]:
        runs.append(argv)
        if "team/slow:v1" in argv[-1]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            return d
        if "fails" in argv[-1]:
            return succeed((1, b"ctr: failed to resolve reference: not found\n"))
        return succeed((0, b"done\n"))

    api = PreloadAPI(Clock(), lambda: 5055, UPSTREAMS, tmp_path / "hosts", "/s", run=run)  # type: ignore[arg-type]
    ok = _answer(api.preload(_request(runtime="containerd"), "docker.io%2Flibrary%2Falpine:3"))
    assert ok == {"image": "docker.io/library/alpine:3", "namespace": "k8s.io", "status": "ok"}
    assert (tmp_path / "hosts" / "docker.io" / "hosts.toml").is_file()
    with pytest.raises(HTTPError) as caught:
        _answer(api.preload(_request(), "team/fails:v1"))
    assert caught.value.status == 500 and "not found" in caught.value.message
    for tag, args, status in [("nocolon", {}, 400), ("team/app:v1", {"runtime": "docker"}, 400),
                              ("team/app:v1", {"namespace": "bad ns"}, 400), ("Bad/Name:v1", {}, 400)]:
        with pytest.raises(HTTPError) as caught:
            _answer(api.preload(_request(**args), tag))
        assert caught.value.status == status
    slow = [api.preload(_request(), "team/slow:v1") for _ in range(MAX_RUNNING)]
    with pytest.raises(HTTPError) as caught:
        _answer(api.preload(_request(), "team/app:v1"))
    assert caught.value.status == 429
    for d in pending:
        d.callback((0, b""))
    assert all(_answer(d)["status"] == "ok" for d in slow)
    assert api.running == 0
