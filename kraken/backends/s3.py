"""An S3 backend on Twisted: requests signed with botocore (SigV4), sent with treq, streamed.

``txaws`` does not run on Python 3, and boto3 in the thread pool would hold a thread per
transfer, so each S3 call here is one ``AWSRequest`` signed by botocore's ``S3SigV4Auth`` and
sent by treq: uploads stream from the file (``FileBodyProducer``, ``UNSIGNED-PAYLOAD``), files
over ``multipart_threshold`` go up as a multipart upload, downloads stream into the
destination file and appear there only when complete.

Config: ``{type: s3, bucket, endpoint_url, region, access_key_id, secret_access_key,
prefix, multipart_threshold, part_size}``; a blob ``name`` is stored at key ``prefix + name``.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import treq
from botocore.auth import UNSIGNED_PAYLOAD, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool

from kraken.backends.base import BackendEntry, BackendError, BlobNotFound
from kraken.core.files import FileWindow, write_into
from kraken.core.reactor import IServerReactor

_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
MiB = 1024 * 1024


class _PresetPayloadAuth(S3SigV4Auth):
    """SigV4 whose payload hash is given by the caller (streamed bodies are never read twice)."""

    def payload(self, request: AWSRequest) -> str:
        return str(request.context.get("payload_hash", UNSIGNED_PAYLOAD))


class S3Backend:
    def __init__(
        self,
        reactor: IServerReactor,
        bucket: str,
        endpoint_url: str,
        region: str = "us-east-1",
        access_key_id: str = "",
        secret_access_key: str = "",
        prefix: str = "",
        multipart_threshold: int = 64 * MiB,
        part_size: int = 16 * MiB,
    ) -> None:
        if part_size < 5 * MiB:
            raise ValueError("s3 part_size must be at least 5 MiB (an S3 rule)")
        self.reactor = reactor
        self.bucket = bucket
        self.endpoint = endpoint_url.rstrip("/")
        self.region = region
        self.credentials = Credentials(access_key_id, secret_access_key)
        self.prefix = prefix
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 8
        self.http = HTTPClient(Agent(reactor, pool=self.pool))

    def _url(self, key: str = "", query: str = "") -> str:
        url = f"{self.endpoint}/{self.bucket}"
        if key:
            url += "/" + quote(key, safe="/-_.~")
        return url + (f"?{query}" if query else "")

    def _key(self, name: str) -> str:
        if not name or "\0" in name:
            raise BackendError(f"unusable blob name {name!r}")
        return self.prefix + name

    def _request(
        self,
        method: str,
        url: str,
        body: Any = None,
        payload_hash: str = UNSIGNED_PAYLOAD,
        headers: dict[str, str] | None = None,
        unbuffered: bool = False,
    ) -> Deferred[Any]:
        request = AWSRequest(method=method, url=url, headers=dict(headers or {}))
        request.context["payload_hash"] = payload_hash
        _PresetPayloadAuth(self.credentials, "s3", self.region).add_auth(request)
        signed = {k: [v] for k, v in request.headers.items()}
        return self.http.request(method, url, headers=signed, data=body, unbuffered=unbuffered)

    @inlineCallbacks
    def _fail(self, response: Any, name: str) -> Any:
        body = yield response.content()
        code = ""
        try:
            code = ElementTree.fromstring(body).findtext("Code") or ""
        except ElementTree.ParseError:
            pass
        if response.code == 404 and code in ("", "NoSuchKey"):
            raise BlobNotFound(name)
        raise BackendError(
            f"s3 {response.request.method.decode()} {name}: HTTP {response.code} {code}".rstrip()
        )

    @inlineCallbacks
    def stat(self, namespace: str, name: str) -> Any:
        response = yield self._request("HEAD", self._url(self._key(name)))
        if response.code != 200:
            yield response.content()
            if response.code == 404:
                raise BlobNotFound(name)
            raise BackendError(f"s3 HEAD {name}: HTTP {response.code}")
        yield response.content()
        return int(response.headers.getRawHeaders("content-length", ["0"])[0])

    @inlineCallbacks
    def download(self, namespace: str, name: str, dest_path: str) -> Any:
        response = yield self._request("GET", self._url(self._key(name)), unbuffered=True)
        if response.code != 200:
            yield self._fail(response, name)
        tmp = f"{dest_path}.{uuid.uuid4().hex}.part"
        out = open(tmp, "wb")
        try:
            yield treq.collect(response, write_into(out))
            out.close()
            os.replace(tmp, dest_path)
        except BaseException:
            out.close()
            os.unlink(tmp)
            raise

    @inlineCallbacks
    def upload(self, namespace: str, name: str, src_path: str) -> Any:
        key = self._key(name)
        size = os.path.getsize(src_path)
        if size <= self.multipart_threshold:
            with open(src_path, "rb") as f:
                response = yield self._request("PUT", self._url(key), FileBodyProducer(f))
            if response.code != 200:
                yield self._fail(response, name)
            yield response.content()
            return
        yield self._multipart(key, name, src_path, size)

    @inlineCallbacks
    def _multipart(self, key: str, name: str, src_path: str, size: int) -> Any:
        response = yield self._request("POST", self._url(key, "uploads="))
        if response.code != 200:
            yield self._fail(response, name)
        upload_id = ElementTree.fromstring((yield response.content())).findtext(f"{_S3_NS}UploadId")
        if not upload_id:
            raise BackendError(f"s3 multipart upload of {name}: no UploadId in the answer")
        try:
            etags = []
            for number, offset in enumerate(range(0, size, self.part_size), start=1):
                length = min(self.part_size, size - offset)
                part = FileWindow(src_path, offset, length)
                try:
                    response = yield self._request(
                        "PUT",
                        self._url(key, f"partNumber={number}&uploadId={quote(upload_id)}"),
                        FileBodyProducer(part),
                    )
                finally:
                    part.close()
                if response.code != 200:
                    yield self._fail(response, name)
                yield response.content()
                etags.append((number, response.headers.getRawHeaders("etag", [""])[0]))
            parts = "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>" for n, etag in etags
            )
            body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
            response = yield self._request(
                "POST",
                self._url(key, f"uploadId={quote(upload_id)}"),
                body,
                payload_hash=hashlib.sha256(body).hexdigest(),
            )
            content = yield response.content()
            if response.code != 200 or b"<Error>" in content:
                raise BackendError(f"s3 completing multipart upload of {name}: HTTP {response.code}")
        except BaseException:
            aborted = yield self._request("DELETE", self._url(key, f"uploadId={quote(upload_id)}"))
            yield aborted.content()
            raise

    @inlineCallbacks
    def list(self, prefix: str) -> Any:
        found = yield self.entries(prefix)
        return [e.name for e in found]

    @inlineCallbacks
    def entries(self, prefix: str) -> Any:
        found: list[BackendEntry] = []
        token = None
        while True:
            query = f"list-type=2&prefix={quote(self.prefix + prefix, safe='')}"
            if token:
                query += f"&continuation-token={quote(token, safe='')}"
            response = yield self._request("GET", self._url(query=query))
            if response.code != 200:
                yield self._fail(response, prefix)
            root = ElementTree.fromstring((yield response.content()))
            for item in root.iter(f"{_S3_NS}Contents"):
                key = item.findtext(f"{_S3_NS}Key") or ""
                size = int(item.findtext(f"{_S3_NS}Size") or 0)
                modified = _s3_time(item.findtext(f"{_S3_NS}LastModified") or "")
                found.append(BackendEntry(key[len(self.prefix) :], size, modified))
            token = root.findtext(f"{_S3_NS}NextContinuationToken")
            if root.findtext(f"{_S3_NS}IsTruncated") != "true" or not token:
                return sorted(found, key=lambda e: e.name)

    @inlineCallbacks
    def delete(self, namespace: str, name: str) -> Any:
        # S3 answers 204 whether or not the key existed: ask first, so a missing blob is reported
        yield self.stat(namespace, name)
        response = yield self._request("DELETE", self._url(self._key(name)))
        if response.code not in (200, 204):
            yield self._fail(response, name)
        yield response.content()

    def close(self) -> Deferred[None]:
        return self.pool.closeCachedConnections()


_KEYS = {
    "bucket",
    "endpoint_url",
    "region",
    "access_key_id",
    "secret_access_key",
    "prefix",
    "multipart_threshold",
    "part_size",
}


def _s3_time(text: str) -> float:
    """``2026-12-05T19:30:07.000Z`` in seconds since the epoch; unreadable: now (too young to sweep)."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def from_config(config: dict[str, Any], reactor: IServerReactor) -> S3Backend:
    unknown = set(config) - _KEYS
    if unknown:
        raise ValueError(f"s3 backend: unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}")
    for required in ("bucket", "endpoint_url"):
        if not config.get(required):
            raise ValueError(f"s3 backend: {required} is required")
    settings = dict(config)
    settings.setdefault("access_key_id", os.environ.get("AWS_ACCESS_KEY_ID", ""))
    settings.setdefault("secret_access_key", os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
    return S3Backend(reactor, **settings)
