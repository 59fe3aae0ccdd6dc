"""Client modules by name: a service definition's ``client.module`` finds its factory here.

The built-in clients register under the original's names and short ones (``http``, ``lambda``,
``kv``, ``cli``); the last dotted part of a name also matches.
"""

from __future__ import annotations

from kraken.pipeline.clients.base import ClientFactory
from kraken.pipeline.clients.cli import CliClient
from kraken.pipeline.clients.http import HttpClient
from kraken.pipeline.clients.kv import KVStoreClient
from kraken.pipeline.clients.lambdas import LambdaClient
from kraken.pipeline.names import modulize

_CLIENTS: dict[str, ClientFactory] = {}


def register_client(names: list[str], factory: ClientFactory) -> None:
    for name in names:
        _CLIENTS[_key(name)] = factory


def _key(name: str) -> str:
    return modulize(name).lower()


def find_client(name: str) -> ClientFactory | None:
    key = _key(name)
    if key in _CLIENTS:
        return _CLIENTS[key]
    return _CLIENTS.get(key.rsplit(".", 1)[-1])


def _register_builtin() -> None:
    register_client(["OctopusClientHttpFinch", "http", "kraken.http"], HttpClient)
    register_client(["Octopus.Lambda", "Octopus.ElixirModuleClient", "lambda", "kraken.lambda"], LambdaClient)
    register_client(["OctopusClientAgentKVStore", "KVStore", "kv", "kraken.kv"], KVStoreClient)
    register_client(["OctopusClientCliRambo", "cli", "kraken.cli"], CliClient)


_register_builtin()
