"""Discovery's range syntax and its refusals, without scanning anything."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from kraken.state.discovery import Discovery, RangeError, ipmi_targets, redfish_targets
from kraken.state.events import EventBus
from kraken.state.store import StateStore, StoreError


def test_ranges() -> None:
    assert redfish_targets("http://127.0.0.1:8000-8002") == [
        "http://127.0.0.1:8000", "http://127.0.0.1:8001", "http://127.0.0.1:8002"
    ]
    assert redfish_targets("https://10.0.0.1-3") == [f"https://10.0.0.{i}:443" for i in (1, 2, 3)]
    assert len(redfish_targets("http://10.0.0.0/28:8000")) == 14
    assert redfish_targets("http://10.0.0.9-10.0.0.10:80") == ["http://10.0.0.9:80", "http://10.0.0.10:80"]
    assert ipmi_targets("127.0.0.1:9623-9624") == [("127.0.0.1", 9623), ("127.0.0.1", 9624)]
    assert ipmi_targets("10.1.1.1") == [("10.1.1.1", 623)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ftp://1.2.3.4", "expected http"),
        ("http://1.2.3.4:9-2", "bad port range"),
        ("http://nohost:80", "bad host range"),
        ("http://10.0.0.9-10.0.0.1:80", "empty"),
        ("http://10.0.0.0/8:80", "over"),
    ],
)
def test_bad_ranges_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(RangeError, match=message):
        d = Discovery(StateStore(EventBus()), Clock(), {"redfish": [spec]})
        assert d


def test_unknown_keys_and_undiscovered_machines() -> None:
    with pytest.raises(RangeError, match="unknown key 'ranges'"):
        Discovery(StateStore(EventBus()), Clock(), {"ranges": []})
    d = Discovery(StateStore(EventBus()), Clock(), {})
    with pytest.raises(StoreError, match="no discovered machine"):
        d.accept("27946b59-9e44-4fa7-8e91-f3527a1e0a01")
