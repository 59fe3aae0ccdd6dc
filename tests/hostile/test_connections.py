"""Connection exhaustion and outbound roles, against real server processes.

- Silent TLS connections (no byte of a handshake) are aborted after ``tls.handshake_timeout``,
  counted in ``connections_aborted_total`` and logged once per address; with the server's open
  files limit lowered below the number of silent connections held, a valid mTLS client is
  still served (the oldest pending connection makes room).
- Slowloris on a plain HTTP listener: request headers trickled one byte at a time are aborted
  at ``http.header_timeout`` from the connection's start, and a keep-alive connection idles at
  most that long after a response; a valid client is served while hundreds trickle, also at
  a lowered open files limit. The autobahn WebSocket handshake has its own deadline.
- Every outbound client requires the role of the server it talks to: the tracker refuses an
  "origin" with a client certificate, the agent a "tracker" with another role, the proxy a
  "build-index" with another role, the pub/sub client a server that is not pubsub, the
  state CLI client a server that is not state, a state child a parent that is not state, a
  pipeline HTTP service the roles it names.
"""

from __future__ import annotations

import re
import resource
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor
from twisted.internet.error import ConnectionLost
from twisted.web.resource import Resource
from twisted.web.server import Site

from kraken.core.endpoints import connect
from kraken.core.tls import RoleRefused, wrap_server_factory
from kraken.pipeline.clients.base import ClientContext, ClientError, ClientStartError
from kraken.pipeline.clients.http import HttpClient
from kraken.pipeline.clients.outbound import OutboundPolicy
from kraken.pubsub.client import connect_client
from kraken.state.client import ClientError as StateClientError
from kraken.state.client import StateClient
from tests.integration.state_rig import issue_node_cert, state_config
from tests.support import ServerProcess, tls_section, tls_settings

DIGEST = "sha256:" + "ab" * 32
BACKLOG = 1024  # the floods connect at once instead of waiting out SYN retries (Twisted's default is 50)


# -- helpers --------------------------------------------------------------------------------------


def lower_open_files(limit: int) -> Callable[[], None]:
    """A ``preexec_fn`` setting the child's soft and hard open files limits to *limit*."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return lower


@pytest.fixture(autouse=True)
def enough_open_files() -> Iterator[None]:
    """This process holds hundreds of sockets; raise its soft limit for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


OPENED_AT: dict[socket.socket, float] = {}


def open_connections(port: int, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    """*count* TCP connections to *port* that send *first_bytes* and then nothing (best effort;
    when they were connected is kept in :data:`OPENED_AT`)."""
    held = []
    for _ in range(count):
        s = socket.socket()
        s.settimeout(5.0)
        try:
            s.connect(("127.0.0.1", port))
            if first_bytes:
                s.sendall(first_bytes)
        except OSError:
            s.close()
            continue
        held.append(s)
        OPENED_AT[s] = time.monotonic()
    return held


def closed_early(sockets: list[socket.socket], deadline: float) -> list[socket.socket]:
    """The connections closed by the server although they are younger than *deadline* (with a margin)."""
    now = time.monotonic()
    young = [s for s in sockets if now - OPENED_AT[s] < deadline - 0.5]
    return [s for s in young if closed_by_server(s)]


def closed_by_server(s: socket.socket) -> bool:
    """Whether the server has closed (or reset) the connection *s*."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.settimeout(1.0)


def still_open(sockets: list[socket.socket]) -> int:
    return sum(not closed_by_server(s) for s in sockets)


def wait_until(check: Callable[[], Any], timeout: float, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(step)
    return check()


def close_all(sockets: list[socket.socket]) -> None:
    for s in sockets:
        OPENED_AT.pop(s, None)
        s.close()


def tls_context(pki: Path, role: str = "client") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / f"{role}.pem"), str(pki / f"{role}.key"))
    return context


def get(url: str, context: ssl.SSLContext | None = None, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_retrying(url: str, context: ssl.SSLContext | None = None, within: float = 4.0) -> tuple[int, bytes]:
    """:func:`get`, retried on a reset: right after a flood bigger than the server's open-files
    limit, twisted's EMFILE recovery closes new connections until the flood is trimmed (1 s)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return get(url, context)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def aborted(metrics: bytes, server: str, reason: str) -> float:
    found = re.search(
        rf'^kraken_{server}_connections_aborted_total\{{reason="{reason}"\}} (\S+)$'.encode(),
        metrics,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


def tracker(servers: ServerProcess.Pool, pki: Path, tls: dict[str, Any] | None = None,
            http: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    config = {
        "listen": [f"tls:tcp:0:interface=127.0.0.1:backlog={BACKLOG}"],
        "tls": {**tls_section(pki, "tracker"), **(tls or {})},
        "http": http or {},
        "tracker": {"origins": []},
    }
    return servers.start("kraken-tracker", config, **kwargs)


def proxy(servers: ServerProcess.Pool, pki: Path, root: Path, http: dict[str, Any] | None = None,
          **kwargs: Any) -> Any:
    config = {
        "listen": [f"tcp:0:interface=127.0.0.1:backlog={BACKLOG}"],
        "tls": tls_section(pki, "proxy"),
        "http": http or {},
        "proxy": {"storage": str(root / "proxy")},
    }
    return servers.start("kraken-proxy", config, **kwargs)


# -- item 2: silent TLS connections --------------------------------------------------------------


def test_silent_tls_connections_are_aborted_after_the_handshake_deadline(servers: Any, pki: Path) -> None:
    proc = tracker(servers, pki, {"handshake_timeout": 2.0, "max_handshakes_per_source": 0})
    port = proc.port("http")
    silent = open_connections(port, 100)
    try:
        assert len(silent) >= 95
        assert not closed_early(silent, 2.0), "aborted before the deadline"
        assert wait_until(lambda: all(closed_by_server(s) for s in silent), timeout=5), (
            f"{sum(not closed_by_server(s) for s in silent)} silent connections still open"
        )
    finally:
        close_all(silent)
    status, metrics = get(f"https://127.0.0.1:{port}/metrics", tls_context(pki))
    assert status == 200
    assert aborted(metrics, "tracker", "tls_handshake_timeout") == len(silent)
    assert proc.log().count("aborted a connection from 127.0.0.1") == 1  # once per offender


@pytest.mark.parametrize(
    "caps",
    [
        pytest.param({}, id="per-source-cap"),
        pytest.param({"max_handshakes_per_source": 0, "max_handshakes": 100}, id="listener-cap"),
    ],
)
def test_valid_client_is_served_while_more_silent_connections_than_open_files_are_held(
    servers: Any, pki: Path, caps: dict[str, Any]
) -> None:
    # Before: 520 silent connections took every descriptor of a server with nofile 512 (accept
    # failed with EMFILE) and a valid client, queued behind them, was never handshaken.
    proc = tracker(servers, pki, {"handshake_timeout": 60.0, **caps}, preexec_fn=lower_open_files(512))
    port = proc.port("http")
    silent = open_connections(port, 520)
    try:
        status, body = get_retrying(f"https://127.0.0.1:{port}/health", tls_context(pki))
        assert (status, body) == (200, b'{"status":"ok"}')
        reason, cap = ("tls_handshake_full", 100) if caps else ("tls_handshake_per_source", 64)
        wait_until(lambda: still_open(silent) <= cap, 6)  # the last ones are trimmed 1 s after
        held = still_open(silent)
        status, metrics = get(f"https://127.0.0.1:{port}/metrics", tls_context(pki))
    finally:
        close_all(silent)
    assert len(silent) >= 500
    assert held <= cap  # the rest were pushed out (or closed by twisted's EMFILE recovery)
    assert aborted(metrics, "tracker", reason) > 0
    assert aborted(metrics, "tracker", "tls_handshake_timeout") == 0
    assert "open files limit 512" in proc.log()


# -- item 8: slowloris on plain HTTP ------------------------------------------------------------


def trickle(sockets: list[socket.socket], rounds: int, interval: float, byte: bytes = b"X") -> None:
    for _ in range(rounds):
        for s in sockets:
            try:
                s.send(byte)
            except OSError:
                pass
        time.sleep(interval)


def test_slowloris_headers_are_aborted_at_the_header_deadline(
    servers: Any, pki: Path, tmp_path: Path
) -> None:
    http = {"header_timeout": 2.0, "idle_timeout": 60.0, "max_pending_per_source": 0}
    proc = proxy(servers, pki, tmp_path, http)
    port = proc.port("registry")
    slow = open_connections(port, 300, b"GET /v2/ HTTP/1.1\r\nX-Slow: ")
    try:
        assert len(slow) >= 290
        trickle(slow, rounds=2, interval=0.3)  # bytes keep coming, well inside the idle timeout
        assert not closed_early(slow, 2.0), "aborted before the deadline"
        status, _ = get(f"http://127.0.0.1:{port}/v2/")
        assert status == 200  # a valid client is served meanwhile
        trickle(slow, rounds=4, interval=0.3)
        assert wait_until(lambda: all(closed_by_server(s) for s in slow), timeout=3), (
            f"{sum(not closed_by_server(s) for s in slow)} trickling connections still open"
        )
    finally:
        close_all(slow)
    _, metrics = get(f"http://127.0.0.1:{port}/metrics")
    assert aborted(metrics, "proxy", "http_headers_timeout") == len(slow)
    assert proc.log().count("aborted a connection from 127.0.0.1") == 1


def test_keep_alive_connection_idles_at_most_the_header_deadline(
    servers: Any, pki: Path, tmp_path: Path
) -> None:
    proc = proxy(servers, pki, tmp_path, {"header_timeout": 1.0})
    port = proc.port("registry")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for _ in range(2):  # each request restarts the deadline from the end of its response
            s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(0.6)
        assert not closed_by_server(s)
        assert wait_until(lambda: closed_by_server(s), timeout=2)


def test_slowloris_behind_tls_is_aborted_too(servers: Any, pki: Path) -> None:
    proc = tracker(servers, pki, http={"header_timeout": 1.0})
    port = proc.port("http")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with tls_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
            started = time.monotonic()
            try:
                while time.monotonic() - started < 4 and s.recv(1):
                    pass
            except OSError:
                pass
            assert time.monotonic() - started < 3, "a trickling TLS client outlived the header deadline"
    _, metrics = get(f"https://127.0.0.1:{port}/metrics", tls_context(pki))
    assert aborted(metrics, "tracker", "http_headers_timeout") == 1


def test_valid_client_is_served_while_more_slowloris_connections_than_open_files_are_held(
    servers: Any, pki: Path, tmp_path: Path
) -> None:
    proc = proxy(servers, pki, tmp_path, {"header_timeout": 60.0}, preexec_fn=lower_open_files(512))
    port = proc.port("registry")
    slow = open_connections(port, 600, b"GET /v2/ HTTP/1.1\r\n")
    try:
        status, _ = get_retrying(f"http://127.0.0.1:{port}/v2/")
        assert status == 200
        wait_until(lambda: still_open(slow) <= 128, 6)
        held = still_open(slow)
        _, metrics = get(f"http://127.0.0.1:{port}/metrics")
    finally:
        close_all(slow)
    assert len(slow) >= 580
    assert held <= 128
    assert aborted(metrics, "proxy", "http_headers_per_source") > 0


def test_websocket_handshake_has_a_deadline(servers: Any) -> None:
    config = {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "pubsub": {"websocket_listen": ["tcp:0:interface=127.0.0.1"], "admin_listen": []},
    }
    proc = servers.start("kraken-pubsub", config)
    slow = open_connections(proc.port("websocket"), 20, b"GET / HTTP/1.1\r\nUpgrade: web")
    try:
        trickle(slow, rounds=3, interval=0.5, byte=b"s")
        assert wait_until(lambda: all(closed_by_server(s) for s in slow), timeout=8)
    finally:
        close_all(slow)


# -- item 11: outbound connections require the server's role ------------------------------------


def test_tracker_refuses_an_origin_presenting_a_client_certificate(servers: Any, pki: Path,
                                                                    tmp_path: Path) -> None:
    impostor = servers.start("kraken-origin", {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "client"),
        "origin": {"store": str(tmp_path / "store"), "peer_listen": ["tls:tcp:0:interface=127.0.0.1"]},
    })
    proc = servers.start("kraken-tracker", {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "tracker"),
        "tracker": {"origins": [f"127.0.0.1:{impostor.port('http')}"]},
    })
    url = f"https://127.0.0.1:{proc.port('http')}/namespace/ns/blobs/{DIGEST}/metainfo"
    status, body = get(url, tls_context(pki, "agent"))
    assert status == 503, body  # before: the impostor's 404 was taken as the origin's answer
    assert b"ORIGINS_UNAVAILABLE" in body and b"peer role 'client' is not one of: origin" in body
    assert b"Failure" not in body
    assert "presents role 'client', expected origin" in proc.log()


def test_agent_refuses_a_tracker_of_another_role(servers: Any, pki: Path, tmp_path: Path) -> None:
    impostor = tracker(servers, pki, {"cert": str(pki / "origin.pem"), "key": str(pki / "origin.key")})
    proc = servers.start("kraken-agent", {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "agent"),
        "agent": {
            "store": str(tmp_path / "store"),
            "peer_listen": ["tls:tcp:0:interface=127.0.0.1"],
            "tracker": f"127.0.0.1:{impostor.port('http')}",
        },
        "registry": {"listen": []},
    })
    status, _ = get(f"http://127.0.0.1:{proc.port('http')}/namespace/ns/blobs/{DIGEST}", timeout=20)
    assert status >= 500
    assert wait_until(lambda: "presents role 'origin', expected tracker" in proc.log(), timeout=5)


def test_proxy_refuses_a_build_index_of_another_role(servers: Any, pki: Path, tmp_path: Path) -> None:
    impostor = tracker(servers, pki)  # a tracker is no build-index
    proc = servers.start("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "proxy"),
        "proxy": {"storage": str(tmp_path / "proxy"), "build_index": f"127.0.0.1:{impostor.port('http')}"},
    })
    status, _ = get(f"http://127.0.0.1:{proc.port('registry')}/v2/some/image/manifests/latest")
    assert status >= 500  # before: the tracker's 404 read as "no such tag"
    assert "presents role 'tracker', expected build-index" in proc.log()


class Silent(protocol.Protocol):
    pass


@pytest_twisted.inlineCallbacks
def test_pubsub_client_refuses_a_server_that_is_not_pubsub(pki: Path) -> Any:
    factory = protocol.Factory.forProtocol(Silent)
    listening = wrap_server_factory(factory, tls_settings(pki, "origin"))
    port = reactor.listenTCP(0, listening, interface="127.0.0.1")
    try:
        with pytest.raises(RoleRefused, match="'origin' is not one of: pubsub"):
            yield connect_client(reactor, "127.0.0.1", port.getHost().port, tls_settings(pki, "client"))
    finally:
        yield port.stopListening()


def test_cli_clients_refuse_a_server_of_another_role(servers: Any, pki: Path) -> None:
    impostor = tracker(servers, pki)
    url = f"https://127.0.0.1:{impostor.port('http')}"
    files = {"ca": str(pki / "ca.pem"), "cert": str(pki / "client.pem"), "key": str(pki / "client.key")}
    with pytest.raises(StateClientError, match="peer role 'tracker' is not one of: state"):
        StateClient(url, **files).get("/health")
    assert StateClient(url, **files, expected_roles={"tracker"}).get("/health") == {"status": "ok"}


@pytest_twisted.inlineCallbacks
def test_pipeline_http_service_requires_and_checks_the_server_role(pki: Path) -> Any:
    site = wrap_server_factory(Site(Resource()), tls_settings(pki, "tracker"))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    allow = OutboundPolicy([f"127.0.0.1:{port.getHost().port}"])
    ctx = ClientContext(reactor, tls=tls_settings(pki, "pipeline"), outbound=allow)
    base = {"base_url": f"https://127.0.0.1:{port.getHost().port}", "tls": True}
    client = HttpClient(ctx, "svc")
    try:
        with pytest.raises(ClientStartError, match="needs roles"):
            client.start(base)
        client.start({**base, "roles": ["state"]})
        result = yield client.call({"path": "/"}, {})
        assert isinstance(result, ClientError) and result.error == "RoleRefused", result
        assert "'tracker' is not one of: state" in result.message
        yield client.stop({})
        client.start({**base, "roles": ["tracker"]})
        result = yield client.call({"path": "/"}, {})
        assert result["status"] == 404
    finally:
        yield client.stop({})
        yield port.stopListening()


def test_state_child_refuses_a_parent_of_another_role(servers: Any, pki: Path, tmp_path: Path) -> None:
    impostor = tracker(servers, pki)  # a sync port that presents a tracker certificate
    issue_node_cert(pki, "kid-of-impostor")
    child = servers.start("kraken-state", state_config(
        pki, tmp_path / "child", cert="kid-of-impostor", id="cccccccc-0000-0000-0000-0000000000aa",
        modules=["freebusy"], parent=f"127.0.0.1:{impostor.port('http')}", hello=0.3, dead=1.5,
    ))
    assert wait_until(lambda: "presents role 'tracker', expected state" in child.log(), timeout=5)


@pytest_twisted.inlineCallbacks
def test_a_tls_client_gives_up_on_a_silent_server(pki: Path) -> Any:
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Silent), interface="127.0.0.1")
    factory = protocol.Factory.forProtocol(Silent)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectionLost):  # aborted after the timeout; before: waited for ever
            yield connect(reactor, "127.0.0.1", port.getHost().port, factory, tls_settings(pki, "client"),
                          {"pubsub"}, timeout=1)
    finally:
        yield port.stopListening()
    assert time.monotonic() - started < 3
