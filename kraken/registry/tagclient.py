"""Client of the build-index tag API, used by the proxy and the agent's registry port."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime

from kraken.core.httpclient import BadJSONResponse, HTTPStatusError, base_url, json_body, make_http_client
from kraken.core.tls import TLSSettings

LIST_PAGE = 1000


class TagClient:
    def __init__(
        self, reactor: IReactorTime, address: str, tls: TLSSettings | None, http: HTTPClient | None = None
    ) -> None:
        self.base = base_url(address, tls)
        self.http = http or make_http_client(reactor, tls, {"build-index"})

    def _tag_url(self, repo: str, tag: str) -> str:
        return f"{self.base}/tags/{quote(f'{repo}:{tag}', safe='')}"

    @inlineCallbacks
    def get(self, repo: str, tag: str) -> Any:
        """The digest the tag points at now, or ``None``."""
        url = self._tag_url(repo, tag)
        response = yield self.http.get(url)
        body = yield response.content()
        if response.code == 404:
            return None
        if response.code != 200:
            raise HTTPStatusError("GET", url, response.code, body)
        return body.decode("ascii").strip()

    @inlineCallbacks
    def put(self, repo: str, tag: str, digest: str) -> Any:
        url = f"{self._tag_url(repo, tag)}/digest/{digest}"
        response = yield self.http.put(url, data=b"")
        body = yield response.content()
        if response.code not in (200, 201, 204):
            raise HTTPStatusError("PUT", url, response.code, body)

    @inlineCallbacks
    def delete(self, repo: str, tag: str, expected: str | None = None) -> Any:
        """Remove the tag (only while it points at *expected*, when given); ``True`` if it was removed."""
        url = self._tag_url(repo, tag)
        if expected is not None:
            url += f"?digest={quote(expected, safe='')}"
        response = yield self.http.delete(url)
        body = yield response.content()
        if response.code == 404:
            return False
        if response.code not in (200, 202, 204):
            raise HTTPStatusError("DELETE", url, response.code, body)
        return True

    @inlineCallbacks
    def list(self, prefix: str) -> Any:
        """Every ``repo:tag`` starting with *prefix* (follows the pagination)."""
        out: list[str] = []
        offset = ""
        while True:
            url = f"{self.base}/list/{quote(prefix, safe='')}?limit={LIST_PAGE}"
            if offset:
                url += f"&offset={quote(offset, safe='')}"
            response = yield self.http.get(url)
            if response.code != 200:
                body = yield response.content()
                raise HTTPStatusError("GET", url, response.code, body)
            page = yield json_body(response, url)
            result = page.get("result") if isinstance(page, dict) else None
            following = page.get("next_offset") if isinstance(page, dict) else None
            if not isinstance(result, list) or not all(isinstance(e, str) for e in result) \
                    or not isinstance(following, (str, type(None))):
                raise BadJSONResponse(f"{url} sent no tag list (result: a list of strings, next_offset)")
            out.extend(result)
            if not following:
                return out
            offset = following
