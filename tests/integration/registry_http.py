"""A tiny synchronous HTTP client for registry tests (the servers under test are real processes)."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        return json.loads(self.body)

    def error_codes(self) -> list[str]:
        return [e["code"] for e in self.json()["errors"]]


class Registry:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            try:
                data = response.read()
            except http.client.IncompleteRead as e:  # docker-registry's 416 announces the blob's length
                data = e.partial
            return Reply(response.status, response.headers, data)
        finally:
            conn.close()

    def upload(self, name: str, data: bytes, digest: str) -> Reply:
        start = self.request("POST", f"/v2/{name}/blobs/uploads/")
        assert start.status == 202, (start.status, start.body)
        location = start.header("Location")
        assert location
        sep = "&" if "?" in location else "?"
        return self.request("PUT", f"{location}{sep}digest={digest}", data,
                            {"Content-Type": "application/octet-stream"})

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> Reply:
        return self.request("PUT", f"/v2/{name}/manifests/{reference}", body, {"Content-Type": media_type})


class TLSClient:
    """Synchronous HTTPS with our dev PKI's client certificate."""

    def __init__(self, pki: Path, port: int, role: str = "client") -> None:
        self.context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        self.context.load_cert_chain(str(pki / f"{role}.pem"), str(pki / f"{role}.key"))
        self.port = port

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=30)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()
