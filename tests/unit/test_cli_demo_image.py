"""``kraken registry demo-image``: a valid, deterministic multi-platform OCI layout."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kraken.cli.main import main as kraken_cli
from kraken.cli.registry import OCI_INDEX, OCI_MANIFEST, REF_NAME


def blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def document(layout: Path, descriptor: dict[str, Any]) -> dict[str, Any]:
    data = blob(layout, descriptor["digest"])
    assert len(data) == descriptor["size"]
    parsed: dict[str, Any] = json.loads(data)
    return parsed


def test_layout_is_consistent_and_multi_platform(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = tmp_path / "demo"
    assert kraken_cli(["registry", "demo-image", str(layout), "--tag", "v1"]) == 0
    assert capsys.readouterr().out.startswith(f"oci:{layout}:v1 sha256:")
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    (top,) = json.loads((layout / "index.json").read_text())["manifests"]
    assert top["mediaType"] == OCI_INDEX and top["annotations"] == {REF_NAME: "v1"}
    index = document(layout, top)
    platforms = []
    for entry in index["manifests"]:
        assert entry["mediaType"] == OCI_MANIFEST
        platforms.append((entry["platform"]["os"], entry["platform"]["architecture"]))
        manifest = document(layout, entry)
        config = document(layout, manifest["config"])
        (layer,) = manifest["layers"]
        uncompressed = gzip.decompress(blob(layout, layer["digest"]))
        assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(uncompressed).hexdigest()]
        assert (config["os"], config["architecture"]) == platforms[-1]
    assert platforms == [("linux", "amd64"), ("linux", "arm64")]


def test_same_bytes_every_run_and_tags_accumulate(tmp_path: Path) -> None:
    assert kraken_cli(["registry", "demo-image", str(tmp_path / "a")]) == 0
    assert kraken_cli(["registry", "demo-image", str(tmp_path / "b")]) == 0
    a = sorted(p.name for p in (tmp_path / "a/blobs/sha256").iterdir())
    assert a == sorted(p.name for p in (tmp_path / "b/blobs/sha256").iterdir()) and len(a) == 7
    assert kraken_cli(["registry", "demo-image", str(tmp_path / "a"), "--tag", "v2"]) == 0
    assert kraken_cli(["registry", "demo-image", str(tmp_path / "a"), "--tag", "v2"]) == 0
    top = json.loads((tmp_path / "a/index.json").read_text())
    tags = [m["annotations"][REF_NAME] for m in top["manifests"]]
    assert tags == ["v1", "v2"]


def test_bad_tag_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kraken_cli(["registry", "demo-image", str(tmp_path / "x"), "--tag", "a b"]) == 1
    assert "bad tag" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo (scripts/setup.sh installs it)")
def test_skopeo_reads_every_platform(tmp_path: Path) -> None:
    layout = tmp_path / "demo"
    assert kraken_cli(["registry", "demo-image", str(layout)]) == 0
    for arch in ("amd64", "arm64"):
        out = subprocess.run(
            ["skopeo", "--override-arch", arch, "inspect", f"oci:{layout}:v1"],
            check=True, capture_output=True, text=True,
        ).stdout
        assert json.loads(out)["Architecture"] == arch
