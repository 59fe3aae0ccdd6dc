"""Two origins in one cluster: an upload to one is copied to the other owner of the digest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from kraken.core.digest import Digest
from tests.integration.p2p_fixtures import client, origin_config
from tests.integration.test_p2p_swarm import upload
from tests.support import free_ports


@pytest_twisted.inlineCallbacks
def test_upload_is_copied_to_the_other_owner(servers: Any, pki: Path, tmp_path: Path) -> Any:
    ports = free_ports(2)
    cluster = [f"127.0.0.1:{p}" for p in ports]
    origins = []
    for name, port in zip(("a", "b"), ports):
        config = origin_config(pki, tmp_path / name, cluster=cluster, self_address=f"127.0.0.1:{port}",
                               max_replica=2)
        config["listen"] = [f"tls:tcp:{port}:interface=127.0.0.1"]
        origins.append(servers.start("kraken-origin", config, name=f"origin-{name}"))
    data = os.urandom(3 * 1024 * 1024 + 5)
    d: Digest = yield upload(pki, origins[0], data, tmp_path, ns="team/app")
    http = client(pki)
    response = yield http.head(f"https://127.0.0.1:{ports[0]}/blobs/{d}/locations")
    assert sorted(response.headers.getRawHeaders("origin-locations")[0].split(",")) == sorted(cluster)
    url = f"https://127.0.0.1:{ports[1]}/internal/namespace/team%2Fapp/blobs/{d}?local=true"
    for _ in range(100):
        response = yield http.head(url)
        if response.code == 200:
            break
        yield deferLater(reactor, 0.1, lambda: None)
    assert response.code == 200, "the second owner holds its own copy (no backend to fall back on)"
    response = yield http.get(f"https://127.0.0.1:{ports[1]}/namespace/team%2Fapp/blobs/{d}")
    assert response.code == 200
    assert (yield response.content()) == data
