#!/usr/bin/env bash
# A kraken cluster on one host under podman: one pod, one container per server, all from the
# image scripts/build-image.sh makes, each on the image's own /etc/kraken/<server>.yaml (the
# servers find each other on the pod's 127.0.0.1). docs/deploy.md, "Single host with podman".
#
#   scripts/podman-cluster.sh up [IMAGE]   start the pod (a dev CA and certificates on first run)
#   scripts/podman-cluster.sh check        kraken doctor inside the pod, end to end
#   scripts/podman-cluster.sh down         stop and remove the pod; data and certificates stay
#   scripts/podman-cluster.sh purge        down, then remove the data and certificate volumes
#
# IMAGE defaults to localhost/kraken:<version in setup.cfg>. Environment:
#   KRAKEN_POD            pod name, prefix of its containers and volumes [kraken]
#   KRAKEN_BIND           host address the two public ports are published on [127.0.0.1]
#   KRAKEN_PROXY_PORT     host port of the proxy, where images are pushed [15000]
#   KRAKEN_REGISTRY_PORT  host port of the agent's read-only registry, where they are pulled [5055]
#   KRAKEN_DASHBOARD_PORT publish the dashboard's pages on this host port, and its WebSocket on
#                         KRAKEN_DASHBOARD_WS_PORT [PORT+1] (the page asks for that port); unset: not published
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS=(tracker origin build-index agent proxy pubsub state pipeline dashboard)
pod=${KRAKEN_POD:-kraken}
bind=${KRAKEN_BIND:-127.0.0.1}
version=$(sed -n 's/^version = //p' setup.cfg)

up() {
    local image=${1:-localhost/kraken:$version}
    if podman pod exists "$pod"; then
        echo "podman-cluster: pod $pod exists already (scripts/podman-cluster.sh down removes it)" >&2
        exit 1
    fi
    if ! podman volume exists "$pod-pki"; then
        podman volume create "$pod-pki" >/dev/null
        podman run --rm --read-only -v "$pod-pki:/etc/kraken/pki" "$image" kraken certs dev /etc/kraken/pki
    fi
    podman volume exists "$pod-data" || podman volume create "$pod-data" >/dev/null
    local publish=(-p "$bind:${KRAKEN_PROXY_PORT:-15000}:15000" -p "$bind:${KRAKEN_REGISTRY_PORT:-5055}:5055")
    local dashboard=()
    if [ -n "${KRAKEN_DASHBOARD_PORT:-}" ]; then
        local ws=${KRAKEN_DASHBOARD_WS_PORT:-$((KRAKEN_DASHBOARD_PORT + 1))}
        publish+=(-p "$bind:$KRAKEN_DASHBOARD_PORT:8470" -p "$bind:$ws:$ws")
        dashboard=(--listen tcp:8470 --dashboard-ws-listen "tcp:$ws")
    fi
    podman pod create --name "$pod" "${publish[@]}" >/dev/null
    for server in "${SERVERS[@]}"; do
        local extra=()
        [ "$server" = dashboard ] && extra=("${dashboard[@]}")
        podman run -d --pod "$pod" --name "$pod-$server" --read-only --tmpfs /tmp \
            -v "$pod-pki:/etc/kraken/pki:ro" -v "$pod-data:/var/lib/kraken" "$image" \
            twistd --nodaemon --pidfile= "kraken-$server" --config "/etc/kraken/$server.yaml" \
            --set port_file=/tmp/ports.json "${extra[@]}" >/dev/null
        wait_listening "$server"
    done
    # The example pipelines of the dev cluster (etc/pipeline-project), for kraken doctor's call.
    podman exec "$pod-pipeline" kraken pipeline apply /usr/share/kraken/pipeline-project >/dev/null
    echo "podman-cluster: pod $pod is up: push to $bind:${KRAKEN_PROXY_PORT:-15000}," \
        "pull from $bind:${KRAKEN_REGISTRY_PORT:-5055}"
}

# A server writes /tmp/ports.json once every listener is bound.
wait_listening() {
    local container=$pod-$1
    for _ in $(seq 300); do
        if podman exec "$container" test -s /tmp/ports.json 2>/dev/null; then
            echo "podman-cluster: kraken-$1 up: $(podman exec "$container" cat /tmp/ports.json)"
            return 0
        fi
        if [ "$(podman inspect -f '{{.State.Running}}' "$container")" != true ]; then
            break
        fi
        sleep 0.2
    done
    echo "podman-cluster: kraken-$1 did not start; its log:" >&2
    podman logs --tail 30 "$container" >&2
    exit 1
}

case ${1:-} in
    up) up "${2:-}" ;;
    check) podman exec "$pod-proxy" kraken doctor --pki /etc/kraken/pki ;;
    down) podman pod rm -f -t 10 "$pod" >/dev/null && echo "podman-cluster: pod $pod removed" ;;
    purge)
        podman pod rm -f -t 10 --ignore "$pod" >/dev/null
        podman volume rm -f "$pod-pki" "$pod-data" >/dev/null
        echo "podman-cluster: pod $pod and its volumes removed"
        ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
