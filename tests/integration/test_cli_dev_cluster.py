"""The ``kraken`` command against the dev cluster the README starts (shared with test_readme):
blob progress and summary, a demo image through proxy and agent, ``kraken doctor``."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.dev_cluster import DevCluster


def kraken(cluster: DevCluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kraken", *args], cwd=cluster.root, env=cluster.env, capture_output=True, text=True, timeout=timeout
    )


def push(cluster: DevCluster, name: str, size: int) -> str:
    (cluster.root / name).write_bytes(os.urandom(size))
    done = kraken(cluster, "blob", "push", name)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # not a terminal: no progress line
    return done.stdout.strip()


def test_pull_off_a_terminal_prints_only_the_file_and_the_summary(dev_cluster: DevCluster) -> None:
    digest = push(dev_cluster, "quiet.bin", 5_000_000)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    done = kraken(dev_cluster, "blob", "pull", digest, "-o", "quiet-copy.bin")
    assert done.returncode == 0 and done.stdout == "quiet-copy.bin\n"
    assert re.fullmatch(
        r"pulled 4\.8 MiB: 0 pieces from peers, [1-9]\d* from origins \(0 % from peers\)\n", done.stderr
    ), done.stderr
    again = kraken(dev_cluster, "blob", "pull", digest, "-o", "quiet-again.bin")
    assert again.stderr == "pulled 4.8 MiB: already on the agent (no pieces fetched)\n"
    quiet = kraken(dev_cluster, "blob", "pull", digest, "-o", "quiet-3.bin", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == "quiet-3.bin\n"
    assert (dev_cluster.root / "quiet-3.bin").read_bytes() == (dev_cluster.root / "quiet.bin").read_bytes()


def read_terminal(master: int, proc: subprocess.Popen[bytes]) -> str:
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    return shown.decode()


def on_terminal(cluster: DevCluster, *args: str) -> tuple[str, str]:
    """Run ``kraken blob ARGS`` with standard error on a pty; returns (stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        ["kraken", "blob", *args], cwd=cluster.root, env=cluster.env, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    shown = read_terminal(master, proc)
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0, shown
    return out.decode(), shown


def test_push_and_pull_on_a_terminal_draw_progress(dev_cluster: DevCluster) -> None:
    (dev_cluster.root / "tty.bin").write_bytes(os.urandom(20_000_000))
    out, shown = on_terminal(dev_cluster, "push", "tty.bin")
    digest = out.strip()
    assert "\rpush  " in shown and "19.1 MiB / 19.1 MiB (100 %)" in shown and "MiB/s" in shown, shown
    out, shown = on_terminal(dev_cluster, "pull", digest, "-o", "tty-copy.bin")
    assert "\rpull  " in shown and "19.1 MiB / 19.1 MiB (100 %)" in shown and "MiB/s" in shown, shown
    assert "from origins" in shown
    assert (dev_cluster.root / "tty-copy.bin").read_bytes() == (dev_cluster.root / "tty.bin").read_bytes()


def test_demo_image_through_proxy_and_agent_keeps_its_digests(dev_cluster: DevCluster) -> None:
    made = kraken(dev_cluster, "registry", "demo-image", "image", "--tag", "t1")
    assert made.returncode == 0, made.stderr
    index_digest = made.stdout.split()[1]

    def skopeo(*args: str) -> str:
        return subprocess.run(
            ["skopeo", *args], cwd=dev_cluster.root, check=True, capture_output=True, text=True
        ).stdout

    login = "dev:" + (dev_cluster.root / "run" / "registry" / "password").read_text().strip()
    skopeo("copy", "--all", "--dest-tls-verify=false", f"--dest-creds={login}", "oci:image:t1",
           "docker://127.0.0.1:15000/first/ten:t1")
    raw = skopeo("inspect", "--raw", "--tls-verify=false", "docker://127.0.0.1:5055/first/ten:t1")
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == index_digest
    skopeo("copy", "--all", "--src-tls-verify=false", "docker://127.0.0.1:5055/first/ten:t1", "dir:image-out")
    index = json.loads(raw)
    local = Path(dev_cluster.root, "image", "blobs", "sha256")
    for entry in index["manifests"]:
        hexdigest = entry["digest"].removeprefix("sha256:")
        pulled = Path(dev_cluster.root, "image-out", f"{hexdigest}.manifest.json").read_bytes()
        assert pulled == (local / hexdigest).read_bytes()
        for layer in json.loads(pulled)["layers"]:
            name = layer["digest"].removeprefix("sha256:")
            assert Path(dev_cluster.root, "image-out", name).read_bytes() == (local / name).read_bytes()


def test_doctor_passes_on_the_running_cluster(dev_cluster: DevCluster) -> None:
    assert dev_cluster.output[-1].startswith("all started")
    assert dev_cluster.proc.stdout is not None
    assert dev_cluster.proc.stdout.readline().endswith("kraken doctor\n")  # the cluster says what to run next
    done = kraken(dev_cluster, "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 13 and all(line.startswith("ok    ") for line in lines[:12]), done.stdout
    assert lines[-1] == "all checks passed"


def test_doctor_with_one_server_stopped(dev_cluster: DevCluster) -> None:
    pid = dev_cluster.servers()["kraken-pipeline"]
    os.kill(pid, signal.SIGSTOP)
    try:
        done = kraken(dev_cluster, "doctor", "--timeout", "1")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert [line.split()[1] for line in failed] == ["kraken-pipeline", "pipeline"], done.stdout
    assert done.stderr == "2 checks failed\n"
    assert kraken(dev_cluster, "doctor").returncode == 0  # and it recovers


def test_doctor_names_each_missing_server_and_the_fix(dev_cluster: DevCluster) -> None:
    # nothing listens on 127.0.0.2: every server is refused
    done = kraken(dev_cluster, "doctor", "--host", "127.0.0.2", "--timeout", "2")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 12 and all(line.startswith("FAIL") for line in lines), done.stdout
    assert "kraken-tracker serves its announce API there: start it with `bash scripts/cluster.sh`" in lines[0]
    no_pki = kraken(dev_cluster, "doctor", "--pki", "nowhere")
    assert "`kraken certs dev nowhere`" in no_pki.stdout and no_pki.returncode == 1
