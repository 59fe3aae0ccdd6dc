"""Login and per-repository rights on a real kraken-proxy: skopeo with and without credentials,
``skopeo login``, the token endpoint, and hostile tokens and logins."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from kraken.registry.accounts import hash_password
from tests.integration.registry_http import Registry, Reply, TLSClient
from tests.integration.registry_support import OCI_MANIFEST, build_oci_layout, sha256, skopeo
from tests.support import ServerProcess, tls_section

ALICE, ROBOT, EVE = ("alice", "alice-pw"), ("robot$ci-pull", "robot-pw"), ("eve", "eve-pw")
KEY = b"k" * 32


def _accounts() -> dict[str, Any]:
    return {
        "users": {"alice": hash_password(ALICE[1]), "eve": hash_password(EVE[1])},
        "robots": {"ci-pull": hash_password(ROBOT[1])},
        "grants": [
            {"repository": "team/.*", "actions": ["pull", "push", "delete"], "users": ["alice"]},
            {"repository": "team/.*", "actions": ["pull"], "robots": ["ci-pull"]},
            {"repository": "public/.*", "actions": ["pull"], "anonymous": True},
            {"repository": "public/.*", "actions": ["pull", "push"], "users": ["alice"]},
        ],
    }


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("auth")
    (workdir / "accounts.yaml").write_text(yaml.safe_dump(_accounts()))
    (workdir / "token.key").write_bytes(KEY)
    proc = ServerProcess("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "proxy": {"storage": str(workdir / "data")},
        "auth": {"mode": "token", "accounts": str(workdir / "accounts.yaml"),
                 "token_key": str(workdir / "token.key"), "token_ttl": 60},
    }, workdir, []).start()
    image = build_oci_layout(workdir / "layout", "v1", [{"secret.txt": b"private bytes"}])
    try:
        yield proc, image, workdir
    finally:
        proc.stop()


def _addr(proc: ServerProcess) -> str:
    return f"127.0.0.1:{proc.port('registry')}"


def _basic(creds: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()}


def _token(reg: Registry, scope: str, creds: tuple[str, str] | None = None) -> Reply:
    return reg.request("GET", f"/token?service=kraken&scope={scope}", headers=_basic(creds) if creds else {})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)


def _push_alice(proc: ServerProcess, image: Any, ref: str) -> None:
    skopeo("copy", "--dest-tls-verify=false", f"--dest-creds={ALICE[0]}:{ALICE[1]}",
           f"oci:{image.layout}:v1", f"docker://{_addr(proc)}/{ref}")


def test_challenge_and_skopeo_with_and_without_credentials(proxy: Any, tmp_path: Path) -> None:
    proc, image, _ = proxy
    reg = Registry("127.0.0.1", proc.port("registry"))
    base = reg.request("GET", "/v2/")
    assert base.status == 401 and base.error_codes() == ["UNAUTHORIZED"]
    assert base.header("WWW-Authenticate") == f'Bearer realm="http://{_addr(proc)}/token",service="kraken"'
    blob = reg.request("HEAD", f"/v2/team/app/blobs/{sha256(b'x')}")
    assert blob.status == 401
    assert blob.header("WWW-Authenticate") == (f'Bearer realm="http://{_addr(proc)}/token",service="kraken",'
                                               'scope="repository:team/app:pull"')
    push = reg.request("POST", "/v2/team/app/blobs/uploads/")
    assert push.header("WWW-Authenticate").endswith('scope="repository:team/app:pull,push"')

    anonymous = _skopeo("copy", "--dest-tls-verify=false", f"oci:{image.layout}:v1",
                        f"docker://{_addr(proc)}/team/app:v1")
    assert anonymous.returncode != 0 and "unauthorized" in anonymous.stderr.lower(), anonymous.stderr
    _push_alice(proc, image, "team/app:v1")
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"--creds={ROBOT[0]}:{ROBOT[1]}",
                                  f"docker://{_addr(proc)}/team/app:v1").stdout)
    assert inspected["Digest"] == image.manifest_digest

    # a pull-only robot pushing: 403 DENIED (skopeo says "denied")
    robot = _skopeo("copy", "--dest-tls-verify=false", f"--dest-creds={ROBOT[0]}:{ROBOT[1]}",
                    f"oci:{image.layout}:v1", f"docker://{_addr(proc)}/team/app:v2")
    assert robot.returncode != 0 and "denied" in robot.stderr.lower(), robot.stderr
    token = _token(reg, "repository:team/app:pull,push", ROBOT).json()["token"]
    assert jwt.decode(token, KEY, algorithms=["HS256"], audience="kraken")["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull"]}]
    put = reg.request("PUT", "/v2/team/app/manifests/v2", image.manifest,
                      {"Content-Type": OCI_MANIFEST, **_bearer(token)})
    assert put.status == 403 and put.error_codes() == ["DENIED"]
    assert reg.request("GET", "/v2/team/app/manifests/v1", headers=_bearer(token)).status == 200

    # skopeo login writes the credentials once; later commands use them
    auth_file = tmp_path / "auth.json"
    skopeo("login", "--tls-verify=false", f"--authfile={auth_file}", "-u", ALICE[0], "-p", ALICE[1],
           _addr(proc))
    skopeo("copy", "--dest-tls-verify=false", f"--authfile={auth_file}", f"oci:{image.layout}:v1",
           f"docker://{_addr(proc)}/team/app:v3")
    wrong = _skopeo("login", "--tls-verify=false", f"--authfile={tmp_path / 'x.json'}", "-u", ALICE[0], "-p",
                    "wrong", _addr(proc))
    assert wrong.returncode != 0

    # anonymous pulls where a grant says so
    _push_alice(proc, image, "public/hello:v1")
    out = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", f"docker://{_addr(proc)}/public/hello:v1", f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == image.manifest


def test_basic_credentials_and_deletes_need_their_right(proxy: Any) -> None:
    proc, image, _ = proxy
    _push_alice(proc, image, "team/del:v1")
    reg = Registry("127.0.0.1", proc.port("registry"))
    assert reg.request("GET", "/v2/team/del/manifests/v1", headers=_basic(ALICE)).status == 200
    assert reg.request("GET", "/v2/team/del/manifests/v1", headers=_basic(ROBOT)).status == 200
    denied = reg.request("DELETE", "/v2/team/del/manifests/v1", headers=_basic(ROBOT))
    assert denied.status == 403 and denied.error_codes() == ["DENIED"]
    assert reg.request("DELETE", "/v2/team/del/manifests/v1", headers=_basic(ALICE)).status == 202
    # listings show only what the caller may pull
    _push_alice(proc, image, "team/cat:v1")
    assert "team/cat" in reg.request("GET", "/v2/_catalog", headers=_basic(ROBOT)).json()["repositories"]
    seen_by_eve = reg.request("GET", "/v2/_catalog", headers=_basic(EVE)).json()["repositories"]
    assert not any(r.startswith("team/") for r in seen_by_eve)
    assert reg.request("GET", "/v2/_catalog").status == 401


def test_hostile_tokens_and_logins(proxy: Any) -> None:
    proc, image, _ = proxy
    _push_alice(proc, image, "team/hostile:v1")
    reg = Registry("127.0.0.1", proc.port("registry"))
    path = "/v2/team/hostile/manifests/v1"
    now = int(time.time())
    claims = {"iss": "kraken", "aud": "kraken", "sub": "user:alice", "iat": now, "nbf": now - 1,
              "exp": now + 60,
              "access": [{"type": "repository", "name": "team/hostile", "actions": ["pull", "push"]}]}
    assert reg.request("GET", path, headers=_bearer(jwt.encode(claims, KEY, algorithm="HS256"))).status == 200
    cases = {
        "expired": jwt.encode({**claims, "exp": now - 5}, KEY, algorithm="HS256"),
        "forged": jwt.encode(claims, b"x" * 32, algorithm="HS256"),
        "unsigned": jwt.encode(claims, None, algorithm="none"),
        "other service": jwt.encode({**claims, "aud": "elsewhere"}, KEY, algorithm="HS256"),
        "unknown user": jwt.encode({**claims, "sub": "user:mallory"}, KEY, algorithm="HS256"),
        "garbage": "not.a.token",
    }
    for what, token in cases.items():
        reply = reg.request("GET", path, headers=_bearer(token))
        assert reply.status == 401 and reply.error_codes() == ["UNAUTHORIZED"], what
        assert 'error="invalid_token"' in reply.header("WWW-Authenticate"), what

    # a token for another repository: alice may pull here, so she is asked for a wider token
    other = _token(reg, "repository:team/other:pull", ALICE).json()["token"]
    narrow = reg.request("GET", path, headers=_bearer(other))
    assert narrow.status == 401 and 'error="insufficient_scope"' in narrow.header("WWW-Authenticate")
    assert 'scope="repository:team/hostile:pull"' in narrow.header("WWW-Authenticate")

    # unknown users and wrong passwords look the same at the token endpoint and on the API
    for creds in (("mallory", "x"), (ALICE[0], "wrong"), ("robot$nobody", "x")):
        reply = _token(reg, "repository:team/hostile:pull", creds)
        assert reply.status == 401 and reply.error_codes() == ["UNAUTHORIZED"], creds
        assert reply.json()["errors"][0]["message"] == "invalid username or password"
        assert reg.request("GET", path, headers=_basic(creds)).status == 401
    assert reg.request("GET", path, headers={"Authorization": "Basic !!!"}).status == 401
    assert reg.request("GET", path, headers={"Authorization": "Digest x"}).status == 401
    assert reg.request("POST", "/token").status == 405

    # nothing tells whether a private repository exists
    both = "repository:team/hostile:pull&scope=repository:team/nothing:pull"
    eve_token = _token(reg, both, EVE).json()
    assert jwt.decode(eve_token["token"], KEY, algorithms=["HS256"], audience="kraken")["access"] == [
        {"type": "repository", "name": "team/hostile", "actions": []},
        {"type": "repository", "name": "team/nothing", "actions": []}]
    for headers in ({}, _basic(EVE), _bearer(eve_token["token"])):
        answers = [reg.request("GET", p, headers=headers) for p in (path, "/v2/team/nothing/manifests/v1",
                                                                  f"/v2/team/hostile/blobs/{sha256(b'no')}")]
        assert len({(a.status, a.body) for a in answers}) == 1, [(a.status, a.body) for a in answers]
        assert answers[0].status in (401, 403)
    tags = [reg.request("GET", f"/v2/{r}/tags/list", headers=_basic(EVE))
            for r in ("team/hostile", "team/nope")]
    assert tags[0].status == tags[1].status == 403 and tags[0].body == tags[1].body


def test_certificate_roles_get_their_grants(pki: Path, tmp_path: Path) -> None:
    accounts = _accounts()
    accounts["grants"].append({"repository": "team/.*", "actions": ["pull", "push"], "roles": ["client"]})
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump(accounts))
    proc = ServerProcess("kraken-proxy", {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "proxy"),
        "proxy": {"storage": str(tmp_path / "data")},
        "auth": {"mode": "token", "accounts": str(tmp_path / "accounts.yaml")},
    }, tmp_path / "proc", []).start()
    try:
        certs = tmp_path / "certs"
        certs.mkdir()
        shutil.copy(pki / "ca.pem", certs / "ca.crt")
        shutil.copy(pki / "client.pem", certs / "client.cert")
        shutil.copy(pki / "client.key", certs / "client.key")
        image = build_oci_layout(tmp_path / "layout")
        address = f"127.0.0.1:{proc.port('registry')}"
        # the client certificate is the login: no credentials needed for what its role is granted
        skopeo("copy", f"--dest-cert-dir={certs}", f"oci:{image.layout}:v1",
               f"docker://{address}/team/tls:v1")
        skopeo("inspect", f"--cert-dir={certs}", f"docker://{address}/team/tls:v1")
        refused = _skopeo("copy", f"--dest-cert-dir={certs}", f"oci:{image.layout}:v1",
                          f"docker://{address}/other/tls:v1")
        assert refused.returncode != 0 and "403 (forbidden)" in refused.stderr.lower(), refused.stderr
        # the proxy's own certificate has no grant: 403, not 401 (it is authenticated)
        proxy_cert = TLSClient(pki, proc.port("registry"), role="proxy")
        assert proxy_cert.request("GET", "/v2/team/tls/manifests/v1")[0] == 403
    finally:
        proc.stop()


def test_preheat_and_prefetch_need_a_login(proxy: Any) -> None:
    """Warming asks the origins to fetch: an anonymous caller may not make them work."""
    proc, _image, _workdir = proxy
    reg = Registry("127.0.0.1", proc.port("registry"))
    envelope = json.dumps({"events": []}).encode()
    kind = {"Content-Type": "application/json"}
    for path in ("/registry/notifications", "/proxy/v1/registry/prefetch", "/proxy/v2/registry/prefetch"):
        anonymous = reg.request("POST", path, envelope, kind)
        assert anonymous.status == 401, (path, anonymous.body)
        assert (anonymous.header("WWW-Authenticate") or "").startswith("Bearer realm="), path
        wrong = reg.request("POST", path, envelope, {**kind, **_basic(("alice", "x"))})
        assert wrong.status == 401, path
        logged_in = reg.request("POST", path, envelope, {**kind, **_basic(ALICE)})
        assert logged_in.status not in (401, 403), (path, logged_in.status, logged_in.body)
