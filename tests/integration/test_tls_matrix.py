"""Mutual TLS over real loopback connections: who gets in, who is refused, what each side sees."""

from __future__ import annotations

import datetime
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from cryptography import x509
from twisted.internet import defer, protocol, reactor
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import Site

from kraken.cli.main import main as cli_main
from kraken.core import certs
from kraken.core.endpoints import connect
from kraken.core.tls import ClientTLSPolicy, RoleRefused, TLSSettings, request_identity, wrap_server_factory
from tests.support import tls_section, tls_settings


class Echo(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.seen.append(self.transport.peer)

    def dataReceived(self, data: bytes) -> None:
        self.factory.received.append(data)
        self.transport.write(data)


class Client(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.connected.callback(self)
        self.transport.write(b"hello")

    def dataReceived(self, data: bytes) -> None:
        self.factory.echoed.append(data)

    def connectionLost(self, reason: Any) -> None:
        if not self.factory.closed.called:
            self.factory.closed.callback(None)


@pytest.fixture(scope="module")
def extra_pki(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> dict[str, Path]:
    other = tmp_path_factory.mktemp("other-ca")
    certs.create_ca(other, "some other CA")
    certs.issue(other, "stranger", "client")
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    certs.issue(pki, "expired", "client", validity=datetime.timedelta(days=1), not_before=long_ago)
    certs.issue(pki, "elsewhere", "origin", hosts=["origin.example"])
    return {"other": other}


@pytest.fixture
def log_lines() -> Any:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        from twisted.logger import formatEvent

        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def serve(pki: Path, allowed: set[str] | None, server_name: str = "origin") -> tuple[Any, Any]:
    factory = protocol.Factory.forProtocol(Echo)
    factory.seen, factory.received = [], []
    port = reactor.listenTCP(
        0, wrap_server_factory(factory, tls_settings(pki, server_name), allowed), interface="127.0.0.1"
    )
    return port, factory


@defer.inlineCallbacks
def talk(port: Any, client_tls: Any, expected_roles: set[str] | None = None) -> Any:
    expected_roles = expected_roles or set(certs.ROLES)
    """Connect, send b"hello", wait for the echo or the close; (factory, connect error)."""
    factory = protocol.ClientFactory.forProtocol(Client)
    factory.connected, factory.closed, factory.echoed = defer.Deferred(), defer.Deferred(), []
    try:
        client = yield connect(reactor, "127.0.0.1", port.getHost().port, factory, client_tls, expected_roles)
    except Exception as e:
        return factory, e
    for _ in range(50):
        if factory.echoed or factory.closed.called:
            break
        yield deferLater(0.02)
    client.transport.loseConnection()
    yield factory.closed
    return factory, None


def deferLater(seconds: float) -> defer.Deferred[None]:
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)


@pytest_twisted.inlineCallbacks
def test_valid_client_is_accepted_and_its_role_seen(pki: Path) -> Any:
    port, server = serve(pki, {"client", "agent"})
    try:
        client, _ = yield talk(port, tls_settings(pki, "client"))
    finally:
        yield port.stopListening()
    assert [p.role for p in server.seen] == ["client"]
    assert server.seen[0].name == "client"
    assert server.received == [b"hello"]
    assert b"".join(client.echoed) == b"hello"


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("no-cert", "closed before the handshake"),
        ("stranger", "certificate not issued by our CA"),
        ("expired", "certificate has expired"),
        ("agent", "role 'agent' not allowed here"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_bad_clients_are_refused_with_a_log_line(
    pki: Path, extra_pki: dict[str, Path], log_lines: list[str], who: str, reason: str
) -> Any:
    port, server = serve(pki, {"client"})
    if who == "no-cert":
        settings = tls_settings(pki, "client")
        # A client that trusts our CA but presents no certificate of its own.
        settings = TLSSettings(settings.ca, cert=str(pki / "origin.pem"), key=str(pki / "origin.key"))
        client_tls = settings
        port.stopListening()
        port, server = serve(pki, None)
        no_cert = NoCertClient(pki)
        try:
            result = yield no_cert.run(port)
        finally:
            yield port.stopListening()
        assert result == []
        assert server.seen == [] and server.received == []
        yield deferLater(0.1)
        assert any(reason in line for line in log_lines), log_lines
        return
    base = extra_pki["other"] if who == "stranger" else pki
    client_tls = tls_settings(base, who)
    client_tls = type(client_tls)(ca=str(pki / "ca.pem"), cert=client_tls.cert, key=client_tls.key)
    try:
        client, _ = yield talk(port, client_tls)
    finally:
        yield port.stopListening()
    assert server.seen == [] and server.received == []
    assert client.echoed == []
    assert any(reason in line for line in log_lines), log_lines


class NoCertClient:
    """A TLS client with no certificate at all, built directly on pyOpenSSL."""

    def __init__(self, pki: Path) -> None:
        from twisted.internet import ssl

        self.creator = ssl.optionsForClientTLS(
            "localhost", trustRoot=ssl.Certificate.loadPEM((pki / "ca.pem").read_bytes())
        )

    @defer.inlineCallbacks
    def run(self, port: Any) -> Any:
        from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS

        factory = protocol.ClientFactory.forProtocol(Client)
        factory.connected, factory.closed, factory.echoed = defer.Deferred(), defer.Deferred(), []
        endpoint = wrapClientTLS(self.creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
        yield endpoint.connect(factory)
        yield factory.closed
        return factory.echoed


@pytest_twisted.inlineCallbacks
def test_client_refuses_server_whose_name_does_not_match(pki: Path, extra_pki: dict[str, Path]) -> Any:
    port, server = serve(pki, None, server_name="elsewhere")
    try:
        client, error = yield talk(port, tls_settings(pki, "client"))
    finally:
        yield port.stopListening()
    assert error is not None, "the client must refuse a server named origin.example"
    assert not client.connected.called
    assert server.received == []


@pytest_twisted.inlineCallbacks
def test_client_can_require_the_server_role(pki: Path) -> Any:
    port, server = serve(pki, None, server_name="tracker")
    try:
        client, error = yield talk(port, tls_settings(pki, "agent"), {"origin"})
    finally:
        yield port.stopListening()
    assert isinstance(error, RoleRefused)
    assert not client.connected.called
    assert server.received == []


class WhoAmI(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        who = request_identity(request)
        return f"{who.role}:{who.name}".encode() if who else b"anonymous"


@pytest_twisted.inlineCallbacks
def test_web_site_sees_client_role(pki: Path) -> Any:
    site = Site(WhoAmI())
    port = reactor.listenTCP(
        0, wrap_server_factory(site, tls_settings(pki, "tracker")), interface="127.0.0.1"
    )
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    agent = Agent(reactor, ClientTLSPolicy(tls_settings(pki, "agent"), {"tracker"}), pool=pool)
    try:
        response = yield treq.get(f"https://127.0.0.1:{port.getHost().port}/", agent=agent)
        body = yield response.content()
    finally:
        yield pool.closeCachedConnections()
        yield port.stopListening()
    assert body == b"agent:agent"


def served_serial(pki: Path, port: int) -> int:
    """The serial number of the certificate a server presents on 127.0.0.1:*port*."""
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def wait_for(check: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_sighup_reloads_a_reissued_certificate_and_keeps_it_when_reload_fails(
    servers: Any, tmp_path: Path
) -> None:
    pki = certs.ensure_dev_pki(tmp_path / "pki", {"tracker": "tracker", "client": "client"})
    config = {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "tracker"),
        "tracker": {"origins": []},
    }
    tracker = servers.start("kraken-tracker", config)
    port = tracker.port("http")
    before = served_serial(pki, port)

    assert cli_main(["certs", "issue", str(pki), "tracker", "--role", "tracker", "--host", "127.0.0.1"]) == 0
    assert served_serial(pki, port) == before  # the files are read on SIGHUP only
    tracker.send_signal(signal.SIGHUP)
    wait_for(lambda: "TLS certificate reloaded" in tracker.log())
    after = served_serial(pki, port)
    assert after != before

    (pki / "tracker.key").write_text("not a key")
    tracker.send_signal(signal.SIGHUP)
    wait_for(lambda: "TLS reload failed, keeping the old certificate" in tracker.log())
    assert served_serial(pki, port) == after
