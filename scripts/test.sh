#!/usr/bin/env bash
# Install everything the tests need, then run the whole default test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x` or `--run-slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
