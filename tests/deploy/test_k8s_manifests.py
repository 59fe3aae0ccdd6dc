"""deploy/k8s: every manifest validates offline against the Kubernetes schemas of each supported
version (kubernetes-validate, strict: unknown fields are errors), kustomization.yaml lists every
file, and each container's command line builds its server from the ConfigMap's config."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kraken.cli.cluster import built_servers
from tests.support import REPO

K8S = REPO / "deploy" / "k8s"
SUPPORTED_VERSIONS = ("1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0")
SERVERS = [name.removeprefix("kraken-") for name in built_servers()]
# The dev PKI's file for a server whose certificate has another role.
ROLE_FILES = {"dashboard": "client"}


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _resources() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name in _kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            found.append((name, doc))
    return found


def _workloads() -> dict[str, dict[str, Any]]:
    kinds = {"Deployment", "StatefulSet", "DaemonSet"}
    return {doc["metadata"]["name"]: doc for _, doc in _resources() if doc["kind"] in kinds}


def test_kustomization_lists_every_file() -> None:
    kustomization = _kustomization()
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == on_disk
    (generator,) = kustomization["configMapGenerator"]
    configs = sorted(p.relative_to(K8S).as_posix() for p in (K8S / "config").glob("*.yaml"))
    assert sorted(generator["files"]) == configs == sorted(f"config/{s}.yaml" for s in SERVERS)


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    resources = _resources()
    assert len(resources) >= 2 * len(SERVERS)
    for name, doc in resources:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            what = f"{doc['kind']} {doc['metadata']['name']}"
            pytest.fail(f"{name}: {what} on {version}: {e.message} at {e.path}")


def test_validation_can_fail() -> None:
    _, deployment = next(r for r in _resources() if r[1]["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, SUPPORTED_VERSIONS[-1], strict=True)


def test_every_server_runs_with_probes_requests_and_a_read_only_root() -> None:
    workloads = _workloads()
    assert sorted(workloads) == sorted(SERVERS)
    for name, workload in workloads.items():
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"]["requests"], name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        ready = yaml.safe_dump(container["readinessProbe"])
        live = yaml.safe_dump(container["livenessProbe"])
        assert "/ready" in ready, name
        assert "/health" in live, name


def test_origins_have_volumes_and_a_disruption_budget() -> None:
    workloads = _workloads()
    assert workloads["origin"]["kind"] == "StatefulSet"
    assert workloads["origin"]["spec"]["volumeClaimTemplates"]
    assert workloads["agent"]["kind"] == "DaemonSet"
    (agent,) = workloads["agent"]["spec"]["template"]["spec"]["containers"]
    assert any(p.get("hostPort") == 5055 for p in agent["ports"])
    budgets = [doc for _, doc in _resources() if doc["kind"] == "PodDisruptionBudget"]
    assert [b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for b in budgets] == ["origin"]


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], text)


@pytest.mark.parametrize("server", SERVERS)
def test_container_args_build_the_server_on_the_configmap(
    server: str, pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workload's args, with the downward-API variables filled in, parse and build the
    service; the pod's mounts (/etc/kraken/...) and volumes move to temporary directories."""
    from twisted.application.service import IServiceMaker
    from twisted.internet.testing import MemoryReactorClock
    from twisted.plugin import getPlugins

    (container,) = _workloads()[server]["spec"]["template"]["spec"]["containers"]
    env = {"POD_NAME": f"{server}-0", "POD_IP": "10.1.2.3", "NODE_IP": "10.0.0.7"}
    args = [_expand(a, env) for a in container["args"]]
    assert args[:4] == ["twistd", "--nodaemon", "--pidfile=", f"kraken-{server}"]

    role_files = tmp_path / "pki"
    role_files.mkdir()
    for suffix in ("pem", "key"):
        shutil.copy(pki / f"{ROLE_FILES.get(server, server)}.{suffix}", role_files / f"{server}.{suffix}")
    shutil.copy(pki / "ca.pem", role_files / "ca.pem")
    config = (K8S / "config" / f"{server}.yaml").read_text()
    config = config.replace("/etc/kraken/pki", str(role_files))
    config = config.replace("/var/lib/kraken", str(tmp_path / "data"))
    (tmp_path / f"{server}.yaml").write_text(config)
    mounted = f"/etc/kraken/config/{server}.yaml"
    argv = [str(tmp_path / f"{server}.yaml") if a == mounted else a for a in args[4:]]

    monkeypatch.chdir(tmp_path)
    maker = next(p for p in getPlugins(IServiceMaker) if p.tapname == f"kraken-{server}")
    options = maker.options()
    options.parseOptions(argv)
    if server == "origin":
        assert options.config.origin.self_address == "origin-0.origin:15002"
    if server == "agent":
        assert options.config.registry.allow_cidrs == ["10.0.0.7/32", "127.0.0.1/32"]
    reactor = MemoryReactorClock()
    service = importlib.import_module(maker.module).makeService(options, reactor=reactor)
    service.startService()
    try:
        assert reactor.tcpServers
    finally:
        service.stopService()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (optional)")
def test_kubectl_kustomize_renders_every_resource() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True)
    kinds = [doc["kind"] for doc in yaml.safe_load_all(rendered.stdout)]
    assert kinds.count("ConfigMap") == 1
    assert len(kinds) == len(_resources()) + 1


def test_every_pod_but_the_agents_meets_the_restricted_pod_security_basics() -> None:
    """The namespace only warns below "restricted" (the agents need hostPath and hostPort)."""
    for name, workload in _workloads().items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        if name == "agent":
            continue
        assert not [v for v in pod["volumes"] if "hostPath" in v], name
        for container in pod["initContainers"] + pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert security["capabilities"] == {"drop": ["ALL"]}, (name, container["name"])
            assert security.get("runAsUser", 10001) != 0, (name, container["name"])
            assert not [p for p in container.get("ports", []) if "hostPort" in p], name
