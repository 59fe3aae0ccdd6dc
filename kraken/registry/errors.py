"""The OCI distribution error envelope: ``{"errors": [{"code", "message", "detail"}]}``."""

from __future__ import annotations

import json
from typing import Any

# code -> HTTP status used when the caller does not pick one
STATUS = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
    "PAGINATION_NUMBER_INVALID": 400,
    "RANGE_INVALID": 416,
    "UNAVAILABLE": 503,
    "UNKNOWN": 500,
}


class RegistryError(Exception):
    """An answer in the registry's error envelope; raise it anywhere below a handler."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else STATUS.get(code, 500)
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}, separators=(",", ":")).encode()


def blob_unknown(digest: str) -> RegistryError:
    return RegistryError("BLOB_UNKNOWN", "blob unknown to registry", detail={"digest": digest})


def manifest_unknown(reference: str) -> RegistryError:
    return RegistryError("MANIFEST_UNKNOWN", "manifest unknown", detail={"reference": reference})


def upload_unknown(upload_id: str) -> RegistryError:
    return RegistryError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", detail={"id": upload_id})
