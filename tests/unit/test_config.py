"""Config loading: defaults, types, unknown keys, overrides, and the messages users see."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from kraken.core.config import (
    ConfigError,
    ConfigPath,
    Key,
    KrakenOptions,
    ServerConfig,
    build,
    common_schema,
    listen_setting,
    load_config,
    schema_of,
    section,
    setting,
)

SCHEMA = {
    **common_schema(listen=["tcp:9999"]),
    "demo": {
        "shards": Key("int", 4, "shards", minimum=1),
        "ratio": Key("float", 0.5, "a ratio"),
        "mode": Key("str", "fast", "mode", choices=("fast", "safe")),
        "store": Key("path", None, "where data lives"),
        "peers": Key("list", [], "peer addresses"),
    },
}


@dataclass(frozen=True, kw_only=True)
class DemoSection:
    shards: int = setting(4, "shards", minimum=1)
    ratio: float = setting(0.5, "a ratio")
    mode: str = setting("fast", "mode", choices=("fast", "safe"))
    store: ConfigPath | None = setting(None, "where data lives")
    peers: list[str] = setting([], "peer addresses")


@dataclass(frozen=True, kw_only=True)
class DemoConfig(ServerConfig):
    listen: list[str] = listen_setting(["tcp:9999"])
    demo: DemoSection = section(DemoSection)


class DemoOptions(KrakenOptions[DemoConfig]):
    tapname = "kraken-demo"


def test_the_dataclasses_derive_the_schema_and_hold_its_defaults() -> None:
    assert schema_of(DemoConfig) == SCHEMA
    assert DemoOptions.schema == SCHEMA
    assert dataclasses.asdict(DemoConfig()) == load_config(SCHEMA)
    assert build(DemoConfig, load_config(SCHEMA)) == DemoConfig()
    assert DemoConfig().demo.peers is not DemoConfig().demo.peers  # mutable defaults are copied


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return path


def test_defaults_fill_every_key() -> None:
    config = load_config(SCHEMA)
    assert config["listen"] == ["tcp:9999"]
    assert config["demo"] == {"shards": 4, "ratio": 0.5, "mode": "fast", "store": None, "peers": []}
    assert config["tls"]["require_client_cert"] is True
    assert config["log"] == {"level": "info", "format": "text", "file": None}


def test_file_values_are_typed_and_paths_resolve_against_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "demo:\n  shards: 8\n  ratio: 1\n  store: data/blobs\n")
    config = load_config(SCHEMA, path)
    assert config["demo"]["shards"] == 8
    assert config["demo"]["ratio"] == 1.0 and isinstance(config["demo"]["ratio"], float)
    assert config["demo"]["store"] == str(tmp_path / "data/blobs")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("demo:\n  shardz: 3\n", "unknown key 'demo.shardz'"),
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("demo:\n  shards: many\n", "demo.shards: expected an integer, got 'many'"),
        ("demo:\n  shards: true\n", "demo.shards: expected an integer, got True"),
        ("demo:\n  shards: 0\n", "demo.shards: 0 is below the minimum 1"),
        ("demo:\n  mode: slow\n", "demo.mode: 'slow' is not one of: fast, safe"),
        ("demo:\n  peers: [1]\n", "demo.peers[0]: expected a string, got 1"),
        ("demo: 3\n", "demo: expected a mapping"),
        ("demo: [\n", "not valid YAML"),
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(SCHEMA, path)
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(SCHEMA, tmp_path / "nope.yaml")


def test_options_flags_and_set_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "demo:\n  shards: 8\n  mode: safe\n")
    options = DemoOptions()
    options.parseOptions(
        ["--config", str(path), "--demo-shards", "16", "--set", "demo.ratio=0.25", "--listen", "tcp:0"]
    )
    assert options.config.demo.shards == 16
    assert options.config.demo.mode == "safe"
    assert options.config.demo.ratio == 0.25
    assert options.config.listen == ["tcp:0"]
    assert options.config.tls.require_client_cert is True


def test_help_names_each_flag_with_its_config_key() -> None:
    text = " ".join(str(DemoOptions()).split())
    assert "--demo-shards= shards [config key demo.shards]" in text
    assert "--tls-require-client-cert= refuse TLS clients that present no certificate" in text
    assert "[config key tls.require_client_cert]" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--demo-shards", "x"], "command line: demo.shards: expected an integer, got 'x'"),
        (["--set", "demo.nope=1"], "unknown key 'demo.nope'"),
        (["--set", "demo=1"], "'demo' is a section"),
    ],
)
def test_bad_overrides_exit_with_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as e:
        DemoOptions().parseOptions(argv)
    assert str(e.value).startswith("kraken-demo: config error: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)
