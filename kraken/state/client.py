"""A small synchronous REST client of kraken-state (for the CLI and scripts), with client certs."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from kraken.core import jsonlimits
from kraken.core.tls import stdlib_client_context


class ClientError(Exception):
    """The server answered with an error (``status``, ``code``) or could not be reached."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class StateClient:
    def __init__(
        self,
        url: str,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        timeout: float = 15.0,
        expected_roles: Iterable[str] = ("state",),
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if self.url.startswith("https:"):
            self.context = stdlib_client_context(ca, cert, key, expected_roles)

    def request(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                err = jsonlimits.loads(text, strict=True)["error"]
                code, message = str(err["code"])[:100], str(err["message"])[:1000]
            except (ValueError, KeyError, TypeError):
                raise ClientError(f"{e.code}: {text[:200]!r}", e.code) from None
            raise ClientError(f"{e.code} {code}: {message}", e.code, code) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ClientError(f"cannot reach {self.url}: {reason}") from None
        if raw:
            return payload.decode("utf-8", "replace")
        try:
            return jsonlimits.loads(payload, strict=True) if payload else None
        except (ValueError, UnicodeDecodeError) as e:
            raise ClientError(f"{self.url}{path} answered with unusable JSON: {str(e)[:200]}") from None

    def get(self, path: str, raw: bool = False) -> Any:
        return self.request("GET", path, raw=raw)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)
