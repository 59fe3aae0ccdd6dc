"""Incoming webhooks signed with HMAC-SHA256: ``<header>: sha256=<hex of HMAC(secret, body)>``
(the GitHub form). The secret may be a ``${env:…}``/``${file:…}`` reference, resolved when
the trigger is defined or restored and never shown."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Webhook:
    def __init__(self, name: str, secret: str, header: str) -> None:
        self.name = name
        self.secret = secret.encode()
        self.header = header
        self.accepted = 0
        self.refused = 0

    def verify(self, body: bytes, given: bytes | None) -> bool:
        ok = given is not None and hmac.compare_digest(given, signature(self.secret, body).encode())
        if ok:
            self.accepted += 1
        else:
            self.refused += 1
        return ok

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "refused": self.refused, "signature_header": self.header}
