#!/usr/bin/env bash
# Install what kraken needs on a fresh Debian machine: the real servers the tests and the
# local cluster use (apt) and a virtual environment with kraken and its test tools (.venv).
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(docker-registry skopeo containerd openipmi ipmitool redis-server iproute2 openssl curl busybox-static tftp-hpa ipxe chromium)
# deploy/: systemd-analyze checks the units; the image and its podman cluster test
APT_PACKAGES+=(systemd mmdebstrap umoci podman runc netavark aardvark-dns catatonit iptables)

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
# Debian's own Python needs python3-venv before `python3 -m venv` works.
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || APT_PACKAGES+=(python3-venv)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.kraken-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing kraken and its test dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    # compat mode puts the checkout itself on sys.path, so twistd finds twisted/plugins here.
    .venv/bin/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat
    touch "$stamp"
fi
