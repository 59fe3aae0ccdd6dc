"""Helpers of the hostile suite: raw HTTPS requests with a role's certificate from the dev PKI."""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from typing import Any


def https(pki: Path, role: str = "client") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / f"{role}.pem"), str(pki / f"{role}.key"))
    return context


def call(
    pki: Path, port: int, method: str, path: str, body: bytes | None = None, role: str = "client"
) -> tuple[int, Any]:
    """One request on a fresh connection: the status and the JSON body (text if not JSON)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=https(pki, role), timeout=20)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode("utf-8", "replace")


def nested(depth: int) -> bytes:
    """A JSON document of *depth* nested arrays (no recursion needed to build it)."""
    return b"[" * depth + b"]" * depth


def huge_int(digits: int = 5000) -> bytes:
    return b"9" * digits
