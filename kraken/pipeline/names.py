"""Canonical names: ``the-pipeline``, ``the_pipeline`` and ``ThePipeline`` are one pipeline."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def modulize(name: str) -> str:
    """The original's module name for *name*: ``-`` → ``_``, CamelCase each ``.`` part."""
    parts = []
    for part in name.replace("-", "_").split("."):
        parts.append("".join(chunk[:1].upper() + chunk[1:] for chunk in part.split("_")))
    return ".".join(parts)


def pipeline_module(name: str) -> str:
    return "Elixir.Kraken.Pipelines." + modulize(name)


def service_module(name: str) -> str:
    return "Elixir.Octopus.Services." + modulize(name)
