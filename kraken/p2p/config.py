"""Config sections shared by the origin and agent: ``scheduler``, ``bandwidth`` and peer listening."""

from __future__ import annotations

from typing import Any

from kraken.core.config import ConfigError, Key
from kraken.p2p.bandwidth import TokenBucket, bucket_from_config
from kraken.p2p.dispatch import DispatchConfig
from kraken.p2p.scheduler import SchedulerConfig
from kraken.p2p.sockopts import check_congestion_control


def scheduler_schema() -> dict[str, Key]:
    return {
        "max_open_conn": Key("int", 10, "connections per blob (both directions)", minimum=1),
        "max_mutual_conn": Key("int", 10, "refuse a peer sharing more neighbours than this", minimum=0),
        "pipeline_limit": Key("int", 3, "outstanding piece requests per agent peer", minimum=1),
        "request_budget": Key(
            "int", 6, "outstanding requests to agent peers in all; fewer each when more peers", minimum=1
        ),
        "origin_pipeline_limit": Key("int", 5, "outstanding piece requests per origin peer", minimum=1),
        "endgame_threshold": Key("int", 3, "missing pieces at which requests may go to several peers"),
        "endgame_copies": Key("int", 2, "peers asked at once for one piece in the endgame", minimum=1),
        "piece_request_min_timeout": Key("float", 4.0, "seconds before a piece request expires", minimum=0.1),
        "piece_request_timeout_per_mib": Key("float", 4.0, "extra timeout seconds per MiB of piece"),
        "rarest_first": Key("bool", True, "request the pieces fewest peers have first"),
        "super_seed": Key("bool", None, "reveal pieces a few at a time (default: on for origins)"),
        "super_seed_window": Key("int", 2, "pieces shown to a peer and not yet spread", minimum=1),
        "super_seed_spread": Key("float", 3.0, "seconds after which a shown piece counts as spread"),
        "blacklist_duration": Key("float", 30.0, "seconds a failing peer is shunned for a blob"),
        "conn_tti": Key("float", 30.0, "close a connection idle this long (seconds)"),
        "seeder_tti": Key("float", 300.0, "forget a complete blob nobody read for this long"),
        "leecher_tti": Key("float", 300.0, "fail a download that made no progress for this long"),
        "handshake_timeout": Key("float", 5.0, "seconds to dial and exchange handshakes"),
        "redial_after": Key("float", 10.0, "seconds before redialing a peer that refused us or hung up"),
        "tick_interval": Key("float", 1.0, "seconds between timeout checks"),
        "announce_interval": Key("float", 3.0, "announce interval until the tracker names one"),
        "upload_slots": Key(
            "int", None, "pieces streamed at once over all peers (0 = any; default: 2 for origins, else 0)",
            minimum=0,
        ),
        "upload_slot_overdue": Key("float", 2.0, "seconds after which a piece still sending frees its slot"),
        "send_lowat": Key(
            "int", None, "unsent bytes the kernel keeps per peer socket (0 = its default; origins: 128 KiB)",
            minimum=0,
        ),
        "tcp_congestion": Key("str", "", "TCP congestion control of peer connections (empty = the host's)"),
    }


def bandwidth_schema() -> dict[str, Key]:
    return {
        "egress_bits_per_sec": Key("int", 0, "upload cap for piece traffic of this host (0 = none)"),
        "ingress_bits_per_sec": Key("int", 0, "download cap for piece traffic of this host (0 = none)"),
    }


def scheduler_config(section: dict[str, Any]) -> SchedulerConfig:
    if section["tcp_congestion"]:
        try:
            check_congestion_control(section["tcp_congestion"])
        except ValueError as e:
            raise ConfigError(f"scheduler.tcp_congestion: {e}") from None
    dispatch = DispatchConfig(
        pipeline_limit=section["pipeline_limit"],
        origin_pipeline_limit=section["origin_pipeline_limit"],
        request_budget=section["request_budget"],
        endgame_threshold=section["endgame_threshold"],
        endgame_copies=section["endgame_copies"],
        piece_request_min_timeout=section["piece_request_min_timeout"],
        piece_request_timeout_per_mib=section["piece_request_timeout_per_mib"],
        rarest_first=section["rarest_first"],
        super_seed=bool(section["super_seed"]),
        super_seed_window=section["super_seed_window"],
        super_seed_spread=section["super_seed_spread"],
    )
    names = (
        "max_open_conn max_mutual_conn blacklist_duration conn_tti seeder_tti leecher_tti "
        "handshake_timeout redial_after tick_interval announce_interval upload_slot_overdue"
    ).split()
    return SchedulerConfig(
        dispatch=dispatch,
        upload_slots=section["upload_slots"] or 0,
        send_lowat=section["send_lowat"] or 0,
        tcp_congestion=section["tcp_congestion"],
        **{n: section[n] for n in names},
    )


def buckets(section: dict[str, Any], clock: Any) -> tuple[TokenBucket | None, TokenBucket | None]:
    return (
        bucket_from_config(section["egress_bits_per_sec"], clock),
        bucket_from_config(section["ingress_bits_per_sec"], clock),
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
