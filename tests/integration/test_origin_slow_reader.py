"""Slow readers of a real origin over TLS: one that reads steadily gets the whole blob however
long the tail of the response takes, one that stops reading is cut after ``http.send_timeout``.

The origin hands a blob to its buffers (megabytes of socket buffer) long before a slow client
has it; the keep-alive header deadline used to start at that moment and abort the connection,
losing the tail (an intermittent baseline failure of the 20-node swarm benchmark).
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest_twisted

from kraken.core.digest import Digest
from kraken.p2p.origins import OriginClient
from tests.integration.p2p_fixtures import client, metric, origin_config
from tests.support import tls_settings

HEADER_TIMEOUT = 1.0
SEND_TIMEOUT = 3.0
BLOB = 2 * 1024 * 1024


def open_get(pki: Path, port: int, path: str) -> ssl.SSLSocket:
    """A TLS connection with a small receive buffer (so that the origin's buffers, not ours,
    hold the tail) that has sent ``GET path`` (HTTP/1.1, keep-alive)."""
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", port))
    conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: origin\r\n\r\n".encode())
    return conn


def read_response(conn: ssl.SSLSocket, pace: float = 0.0, stop_after: int | None = None) -> bytes:
    """The bytes read until the server closes or the body is complete; *pace* seconds between
    reads of at most 16 KiB; with *stop_after*, stop reading once that many bytes are in."""
    data = b""
    while stop_after is None or len(data) < stop_after:
        try:
            chunk = conn.recv(16 * 1024)
        except (ConnectionError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
        _, _, body = data.partition(b"\r\n\r\n")
        if len(body) >= BLOB:
            break
        time.sleep(pace)
    return data


def body_of(response: bytes) -> bytes:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return body


@pytest_twisted.inlineCallbacks
def test_a_steady_slow_reader_gets_the_blob_and_a_stopped_one_is_cut(
    servers: Any, pki: Path, tmp_path: Path
) -> Any:
    config = origin_config(pki, tmp_path / "o")
    config["http"] = {"header_timeout": HEADER_TIMEOUT, "send_timeout": SEND_TIMEOUT}
    origin = servers.start("kraken-origin", config, name="origin")
    port = origin.port("http")
    from twisted.internet import reactor

    data = os.urandom(BLOB)
    src = tmp_path / "blob"
    src.write_bytes(data)
    d = Digest.of_bytes(data)
    yield OriginClient(reactor, f"127.0.0.1:{port}", tls_settings(pki, "client")).upload("ns", d, str(src))
    path = f"/namespace/ns/blobs/{d}"

    stopped = open_get(pki, port, path)
    stopped_head = read_response(stopped, stop_after=64 * 1024)  # ... and reads no more
    slow = open_get(pki, port, path)
    started = time.monotonic()
    body = body_of(read_response(slow, pace=0.04))  # ~400 KiB/s: about 5 s, most of it after
    took = time.monotonic() - started  # the origin wrote its last byte
    assert len(body) == BLOB, f"cut after {len(body)} of {BLOB} bytes, {took:.1f}s"
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert took > HEADER_TIMEOUT + 1, f"the read took {took:.1f}s: too fast to test the deadline"
    slow.close()

    time.sleep(max(0.0, SEND_TIMEOUT + 1.5 - (time.monotonic() - started)))
    rest = read_response(stopped)  # what was still buffered on the way, then the abort
    stopped.close()
    assert len(body_of(stopped_head + rest)) < BLOB
    aborted = "kraken_origin_connections_aborted_total{reason=\"%s\"}"
    url = f"https://127.0.0.1:{port}/metrics"
    assert (yield metric(client(pki), url, aborted % "http_send_stalled")) == 1
    assert "aborted a connection from 127.0.0.1: it took no byte of a response for 3s" in origin.log()
