"""A development certificate authority and the certificates it issues.

Every kraken component proves who it is with a certificate from one CA. The holder's
*role* (``agent``, ``origin``, ``tracker``, ...) is written into the subject's
organizational unit, its name into the common name, and the hosts it serves as
subject alternative names, so one certificate serves both TLS directions.

Files in a certificate directory::

    ca.pem  ca.key            the authority (the key stays with the operator)
    <name>.pem  <name>.key    one holder: certificate (leaf then CA) and its key
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = (
    "agent",
    "origin",
    "tracker",
    "build-index",
    "proxy",
    "pubsub",
    "state",
    "pipeline",
    "client",
)

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=397)
CA_CERT = "ca.pem"
CA_KEY = "ca.key"


class CertificateError(Exception):
    """A certificate could not be created as asked."""


@dataclass(frozen=True)
class IssuedFiles:
    cert: Path
    key: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def create_ca(
    directory: str | os.PathLike[str],
    name: str = "kraken dev CA",
    force: bool = False,
    validity: datetime.timedelta = CA_VALIDITY,
) -> IssuedFiles:
    """Create ``ca.pem``/``ca.key`` in *directory*; refuse to replace them unless *force*."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not force and (cert_path.exists() or key_path.exists()):
        raise CertificateError(
            f"a CA already exists in {directory}; pass --force to replace it "
            "(every certificate it issued stops being trusted)"
        )
    key = _new_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kraken"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return IssuedFiles(cert_path, key_path)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except FileNotFoundError as e:
        raise CertificateError(f"no CA in {directory}: run `kraken certs init {directory}` first") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{directory / CA_KEY} is not an ECDSA key")
    return cert, key


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue(
    directory: str | os.PathLike[str],
    name: str,
    role: str,
    hosts: list[str] | None = None,
    validity: datetime.timedelta = LEAF_VALIDITY,
    not_before: datetime.datetime | None = None,
) -> IssuedFiles:
    """Issue ``<name>.pem``/``<name>.key`` for *role*, valid for *hosts* (default loopback)."""
    if role not in ROLES:
        raise CertificateError(f"unknown role {role!r}; roles are: {', '.join(ROLES)}")
    if not name or "/" in name or name.startswith("."):
        raise CertificateError(f"bad certificate name {name!r}")
    directory = Path(directory)
    ca_cert, ca_key = _load_ca(directory)
    hosts = list(hosts) if hosts else ["localhost", "127.0.0.1", "::1"]
    key = _new_key()
    start = not_before if not_before is not None else _now() - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kraken"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(_san(hosts), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    _write_private(key_path, _key_pem(key))
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    _write_public(cert_path, chain)
    return IssuedFiles(cert_path, key_path)


def ensure_dev_pki(directory: str | os.PathLike[str], names: dict[str, str]) -> Path:
    """Create a CA and one certificate per ``{name: role}`` in *directory* where missing."""
    directory = Path(directory)
    if not (directory / CA_CERT).exists():
        create_ca(directory)
    for name, role in names.items():
        if not (directory / f"{name}.pem").exists():
            issue(directory, name, role)
    return directory
