"""The build-index's referrers index seen from the proxy and the agents (a ``ReferrerIndex``).

Talks to the routes of :mod:`kraken.buildindex.referrers`; every failure reaches the
registry client as a ``RegistryError`` (``503 UNAVAILABLE`` when the build-index cannot answer).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from treq.client import HTTPClient
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from kraken.core import jsonlimits
from kraken.core.digest import Digest
from kraken.core.http import json_bytes
from kraken.core.httpclient import base_url, json_body, make_http_client, read_body
from kraken.core.tls import TLSSettings
from kraken.registry import referrers as rf
from kraken.registry.errors import RegistryError

log = Logger(namespace="kraken.registry.referrerclient")
MAX_PAGE_BODY = 2 * rf.PAGE_BYTES + 2 * rf.MAX_DESCRIPTOR


def _unavailable(what: str, problem: str) -> RegistryError:
    log.warn("build-index {what} failed: {problem}", what=what, problem=problem)
    return RegistryError("UNAVAILABLE", f"the build-index {what} failed: {problem[:300]}", status=503)


def _error_message(body: bytes) -> str:
    try:
        return str(jsonlimits.loads(body, strict=True)["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return body[:300].decode("utf-8", "replace")


class ReferrerClient:
    def __init__(
        self, reactor: IReactorTime, address: str, tls: TLSSettings | None, http: HTTPClient | None = None
    ) -> None:
        self.base = base_url(address, tls)
        self.http = http or make_http_client(reactor, tls, {"build-index"})

    def _url(self, repo: str, subject: Digest) -> str:
        return f"{self.base}/referrers/{quote(repo)}/subjects/{quote(str(subject), safe='')}"

    @inlineCallbacks
    def add(self, repo: str, subject: Digest, entry: dict[str, Any]) -> Any:
        try:
            response = yield self.http.put(self._url(repo, subject), data=json_bytes(entry),
                                           headers=Headers({"Content-Type": ["application/json"]}))
            body = yield read_body(response, "build-index referrers")
        except Exception as e:
            raise _unavailable("referrer update", str(e)) from None
        if response.code == 403:
            raise RegistryError("DENIED", _error_message(body), status=403)
        if response.code != 200:
            raise _unavailable("referrer update", f"{response.code}: {_error_message(body)}")

    @inlineCallbacks
    def remove(self, repo: str, subject: Digest, digest: Digest) -> Any:
        url = f"{self._url(repo, subject)}/manifests/{quote(str(digest), safe='')}"
        try:
            response = yield self.http.delete(url)
            body = yield read_body(response, "build-index referrers")
        except Exception as e:
            raise _unavailable("referrer removal", str(e)) from None
        if response.code not in (200, 404):
            raise _unavailable("referrer removal", f"{response.code}: {_error_message(body)}")

    @inlineCallbacks
    def page(self, repo: str, subject: Digest, artifact_type: str | None, last: str | None) -> Any:
        query = {k: v for k, v in (("artifactType", artifact_type), ("last", last)) if v}
        url = self._url(repo, subject) + (f"?{urlencode(query)}" if query else "")
        try:
            response = yield self.http.get(url)
            if response.code != 200:
                body = yield read_body(response, "build-index referrers")
                raise ValueError(f"{response.code}: {_error_message(body)}")
            doc = yield json_body(response, "build-index referrers", MAX_PAGE_BODY)
            entries = doc["referrers"]
            following = doc["next"]
            if not isinstance(entries, list) or not isinstance(following, (str, type(None))):
                raise ValueError("no referrers page (referrers: a list, next)")
            page = [rf.check_descriptor(e) for e in entries]
        except Exception as e:
            raise _unavailable("referrers lookup", str(e)) from None
        return page, following
