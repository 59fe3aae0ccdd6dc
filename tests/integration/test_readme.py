"""Every `sh` block of README.md and of each docs/*.md "Getting started" section runs verbatim,
in order, against the dev cluster started as the README says. A block preceded by a
`<!-- not run ... -->` line is skipped; `bash scripts/cluster.sh` is what the fixture runs."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.dev_cluster import ROOT, DevCluster

CLUSTER_COMMAND = "bash scripts/cluster.sh"
NOT_RUN = re.compile(r"^<!--\s*not run\b.*-->\s*$")


@dataclass(frozen=True)
class Block:
    source: str
    line: int
    text: str
    skipped: bool

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


def blocks_of(text: str, source: str, only_getting_started: bool) -> list[Block]:
    found: list[Block] = []
    lines = text.splitlines()
    in_section = not only_getting_started
    previous = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## ") and only_getting_started:
            in_section = line[3:].strip().lower() == "getting started"
        if line.strip() == "```sh":
            end = lines.index("```", i + 1)
            if in_section:
                body = "\n".join(lines[i + 1 : end]) + "\n"
                found.append(Block(source, i + 1, body, bool(NOT_RUN.match(previous))))
            i = end + 1
            previous = ""
            continue
        if line.strip():
            previous = line.strip()
        i += 1
    return found


def all_blocks(root: Path = ROOT) -> list[Block]:
    blocks = blocks_of((root / "README.md").read_text(), "README.md", only_getting_started=False)
    for doc in sorted((root / "docs").glob("*.md")):
        blocks += blocks_of(doc.read_text(), f"docs/{doc.name}", only_getting_started=True)
    return blocks


BLOCKS = all_blocks()


def test_the_walkthrough_is_found() -> None:
    runnable = [b for b in BLOCKS if not b.skipped]
    assert runnable[0].text == CLUSTER_COMMAND + "\n"
    sources = {b.source for b in runnable}
    assert {"README.md", "docs/p2p.md", "docs/pubsub.md", "docs/registry.md", "docs/state.md"} <= sources
    assert all("scripts/test.sh" not in b.text for b in runnable)


def test_marking_and_sections() -> None:
    text = (
        "intro\n```sh\na\n```\n<!-- not run: x -->\n```sh\nb\n```\n"
        "## Getting started\n```sh\nc\n```\n## Other\n```sh\nd\n```\n"
    )
    assert [(b.text, b.skipped) for b in blocks_of(text, "x", False)] == [
        ("a\n", False), ("b\n", True), ("c\n", False), ("d\n", False)
    ]
    assert [b.text for b in blocks_of(text, "x", True)] == ["c\n"]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block: Block, dev_cluster: DevCluster) -> None:
    if block.skipped:
        pytest.skip("marked not run")
    if block.text == CLUSTER_COMMAND + "\n":
        assert dev_cluster.proc.poll() is None  # the fixture started it this way
        return
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.text], cwd=dev_cluster.root, env=dev_cluster.env,
        capture_output=True, text=True, timeout=60,
    )
    report = f"{block.id} failed ({done.returncode}):\n{block.text}\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, report
