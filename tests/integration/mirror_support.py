"""Upstream registries for the mirror tests: htpasswd, a registry token service, containerd."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.integration.registry_support import DockerRegistry, skopeo

USER, PASSWORD = "kraken", "s3cret"
SERVICE = "kraken-test-registry"
ISSUER = "kraken-test-token-service"


def write_htpasswd(path: Path, user: str = USER, password: str = PASSWORD) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt from libc; docker-registry's htpasswd accepts only bcrypt

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # cheap: tests only
    path.write_text(f"{user}:{hashed}\n")
    return path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenService:
    """The Docker registry token flow's server side, for one user, as docker-registry expects it.

    Tokens are ES256 JWTs whose ``x5c`` header carries a self-signed certificate that the
    registry trusts (``rootcertbundle``). Every request is recorded in ``requests``.
    """

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kraken test token service")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = workdir / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict[str, Any]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                service.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_auth(self) -> dict[str, Any]:
        return {"token": {"realm": self.realm, "service": SERVICE, "issuer": ISSUER,
                          "rootcertbundle": str(self.bundle)}}

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlparse(request.path).query)
        auth = request.headers.get("Authorization") or ""
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.requests.append({"path": request.path, "authorized": auth == expected})
        if auth != expected:
            request.send_response(401)
            request.send_header("Content-Type", "application/json")
            request.end_headers()
            request.wfile.write(b'{"details":"bad credentials"}')
            return
        scopes = query.get("scope", [])
        body = json.dumps({"token": self.token(query.get("service", [""])[0], scopes), "expires_in": 300})
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.end_headers()
        request.wfile.write(body.encode())

    def token(self, service: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode("ascii")]}
        claims = {"iss": ISSUER, "sub": USER, "aud": service, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def upstream_digest(address: str, ref: str) -> str:
    """The registry's digest of *ref*: the sha256 of the manifest bytes it serves."""
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"--creds={USER}:{PASSWORD}",
                          f"docker://{address}/{ref}"], capture_output=True, timeout=60, check=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def push(layout: str, address: str, ref: str, all_platforms: bool = False) -> None:
    extra = ["--all"] if all_platforms else []
    skopeo("copy", *extra, "--dest-tls-verify=false", f"--dest-creds={USER}:{PASSWORD}", layout,
           f"docker://{address}/{ref}")


def token_registry(workdir: Path, tokens: TokenService, **extra: Any) -> DockerRegistry:
    return DockerRegistry(workdir, extra={"auth": tokens.registry_auth(), **extra})


class Containerd:
    """Debian's containerd as root, with its own root, state and socket under *workdir*."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("containerd") is None or shutil.which("ctr") is None:
            pytest.skip("containerd is not installed (apt-get install containerd)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "containerd.sock"
        self.hosts = workdir / "hosts"
        config = workdir / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{workdir / "root"}"\nstate = "{workdir / "state"}"\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{workdir / "ttrpc.sock"}"\n'
            '[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n'
            f'[debug]\n  address = "{workdir / "debug.sock"}"\n'
            '[metrics]\n  address = ""\n'
        )
        self.log = open(workdir / "containerd.log", "wb")
        self.proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        pytest.skip("containerd did not start here (see containerd.log)")

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["ctr", "-a", str(self.socket), *args], capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def write_hosts(self, upstream: str, server: str, mirror: str) -> None:
        """``hosts.toml`` for *upstream* as ``kraken registry mirror-config`` writes it."""
        subprocess.run([sys.executable, "-m", "kraken.cli.main", "registry", "mirror-config",
                        f"{upstream}={server}", "--agent", mirror, "--dir", str(self.hosts)],
                       check=True, capture_output=True, timeout=60)

    def pull(self, ref: str, *extra: str) -> None:
        self.ctr("images", "pull", "--hosts-dir", str(self.hosts), *extra, ref, timeout=180)

    def digest(self, ref: str) -> str:
        for line in self.ctr("images", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return next(f for f in fields if f.startswith("sha256:"))
        raise AssertionError(f"{ref} is not among containerd's images")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()



def push_anonymous(layout: str, address: str, ref: str, all_platforms: bool = False) -> None:
    extra = ["--all"] if all_platforms else []
    skopeo("copy", *extra, "--dest-tls-verify=false", layout, f"docker://{address}/{ref}")
