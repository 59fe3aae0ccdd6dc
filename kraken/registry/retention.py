"""Applying retention rules to a tag store: the build-index's and a standalone proxy's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from kraken.registry.policy import TagRules
from kraken.registry.tagstore import TagStore

# (repo, tag, digest it must still point at) -> whether it was removed
Remove = Callable[[str, str, str], "Deferred[Any]"]


@inlineCallbacks
def apply_retention(store: TagStore, rules: TagRules, now: float, remove: Remove,
                    dry_run: bool = False) -> Any:
    """Remove the tags of *store* the rules let go (none with *dry_run*); their ``repo:tag`` names.

    Each removal is conditional on the digest read here, so a tag pushed meanwhile stays.
    """
    expired = []
    for repo in store.repositories():
        if rules.rule_for(repo) is None:
            continue
        for tag in rules.expired(repo, store.pushed(repo), now):
            digest = store.get(repo, tag)
            if digest is None:
                continue
            if not dry_run:
                removed = yield remove(repo, tag, digest)
                if not removed:
                    continue
            expired.append(f"{repo}:{tag}")
    return expired
