"""Replaying dead letters: the stored event re-enters its pipeline (as it runs now) at the
component that failed, or the pipeline's input at the start.

A replay that succeeds deletes the dead letter. One that fails keeps it with one more
attempt; when the failure was dead-lettered again, the new entry replaces the old one (and
carries its attempts), so an event never has two dead letters.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from kraken.pipeline.deadletters import DeadLetters
from kraken.pipeline.lifecycle import ApiError
from kraken.pipeline.pipelines import PipelineRegistry

NOT_FOUND = ":not_found"


def _errors(result: Any) -> list[dict[str, Any]]:
    results = result if isinstance(result, list) else [result]
    return [r for r in results if isinstance(r, dict) and r.get("type") == "error_ip"]


class Replays:
    def __init__(self, pipelines: PipelineRegistry, store: DeadLetters) -> None:
        self.pipelines = pipelines
        self.store = store

    def entry(self, entry_id: int) -> dict[str, Any]:
        entry = self.store.get(entry_id)
        if entry is None:
            raise ApiError(NOT_FOUND, {"dead_letter": entry_id})
        return entry

    def replay(self, entry_id: int, start: bool, timeout: float | None = None) -> defer.Deferred[Any]:
        """The replay's result (``{"ok": result}``) or an :class:`ApiError` ``:replay_failed``."""
        entry = self.entry(entry_id)
        pipeline = self.pipelines.runtime(entry["pipeline"])
        if start:
            result = pipeline.call(entry["input"], timeout=timeout)
        else:
            at = pipeline.find(entry["component"])
            if at is None:
                raise ApiError(
                    ":no_component",
                    {"dead_letter": entry_id, "component": entry["component"], "pipeline": pipeline.name},
                )
            result = pipeline.call(entry["event"], timeout=timeout, at=at, init_event=entry["input"])
        return defer.maybeDeferred(lambda: result).addCallback(self._settle, entry)

    def _settle(self, result: Any, entry: dict[str, Any]) -> Any:
        errors = _errors(result)
        if not errors:
            self.store.delete(entry["id"])
            return {"ok": result}
        attempts = entry["attempts"] + 1
        again = next((e["dead_letter"] for e in errors if e.get("dead_letter") is not None), None)
        if again is not None:
            self.store.delete(entry["id"])
            self.store.set_attempts(again, attempts)
        else:
            self.store.set_attempts(entry["id"], attempts)
        kept = again if again is not None else entry["id"]
        raise ApiError(":replay_failed", {"dead_letter": kept, "attempts": attempts, "result": result})

    @defer.inlineCallbacks
    def replay_many(self, ids: list[int], start: bool) -> Any:
        """Replay each (one after another); how many succeeded and which failed."""
        replayed, failed = 0, []
        for entry_id in ids:
            try:
                yield self.replay(entry_id, start)
                replayed += 1
            except ApiError as e:
                failed.append({"dead_letter": entry_id, "error": e.error})
        return {"replayed": replayed, "failed": failed}
