#!/usr/bin/env bash
# Install kraken on a fresh Debian machine and run a local cluster of every built server
# (embedded defaults: dev CA in run/pki, filesystem storage and SQLite under run/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/kraken cluster up "$@"
