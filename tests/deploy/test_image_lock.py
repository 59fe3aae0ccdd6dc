"""deploy/image/requirements.txt (the image's pinned packages) stays in step with setup.cfg."""

from __future__ import annotations

import configparser
import importlib.util

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import REPO


def _pins() -> dict[str, str]:
    lines = (REPO / "deploy" / "image" / "requirements.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pairs}


def _lock_module() -> object:
    spec = importlib.util.spec_from_file_location("image_lock", REPO / "deploy" / "image" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_install_requirement_is_pinned_at_an_allowed_version() -> None:
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    pins = _pins()
    for line in setup["options"]["install_requires"].strip().splitlines():
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in deploy/image/requirements.txt: run deploy/image/lock.py"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name], line)


def test_the_pins_are_the_installed_closure() -> None:
    """The same packages lock.py finds for this environment (versions may lag an upgrade)."""
    lock = _lock_module()
    closure = lock.closure(lock.install_requires())  # type: ignore[attr-defined]
    assert sorted(closure) == sorted(_pins())
