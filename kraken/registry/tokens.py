"""Docker token authentication: scopes, and the short-lived JWTs kraken issues and checks (sans-IO).

A token (HS256, PyJWT) carries ``iss`` and ``aud`` (the service name), ``sub`` (the principal),
``iat``/``nbf``/``exp``, a ``jti`` and ``access``: ``[{"type": "repository", "name": ...,
"actions": [...]}]``, as in the Docker registry token specification. Times are checked against
the injected clock, not the wall clock PyJWT would use.
"""

from __future__ import annotations

import os
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from kraken.registry.accounts import ACTIONS, Principal

ALGORITHM = "HS256"
MIN_KEY_BYTES = 32
MAX_SCOPES = 32
_SCOPE = re.compile(r"(?P<type>[a-z0-9]+)(?:\([a-z0-9]+\))?:(?P<name>[^\s:]+):(?P<actions>[a-z*,]*)")


class TokenError(Exception):
    """A token that cannot be used: malformed, forged, expired, or for another service."""


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: frozenset[str]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


def parse_scopes(values: list[str]) -> list[Scope]:
    """``scope`` query values (each may hold several, space-separated); unknown forms are skipped."""
    out: list[Scope] = []
    for value in values:
        for part in value.split():
            m = _SCOPE.fullmatch(part)
            if m is None:
                continue
            actions = frozenset(a for a in m.group("actions").split(",") if a)
            out.append(Scope(m.group("type"), m.group("name"), actions))
            if len(out) >= MAX_SCOPES:
                return out
    return out


def scope_header(name: str, actions: tuple[str, ...]) -> str:
    """The ``scope`` a challenge names for *actions* on repository *name* (pull listed first)."""
    ordered = [a for a in ACTIONS if a in actions]
    return f"repository:{name}:{','.join(ordered)}"


def load_key(path: str | None) -> bytes:
    """The signing key: the file's bytes (at least 32), or a fresh random key when *path* is ``None``."""
    if path is None:
        return os.urandom(MIN_KEY_BYTES)
    with open(path, "rb") as f:
        key = f.read().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{path}: a token key needs at least {MIN_KEY_BYTES} bytes "
                         f"(e.g. head -c 32 /dev/urandom | base64 > {path})")
    return key


@dataclass(frozen=True)
class Token:
    principal: Principal
    access: dict[str, frozenset[str]]  # repository -> actions
    expires: float


class TokenIssuer:
    def __init__(self, key: bytes, service: str, ttl: float, remembered: int = 4096) -> None:
        self.key = key
        self.service = service
        self.ttl = ttl
        # tokens that checked out, until they expire: a client sends the same one on every request,
        # and checking its signature again would cost more than the request itself
        self.checked: OrderedDict[str, Token] = OrderedDict()
        self.remembered = remembered

    def issue(self, principal: Principal, access: dict[str, frozenset[str]], now: float) -> str:
        claims = {
            "iss": self.service,
            "aud": self.service,
            "sub": principal.subject,
            "iat": int(now),
            "nbf": int(now) - 1,
            "exp": int(now + self.ttl),
            "jti": uuid.uuid4().hex,
            "access": [{"type": "repository", "name": name, "actions": sorted(actions)}
                       for name, actions in sorted(access.items())],
        }
        return jwt.encode(claims, self.key, algorithm=ALGORITHM)

    def check(self, token: str, now: float) -> Token:
        """The token's content, or :class:`TokenError` saying why it cannot be used."""
        known = self.checked.get(token)
        if known is not None:
            if now >= known.expires:
                del self.checked[token]
                raise TokenError("the token has expired")
            self.checked.move_to_end(token)
            return known
        checked = self._check(token, now)
        self.checked[token] = checked
        while len(self.checked) > self.remembered:
            self.checked.popitem(last=False)
        return checked

    def _check(self, token: str, now: float) -> Token:
        try:
            claims = jwt.decode(
                token, self.key, algorithms=[ALGORITHM], audience=self.service, issuer=self.service,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "require": ["exp", "nbf", "sub", "aud", "iss"]},
            )
        except jwt.InvalidTokenError as e:
            raise TokenError(f"the token is not valid here: {e}") from None
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, (int, float)) or not isinstance(nbf, (int, float)):
            raise TokenError("the token's times are not numbers")
        if now >= exp:
            raise TokenError("the token has expired")
        if now < nbf - 5:
            raise TokenError("the token is not valid yet")
        try:
            principal = Principal.from_subject(str(claims["sub"]))
        except ValueError as e:
            raise TokenError(str(e)) from None
        return Token(principal, _access(claims.get("access")), float(exp))


def _access(value: Any) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    if not isinstance(value, list):
        return out
    for entry in value:
        if not isinstance(entry, dict) or entry.get("type") != "repository":
            continue
        name, actions = entry.get("name"), entry.get("actions")
        if isinstance(name, str) and isinstance(actions, list):
            out[name] = out.get(name, frozenset()) | frozenset(a for a in actions if a in ACTIONS)
    return out
