"""A read-only backend that reads blobs and tags from any Docker/OCI registry.

Origins use it to pull blobs a registry already holds (``name`` = digest hex or
``sha256:<hex>``, ``namespace`` = repository); the build-index uses it for tags
(``name`` = ``repo:tag``; the "content" of a tag is the manifest digest it points at).

Config (``type: registry``)::

    address: https://registry.example:5000   # or host:port (https unless scheme: http)
    username: alice                           # optional: basic auth, or basic credentials
    password: secret                          #   for a bearer-token service
    ca: /etc/ssl/registry-ca.pem              # optional: trust only this CA
    cert: client.pem, key: client.key         # optional: client certificate
    timeout: 60                               # seconds per request
    prefix: docker.io/                        # optional: kraken repositories start with it, the
                                              #   upstream's do not (a pull-through mirror)
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import treq
from treq.client import HTTPClient
from twisted.internet import ssl
from twisted.internet.defer import fail, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from kraken.backends.base import BackendError, BlobNotFound
from kraken.core.digest import Digest
from kraken.core.files import write_into
from kraken.core.httpclient import BadJSONResponse, json_body

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
_HEX = re.compile(r"(?:sha256:|sha512:)?([0-9a-f]{64}(?:[0-9a-f]{64})?)")
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
MAX_TOKENS = 10_000
KNOWN_KEYS = {"address", "username", "password", "ca", "cert", "key", "timeout", "scheme", "prefix"}


@implementer(IPolicyForHTTPS)
class _RegistryTLS:
    def __init__(self, ca: str | None, cert: str | None, key: str | None) -> None:
        self.trust = ssl.Certificate.loadPEM(Path(ca).read_bytes()) if ca else None
        self.own = None
        if cert and key:
            self.own = ssl.PrivateCertificate.loadPEM(Path(key).read_bytes() + Path(cert).read_bytes())
        self.default = BrowserLikePolicyForHTTPS()

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        if self.trust is None and self.own is None:
            return self.default.creatorForNetloc(hostname, port)
        extra: dict[str, Any] = {}
        if self.own is not None:
            extra["clientCertificate"] = self.own
        return ssl.optionsForClientTLS(hostname.decode("ascii"), trustRoot=self.trust, **extra)


class RegistryBackend:
    def __init__(
        self,
        reactor: IReactorTime,
        address: str,
        username: str | None = None,
        password: str | None = None,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        timeout: float = 60.0,
        prefix: str = "",
    ) -> None:
        self.prefix = prefix
        self.base = address.rstrip("/") if "://" in address else f"https://{address}"
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 8
        agent = Agent(reactor, _RegistryTLS(ca, cert, key), pool=pool)
        self.http = HTTPClient(agent)
        self.timeout = timeout
        self.basic = None
        if username is not None:
            raw = f"{username}:{password or ''}".encode()
            self.basic = "Basic " + base64.b64encode(raw).decode("ascii")
        self._tokens: dict[str, str] = {}

    # -- HTTP with basic or bearer-token auth --------------------------------------------------

    @inlineCallbacks
    def _request(self, method: str, path: str, scope: str, headers: dict[str, str] | None = None,
                 unbuffered: bool = False) -> Any:
        url = self.base + path
        for attempt in range(2):
            sent: dict[bytes | str, bytes | str] = {k: v for k, v in (headers or {}).items()}
            auth = self._tokens.get(scope) or self.basic
            if auth:
                sent["Authorization"] = auth
            response = yield self.http.request(method, url, headers=sent, timeout=self.timeout,
                                               unbuffered=unbuffered)
            if response.code != 401 or attempt:
                return response
            challenge = (response.headers.getRawHeaders("www-authenticate") or [""])[0]
            yield response.content()
            if not challenge.lower().startswith("bearer"):
                return response
            yield self._fetch_token(challenge, scope)
        raise AssertionError("unreachable")

    @inlineCallbacks
    def _fetch_token(self, challenge: str, scope: str) -> Any:
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise BackendError(f"registry {self.base} sent a bearer challenge without a realm")
        query = {k: v for k, v in params.items() if k in ("service",)}
        query["scope"] = scope
        headers: dict[bytes | str, bytes | str] = {"Authorization": self.basic} if self.basic else {}
        response = yield self.http.get(f"{realm}?{urlencode(query)}", headers=headers, timeout=self.timeout)
        if response.code != 200:
            body = yield response.content()
            refused = " (it refused our credentials)" if response.code in (401, 403) else ""
            raise BackendError(f"token service {realm} answered {response.code}{refused}: {body[:200]!r}")
        data = yield _json(response, f"token service {realm}")
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not token or not isinstance(token, str):
            raise BackendError(f"token service {realm} sent no token")
        self._tokens.pop(scope, None)
        self._tokens[scope] = f"Bearer {token}"
        while len(self._tokens) > MAX_TOKENS:  # one per repository scope: forget the oldest
            del self._tokens[next(iter(self._tokens))]

    @staticmethod
    def _scope(repo: str) -> str:
        return f"repository:{repo}:pull"

    @inlineCallbacks
    def _check(self, response: Any, what: str) -> Any:
        if response.code == 404:
            yield response.content()
            raise BlobNotFound(what)
        if response.code == 401:
            body = yield response.content()
            whose = "refused our credentials" if self.basic else "needs credentials (none are configured)"
            raise BackendError(f"registry {self.base} {whose} (HTTP 401) for {what}: {body[:200]!r}")
        if response.code not in (200, 206):
            body = yield response.content()
            raise BackendError(f"registry {self.base}: {what}: HTTP {response.code}: {body[:200]!r}")
        return response

    # -- names ---------------------------------------------------------------------------------

    def _upstream_repo(self, repo: str) -> str:
        """The upstream's name of kraken repository *repo* (without the mirror's prefix)."""
        if not self.prefix:
            return repo
        if not repo.startswith(self.prefix) or len(repo) == len(self.prefix):
            raise BlobNotFound(f"{repo!r} is not under this mirror's prefix {self.prefix!r}")
        return repo[len(self.prefix):]

    def _split(self, namespace: str, name: str) -> tuple[str, str | None, str | None]:
        """``(upstream repo, digest, tag)`` for a blob name or a ``repo:tag`` name."""
        repo, digest, tag = self._split_names(namespace, name)
        return self._upstream_repo(repo), digest, tag

    @staticmethod
    def _split_names(namespace: str, name: str) -> tuple[str, str | None, str | None]:
        m = _HEX.fullmatch(name)
        if m:
            digest = Digest.from_hex(m.group(1))
            if ":" in name and name.partition(":")[0] != digest.algo:
                raise BackendError(f"registry backend: {name[:160]!r} is not a {digest.algo} digest")
            return namespace, str(digest), None
        repo, sep, tag = name.rpartition(":")
        if not sep or not repo or not tag:
            raise BackendError(f"registry backend: {name!r} is neither a digest nor repo:tag")
        return repo, None, tag

    # -- Backend -------------------------------------------------------------------------------

    @inlineCallbacks
    def _blob_response(self, method: str, repo: str, digest: str, unbuffered: bool = False) -> Any:
        """The blob, or the manifest of that digest (kraken stores manifests as blobs)."""
        scope = self._scope(repo)
        response = yield self._request(method, f"/v2/{repo}/blobs/{digest}", scope, unbuffered=unbuffered)
        if response.code == 404:
            yield response.content()
            response = yield self._request(method, f"/v2/{repo}/manifests/{digest}", scope,
                                           {"Accept": MANIFEST_TYPES}, unbuffered=unbuffered)
        return (yield self._check(response, f"{repo}@{digest}"))

    @inlineCallbacks
    def _tag_digest(self, repo: str, tag: str) -> Any:
        response = yield self._request("HEAD", f"/v2/{repo}/manifests/{tag}", self._scope(repo),
                                       {"Accept": MANIFEST_TYPES})
        yield self._check(response, f"{repo}:{tag}")
        yield response.content()
        digest = (response.headers.getRawHeaders("docker-content-digest") or [""])[0]
        if not _HEX.fullmatch(digest):
            raise BackendError(f"registry {self.base} sent no usable Docker-Content-Digest for {repo}:{tag}")
        return digest

    @inlineCallbacks
    def stat(self, namespace: str, name: str) -> Any:
        repo, digest, tag = self._split(namespace, name)
        if tag is not None:
            found = yield self._tag_digest(repo, tag)
            return len(found)
        response = yield self._blob_response("HEAD", repo, digest or "")
        yield response.content()
        return int((response.headers.getRawHeaders("content-length") or ["0"])[0])

    @inlineCallbacks
    def download(self, namespace: str, name: str, dest_path: str) -> Any:
        repo, digest, tag = self._split(namespace, name)
        if tag is not None:
            found = yield self._tag_digest(repo, tag)
            Path(dest_path).write_text(found)
            return
        response = yield self._blob_response("GET", repo, digest or "", unbuffered=True)
        with open(dest_path, "wb") as f:
            yield treq.collect(response, write_into(f))

    def upload(self, namespace: str, name: str, src_path: str) -> Any:
        return fail(BackendError("the registry backend is read-only"))

    def delete(self, namespace: str, name: str) -> Any:
        return fail(BackendError("the registry backend is read-only"))

    @inlineCallbacks
    def list(self, prefix: str) -> Any:
        """``repo:tag`` names: the tags of the repository *prefix* names (``repo:`` or ``repo:v``)."""
        kraken_repo, sep, tag_prefix = prefix.partition(":")
        if not sep or not kraken_repo:
            return []
        try:
            repo = self._upstream_repo(kraken_repo)
        except BlobNotFound:
            return []
        response = yield self._request("GET", f"/v2/{repo}/tags/list", self._scope(repo))
        if response.code == 404:
            yield response.content()
            return []
        yield self._check(response, f"{repo} tags")
        data = yield _json(response, f"registry {self.base} ({repo} tags)")
        tags = (data.get("tags") or []) if isinstance(data, dict) else None
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BackendError(f"registry {self.base} sent no tag list for {repo}")
        return sorted(f"{kraken_repo}:{t}" for t in tags if isinstance(t, str) and t.startswith(tag_prefix))


@inlineCallbacks
def _json(response: Any, what: str) -> Any:
    try:
        data = yield json_body(response, what)
    except BadJSONResponse as e:
        raise BackendError(str(e)) from None
    return data


def from_config(config: dict[str, Any], reactor: IReactorTime) -> RegistryBackend:
    unknown = set(config) - KNOWN_KEYS
    if unknown or "address" not in config:
        raise ValueError(f"registry backend needs address; known keys: {', '.join(sorted(KNOWN_KEYS))}"
                         + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))
    address = config["address"]
    if "://" not in address and config.get("scheme"):
        address = f"{config['scheme']}://{address}"
    return RegistryBackend(
        reactor, address, config.get("username"), config.get("password"), config.get("ca"),
        config.get("cert"), config.get("key"), float(config.get("timeout", 60.0)),
        str(config.get("prefix", "")),
    )
