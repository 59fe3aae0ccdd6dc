"""The agent's client of its trackers: metainfo (polling while origins fetch) and announces.

With several trackers each blob has its own: the first of the trackers in rendezvous order of
its digest (:mod:`kraken.core.hashring`), so every agent asks the same tracker about a blob. A
tracker that does not answer (connection refused, timeout, 5xx) is skipped for the blob's next
tracker at once, and tried last by every request for ``fail_timeout`` seconds
(:class:`~kraken.core.health.PassiveFilter`). Trackers sharing a Redis peer store hand out the
same peers, so a failover loses nothing; with in-memory stores the next tracker learns the
swarm again from its announces.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from kraken.backends.base import BlobNotFound
from kraken.core.digest import Digest
from kraken.core.hashring import Ring
from kraken.core.health import PassiveFilter, healthy_first
from kraken.core.httpclient import BadJSONResponse, HTTPStatusError, base_url, causes, json_body, read_body
from kraken.core.tls import RoleRefused, TLSSettings
from kraken.p2p.metainfo import MAX_METAINFO_BYTES, MetaInfo, MetaInfoError
from kraken.p2p.peer import PeerInfo
from kraken.p2p.scheduler import TorrentControl


def tracker_failed(error: BaseException) -> bool:
    """Whether *error* says the tracker itself is in trouble, so the next one should be asked."""
    if isinstance(error, HTTPStatusError):
        return error.status >= 500
    return not isinstance(error, (BlobNotFound, BadJSONResponse, ValueError))


def _role_refused(error: BaseException) -> bool:
    return any(isinstance(cause, RoleRefused) for cause in [error, *causes(error)])


def _unavailable(error: BaseException) -> bool:
    """No tracker answered, or the tracker reached no origin (``503``): worth asking again later.
    A tracker presenting another role is a configuration error, not an outage: no waiting."""
    if _role_refused(error):
        return False
    if isinstance(error, HTTPStatusError):
        return error.status == 503
    return tracker_failed(error)


log = Logger(namespace="kraken.agent.tracker_client")


class TrackerClient:
    def __init__(
        self,
        reactor: IReactorTime,
        address: str | list[str],
        tls: TLSSettings | None,
        http: HTTPClient,
        poll_timeout: float = 900.0,
        request_timeout: float = 30.0,
        fail_timeout: float = 10.0,
        unavailable_timeout: float = 60.0,
    ) -> None:
        self.reactor = reactor
        self.tls = tls
        self.set_trackers([address] if isinstance(address, str) else list(address))
        self.health = PassiveFilter(reactor, fails=1, fail_timeout=fail_timeout)
        self.http = http
        self.poll_timeout = poll_timeout
        self.unavailable_timeout = unavailable_timeout
        self.request_timeout = request_timeout  # a silent tracker must not stall announces forever
        self.peer_id = b""
        self.ip = "127.0.0.1"
        self.port_of: Callable[[], int] = lambda: 0

    def set_trackers(self, addresses: list[str]) -> None:
        """The trackers to use from now on (a config reload)."""
        if not addresses:
            raise ValueError("an agent needs at least one tracker")
        self.bases = {base_url(a, self.tls): a for a in addresses}
        self.ring = Ring(list(self.bases), 1)

    def trackers_for(self, d: Digest) -> list[str]:
        """Base URLs of the trackers to ask about *d*, its own first, those failing lately last."""
        return healthy_first(self.ring.ranked(d.hex), self.health.healthy)

    @inlineCallbacks
    def _on_each(self, d: Digest, attempt: Callable[[str], Any]) -> Any:
        """*attempt(base)* on the trackers of *d* in turn until one answers."""
        last: Exception | None = None
        for base in self.trackers_for(d):
            try:
                result = yield attempt(base)
            except Exception as e:
                if not tracker_failed(e):
                    raise
                self.health.failed(base)
                last = e
                continue
            self.health.succeeded(base)
            return result
        assert last is not None
        raise last

    @inlineCallbacks
    def metainfo(self, namespace: str, d: Digest) -> Any:
        """The blob's metainfo; waits (1 s, x1.3, at most 5 s apart) while origins answer 202.

        While no tracker answers, or they answer ``503`` (no origin reachable), it asks again for
        up to ``unavailable_timeout`` seconds: a download started while every origin restarts
        goes on once they are back.
        """
        waited, delay = 0.0, 0.2
        unavailable, pause = 0.0, 0.25
        ask = partial(self._get_metainfo, namespace=namespace, d=d)
        while True:
            try:
                response, body, url = yield self._on_each(d, ask)
            except Exception as e:
                if not _unavailable(e) or unavailable >= self.unavailable_timeout:
                    raise
                log.info("metainfo of {d}: no tracker or origin available ({e}); asking again in {p:.2f}s",
                         d=d, e=e, p=pause)
                yield deferLater(self.reactor, pause, lambda: None)
                unavailable += pause
                pause = min(pause * 1.5, 2.0)
                continue
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
            if waited >= self.poll_timeout:
                raise TimeoutError(f"origins still fetching {d} after {self.poll_timeout:g}s")
            yield deferLater(self.reactor, delay, lambda: None)
            waited += delay
            delay = min(delay * 1.3, 5.0)

    @inlineCallbacks
    def _get_metainfo(self, base: str, *, namespace: str, d: Digest) -> Any:
        url = f"{base}/namespace/{quote(namespace, safe='')}/blobs/{d}/metainfo"
        response = yield self.http.get(url, timeout=self.request_timeout)
        body = yield read_body(response, url, MAX_METAINFO_BYTES)
        if response.code not in (200, 202, 404):
            raise HTTPStatusError("GET", url, response.code, body)
        return response, body, url

    def announce(self, ctl: TorrentControl, complete: bool) -> Any:
        """Announce to the blob's tracker (the next one if it does not answer); ``(peers, interval)``."""
        return self._on_each(ctl.torrent.digest, lambda base: self._announce(base, ctl, complete))

    @inlineCallbacks
    def _announce(self, base: str, ctl: TorrentControl, complete: bool) -> Any:
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
        url = f"{base}/announce/{ctl.info_hash.hex()}"
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
