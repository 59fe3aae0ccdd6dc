"""Pin the container image's Python packages: the closure of setup.cfg's install_requires, at
the versions installed in the running environment, one ``name==version`` a line.

    .venv/bin/python deploy/image/lock.py > deploy/image/requirements.txt

scripts/build-image.sh installs exactly these (and no others), so an image built twice from
one commit holds the same packages whatever PyPI has published since.
"""

from __future__ import annotations

import configparser
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"


def install_requires(setup_cfg: Path = SETUP_CFG) -> list[Requirement]:
    setup = configparser.ConfigParser()
    setup.read(setup_cfg)
    return [Requirement(line) for line in setup["options"]["install_requires"].strip().splitlines()]


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Every distribution *roots* need (with the extras asked for), name -> installed version."""
    pinned: dict[str, str] = {}
    todo = [(req.name, frozenset(req.extras)) for req in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = metadata.distribution(name)
        pinned[canonicalize_name(dist.metadata["Name"])] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in wanted):
                todo.append((req.name, frozenset(req.extras)))
    return pinned


def main() -> int:
    print("# written by deploy/image/lock.py: setup.cfg's install_requires and theirs, pinned for the image")
    for name, version in sorted(closure(install_requires()).items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
