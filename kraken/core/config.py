"""YAML configuration shared by every kraken server, and the twistd ``Options`` that load it.

A server declares its configuration as frozen dataclasses: one per section, each field made
with :func:`setting` (default, help, limits) and typed (``int float str bool``, ``ConfigPath``,
``list[...]``, ``dict[...]``; ``X | None`` for keys whose default is ``None``), sections
nested with :func:`section`, the whole derived from :class:`ServerConfig` (the common keys).
From those classes :func:`schema_of` derives a *schema*, a nested ``dict`` whose leaves are
:class:`Key` objects; :func:`load_config` reads a YAML file, applies command-line overrides,
rejects unknown keys and wrong types with a message naming the key and the file, and returns
nested dicts filled with defaults, which :func:`build` turns into the typed configuration.

Every server's options accept ``--config FILE``, ``--set KEY=VALUE`` (repeatable, dotted
keys, YAML values) and one ``--dotted-key-with-dashes VALUE`` flag per leaf key, e.g.
``--tls-require-client-cert false`` or ``--pubsub-num-router-shards 8``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Generic,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import yaml
from twisted.python import usage

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


class ConfigError(Exception):
    """A configuration problem, described so that the user knows which key to fix."""


@dataclass(frozen=True)
class Key:
    """One configuration value: its kind, default and meaning.

    Kinds: ``int``, ``float``, ``str``, ``bool``, ``path`` (relative paths resolve against the
    config file's directory), ``list`` (of ``item`` kind), ``dict`` (free-form mapping).
    A key whose default is ``None`` also accepts ``null``.
    """

    kind: str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    item: str = "str"


Schema = dict[str, Any]

_KIND_NAMES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "path": "a file path",
    "list": "a list",
    "dict": "a mapping",
}


_PATH = "kraken.path"
ConfigPath = Annotated[str, _PATH]
"""A file path; relative values resolve against the config file's directory."""

_SETTING = "kraken.setting"


@dataclass(frozen=True)
class _Setting:
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    minimum: float | None


def setting(
    default: Any, help: str, *, choices: tuple[Any, ...] | None = None, minimum: float | None = None
) -> Any:
    """A config key as a dataclass field: its default, help text and limits; the kind is its type."""
    meta = {_SETTING: _Setting(default, help, choices, minimum)}
    if isinstance(default, (list, dict)):
        frozen_default = copy.deepcopy(default)
        return dataclasses.field(default_factory=lambda: copy.deepcopy(frozen_default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type[Any]) -> Any:
    """A nested section as a dataclass field, defaulting to all its defaults."""
    return dataclasses.field(default_factory=cls)


LISTEN_HELP = "Twisted endpoint strings; prefix 'tls:' for mutual TLS"


def listen_setting(default: list[str]) -> Any:
    """The ``listen`` key with a server's own default endpoints."""
    return setting(default, LISTEN_HELP)


@dataclass(frozen=True, kw_only=True)
class TLSSection:
    ca: ConfigPath | None = setting(None, "PEM bundle of the CA that signs peer certificates")
    cert: ConfigPath | None = setting(None, "our certificate chain (PEM)")
    key: ConfigPath | None = setting(None, "our private key (PEM)")
    require_client_cert: bool = setting(True, "refuse TLS clients that present no certificate")
    handshake_timeout: float = setting(
        10.0, "seconds from accept to a complete TLS handshake; slower connections are aborted", minimum=0.1
    )
    max_handshakes: int = setting(
        256, "connections still handshaking per listener; beyond it the oldest stalled ones are "
        "aborted (0: no cap)", minimum=0,
    )
    max_handshakes_per_source: int = setting(
        64, "connections still handshaking per client address; beyond it that address's oldest "
        "stalled ones are aborted (0: no cap)", minimum=0,
    )


@dataclass(frozen=True, kw_only=True)
class HTTPSection:
    header_timeout: float = setting(
        20.0, "seconds from connection start, or from the end of the previous response, to the end "
        "of the request headers (not reset by each byte); slower connections are aborted", minimum=0.1
    )
    idle_timeout: float = setting(
        60.0, "seconds without a byte from the client while it sends a request body", minimum=0.1
    )
    send_timeout: float = setting(
        60.0, "seconds a response may wait without the client taking (acknowledging) a byte of it; "
        "slower connections are aborted (a slow reader that makes progress is not)", minimum=0.1
    )
    max_pending: int = setting(
        1024, "connections awaiting request headers per site; beyond it the oldest stalled ones are "
        "aborted (0: no cap)", minimum=0,
    )
    max_pending_per_source: int = setting(
        128, "connections awaiting request headers per client address; beyond it that address's oldest "
        "stalled ones are aborted (0: no cap)", minimum=0,
    )


@dataclass(frozen=True, kw_only=True)
class LogSection:
    level: str = setting("info", "lowest level logged", choices=LOG_LEVELS)
    format: str = setting("text", "text, or json for one JSON object per line", choices=("text", "json"))
    file: ConfigPath | None = setting(None, "log file; standard output when unset")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """The keys every server has; a server subclasses it, sets ``listen`` and adds its sections."""

    listen: list[str] = listen_setting([])
    tls: TLSSection = section(TLSSection)
    http: HTTPSection = section(HTTPSection)
    log: LogSection = section(LogSection)
    port_file: ConfigPath | None = setting(None, "write {listener: port} JSON here once listening")


_KINDS: dict[Any, str] = {int: "int", float: "float", str: "str", bool: "bool", list: "list", dict: "dict"}


def _kind_of(annotation: Any) -> str:
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Annotated:
        return "path" if _PATH in annotation.__metadata__ else _kind_of(get_args(annotation)[0])
    return _KINDS[get_origin(annotation) or annotation]


def _key_of(field: dataclasses.Field[Any], annotation: Any) -> Key:
    spec: _Setting = field.metadata[_SETTING]
    kind = _kind_of(annotation)
    item = "str"
    if kind == "list":
        if get_origin(annotation) in (Union, types.UnionType):
            (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
        args = get_args(annotation)
        item = _kind_of(args[0]) if args and args[0] is not Any else "str"
    return Key(kind, spec.default, spec.help, spec.choices, spec.minimum, item)


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def schema_of(cls: type[Any]) -> Schema:
    """The :class:`Key` schema of a config dataclass (sections become nested dicts)."""
    hints = get_type_hints(cls, include_extras=True)
    out: Schema = {}
    for field in dataclasses.fields(cls):
        annotation = hints[field.name]
        out[field.name] = schema_of(annotation) if _is_section(annotation) else _key_of(field, annotation)
    return out


C = TypeVar("C", bound="DataclassInstance")


def build(cls: type[C], values: dict[str, Any]) -> C:
    """The typed configuration *cls* holding the validated *values* (:func:`load_config`)."""
    hints = get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        annotation = hints[field.name]
        value = values[field.name]
        kwargs[field.name] = build(annotation, value) if _is_section(annotation) else value
    return cls(**kwargs)


def common_schema(listen: list[str]) -> Schema:
    """The keys every server has; *listen* is the server's default list of endpoints."""
    return {**schema_of(ServerConfig), "listen": Key("list", listen, LISTEN_HELP)}


def _kind_ok(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in ("str", "path"):
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list)
    if kind == "dict":
        return isinstance(value, dict)
    raise AssertionError(f"unknown config kind {kind}")


def _check_leaf(key: Key, dotted: str, value: Any, where: str, base: Path | None) -> Any:
    if value is None and key.default is None:
        return None
    if not _kind_ok(key.kind, value):
        raise ConfigError(f"{where}: {dotted}: expected {_KIND_NAMES[key.kind]}, got {value!r}")
    if key.kind == "list":
        for i, item in enumerate(value):
            if not _kind_ok(key.item, item):
                raise ConfigError(f"{where}: {dotted}[{i}]: expected {_KIND_NAMES[key.item]}, got {item!r}")
    if key.choices is not None and value not in key.choices:
        allowed = ", ".join(str(c) for c in key.choices)
        raise ConfigError(f"{where}: {dotted}: {value!r} is not one of: {allowed}")
    if key.minimum is not None and value < key.minimum:
        raise ConfigError(f"{where}: {dotted}: {value!r} is below the minimum {key.minimum}")
    if key.kind == "float":
        return float(value)
    if key.kind == "path" and base is not None:
        expanded = os.path.expanduser(value)
        return str(base / expanded) if not os.path.isabs(expanded) else expanded
    return copy.deepcopy(value)


def _merge(schema: Schema, data: Any, prefix: str, where: str, base: Path | None) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'}: expected a mapping, got {data!r}")
    for name in data:
        if name not in schema:
            dotted = f"{prefix}{name}"
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{where}: unknown key {dotted!r} (known here: {known})")
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        dotted = f"{prefix}{name}"
        if isinstance(spec, Key):
            if name in data:
                out[name] = _check_leaf(spec, dotted, data[name], where, base)
            else:
                out[name] = copy.deepcopy(spec.default)
        else:
            section = data.get(name)
            out[name] = _merge(spec, {} if section is None else section, f"{dotted}.", where, base)
    return out


def leaf_keys(schema: Schema, prefix: str = "") -> Iterable[tuple[str, Key]]:
    """Every ``(dotted.key, Key)`` of *schema*, depth first."""
    for name, spec in schema.items():
        if isinstance(spec, Key):
            yield f"{prefix}{name}", spec
        else:
            yield from leaf_keys(spec, f"{prefix}{name}.")


def _lookup(schema: Schema, dotted: str) -> Key:
    node: Any = schema
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"command line: unknown key {dotted!r}")
        node = node[part]
    if not isinstance(node, Key):
        raise ConfigError(f"command line: {dotted!r} is a section, name one of its keys")
    return node


def _parse_override(key: Key, dotted: str, text: str) -> Any:
    if key.kind in ("str", "path"):
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"command line: {dotted}: cannot parse {text!r}: {e}") from e
    if key.kind == "list" and not isinstance(value, list):
        return [text]
    return value


def load_config(
    schema: Schema, path: str | os.PathLike[str] | None = None, overrides: Iterable[tuple[str, str]] = ()
) -> dict[str, Any]:
    """Read *path* (YAML), apply ``(dotted_key, text)`` *overrides*, validate, fill defaults."""
    data: dict[str, Any] = {}
    where = "defaults"
    base: Path | None = None
    if path is not None:
        where = str(path)
        base = Path(path).resolve().parent
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        data = loaded if loaded is not None else {}
    config = _merge(schema, data, "", where, base)
    for dotted, text in overrides:
        key = _lookup(schema, dotted)
        value = _check_leaf(key, dotted, _parse_override(key, dotted, text), "command line", Path.cwd())
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return config


def _flag(dotted: str) -> str:
    return dotted.replace(".", "-").replace("_", "-")


S = TypeVar("S", bound=ServerConfig)


class KrakenOptions(usage.Options, Generic[S]):
    """Base ``twistd`` options: ``--config``, ``--set`` and one flag per config key.

    A server subclasses ``KrakenOptions[ItsConfig]`` (a :class:`ServerConfig` dataclass; it
    may set ``example_config``, shown in ``--help``). After parsing, ``self.config`` holds the
    validated configuration as an ``ItsConfig``.
    """

    config_type: type[S]
    schema: ClassVar[Schema] = {}
    _flags: ClassVar[dict[str, str]] = {}
    optParameters: ClassVar[list[list[Any]]]
    optFlags: ClassVar[list[list[Any]]]
    config: S

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if get_origin(base) is KrakenOptions:
                (cls.config_type,) = get_args(base)
        if not hasattr(cls, "config_type"):
            raise TypeError(f"{cls.__name__}: subclass KrakenOptions[ItsConfig]")
        cls.schema = schema_of(cls.config_type)
        flags = {_flag(dotted): dotted for dotted, _ in leaf_keys(cls.schema)}
        cls._flags = flags
        cls.optParameters = [["config", "c", None, "YAML configuration file"]] + [
            [flag, None, None, f"{spec.help} [config key {dotted}]"]
            for flag, dotted in flags.items()
            for spec in [_lookup(cls.schema, dotted)]
        ]

    def __init__(self) -> None:
        super().__init__()
        self.overrides: list[tuple[str, str]] = []

    def opt_set(self, assignment: str) -> None:
        """Override one config key: --set pubsub.num_router_shards=8 (repeatable)."""
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise usage.UsageError(f"--set expects KEY=VALUE, got {assignment!r}")
        self.overrides.append((key.strip(), value))

    def postOptions(self) -> None:
        try:
            self.config = self.reread()
        except ConfigError as e:
            # twistd would print its whole usage text for a UsageError; one line is clearer.
            raise SystemExit(f"{self.prog_name()}: config error: {e}") from None

    def reread(self) -> S:
        """The configuration as its file says now, with the same overrides (:class:`ConfigError` if wrong)."""
        flag_overrides = [
            (dotted, self.opts[flag])
            for flag, dotted in self._flags.items()
            if self.opts.get(flag) is not None
        ]
        values = load_config(self.schema, self.opts["config"], flag_overrides + self.overrides)
        return build(self.config_type, values)

    def prog_name(self) -> str:
        return getattr(self, "tapname", type(self).__module__)
