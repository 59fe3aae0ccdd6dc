"""kraken-pubsub over mutual TLS, and WebSocket push mixing with memcached clients."""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, reactor

from kraken.pubsub import wire
from kraken.pubsub.client import connect_client
from kraken.pubsub.websocket import SeesTLSLayer
from tests.integration.test_pubsub_server import pubsub_config
from tests.support import ServerProcess, tls_settings


def tls_get_messages(port: int, pki: Path, cert: str | None) -> bytes:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"get messages\r\n")
                return s.recv(100)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return b"refused"


def test_tls_listener_requires_a_client_certificate(servers: ServerProcess.Pool, pki: Path) -> None:
    strict = servers.start("kraken-pubsub", pubsub_config(pki))
    port = strict.port("memcached-tls")
    assert tls_get_messages(port, pki, "client") == b"END\r\n"
    assert tls_get_messages(port, pki, None) in (b"refused", b"")
    relaxed_config = pubsub_config(pki)
    relaxed_config["tls"]["require_client_cert"] = False
    relaxed = servers.start("kraken-pubsub", relaxed_config)
    assert tls_get_messages(relaxed.port("memcached-tls"), pki, None) == b"END\r\n"


@pytest_twisted.inlineCallbacks
def test_tls_client_library_round_trip(servers: ServerProcess.Pool, pki: Path) -> Any:
    proc = servers.start("kraken-pubsub", pubsub_config(pki))
    port = proc.port("memcached-tls")
    sub = yield connect_client(reactor, "127.0.0.1", port, tls_settings(pki, "client"))
    pub = yield connect_client(reactor, "127.0.0.1", port, tls_settings(pki, "agent"))
    assert (yield sub.subscribe([b"alpha", b"beta"])) is True
    assert (yield pub.publish([([b"alpha", b"gamma"], b"one"), ([b"beta"], b"\x00two")])) is True
    assert (yield sub.messages()) == [([b"alpha"], b"one"), ([b"beta"], b"\x00two")]
    assert (yield sub.retro_subscribe(0, [b"gamma"])) is False
    yield sub.quit()
    yield pub.quit()


class PushClient(SeesTLSLayer, WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.answers: defer.DeferredQueue[dict[str, Any]] = defer.DeferredQueue()
        self.frames: defer.DeferredQueue[bytes] = defer.DeferredQueue()
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.frames.put(payload)
        else:
            self.answers.put(json.loads(payload))

    def command(self, **message: Any) -> defer.Deferred[dict[str, Any]]:
        self.sendMessage(json.dumps(message).encode())
        return self.answers.get()


def open_push(port: int) -> defer.Deferred[PushClient]:
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}")
    factory.protocol = PushClient
    factory.opened = defer.Deferred()
    connectWS(factory)
    return factory.opened


@pytest_twisted.inlineCallbacks
def test_websocket_push_mixes_with_memcached(servers: ServerProcess.Pool, pki: Path) -> Any:
    proc = servers.start("kraken-pubsub", pubsub_config(pki))
    ws = yield open_push(proc.port("websocket"))
    mc = yield connect_client(reactor, "127.0.0.1", proc.port("memcached"))
    answer = yield ws.command(op="subscribe", topics=["topicA", "topicB"], id=7)
    assert answer == {"ok": True, "op": "subscribe", "id": 7, "found": True}
    assert (yield mc.subscribe([b"topicA"])) is True
    body = b"MESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicA topicB topicC 3\r\nabc\r\n"
    assert (yield mc.send(wire.set_command(b"publish", body))).kind == "STORED"
    frame = yield ws.frames.get()
    # pushed without polling, the same records a memcached client would get, in one frame
    assert frame == b"MESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicA 3\r\nabc\r\nMESSAGE topicB 3\r\nabc\r\n"
    assert (yield ws.command(op="publish", topics=["topicA"], payload="from ws"))["ok"] is True
    ws.sendMessage(wire.publish_body([([b"topicA"], b"\xffbinary")]), isBinary=True)
    assert (yield ws.answers.get()) == {"ok": True, "op": "publish", "records": 1}
    assert (yield mc.messages()) == [([b"topicA"], b"from ws"), ([b"topicA"], b"\xffbinary")]
    assert (yield ws.command(op="nonsense")) == {"ok": False, "error": "unknown op 'nonsense'"}
    ws.sendMessage(b"MESSAGE broken", isBinary=True)
    assert (yield ws.answers.get())["ok"] is False
    # still connected and subscribed after bad input
    yield mc.publish([([b"topicB"], b"again")])
    assert (yield ws.frames.get()) == b"MESSAGE topicB 5\r\nagain\r\n"
    ws.sendClose()
    yield mc.quit()


@pytest_twisted.inlineCallbacks
def test_websocket_over_mutual_tls(servers: ServerProcess.Pool, pki: Path) -> Any:
    from kraken.core.endpoints import connect

    config = pubsub_config(pki)
    config["pubsub"]["websocket_listen"] = ["tls:tcp:0:interface=127.0.0.1"]
    proc = servers.start("kraken-pubsub", config)
    port = proc.port("websocket")
    factory = WebSocketClientFactory(f"wss://127.0.0.1:{port}")
    factory.protocol = PushClient
    factory.opened = defer.Deferred()
    yield connect(reactor, "127.0.0.1", port, factory, tls_settings(pki, "client"), {"pubsub"})
    ws = yield factory.opened
    assert (yield ws.command(op="subscribe", topics=["secure"]))["ok"] is True
    mc = yield connect_client(reactor, "127.0.0.1", proc.port("memcached"))
    yield mc.publish([([b"secure"], b"over tls")])
    assert (yield ws.frames.get()) == b"MESSAGE secure 8\r\nover tls\r\n"
    ws.sendClose()
    yield mc.quit()


@pytest_twisted.inlineCallbacks
def test_websocket_pattern_subscriptions_and_pattern_replay(servers: ServerProcess.Pool, pki: Path) -> Any:
    proc = servers.start("kraken-pubsub", pubsub_config(pki))
    mc = yield connect_client(reactor, "127.0.0.1", proc.port("memcached"))
    yield mc.publish([([b"metrics.cpu.host1"], b"early")])
    ws = yield open_push(proc.port("websocket"))
    assert (yield ws.command(op="register"))["ok"] is True
    yield mc.publish([([b"metrics.cpu.host2"], b"after register"), ([b"logs.x"], b"no")])
    answer = yield ws.command(op="psubscribe", patterns=["metrics.*.host2", "alerts.>"])
    assert answer == {"ok": True, "op": "psubscribe", "found": True}
    # replayed from the registered position, the pattern's topic named
    assert (yield ws.frames.get()) == b"MESSAGE metrics.cpu.host2 14\r\nafter register\r\n"
    yield mc.publish([([b"alerts.disk.full", b"metrics.mem.host2"], b"live")])
    frame = yield ws.frames.get()
    expected = [([b"alerts.disk.full"], b"live"), ([b"metrics.mem.host2"], b"live")]
    assert sorted(wire.parse_publish(frame)) == expected
    bad = yield ws.command(op="psubscribe", patterns=["a.>.b"])
    assert bad["ok"] is False and "'>' must be the last token" in bad["error"]
    assert (yield ws.command(op="punsubscribe", patterns=["alerts.>"]))["ok"] is True
    retro = yield ws.command(op="retro_psubscribe", since=time.time() - 3600, patterns=["metrics.cpu.*"])
    assert retro == {"ok": True, "op": "retro_psubscribe", "found": False}  # before the server started
    ws.sendClose()
    yield mc.quit()
