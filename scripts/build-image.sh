#!/usr/bin/env bash
# Build the kraken container image as an OCI image layout, from Debian's packages and PyPI only
# (no container registry): mmdebstrap makes a minimal Debian bookworm root filesystem with
# Python 3.11, a virtual environment in /opt/kraken gets the kraken wheel built from this
# checkout and exactly the dependencies pinned in deploy/image/requirements.txt, and umoci
# turns the tree into a one-layer image. Every server is a command of the one image:
#     podman run ... kraken:TAG twistd --nodaemon --pidfile= kraken-agent --config /etc/kraken/agent.yaml
# It runs as user kraken (10001) and writes only to /var/lib/kraken and /tmp, so it works with
# a read-only root filesystem. /etc/kraken/<server>.yaml are deploy/config's single-host configs
# (servers of one pod on 127.0.0.1); mount your own configs and certificates (/etc/kraken/pki).
#
# Usage (as root): scripts/build-image.sh [OUT]      OUT: the OCI layout directory [build/image]
#   then: skopeo copy oci:build/image:0.1.0 containers-storage:localhost/kraken:0.1.0
# The same commit and SOURCE_DATE_EPOCH (default: the commit's time) give the same image digest.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-build/image}
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
tag=${KRAKEN_IMAGE_TAG:-$("$python" -c 'import configparser; c = configparser.ConfigParser(); c.read("setup.cfg"); print(c["metadata"]["version"])')}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
for tool in mmdebstrap umoci; do
    command -v "$tool" >/dev/null || { echo "build-image: $tool is missing (bash scripts/setup.sh installs it)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "build-image: wheels (kraken from this checkout, dependencies from deploy/image/requirements.txt)"
mkdir -p "$work/wheels"
# A clean copy of the tracked files, so nothing uncommitted or generated slips into the wheel.
git archive --format=tar HEAD | tar -x -C "$work" --one-top-level=src
"$python" -m pip wheel -q --no-deps --wheel-dir "$work/wheels" "$work/src"
"$python" -m pip wheel -q --no-deps --wheel-dir "$work/wheels" -r deploy/image/requirements.txt

echo "build-image: root filesystem (Debian bookworm, python3)"
# Hooks run as root on the host with the new tree in $1; chroot runs inside it.
mmdebstrap --quiet --mode=root --variant=essential --format=directory \
    --include=python3,python3-venv,ca-certificates,curl \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='mkdir -p "$1/tmp/wheels"' \
    --customize-hook="copy-in $work/wheels/. /tmp/wheels" \
    --customize-hook='chroot "$1" python3 -m venv /opt/kraken' \
    --customize-hook='chroot "$1" sh -c "/opt/kraken/bin/pip install -q --no-index --no-deps /tmp/wheels/*.whl"' \
    --customize-hook='chroot "$1" /opt/kraken/bin/pip uninstall -q -y pip' \
    --customize-hook='chroot "$1" /opt/kraken/bin/python -c "from twisted.application.service import IServiceMaker; from twisted.plugin import getPlugins; assert any(p.tapname == \"kraken-agent\" for p in getPlugins(IServiceMaker))"' \
    --customize-hook='rm -rf "$1/tmp/wheels" "$1/var/cache/apt"/*.bin "$1/var/lib/apt/lists"/* "$1/var/log"/*' \
    --customize-hook='echo "kraken:x:10001:10001:kraken:/var/lib/kraken:/usr/sbin/nologin" >> "$1/etc/passwd"' \
    --customize-hook='echo "kraken:x:10001:" >> "$1/etc/group"' \
    --customize-hook='mkdir -p "$1/etc/kraken/pki" "$1/var/lib/kraken" && chown 10001:10001 "$1/etc/kraken/pki" "$1/var/lib/kraken"' \
    --customize-hook="copy-in $work/src/deploy/config/. /etc/kraken" \
    --customize-hook='mkdir -p "$1/usr/share/kraken"' \
    --customize-hook="copy-in $work/src/etc/pipeline-project /usr/share/kraken" \
    bookworm "$work/rootfs"
# mmdebstrap's own tarball keeps the build time on files the build made; this one is sorted,
# owned by numbers and clamped to SOURCE_DATE_EPOCH, so equal trees give equal bytes.
tar --create --file "$work/rootfs.tar" --directory "$work/rootfs" --sort=name --numeric-owner \
    --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    --exclude='./run/*' --exclude='./tmp/*' --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .
rm -rf "$work/rootfs"

echo "build-image: OCI image $out:$tag"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
umoci init --layout "$out"
umoci new --image "$out:$tag"
umoci raw add-layer --image "$out:$tag" --history.created "$created" --history.created_by "scripts/build-image.sh" \
    "$work/rootfs.tar"
umoci config --image "$out:$tag" --no-history --created "$created" --author kraken \
    --config.user 10001:10001 --config.workingdir /var/lib/kraken \
    --config.env PATH=/opt/kraken/bin:/usr/sbin:/usr/bin:/sbin:/bin --config.env PYTHONDONTWRITEBYTECODE=1 \
    --config.volume /var/lib/kraken --config.cmd kraken --config.cmd --help \
    --config.label org.opencontainers.image.title=kraken \
    --config.label "org.opencontainers.image.version=$tag" \
    --config.label "org.opencontainers.image.created=$created"
umoci gc --layout "$out"
digest=$(
    "$python" -c 'import json, sys; print(json.load(open(sys.argv[1] + "/index.json"))["manifests"][0]["digest"])' "$out"
)
echo "build-image: $out:$tag $digest"
