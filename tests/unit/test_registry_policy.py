"""Tag rules: immutable tags, retention (which tags expire), their config errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import succeed

from kraken.registry.policy import PolicyConfigError, TagImmutable, TagRules, parse_duration
from kraken.registry.retention import apply_retention
from kraken.registry.tagstore import TagStore

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
DAY = 86400.0


def rules(immutable: Any = (), retention: Any = ()) -> TagRules:
    return TagRules.from_config(list(immutable), list(retention), "buildindex")


def test_immutable_tags_refuse_moves_and_removals_but_allow_the_same_digest() -> None:
    r = rules(immutable=[{"repository": "prod/.*", "tags": r"v\d+.*"}])
    r.check_put("prod/app", "v1", None, A)  # a first push
    r.check_put("prod/app", "v1", A, A)  # the same image again
    with pytest.raises(TagImmutable, match="prod/app:v1 is immutable"):
        r.check_put("prod/app", "v1", A, B)
    with pytest.raises(TagImmutable):
        r.check_delete("prod/app", "v1", A)
    r.check_put("prod/app", "latest", A, B)  # tag does not match
    r.check_put("dev/app", "v1", A, B)  # repository does not match
    r.check_put("prod/app", "xv1", A, B)  # whole-name match


def test_retention_keeps_any_tag_one_criterion_keeps() -> None:
    now = 100 * DAY
    r = rules(retention=[{"repository": "ci/.*", "keep_last": 2, "keep_newer_than": "3d",
                          "keep_tags": "release-.*"}])
    tags = [("a", now - 10 * DAY), ("b", now - 9 * DAY), ("release-1", now - 50 * DAY),
            ("c", now - 8 * DAY), ("d", now - 1 * DAY), ("e", now - 2 * DAY), ("f", now - 4 * DAY)]
    # newest: d, e (kept by keep_last and by age), f (4 days) and older expire unless release-*
    assert r.expired("ci/app", tags, now) == ["a", "b", "c", "f"]
    assert r.expired("other/app", tags, now) == []


def test_first_matching_rule_decides_and_immutable_tags_never_expire() -> None:
    now = 10 * DAY
    r = rules(immutable=[{"repository": ".*", "tags": "v1"}],
              retention=[{"repository": "team/keep", "keep_last": 5},
                         {"repository": "team/.*", "keep_last": 0}])
    tags = [("v1", 0.0), ("v2", 1.0), ("v3", 2.0)]
    assert r.expired("team/keep", tags, now) == []
    assert r.expired("team/x", tags, now) == ["v2", "v3"]


@pytest.mark.parametrize("value, seconds", [(90, 90.0), ("90", 90.0), ("30m", 1800.0), ("12h", 43200.0),
                                            ("7d", 7 * DAY), ("2w", 14 * DAY), ("1.5h", 5400.0)])
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value, "x") == seconds


@pytest.mark.parametrize("immutable, retention, message", [
    ([{"tags": "v.*"}], [], r"immutable_tags\[0\]: 'repository'"),
    ([{"repository": "x"}], [], r"immutable_tags\[0\]: 'tags'"),
    ([{"repository": "(", "tags": "x"}], [], r"immutable_tags\[0\].repository: bad regular expression"),
    ([], [{"repository": "x"}], r"retention\[0\]: name at least one"),
    ([], [{"repository": "x", "keep_last": -1}], r"retention\[0\].keep_last"),
    ([], [{"repository": "x", "keep_newer_than": "soon"}], r"retention\[0\].keep_newer_than"),
    ([], [{"repository": "x", "keep_last": 1, "keep": 2}], r"retention\[0\]: unknown key 'keep'"),
    ([], ["x"], r"retention\[0\]: expected a mapping"),
])
def test_config_errors_name_the_key(immutable: Any, retention: Any, message: str) -> None:
    with pytest.raises(PolicyConfigError, match=message):
        rules(immutable, retention)


def test_apply_retention_over_a_tag_store(tmp_path: Path) -> None:
    store = TagStore(tmp_path)
    now = 1_000_000.0
    for i, tag in enumerate(("old", "mid", "new")):
        store.put("ci/app", tag, A)
        os.utime(tmp_path / "ci/app/_tags" / tag, (now - (3 - i) * DAY, now - (3 - i) * DAY))
    store.put("other", "old", A)
    r = rules(retention=[{"repository": "ci/.*", "keep_last": 1}])
    removed: list[tuple[str, str, str]] = []

    def remove(repo: str, tag: str, digest: str) -> Any:
        removed.append((repo, tag, digest))
        return succeed(store.delete(repo, tag, digest) is not None)

    dry: list[str] = []
    apply_retention(store, r, now, remove, dry_run=True).addCallback(dry.extend)
    assert dry == ["ci/app:mid", "ci/app:old"] and removed == []
    assert store.tags("ci/app") == ["mid", "new", "old"]
    done: list[str] = []
    apply_retention(store, r, now, remove).addCallback(done.extend)
    assert done == ["ci/app:mid", "ci/app:old"]
    assert store.tags("ci/app") == ["new"] and store.tags("other") == ["old"]
    assert removed == [("ci/app", "mid", A), ("ci/app", "old", A)]
