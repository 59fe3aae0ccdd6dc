"""What garbage collection reads of the referrer store: its subjects and when entries were written."""

from __future__ import annotations

import time
from pathlib import Path

from kraken.core.digest import Digest
from kraken.registry.referrerstore import ReferrerStore
from tests.unit.test_registry_referrers import _entry


def test_subjects_and_recording_times(tmp_path: Path) -> None:
    store = ReferrerStore(tmp_path)
    a, b = Digest.of_bytes(b"subject a"), Digest.of_bytes(b"subject b")
    first, second = _entry("one"), _entry("two")
    store.add("team/app", a, first)
    store.add("other", b, second)
    assert store.subjects() == [("other", b), ("team/app", a)]
    written = store.recorded_at("team/app", a, Digest.parse(first["digest"]))
    assert written is not None and abs(written - time.time()) < 60
    assert store.recorded_at("team/app", b, Digest.parse(first["digest"])) is None
    store.remove("team/app", a, Digest.parse(first["digest"]))
    assert store.subjects() == [("other", b)]
