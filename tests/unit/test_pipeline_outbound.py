"""The outbound allow-list of the pipeline HTTP client (issue 15, item 9): entries, URL
checks, and the connect-time address check that stops DNS rebinding."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorPluggableNameResolver
from twisted.internet.testing import MemoryReactor
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from zope.interface import implementer

from kraken.pipeline.clients.outbound import GuardedEndpoints, OutboundPolicy, OutboundRefused, parse_rule

POLICY = OutboundPolicy(
    [
        "https://api.example.com/v1/",
        "hooks.example.org:8443",
        "10.1.0.0/16",
        "[::1]:9000",
        "localhost:8080",
        "internal.example.net",
    ]
)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/v1/items",
        "https://API.example.com:443/v1",
        "https://hooks.example.org:8443/anything",
        "http://hooks.example.org:8443/",
        "http://10.1.2.3:5000/x",
        "http://[::1]:9000/",
        "http://localhost:8080/status",
        "http://internal.example.net:1234/",
    ],
)
def test_allowed_urls(url: str) -> None:
    POLICY.check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/v10/items",  # a prefix ends at a path segment
        "https://api.example.com/",
        "http://api.example.com/v1/items",  # scheme is part of a URL prefix
        "https://api.example.com:8443/v1/",
        "https://hooks.example.org/",  # port 443, entry says 8443
        "http://10.2.0.1/",
        "http://127.0.0.1:8080/",  # localhost entries do not name the address
        "http://localhost:8081/",
        "ftp://api.example.com/v1/",
        "http://[::1]:9001/",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(OutboundRefused):
        POLICY.check_url(url)


def test_empty_list_allows_nothing() -> None:
    with pytest.raises(OutboundRefused):
        OutboundPolicy().check_url("http://127.0.0.1:4001/status")


@pytest.mark.parametrize("entry", ["http://", "10.0.0.0/33", "host:99999", "host:port", ":80"])
def test_bad_entries_name_themselves(entry: str) -> None:
    with pytest.raises(ValueError, match="outbound_allow entry"):
        parse_rule(entry)


@pytest.mark.parametrize(
    ("host", "port", "address", "allowed"),
    [
        ("api.example.com", 443, "93.184.216.34", True),
        ("api.example.com", 443, "127.0.0.1", False),  # rebinding to loopback
        ("api.example.com", 443, "10.1.2.3", True),  # ... unless a network entry allows it
        ("internal.example.net", 80, "192.168.1.5", False),
        ("localhost", 8080, "127.0.0.1", True),
        ("localhost", 8080, "10.9.9.9", False),
        ("10.1.2.3", 80, "10.1.2.3", True),
        ("::1", 9000, "::1", True),
    ],
)
def test_resolved_addresses(host: str, port: int, address: str, allowed: bool) -> None:
    check = lambda: POLICY.check_address(host, port, ipaddress.ip_address(address))  # noqa: E731
    if allowed:
        check()
    else:
        with pytest.raises(OutboundRefused):
            check()


@implementer(IReactorPluggableNameResolver)
class ReboundReactor(MemoryReactor):
    """Resolves every name to *address*, as a hostile DNS server would."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address
        self.nameResolver: Any = self

    def installNameResolver(self, resolver: Any) -> Any:
        return self

    def resolveHostName(self, receiver: Any, host: str, port: int = 0, *args: Any, **kwargs: Any) -> Any:
        receiver.resolutionBegan(None)
        receiver.addressResolved(IPv4Address("TCP", self.address, port))
        receiver.resolutionComplete()
        return None


def test_connections_go_to_the_checked_address_only() -> None:
    policy = OutboundPolicy(["https://api.example.com/"])
    hostile = ReboundReactor("127.0.0.1")
    endpoint = GuardedEndpoints(hostile, policy, BrowserLikePolicyForHTTPS(), 5).endpointForURI(
        URI.fromBytes(b"https://api.example.com/x")
    )
    failures: list[Any] = []
    endpoint.connect(object()).addErrback(failures.append)  # type: ignore[arg-type]
    assert failures and failures[0].check(OutboundRefused)
    assert hostile.tcpClients == []
    public = ReboundReactor("93.184.216.34")
    endpoint = GuardedEndpoints(public, policy, BrowserLikePolicyForHTTPS(), 5).endpointForURI(
        URI.fromBytes(b"https://api.example.com/x")
    )
    endpoint.connect(object())  # type: ignore[arg-type]
    assert [(host, port) for host, port, *_ in public.tcpClients] == [("93.184.216.34", 443)]


def test_a_bad_entry_is_a_config_error_naming_the_key() -> None:
    from kraken.core.config import ConfigError
    from kraken.pipeline.app import PipelineSection

    with pytest.raises(ConfigError, match=r"pipeline.outbound_allow: outbound_allow entry 'api:99999'"):
        PipelineSection(outbound_allow=["api:99999"])
    assert PipelineSection().outbound_allow == []
