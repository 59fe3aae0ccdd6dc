"""Hostile and unlucky clients against the registry API of kraken-proxy and the agent (real twistd).

Upload-session exhaustion by one client, idle sessions, kill -9 right after an acknowledged
PATCH, ``Range`` edge cases, bodies and headers over the limits.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.p2p_fixtures import agent_config
from tests.integration.registry_http import Registry, Reply, TLSClient
from tests.integration.registry_support import build_oci_layout, skopeo
from tests.support import ServerProcess, free_port, tls_section

ATTACKER = "127.0.0.2"  # a second loopback source address: another client as the proxy sees it


def standalone_proxy(servers: Any, root: Path, **proxy: Any) -> ServerProcess:
    return servers.start("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "proxy": {"storage": str(root), **proxy},
    }, name="proxy")


def from_address(port: int, source: str) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    conn.connect()
    return conn


def call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return Reply(response.status, response.headers, response.read())


def metric(port: int, name: str) -> float:
    text = Registry("127.0.0.1", port).request("GET", "/metrics").body.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send *data* as it is; read one answer (until its ``Content-Length`` is in, or the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
            head, sep, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)) and not head.startswith(b"HTTP/1.1 100"):
                break
        return answer


def status_of(answer: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(m.group(1)) if m else None


def new_session(reg: Registry, name: str = "test/blob") -> str:
    start = reg.request("POST", f"/v2/{name}/blobs/uploads/")
    assert start.status == 202, (start.status, start.body)
    location = start.header("Location")
    assert location
    return location


def push_blob(reg: Registry, data: bytes, name: str = "test/blob") -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    put = reg.upload(name, data, digest)
    assert put.status == 201, (put.status, put.body)
    return f"/v2/{name}/blobs/{digest}"


# -- item 6: upload sessions ------------------------------------------------------------------

def test_one_client_cannot_lock_out_the_others(servers: Any, tmp_path: Path) -> None:
    proxy = standalone_proxy(servers, tmp_path / "proxy")  # the shipped defaults
    port = proxy.port("registry")
    attacker = from_address(port, ATTACKER)
    answers = [call(attacker, "POST", f"/v2/x{i % 7}/blobs/uploads/") for i in range(1000)]
    attacker.close()
    opened = [a for a in answers if a.status == 202]
    refused = [a for a in answers if a.status == 429]
    assert len(opened) + len(refused) == 1000
    assert 0 < len(opened) < 200, len(opened)
    assert refused[0].error_codes() == ["TOOMANYREQUESTS"]
    assert refused[0].header("Retry-After")

    # a second client still pushes a whole image with a stock tool
    image = build_oci_layout(tmp_path / "layout", "v1", [{"a.bin": b"a" * 100_000}, {"b.bin": b"b" * 1000}])
    skopeo("copy", "--dest-tls-verify=false", f"oci:{image.layout}:v1",
           f"docker://127.0.0.1:{port}/test/after-attack:v1")
    assert metric(port, "kraken_proxy_upload_sessions_refused_total") == len(refused)
    offender_lines = [line for line in proxy.log().splitlines() if ATTACKER in line and "upload" in line]
    assert len(offender_lines) == 1, offender_lines


def test_under_mutual_tls_a_client_is_its_certificate(servers: Any, pki: Path, tmp_path: Path) -> None:
    proxy = servers.start("kraken-proxy", {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "proxy"),
        "proxy": {"storage": str(tmp_path / "proxy"), "max_uploads_per_client": 5},
    }, name="proxy")
    port = proxy.port("registry")
    attacker, other = TLSClient(pki, port, "client"), TLSClient(pki, port, "proxy")  # same address
    answers = [attacker.request("POST", "/v2/x/blobs/uploads/")[0] for _ in range(8)]
    assert answers == [202] * 5 + [429] * 3
    assert other.request("POST", "/v2/x/blobs/uploads/")[0] == 202
    lines = [line for line in proxy.log().splitlines() if "refused a request from client" in line]
    assert len(lines) == 1, lines


def test_idle_sessions_expire_and_their_bytes_go(servers: Any, tmp_path: Path) -> None:
    proxy = standalone_proxy(servers, tmp_path / "proxy", upload_ttl=2)
    reg = Registry("127.0.0.1", proxy.port("registry"))
    idle = new_session(reg)
    busy = new_session(reg)
    patched = reg.request("PATCH", idle, b"x" * 4096, {"Content-Type": "application/octet-stream"})
    assert patched.status == 202
    uploads = tmp_path / "proxy" / "uploads"
    assert sum(p.stat().st_size for p in uploads.iterdir()) >= 4096
    for _ in range(5):  # each PATCH refreshes the idle timer
        time.sleep(1)
        assert reg.request("PATCH", busy, b"y", {"Content-Type": "application/octet-stream"}).status == 202
    assert reg.request("GET", idle).status == 404
    assert reg.request("GET", busy).status == 204
    assert not [p for p in uploads.iterdir() if idle.rsplit("/", 1)[1] in p.name]
    assert metric(proxy.port("registry"), "kraken_proxy_upload_sessions_expired_total") >= 1


# -- item 15: sessions survive a restart -------------------------------------------------------

@pytest.mark.parametrize("sync", [True, False])
def test_patch_acknowledged_before_kill_9_resumes_after_restart(servers: Any, tmp_path: Path,
                                                                sync: bool) -> None:
    proxy = standalone_proxy(servers, tmp_path / "proxy", upload_sync=sync)
    reg = Registry("127.0.0.1", proxy.port("registry"))
    first, second = b"first chunk " * 50_000, b"second chunk " * 30_000
    location = new_session(reg)
    patched = reg.request("PATCH", location, first, {
        "Content-Type": "application/octet-stream", "Content-Range": f"0-{len(first) - 1}"})
    assert patched.status == 202 and patched.header("Range") == f"0-{len(first) - 1}"
    proxy.kill()  # SIGKILL right after the 202

    proxy.start()
    reg = Registry("127.0.0.1", proxy.port("registry"))
    status = reg.request("GET", location)
    assert status.status == 204 and status.header("Range") == f"0-{len(first) - 1}"
    more = reg.request("PATCH", location, second, {
        "Content-Type": "application/octet-stream",
        "Content-Range": f"{len(first)}-{len(first) + len(second) - 1}"})
    assert more.status == 202, more.body
    digest = "sha256:" + hashlib.sha256(first + second).hexdigest()
    done = reg.request("PUT", f"{location}?digest={digest}")
    assert done.status == 201, done.body
    assert reg.request("GET", f"/v2/test/blob/blobs/{digest}").body == first + second


def test_expired_sessions_are_cleaned_at_start(servers: Any, tmp_path: Path) -> None:
    proxy = standalone_proxy(servers, tmp_path / "proxy", upload_ttl=1)
    reg = Registry("127.0.0.1", proxy.port("registry"))
    location = new_session(reg)
    assert reg.request("PATCH", location, b"z" * 1000).status == 202
    proxy.kill()
    time.sleep(1.5)
    proxy.start()
    assert not list((tmp_path / "proxy" / "uploads").iterdir())
    assert Registry("127.0.0.1", proxy.port("registry")).request("GET", location).status == 404


# -- item 14: ranges, declared sizes, header and URL limits ----------------------------------

@pytest.fixture
def blob(servers: Any, tmp_path: Path) -> Iterator[tuple[Registry, str, bytes]]:
    proxy = standalone_proxy(servers, tmp_path / "proxy")
    reg = Registry("127.0.0.1", proxy.port("registry"))
    data = bytes(range(256)) * 4
    yield reg, push_blob(reg, data), data


@pytest.mark.parametrize(("header", "status", "part"), [
    ("bytes=-" + "9" * 40, 206, slice(None)),        # suffix longer than the blob: all of it
    ("bytes=-2000", 206, slice(None)),
    ("bytes=0-" + "9" * 40, 206, slice(None)),        # last-pos past the end: up to the end
    ("bytes=-10", 206, slice(-10, None)),
    ("bytes=abc", 200, slice(None)),                  # unparseable: ignored
    ("bytes=--5", 200, slice(None)),
    ("items=0-5", 200, slice(None)),                  # unknown unit: ignored
    ("garbage", 200, slice(None)),
    ("bytes=" + "9" * 40 + "-", 416, None),           # first-pos past the end
    ("bytes=-0", 416, None),
    ("bytes=5-3", 416, None),
])
def test_range_edge_cases(blob: tuple[Registry, str, bytes], header: str, status: int,
                          part: slice | None) -> None:
    reg, path, data = blob
    answer = reg.request("GET", path, headers={"Range": header})
    assert answer.status == status, (header, answer.status, answer.body[:200])
    if part is not None:
        wanted = data[part]
        assert answer.body == wanted
        if status == 206:
            start = len(data) - len(wanted)
            assert answer.header("Content-Range") == f"bytes {start}-{len(data) - 1}/{len(data)}"
    else:
        assert answer.header("Content-Range") == f"bytes */{len(data)}"


def test_huge_declared_bodies_are_refused_at_the_headers(servers: Any, tmp_path: Path) -> None:
    proxy = standalone_proxy(servers, tmp_path / "proxy", max_blob_size=1_000_000)
    port = proxy.port("registry")
    reg = Registry("127.0.0.1", port)
    location = new_session(reg)
    digest = "sha256:" + "0" * 64
    for method, target in [
        ("PATCH", location),
        ("PUT", f"{location}?digest={digest}"),
        ("POST", f"/v2/test/blob/blobs/uploads/?digest={digest}"),
        ("PUT", "/v2/test/blob/manifests/v1"),
    ]:
        for expect in ("", "Expect: 100-continue\r\n"):
            head = (f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999\r\n"
                    f"Content-Type: application/octet-stream\r\n{expect}\r\n").encode()
            started = time.monotonic()
            answer = raw_exchange(port, head, timeout=10)  # no body byte is ever sent
            assert status_of(answer) == 413, (method, target, answer[:300])
            assert b"100 Continue" not in answer
            assert time.monotonic() - started < 5
            body = answer.split(b"\r\n\r\n", 1)[1]
            assert json.loads(body)["errors"][0]["code"] == "SIZE_INVALID"
    # the session is intact and still takes chunks
    assert reg.request("PATCH", location, b"ok").status == 202
    # an undeclared (chunked) body is bounded too: no spool file of any size
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("PUT", "/v2/test/blob/manifests/v1", body=iter([b"{" * 65536] * 80),
                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, encode_chunked=True)
    chunked = conn.getresponse()
    assert chunked.status == 413 and json.loads(chunked.read())["errors"][0]["code"] == "SIZE_INVALID"
    conn.close()
    assert metric(port, "kraken_proxy_registry_limit_refusals_total") == 9


def _agent_registry(servers: Any, pki: Path, root: Path) -> ServerProcess:
    config = agent_config(pki, root, free_port())
    config["registry"] = {"listen": ["tcp:0:interface=127.0.0.1"]}
    return servers.start("kraken-agent", config, name="agent")


@pytest.mark.parametrize("server", ["proxy", "agent"])
def test_header_and_url_limits_are_answered(servers: Any, pki: Path, tmp_path: Path, server: str) -> None:
    if server == "proxy":
        port = standalone_proxy(servers, tmp_path / "proxy").port("registry")
        metric_name = "kraken_proxy_http_refused_total"
    else:
        port = _agent_registry(servers, pki, tmp_path / "agent").port("registry")
        metric_name = "kraken_agent_http_refused_total"
    cases = [
        (b"GET /v2/" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n", 431),
        (b"GET /v2/ HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"c" * 100)
                                                        for i in range(200)) + b"\r\n", 431),
        (b"GET /v2/ HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(600)) + b"\r\n",
         431),
        (b"PUT /v2/x/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", 413),
    ]
    for request, status in cases:
        answer = raw_exchange(port, request)
        assert status_of(answer) == status, (request[:60], answer[:200])
    fine = raw_exchange(port, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(fine) == 200
    assert metric(port, metric_name) == len(cases)
    # a body over the manifest limit, declared: refused before it is read (a push to the agent too)
    big = raw_exchange(port, b"PUT /v2/x/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
    assert status_of(big) == 413 and b"SIZE_INVALID" in big
