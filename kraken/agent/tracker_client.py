"""The agent's client of the tracker: metainfo (polling while origins fetch) and announces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from kraken.backends.base import BlobNotFound
from kraken.core.digest import Digest
from kraken.core.httpclient import BadJSONResponse, HTTPStatusError, base_url, json_body, read_body
from kraken.core.tls import TLSSettings
from kraken.p2p.metainfo import MAX_METAINFO_BYTES, MetaInfo, MetaInfoError
from kraken.p2p.peer import PeerInfo
from kraken.p2p.scheduler import TorrentControl


class TrackerClient:
    def __init__(
        self,
        reactor: IReactorTime,
        address: str,
        tls: TLSSettings | None,
        http: HTTPClient,
        poll_timeout: float = 900.0,
        request_timeout: float = 30.0,
    ) -> None:
        self.reactor = reactor
        self.base = base_url(address, tls)
        self.http = http
        self.poll_timeout = poll_timeout
        self.request_timeout = request_timeout  # a silent tracker must not stall announces forever
        self.peer_id = b""
        self.ip = "127.0.0.1"
        self.port_of: Callable[[], int] = lambda: 0

    @inlineCallbacks
    def metainfo(self, namespace: str, d: Digest) -> Any:
        """The blob's metainfo; waits (1 s, x1.3, at most 5 s apart) while origins answer 202."""
        url = f"{self.base}/namespace/{quote(namespace, safe='')}/blobs/{d}/metainfo"
        waited, delay = 0.0, 0.2
        while True:
            response = yield self.http.get(url, timeout=self.request_timeout)
            body = yield read_body(response, url, MAX_METAINFO_BYTES)
            if response.code == 200:
                try:
                    mi = MetaInfo.from_json(body)
                except MetaInfoError as e:
                    raise BadJSONResponse(f"{url} sent unusable metainfo: {e}") from None
                if mi.digest != d:
                    raise ValueError(f"tracker sent metainfo of {mi.digest} for {d}")
                return mi
            if response.code == 404:
                raise BlobNotFound(str(d))
            if response.code != 202:
                raise HTTPStatusError("GET", url, response.code, body)
            if waited >= self.poll_timeout:
                raise TimeoutError(f"origins still fetching {d} after {self.poll_timeout:g}s")
            yield deferLater(self.reactor, delay, lambda: None)
            waited += delay
            delay = min(delay * 1.3, 5.0)

    @inlineCallbacks
    def announce(self, ctl: TorrentControl, complete: bool) -> Any:
        body = {
            "digest": str(ctl.torrent.digest),
            "namespace": ctl.namespace,
            "peer": {
                "peer_id": self.peer_id.hex(),
                "ip": self.ip,
                "port": self.port_of(),
                "complete": complete,
            },
        }
        url = f"{self.base}/announce/{ctl.info_hash.hex()}"
        response = yield self.http.post(url, json=body, timeout=self.request_timeout)
        if response.code != 200:
            raw = yield response.content()
            raise HTTPStatusError("POST", url, response.code, raw)
        data = yield json_body(response, url)
        try:
            return _announce_answer(data)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BadJSONResponse(f"{url} sent an unusable announce answer ({str(e)[:200]})") from None


def _announce_answer(data: Any) -> tuple[list[PeerInfo], float]:
    """``{"peers": [{"peer_id", "ip", "port", "origin", "complete"}, ...], "interval": seconds}``."""
    peers = []
    for p in data.get("peers") or []:
        ip, port = p["ip"], p["port"]
        if not isinstance(ip, str) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError("a peer needs a string ip and a port in 1..65535")
        peers.append(PeerInfo(bytes.fromhex(p["peer_id"]), ip, port, bool(p["origin"]), bool(p["complete"])))
    interval = data.get("interval") or 0
    if not isinstance(interval, (int, float)):
        raise ValueError("interval must be a number")
    return peers, float(interval)
