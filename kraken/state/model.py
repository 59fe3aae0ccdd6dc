"""The node record, its JSON shape (camelCase, enums as names) and URL addressing of its values.

A value inside a node is addressed by a slash path of CamelCase field names (``/PhysState``,
``/Services/ipmi/State``) or, inside an extension, by its type URL then the field path
(``type.googleapis.com/IPMI.BMC/Host``). Across nodes the form is ``<uuid>:<path>``.
"""

from __future__ import annotations

import copy
import operator
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar, cast

DEFAULT_ID = "123e4567-e89b-12d3-a456-426655440000"
TYPE_PREFIX = "type.googleapis.com/"


class ModelError(ValueError):
    """A node, URL or value that does not fit the model; the message names the problem."""


class RunState(IntEnum):
    UNKNOWN = 0
    INIT = 1
    SYNC = 2
    ERROR = 3


class PhysState(IntEnum):
    PHYS_UNKNOWN = 0
    POWER_OFF = 1
    POWER_ON = 2
    POWER_CYCLE = 3
    PHYS_HANG = 4
    PHYS_ERROR = 5


class Busy(IntEnum):
    FREE = 0
    BUSY = 1


class ServiceState(IntEnum):
    UNKNOWN = 0
    INIT = 1
    STOP = 2
    RUN = 3
    ERROR = 4


@dataclass
class ExtensionType:
    """A registered extension: its type URL and which field paths hold enum values."""

    name: str
    enums: dict[str, type[IntEnum]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return TYPE_PREFIX + self.name


EXTENSIONS: dict[str, ExtensionType] = {}


def register_extension(ext: ExtensionType) -> ExtensionType:
    EXTENSIONS[ext.url] = ext
    return ext


_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_id(text: Any) -> str:
    """A node id as its lowercase UUID string, or a :class:`ModelError`."""
    if not isinstance(text, str):
        raise ModelError(f"node id must be a UUID string, got {text!r}")
    if _CANONICAL_ID.fullmatch(text):  # already canonical (every id on the sync wire): no parse
        return text
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ModelError(f"node id is not a UUID: {text!r}") from None


def name_to_uuid(name: str) -> str:
    """A stable id derived from a node name (for state files that only know names)."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, name))


@dataclass
class Service:
    id: str
    module: str = ""
    state: ServiceState = ServiceState.UNKNOWN
    config: dict[str, Any] | None = None
    error_msg: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "module": self.module, "state": self.state.name}
        if self.config is not None:
            out["config"] = copy.deepcopy(self.config)
        if self.error_msg:
            out["errorMsg"] = self.error_msg
        return out


class Node:
    """One managed machine; identical shape in the Cfg and Dsc stores."""

    __slots__ = (
        "arch",
        "busy",
        "extensions",
        "id",
        "nodename",
        "parent_id",
        "phys_state",
        "platform",
        "run_state",
        "services",
    )

    def __init__(self, node_id: str) -> None:
        self.id = node_id
        self.nodename = ""
        self.run_state = RunState.UNKNOWN
        self.phys_state = PhysState.PHYS_UNKNOWN
        self.arch = ""
        self.platform = ""
        self.parent_id = ""
        self.busy = Busy.FREE
        self.services: dict[str, Service] = {}
        self.extensions: dict[str, dict[str, Any]] = {}

    def copy(self) -> Node:
        other = Node.__new__(Node)
        other.id = self.id
        other.nodename = self.nodename
        other.run_state = self.run_state
        other.phys_state = self.phys_state
        other.arch = self.arch
        other.platform = self.platform
        other.parent_id = self.parent_id
        other.busy = self.busy
        other.services = {k: copy.deepcopy(v) for k, v in self.services.items()} if self.services else {}
        other.extensions = copy.deepcopy(self.extensions) if self.extensions else {}
        return other

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and to_json(self) == to_json(other)

    def __repr__(self) -> str:
        return f"Node({self.id!r}, {self.nodename!r}, {self.phys_state.name}, {self.run_state.name})"


# Go-style field name -> (attribute, enum type or None, JSON name)
FIELDS: dict[str, tuple[str, type[IntEnum] | None, str]] = {
    "Nodename": ("nodename", None, "nodename"),
    "RunState": ("run_state", RunState, "runState"),
    "PhysState": ("phys_state", PhysState, "physState"),
    "Arch": ("arch", None, "arch"),
    "Platform": ("platform", None, "platform"),
    "ParentId": ("parent_id", None, "parentId"),
    "Busy": ("busy", Busy, "busy"),
}
_JSON_FIELDS = {json_name: (attr, enum) for attr, enum, json_name in FIELDS.values()}
_FIELD_URLS = {f"/{go_name}": attr for go_name, (attr, _enum, _json) in FIELDS.items()}
_FIELD_ENUMS = {f"/{go_name}": enum for go_name, (_attr, enum, _json) in FIELDS.items()}
_BY_NAME: dict[type[IntEnum] | None, dict[str, IntEnum]] = {
    enum: {m.name: m for m in enum} for enum in _FIELD_ENUMS.values() if enum is not None
}
E = TypeVar("E", bound=IntEnum)
_SERVICE_FIELDS = {"Module": "module", "State": "state", "Config": "config", "ErrorMsg": "error_msg"}


def _enum_value(enum: type[E], value: Any, where: str) -> E:
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        try:
            return enum[value]
        except KeyError:
            allowed = ", ".join(m.name for m in enum)
            raise ModelError(f"{where}: {value!r} is not one of {allowed}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return enum(value)
        except ValueError:
            raise ModelError(f"{where}: {value} is not a valid {enum.__name__}") from None
    raise ModelError(f"{where}: expected an enum name, got {value!r}")


def to_json(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"id": node.id}
    for attr, enum, json_name in FIELDS.values():
        value = getattr(node, attr)
        out[json_name] = value.name if enum is not None else value
    if node.services:
        out["services"] = [node.services[k].to_json() for k in sorted(node.services)]
    if node.extensions:
        out["extensions"] = [
            {"@type": url, **copy.deepcopy(node.extensions[url])} for url in sorted(node.extensions)
        ]
    return out


def from_json(data: Any) -> Node:
    """Parse a node in the original's JSON shape; unknown keys and bad values raise ModelError."""
    if not isinstance(data, dict):
        raise ModelError(f"a node must be a JSON object, got {type(data).__name__}")
    if "id" not in data:
        raise ModelError("node: missing 'id'")
    node = Node(canonical_id(data["id"]))
    for key, value in data.items():
        if key == "id":
            continue
        if key in _JSON_FIELDS:
            attr, enum = _JSON_FIELDS[key]
            if enum is not None:
                member = _BY_NAME[enum].get(value) if isinstance(value, str) else None
                setattr(node, attr, member if member is not None else _enum_value(enum, value, f"node.{key}"))
            elif key == "parentId" and value:
                node.parent_id = canonical_id(value)
            elif not isinstance(value, str):
                raise ModelError(f"node.{key}: expected a string, got {value!r}")
            else:
                setattr(node, attr, value)
        elif key == "services":
            node.services = _services_from_json(value)
        elif key == "extensions":
            node.extensions = _extensions_from_json(value)
        else:
            raise ModelError(f"node: unknown field {key!r}")
    return node


def _services_from_json(value: Any) -> dict[str, Service]:
    if not isinstance(value, list):
        raise ModelError("node.services: expected a list")
    out: dict[str, Service] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise ModelError(f"node.services[{i}]: expected an object with a string 'id'")
        unknown = set(item) - {"id", "module", "state", "config", "errorMsg"}
        if unknown:
            raise ModelError(f"node.services[{i}]: unknown field {sorted(unknown)[0]!r}")
        config = item.get("config")
        if config is not None and not isinstance(config, dict):
            raise ModelError(f"node.services[{i}].config: expected an object")
        out[item["id"]] = Service(
            id=item["id"],
            module=str(item.get("module", "")),
            state=_enum_value(ServiceState, item.get("state", 0), f"node.services[{i}].state"),
            config=config,
            error_msg=str(item.get("errorMsg", "")),
        )
    return out


def _extensions_from_json(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, list):
        raise ModelError("node.extensions: expected a list")
    out: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("@type"), str):
            raise ModelError(f"node.extensions[{i}]: expected an object with '@type'")
        url = item["@type"]
        ext = EXTENSIONS.get(url)
        if ext is None:
            raise ModelError(f"node.extensions[{i}]: unregistered extension type {url!r}")
        body = {k: v for k, v in item.items() if k != "@type"}
        for path, enum in ext.enums.items():
            current = _walk(body, _split(path), make=False)
            if current is not None:
                _enum_value(enum, current, f"node.extensions[{i}]{path}")
        out[url] = body
    return out


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _key_variants(key: str) -> tuple[str, ...]:
    if not key:
        return (key,)
    return (key, key[0].lower() + key[1:], key[0].upper() + key[1:])


def _walk(body: Any, parts: list[str], make: bool) -> Any:
    current = body
    for part in parts:
        if isinstance(current, dict):
            found = next((k for k in _key_variants(part) if k in current), None)
            if found is None:
                if not make:
                    return None
                found = part[0].lower() + part[1:]
                current[found] = {}
            current = current[found]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def split_url(url: str) -> tuple[str, str]:
    """``<uuid>:<path>`` → ``(uuid, path)``; a bare path gives ``("", path)``."""
    head, sep, tail = url.partition(":")
    if sep and not head.startswith("type.googleapis.com"):
        return head, tail
    return "", url


def node_url(node_id: str, path: str) -> str:
    return f"{node_id}:{path}"


def _extension_parts(path: str) -> tuple[str, list[str]]:
    if not path.startswith(TYPE_PREFIX):
        raise ModelError(f"no such field: {path!r}")
    rest = path[len(TYPE_PREFIX) :]
    name, _, tail = rest.partition("/")
    return TYPE_PREFIX + name, _split(tail)


def enum_for(path: str) -> type[IntEnum] | None:
    """The enum that typed values at *path* belong to (``None`` for plain values)."""
    if path in _FIELD_ENUMS:
        return _FIELD_ENUMS[path]
    parts = _split(path)
    if path.startswith("/"):
        if len(parts) == 1 and parts[0] in FIELDS:
            return FIELDS[parts[0]][1]
        if len(parts) == 3 and parts[0] == "Services" and parts[2] == "State":
            return ServiceState
        return None
    url, sub = _extension_parts(path)
    ext = EXTENSIONS.get(url)
    if ext is None:
        return None
    return ext.enums.get("/" + "/".join(sub))


def value_of(path: str, name: Any) -> Any:
    """The typed value of *name* at *path* (an enum member where the path holds an enum)."""
    enum = enum_for(path)
    return _enum_value(enum, name, path) if enum is not None else name


def values_getter(paths: tuple[str, ...]) -> Callable[[Node], tuple[Any, ...]]:
    """A function giving a node's values at *paths* as a tuple (as :func:`get_value` each)."""
    attrs = [_FIELD_URLS.get(p) for p in paths]
    if len(attrs) > 1 and all(attrs):
        return cast(Callable[[Node], tuple[Any, ...]], operator.attrgetter(*cast(list[str], attrs)))
    if len(attrs) == 1 and attrs[0]:
        attr = attrs[0]
        return lambda node: (getattr(node, attr),)
    return lambda node: tuple(get_value(node, p) for p in paths)


def get_value(node: Node, path: str) -> Any:
    """The value at *path* (``None`` where the node has nothing there)."""
    attr = _FIELD_URLS.get(path)
    if attr is not None:
        return getattr(node, attr)
    if path.startswith("/"):
        parts = _split(path)
        if len(parts) == 1 and parts[0] in FIELDS:
            return getattr(node, FIELDS[parts[0]][0])
        if parts and parts[0] == "Services" and len(parts) >= 2:
            svc = node.services.get(parts[1])
            if svc is None:
                return ServiceState.UNKNOWN if parts[2:] == ["State"] else None
            if len(parts) == 2:
                return svc
            attr = _SERVICE_FIELDS.get(parts[2])
            if attr is None:
                raise ModelError(f"no such service field: {path!r}")
            value = getattr(svc, attr)
            return _walk(value, parts[3:], make=False) if len(parts) > 3 else value
        raise ModelError(f"no such field: {path!r}")
    url, sub = _extension_parts(path)
    body = node.extensions.get(url)
    if body is None:
        return None
    value = _walk(body, sub, make=False)
    enum = enum_for(path)
    return _enum_value(enum, value, path) if enum is not None and value is not None else value


def set_value(node: Node, path: str, value: Any) -> None:
    """Set the value at *path*, creating services, extensions and maps on the way."""
    if path.startswith("/"):
        parts = _split(path)
        if len(parts) == 1 and parts[0] in FIELDS:
            attr, enum, _ = FIELDS[parts[0]]
            if enum is not None:
                value = _enum_value(enum, value, path)
            elif parts[0] == "ParentId" and value:
                value = canonical_id(value)
            elif not isinstance(value, str):
                raise ModelError(f"{path}: expected a string, got {value!r}")
            setattr(node, attr, value)
            return
        if len(parts) >= 3 and parts[0] == "Services":
            svc = node.services.setdefault(parts[1], Service(parts[1]))
            field = _SERVICE_FIELDS.get(parts[2])
            if field is None:
                raise ModelError(f"no such service field: {path!r}")
            if field == "state":
                value = _enum_value(ServiceState, value, path)
            if len(parts) > 3:
                if svc.config is None:
                    svc.config = {}
                parent = _walk(svc.config, parts[3:-1], make=True)
                _put(parent, parts[-1], value)
            else:
                setattr(svc, field, value)
            return
        raise ModelError(f"no such field: {path!r}")
    url, sub = _extension_parts(path)
    ext = EXTENSIONS.get(url)
    if ext is None:
        raise ModelError(f"unregistered extension type {url!r}")
    enum = ext.enums.get("/" + "/".join(sub))
    if enum is not None:
        value = _enum_value(enum, value, path).name
    body = node.extensions.setdefault(url, {})
    if not sub:
        if not isinstance(value, dict):
            raise ModelError(f"{path}: a whole extension must be an object")
        node.extensions[url] = copy.deepcopy(value)
        return
    _put(_walk(body, sub[:-1], make=True), sub[-1], value, path)


def _put(parent: Any, key: str, value: Any, path: str = "") -> None:
    if not isinstance(parent, dict):
        raise ModelError(f"{path}: cannot set a field inside a non-object value")
    found = next((k for k in _key_variants(key) if k in parent), key[0].lower() + key[1:])
    parent[found] = value


def _go_name(key: str) -> str:
    return key[0].upper() + key[1:] if key else key


def _diff_values(prefix: str, old: Any, new: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            _diff_values(f"{prefix}/{_go_name(str(key))}", old.get(key), new.get(key), out)
    elif old != new or type(old) is not type(new):
        out.append((prefix, copy.deepcopy(new)))


def diff(old: Node | None, new: Node) -> list[tuple[str, Any]]:
    """``(path, new value)`` for every value that differs between *old* and *new*."""
    out: list[tuple[str, Any]] = []
    base = old if old is not None else Node(new.id)
    for go_name, (attr, _enum, _json) in FIELDS.items():
        value = getattr(new, attr)
        if getattr(base, attr) != value:
            out.append((f"/{go_name}", value))
    if base.services or new.services:
        for sid in sorted(set(base.services) | set(new.services)):
            a, b = base.services.get(sid), new.services.get(sid)
            if a == b:
                continue
            if a is None or b is None:
                out.append((f"/Services/{sid}", copy.deepcopy(b)))
                continue
            for go_name, attr in _SERVICE_FIELDS.items():
                if getattr(a, attr) != getattr(b, attr):
                    out.append((f"/Services/{sid}/{go_name}", copy.deepcopy(getattr(b, attr))))
    if base.extensions or new.extensions:
        for url in sorted(set(base.extensions) | set(new.extensions)):
            a_ext, b_ext = base.extensions.get(url), new.extensions.get(url)
            if a_ext is None or b_ext is None:
                if a_ext != b_ext:
                    out.append((url, copy.deepcopy(b_ext)))
                continue
            _diff_values(url, a_ext, b_ext, out)
    return out


def printable(value: Any) -> str:
    if isinstance(value, IntEnum):
        return value.name
    if isinstance(value, Service):
        return value.state.name
    return str(value) if value is not None else "<nil>"
