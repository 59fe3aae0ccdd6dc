"""Tag removal in the on-disk tag store."""

from __future__ import annotations

from pathlib import Path

from kraken.registry.tagstore import TagStore

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def test_delete_returns_the_old_digest_and_empties_the_repository(tmp_path: Path) -> None:
    store = TagStore(tmp_path)
    store.put("team/app", "v1", A)
    store.put("team/app", "v2", B)
    assert store.delete("team/app", "v1") == A
    assert store.get("team/app", "v1") is None
    assert store.delete("team/app", "v1") is None
    assert store.tags("team/app") == ["v2"]
    assert store.delete("team/app", "v2") == B
    assert store.tags("team/app") is None
    assert store.repositories() == []
    store.put("team/app", "v1", A)  # a later push recreates it
    assert store.get("team/app", "v1") == A


def test_conditional_delete_keeps_a_moved_tag(tmp_path: Path) -> None:
    store = TagStore(tmp_path)
    store.put("app", "latest", B)
    assert store.delete("app", "latest", expected=A) is None
    assert store.get("app", "latest") == B
    assert store.delete("app", "latest", expected=B) == B
