"""Fixtures every kraken test may use: a dev PKI, temporary configs, real twistd servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kraken.core import certs
from tests.support import ServerProcess


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run slow soak and benchmark tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow or root-only; run with --run-slow")
    for item in items:
        if "slow" in item.keywords or "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dev CA with one certificate per role, each named after its role (``agent.pem``...)."""
    directory = tmp_path_factory.mktemp("pki")
    return certs.ensure_dev_pki(directory, {role: role for role in certs.ROLES})


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerProcess.Pool]:
    """Start real twistd servers with ``servers.start(plugin, config)``; all stop afterwards."""
    pool = ServerProcess.Pool(tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()
