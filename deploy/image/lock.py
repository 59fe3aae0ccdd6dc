"""Pin the container image's Python packages: the closure of kraken's install_requires, at the
versions installed in the running environment, one ``name==version`` a line.

    .venv/bin/python deploy/image/lock.py > deploy/image/requirements.txt

scripts/build-image.sh installs exactly these (and no others), so an image built twice from
one commit holds the same packages whatever PyPI has published since.
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(root: str) -> dict[str, str]:
    """Every distribution *root* needs (with the extras it asks for), name -> installed version."""
    pinned: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = metadata.distribution(name)
        key = canonicalize_name(dist.metadata["Name"])
        if key != canonicalize_name(root):
            pinned[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in wanted):
                todo.append((req.name, frozenset(req.extras)))
    return pinned


def main() -> int:
    print("# written by deploy/image/lock.py: kraken's runtime dependencies, pinned for the image")
    for name, version in sorted(closure("kraken").items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
