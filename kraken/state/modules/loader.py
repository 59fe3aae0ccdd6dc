"""Find module classes by name: built-ins, the ``kraken.state.modules`` entry-point group, or
``package.module:Class``."""

from __future__ import annotations

import importlib
from dataclasses import replace
from importlib.metadata import entry_points
from typing import Any

from kraken.state.modules.base import Module

BUILTIN = {
    "sim": "kraken.state.modules.sim:SimPower",
    "ipmi": "kraken.state.modules.ipmi:IpmiPower",
    "redfish": "kraken.state.modules.redfish:RedfishPower",
    "freebusy": "kraken.state.modules.freebusy:FreeBusy",
    "pxe": "kraken.state.modules.pxe:PxeBoot",
}
ENTRY_POINT_GROUP = "kraken.state.modules"


class ModuleLoadError(Exception):
    pass


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ModuleLoadError(f"cannot load state module {target!r}: {e}") from None


def module_class(name: str) -> type[Module]:
    if name in BUILTIN:
        cls = _import(BUILTIN[name])
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if found:
            cls = found[0].load()
        elif ":" in name:
            cls = _import(name)
        else:
            known = ", ".join(sorted(BUILTIN))
            raise ModuleLoadError(
                f"unknown state module {name!r} (built in: {known}; or an entry point "
                f"in {ENTRY_POINT_GROUP!r}, or package.module:Class)"
            )
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise ModuleLoadError(f"state module {name!r} is not a kraken.state.modules.base.Module")
    return cls


def _overrides(module: Module, config: dict[str, Any]) -> None:
    """Runtime overrides of single mutations: ``disable: [id...]``, ``timeouts: {id: seconds}``."""
    disabled = config.get("disable") or []
    timeouts = config.get("timeouts") or {}
    if not isinstance(disabled, list) or not isinstance(timeouts, dict):
        raise ModuleLoadError(f"module {module.si}: 'disable' must be a list and 'timeouts' a mapping")
    known = {m.id for m in module.mutations}
    for mid in [*disabled, *timeouts]:
        if mid not in known:
            raise ModuleLoadError(
                f"module {module.si} has no mutation {mid!r} (it has: {', '.join(sorted(known))})"
            )
    for mid, seconds in timeouts.items():
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
            raise ModuleLoadError(f"module {module.si}: timeout of {mid} must be a number of seconds")
    module.mutations = [
        replace(m, timeout=float(timeouts.get(m.id, m.timeout)))
        for m in module.mutations
        if m.id not in disabled
    ]


def load_modules(names: list[str], configs: dict[str, Any]) -> list[Module]:
    modules = []
    for name in names:
        cls = module_class(name)
        config = configs.get(cls.si) or configs.get(name) or {}
        module = cls(config)
        _overrides(module, config)
        modules.append(module)
    sis = [m.si for m in modules]
    dupes = {s for s in sis if sis.count(s) > 1}
    if dupes:
        raise ModuleLoadError(f"two state modules share the service id {sorted(dupes)[0]!r}")
    return modules
