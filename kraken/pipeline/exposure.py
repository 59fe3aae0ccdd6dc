"""Start-up warnings about who can reach the pipeline API.

The API defines services (outbound HTTP calls, programs, lambdas), so whoever reaches a
plain (non-TLS) listener without ``pipeline.api_token`` controls the server. A plain
listener on a non-loopback interface is logged as a warning, one on loopback as a notice.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from twisted.logger import Logger

log = Logger(namespace="kraken.pipeline.exposure")

_INTERFACE = re.compile(r"(?:^|:)interface=((?:\\:|[^:])*)")


def plain_interface(description: str) -> str | None:
    """The interface a plain TCP endpoint description listens on (``""``: every interface);
    ``None`` for TLS and non-TCP (unix socket) listeners."""
    if description.startswith("tls:") or not description.startswith(("tcp:", "tcp6:")):
        return None
    found = _INTERFACE.search(description)
    return found.group(1).replace("\\:", ":") if found else ""


def is_loopback(interface: str) -> bool:
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def warn_about_plain_listeners(listen: Iterable[str], token: str | None) -> None:
    for description in listen:
        interface = plain_interface(description)
        if interface is None:
            continue
        guard = "pipeline.api_token is set" if token else "no pipeline.api_token: no authentication at all"
        if is_loopback(interface):
            log.info(
                "notice: the pipeline API listens without TLS on loopback ({listener}); {guard}; "
                "any local user or process can define services and run them",
                listener=description,
                guard=guard,
            )
        else:
            log.warn(
                "WARNING: the pipeline API listens without TLS on {where} ({listener}); {guard}; "
                "whoever reaches it can define services that call any allowed URL, run allowed "
                "programs and read every definition. Listen on loopback, or use a tls: listener.",
                where=interface or "every interface",
                listener=description,
                guard=guard,
            )
