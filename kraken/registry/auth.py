"""Who may do what on a registry port: Docker token auth, basic auth, certificate roles.

``mode: token``: requests carry ``Authorization: Bearer <JWT>`` from this server's ``GET /token``
(which takes basic credentials, or none for anonymous rights); a missing or insufficient
token is ``401 UNAUTHORIZED`` with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``.
``mode: basic``: requests carry ``Authorization: Basic``; the challenge is ``Basic realm=...``.
Either way, basic credentials are accepted on every endpoint (curl), a mutual-TLS client
acts as its certificate's role, and rights come from the accounts file's grants, read again
at every request, so a revoked right takes effect before the token expires.

Answers never depend on whether a repository exists: the decision is made from the name
and the grants before any storage is asked. An authenticated principal lacking a right gets
``403 DENIED``; an anonymous one gets ``401`` (log in); a token narrower than the principal's
rights gets ``401`` with ``error="insufficient_scope"`` (fetch a wider token).
"""

from __future__ import annotations

import base64
import binascii
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.server import Request

from kraken.core.config import ConfigPath, setting
from kraken.core.metrics import Metrics
from kraken.core.reactor import IServerReactor
from kraken.core.tls import request_identity
from kraken.registry.accounts import ACTIONS, ANONYMOUS, Accounts, Principal, VerifiedCache
from kraken.registry.errors import RegistryError
from kraken.registry.paths import Route
from kraken.registry.tokens import Token, TokenError, TokenIssuer, load_key, parse_scopes, scope_header

log = Logger(namespace="kraken.registry.auth")
TOKEN_PATH = b"/token"
MAX_CREDENTIALS = 4096

# (endpoint kind, method) -> the action it needs on the repository
NEEDS = {
    ("manifest", "GET"): "pull", ("manifest", "HEAD"): "pull", ("blob", "GET"): "pull",
    ("blob", "HEAD"): "pull", ("tags", "GET"): "pull", ("tags", "HEAD"): "pull",
    ("referrers", "GET"): "pull", ("referrers", "HEAD"): "pull",
    ("manifest", "PUT"): "push", ("uploads", "POST"): "push", ("upload", "GET"): "push",
    ("upload", "PATCH"): "push", ("upload", "PUT"): "push", ("upload", "DELETE"): "push",
    ("manifest", "DELETE"): "delete", ("blob", "DELETE"): "delete",
}


@dataclass(frozen=True, kw_only=True)
class AuthSection:
    mode: str = setting("none", "none, token (Docker token auth) or basic",
                        choices=("none", "token", "basic"))
    accounts: ConfigPath | None = setting(None, "YAML file of users, robots and grants (re-read on change)")
    service: str = setting("kraken", "service name in tokens and challenges")
    realm: str | None = setting(None, "token endpoint URL for challenges (default: this port's /token)")
    token_ttl: float = setting(300.0, "seconds an issued token is valid", minimum=1)
    token_key: ConfigPath | None = setting(None, "file holding the token signing key (>= 32 bytes); "
                                                 "unset: a random key per start")


@dataclass(frozen=True)
class Identity:
    principal: Principal
    token: Token | None = None
    credentials: bool = False  # the request presented credentials (a token or a password)


def _denied() -> RegistryError:
    return RegistryError("DENIED", "requested access to the resource is denied")


class Authenticator:
    def __init__(
        self,
        section: AuthSection,
        clock: IReactorTime,
        run_blocking: Callable[[Callable[[], Any]], Deferred[Any]],
        metrics: Metrics | None = None,
    ) -> None:
        if section.accounts is None:
            raise ValueError("auth.accounts: an accounts file is needed with auth.mode " + section.mode)
        self.mode = section.mode
        self.service = section.service
        self.realm = section.realm
        self.clock = clock
        self.run_blocking = run_blocking
        self.accounts = Accounts(section.accounts)
        self.issuer = TokenIssuer(load_key(section.token_key), section.service, section.token_ttl)
        self.verified = VerifiedCache(time.monotonic)
        self.verified_generation = self.accounts.generation
        self.identities: weakref.WeakKeyDictionary[Request, Identity] = weakref.WeakKeyDictionary()
        self.m_decisions = metrics.counter("registry_auth_decisions", "access decisions by outcome",
                                           ["outcome"]) if metrics is not None else None
        self.m_tokens = (metrics.counter("registry_tokens_issued", "tokens issued")
                         if metrics is not None else None)

    # -- who -----------------------------------------------------------------------------------

    def _count(self, outcome: str) -> None:
        if self.m_decisions is not None:
            self.m_decisions.labels(outcome).inc()

    def _cache(self) -> VerifiedCache:
        self.accounts.reload()
        if self.accounts.generation != self.verified_generation:
            self.verified.clear()  # a changed password or a removed account counts at once
            self.verified_generation = self.accounts.generation
        return self.verified

    def _basic(self, value: str) -> tuple[str, str]:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise self.unauthorized("malformed basic credentials") from None
        login, sep, password = decoded.partition(":")
        if not sep or not login:
            raise self.unauthorized("malformed basic credentials")
        return login, password

    def _authorization(self, request: Request) -> tuple[str, str] | None:
        raw = request.getHeader("authorization")
        if raw is None:
            return None
        if len(raw) > MAX_CREDENTIALS:
            raise self.unauthorized("credentials too long")
        scheme, _, value = raw.strip().partition(" ")
        return scheme.lower(), value.strip()

    def _fallback(self, request: Request) -> Identity:
        peer = request_identity(request)
        if peer is not None:
            return Identity(Principal("role", peer.role))
        return Identity(ANONYMOUS)

    def identify_now(self, request: Request) -> Identity | None:
        """The identity if it can be told without a password check (``None``: one is needed)."""
        header = self._authorization(request)
        if header is None:
            return self._fallback(request)
        scheme, value = header
        if scheme == "bearer":
            try:
                token = self.issuer.check(value, self.clock.seconds())
            except TokenError as e:
                raise self.unauthorized(str(e), error="invalid_token") from None
            if not self.accounts.exists(token.principal):
                raise self.unauthorized("the token's account no longer exists", error="invalid_token")
            return Identity(token.principal, token, credentials=True)
        if scheme == "basic":
            login, password = self._basic(value)
            principal = self._cache().get(login, password)
            return Identity(principal, credentials=True) if principal is not None else None
        raise self.unauthorized(f"unsupported authorization scheme {scheme[:20]!r}")

    def identify(self, request: Request) -> Deferred[Identity]:
        """The request's identity; a wrong password or token fails with ``401 UNAUTHORIZED``."""
        try:
            known = self.identify_now(request)
        except RegistryError as e:
            self._count("unauthorized")
            return fail(e)
        if known is not None:
            return succeed(known)
        header = self._authorization(request)
        assert header is not None
        login, password = self._basic(header[1])

        def checked(principal: Principal | None) -> Identity:
            if principal is None:
                self._count("bad_password")
                log.info("failed login for {login!r}", login=login[:64])
                raise self.unauthorized("invalid username or password")
            self._cache().put(login, password, principal)
            return Identity(principal, credentials=True)

        d: Deferred[Any] = self.run_blocking(lambda: self.accounts.verify(login, password))
        return d.addCallback(checked)

    # -- what ----------------------------------------------------------------------------------

    def allowed(self, identity: Identity, repository: str) -> frozenset[str]:
        rights = self.accounts.allowed(identity.principal, repository)
        if identity.token is not None:
            rights &= identity.token.access.get(repository, frozenset())
        return rights

    def permits(self, request: Request, repository: str, action: str) -> bool:
        identity = self.identities.get(request)
        return identity is not None and action in self.allowed(identity, repository)

    def may_upload(self, request: Request, route: Route) -> bool:
        """Whether the body of an upload request may be written (decided at its headers)."""
        try:
            identity = self.identify_now(request)
        except RegistryError:
            return False
        if identity is None or route.name is None:
            return False
        return "push" in self.allowed(identity, route.name)

    def authorize(self, request: Request, route: Route, method: str) -> Deferred[Identity]:
        """The identity, once it may make this request; else a ``401``/``403`` ``RegistryError``."""
        def decide(identity: Identity) -> Identity:
            self.identities[request] = identity
            if route.kind in ("base", "catalog"):
                if not identity.credentials and identity.principal == ANONYMOUS:
                    self._count("challenged")
                    raise self.unauthorized("authentication required", request=request,
                                            scope="registry:catalog:*" if route.kind == "catalog" else None)
                self._count("allowed")
                return identity
            needed = NEEDS.get((route.kind, method))
            if needed is None or route.name is None:  # an endpoint added without a rule here
                log.error("no access rule for {method} {kind}: refused", method=method, kind=route.kind)
                self._count("denied")
                raise _denied()
            if needed in self.allowed(identity, route.name):
                self._count("allowed")
                return identity
            scope = scope_header(route.name, ("pull", needed))
            if identity.principal == ANONYMOUS:
                self._count("challenged")
                raise self.unauthorized("authentication required", request=request, scope=scope)
            if identity.token is not None and needed in self.accounts.allowed(identity.principal, route.name):
                self._count("challenged")
                raise self.unauthorized("the token does not cover this request", request=request, scope=scope,
                                        error="insufficient_scope")
            self._count("denied")
            raise _denied()

        return self.identify(request).addCallback(decide)

    def visible(self, request: Request, repositories: list[str]) -> list[str]:
        """The repositories of a listing the request may pull from."""
        identity = self.identities.get(request)
        if identity is None:
            return []
        return [r for r in repositories if "pull" in self.accounts.allowed(identity.principal, r)]

    # -- challenges ----------------------------------------------------------------------------

    def realm_for(self, request: Request | None) -> str:
        if self.realm is not None or request is None:
            return self.realm or "/token"
        host = (request.getHeader("host") or "localhost").replace('"', "")
        scheme = "https" if request.isSecure() else "http"
        return f"{scheme}://{host}/token"

    def unauthorized(self, message: str, request: Request | None = None, scope: str | None = None,
                     error: str | None = None) -> RegistryError:
        if self.mode == "basic":
            challenge = f'Basic realm="{self.service}"'
        else:
            challenge = f'Bearer realm="{self.realm_for(request)}",service="{self.service}"'
            if scope:
                challenge += f',scope="{scope}"'
            if error:
                challenge += f',error="{error}"'
        return RegistryError("UNAUTHORIZED", message, headers={"WWW-Authenticate": challenge})

    # -- the token endpoint ----------------------------------------------------------------------

    def token(self, request: Request) -> Deferred[dict[str, Any]]:
        """``GET /token?service=&scope=...``: a JWT for the granted part of the requested scopes."""
        if self.mode != "token":
            return fail(RegistryError("NOT_FOUND", "this registry issues no tokens (auth.mode)", status=404))
        service = request.args.get(b"service")
        if service and service[0].decode("utf-8", "replace") != self.service:
            return fail(RegistryError("DENIED", f"this token service is {self.service!r}", status=400))
        scopes = parse_scopes([v.decode("utf-8", "replace") for v in request.args.get(b"scope", [])])

        def grant(identity: Identity) -> dict[str, Any]:
            if identity.token is not None:
                raise self.unauthorized("log in with a username and password, not a token")
            access: dict[str, frozenset[str]] = {}
            for scope in scopes:
                if scope.type != "repository":
                    continue
                wanted = frozenset(ACTIONS) if "*" in scope.actions else scope.actions
                granted = wanted & self.accounts.allowed(identity.principal, scope.name)
                access[scope.name] = access.get(scope.name, frozenset()) | granted
            now = self.clock.seconds()
            token = self.issuer.issue(identity.principal, access, now)
            if self.m_tokens is not None:
                self.m_tokens.inc()
            issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            return {"token": token, "access_token": token, "expires_in": int(self.issuer.ttl),
                    "issued_at": issued}

        return self.identify(request).addCallback(grant)



def make_authenticator(section: AuthSection, reactor: IServerReactor, metrics: Metrics,
                       where: str) -> Authenticator | None:
    """The authenticator *section* asks for (``None`` for ``mode: none``); config errors stop the server."""
    if section.mode == "none":
        return None
    try:
        return Authenticator(
            section, reactor, lambda work: deferToThreadPool(reactor, reactor.getThreadPool(), work), metrics
        )
    except (OSError, ValueError) as e:
        raise SystemExit(f"{where}: config error: {e}") from None
