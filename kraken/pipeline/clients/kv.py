"""In-memory key/value store client: ``{"operation": "set"|"get"|"getset", "key", "value"}``."""

from __future__ import annotations

from typing import Any

from kraken.pipeline.clients.base import Client, ClientError

_INVALID = ClientError("invalid_operation_or_missing_arguments", ":invalid_operation_or_missing_arguments")


class KVStoreClient(Client):
    def start(self, config: dict[str, Any]) -> Any:
        self.data: dict[str, Any] = {}
        return {"size": 0}

    def state(self) -> Any:
        return {"size": len(self.data)}

    def call(self, prepared: Any, config: dict[str, Any]) -> Any:
        if not isinstance(prepared, dict) or not isinstance(prepared.get("key"), str):
            return _INVALID
        op, key = prepared.get("operation"), prepared["key"]
        if op == "get":
            return self.data.get(key)
        if op in ("set", "getset") and "value" in prepared:
            old = self.data.get(key)
            self.data[key] = prepared["value"]
            return "ok" if op == "set" else old
        return _INVALID
