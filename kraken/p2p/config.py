"""Config sections shared by the origin and agent: ``scheduler``, ``bandwidth`` and peer listening."""

from __future__ import annotations

from dataclasses import dataclass, replace

from twisted.internet.interfaces import IReactorTime

from kraken.core.config import ConfigError, setting
from kraken.p2p.bandwidth import TokenBucket, bucket_from_config
from kraken.p2p.dispatch import DispatchConfig
from kraken.p2p.scheduler import SchedulerConfig
from kraken.p2p.sockopts import check_congestion_control


@dataclass(frozen=True, kw_only=True)
class SchedulerSection:
    max_open_conn: int = setting(10, "connections per blob (both directions)", minimum=1)
    max_mutual_conn: int = setting(10, "refuse a peer sharing more neighbours than this", minimum=0)
    pipeline_limit: int = setting(3, "outstanding piece requests per agent peer", minimum=1)
    request_budget: int = setting(
        6, "outstanding requests to agent peers in all; fewer each when more peers", minimum=1
    )
    origin_pipeline_limit: int = setting(5, "outstanding piece requests per origin peer", minimum=1)
    endgame_threshold: int = setting(3, "missing pieces at which requests may go to several peers")
    endgame_copies: int = setting(2, "peers asked at once for one piece in the endgame", minimum=1)
    piece_request_min_timeout: float = setting(4.0, "seconds before a piece request expires", minimum=0.1)
    piece_request_timeout_per_mib: float = setting(4.0, "extra timeout seconds per MiB of piece")
    rarest_first: bool = setting(True, "request the pieces fewest peers have first")
    super_seed: bool | None = setting(None, "reveal pieces a few at a time (default: on for origins)")
    super_seed_window: int = setting(2, "pieces shown to a peer and not yet spread", minimum=1)
    super_seed_spread: float = setting(3.0, "seconds after which a shown piece counts as spread")
    blacklist_duration: float = setting(30.0, "seconds a failing peer is shunned for a blob")
    conn_tti: float = setting(30.0, "close a connection idle this long (seconds)")
    seeder_tti: float = setting(300.0, "forget a complete blob nobody read for this long")
    seeder_announce_interval: float = setting(
        30.0, "seconds between announces of a complete blob (a restarted peer store learns its seeders)",
        minimum=0.1,
    )
    leecher_tti: float = setting(300.0, "fail a download that made no progress for this long")
    handshake_timeout: float = setting(5.0, "seconds to dial and exchange handshakes")
    redial_after: float = setting(10.0, "seconds before redialing a peer that refused us or hung up")
    tick_interval: float = setting(1.0, "seconds between timeout checks")
    announce_interval: float = setting(3.0, "announce interval until the tracker names one")
    upload_slots: int | None = setting(
        None, "pieces streamed at once over all peers (0 = any; default: 2 for origins, else 0)", minimum=0
    )
    upload_slot_overdue: float = setting(2.0, "seconds after which a piece still sending frees its slot")
    send_lowat: int | None = setting(
        None, "unsent bytes the kernel keeps per peer socket (0 = its default; origins: 128 KiB)", minimum=0
    )
    tcp_congestion: str = setting("", "TCP congestion control of peer connections (empty = the host's)")


@dataclass(frozen=True, kw_only=True)
class BandwidthSection:
    egress_bits_per_sec: int = setting(0, "upload cap for piece traffic of this host (0 = none)")
    ingress_bits_per_sec: int = setting(0, "download cap for piece traffic of this host (0 = none)")


def for_origin(section: SchedulerSection) -> SchedulerSection:
    """*section* with the origin's defaults for the keys left unset (``null``)."""
    return replace(
        section,
        super_seed=True if section.super_seed is None else section.super_seed,
        upload_slots=2 if section.upload_slots is None else section.upload_slots,
        send_lowat=128 * 1024 if section.send_lowat is None else section.send_lowat,
    )


def scheduler_config(section: SchedulerSection) -> SchedulerConfig:
    if section.tcp_congestion:
        try:
            check_congestion_control(section.tcp_congestion)
        except ValueError as e:
            raise ConfigError(f"scheduler.tcp_congestion: {e}") from None
    dispatch = DispatchConfig(
        pipeline_limit=section.pipeline_limit,
        origin_pipeline_limit=section.origin_pipeline_limit,
        request_budget=section.request_budget,
        endgame_threshold=section.endgame_threshold,
        endgame_copies=section.endgame_copies,
        piece_request_min_timeout=section.piece_request_min_timeout,
        piece_request_timeout_per_mib=section.piece_request_timeout_per_mib,
        rarest_first=section.rarest_first,
        super_seed=bool(section.super_seed),
        super_seed_window=section.super_seed_window,
        super_seed_spread=section.super_seed_spread,
    )
    return SchedulerConfig(
        dispatch=dispatch,
        upload_slots=section.upload_slots or 0,
        send_lowat=section.send_lowat or 0,
        tcp_congestion=section.tcp_congestion,
        max_open_conn=section.max_open_conn,
        max_mutual_conn=section.max_mutual_conn,
        blacklist_duration=section.blacklist_duration,
        conn_tti=section.conn_tti,
        seeder_tti=section.seeder_tti,
        seeder_announce_interval=section.seeder_announce_interval,
        leecher_tti=section.leecher_tti,
        handshake_timeout=section.handshake_timeout,
        redial_after=section.redial_after,
        tick_interval=section.tick_interval,
        announce_interval=section.announce_interval,
        upload_slot_overdue=section.upload_slot_overdue,
    )


def buckets(section: BandwidthSection, clock: IReactorTime) -> tuple[TokenBucket | None, TokenBucket | None]:
    return (
        bucket_from_config(section.egress_bits_per_sec, clock),
        bucket_from_config(section.ingress_bits_per_sec, clock),
    )


def advertised_host(explicit: str | None, listen: list[str]) -> str:
    """The address peers should dial: explicit, else the ``interface=`` of the first listener."""
    if explicit:
        return explicit
    for description in listen:
        for part in description.split(":"):
            if part.startswith("interface="):
                host = part.split("=", 1)[1]
                if host not in ("", "0.0.0.0", "::"):
                    return host
    return "127.0.0.1"
