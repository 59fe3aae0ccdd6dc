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
# Markers are evaluated for the image's interpreter (Debian bookworm's python3), which may be
# older than the one running this script: redis needs async-timeout below 3.11.3, for one.
IMAGE_PYTHON = {"python_version": "3.11", "python_full_version": "3.11.2"}


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
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"lock.py: the image needs {name}: pip install it here to pin it") from None
        pinned[canonicalize_name(dist.metadata["Name"])] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = [IMAGE_PYTHON | {"extra": extra} for extra in extras] or [IMAGE_PYTHON | {"extra": ""}]
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
