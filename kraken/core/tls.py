"""Mutual TLS between kraken components, and the identity of the peer at the other end.

:class:`TLSSettings` loads the ``tls`` section's files once and builds every context from
them: a server's :class:`ServerTLS` (one per set of admitted roles) verifies the peer
certificate against our CA during the handshake and, when the endpoint names the roles it
admits, refuses any other role before a single application byte moves; client connection
creators (one per server name) verify the server's certificate *and* its hostname or IP
address (service_identity), and present our own certificate. ``TLSSettings.reload()`` reads
the files again (the servers do on SIGHUP).

Protocols learn who they talk to with :func:`peer_identity` (raw TCP) or
:func:`request_identity` (``twisted.web``); :func:`wrap_server_factory` and
:func:`wrap_client_factory` make TLS factories whose inner protocol only sees
``connectionMade`` once the handshake is complete, so it can authorise at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLContextFactory,
    IProtocolFactory,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import directlyProvides, implementer, providedBy

from kraken.core.config import TLSSection

log = Logger(namespace="kraken.tls")

_VERIFY_ERRORS = {
    2: "issuer certificate not found",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in chain",
    20: "certificate not issued by our CA",
    21: "unable to verify the first certificate",
}


class TLSConfigError(Exception):
    """The ``tls`` section names files that cannot be used."""


@dataclass(frozen=True)
class TLSMaterial:
    """The PEM files of a ``tls`` section, parsed: CA certificates, our chain and key."""

    cas: tuple[crypto.X509, ...]
    chain: tuple[crypto.X509, ...]
    key: crypto.PKey

    @classmethod
    def load(cls, ca: str, cert: str, key: str) -> TLSMaterial:
        """Read and check the three files (the key must match the certificate)."""
        try:
            material = cls(
                cas=tuple(_load_pem_chain(ca)),
                chain=tuple(_load_pem_chain(cert)),
                key=crypto.load_privatekey(crypto.FILETYPE_PEM, Path(key).read_bytes()),
            )
            trial = SSL.Context(SSL.TLS_METHOD)
            trial.use_certificate(material.chain[0])
            trial.use_privatekey(material.key)
            trial.check_privatekey()
        except (OSError, SSL.Error, crypto.Error) as e:
            raise TLSConfigError(f"cannot load tls files ({cert}, {key}, {ca}): {e}") from e
        return material


MAX_CLIENT_CREATORS = 1024  # client contexts kept, one per server name dialled


class TLSSettings:
    """The ``tls`` config section, loaded once: CA bundle, our certificate and key, client-cert policy.

    Server contexts (one per set of admitted roles) and client connection creators (one per
    server name) are built from the loaded material once and reused. :meth:`reload` reads the
    files again (after a certificate was re-issued); new connections then use the new material,
    and a reload that fails leaves the old one in place.
    """

    def __init__(self, ca: str, cert: str, key: str, require_client_cert: bool = True) -> None:
        self.ca = ca
        self.cert = cert
        self.key = key
        self.require_client_cert = require_client_cert
        self.material = TLSMaterial.load(ca, cert, key)
        self._servers: dict[frozenset[str] | None, ServerTLS] = {}
        self._clients: dict[str, IOpenSSLClientConnectionCreator] = {}

    @classmethod
    def from_config(cls, section: TLSSection | None) -> TLSSettings | None:
        """The settings of a ``tls`` section, or ``None`` when TLS is not configured."""
        if section is None or not section.cert:
            return None
        files = {"ca": section.ca, "cert": section.cert, "key": section.key}
        missing = [k for k, path in files.items() if not path]
        if missing:
            raise TLSConfigError(f"tls: missing {', '.join(missing)}")
        for k, path in files.items():
            if not Path(str(path)).is_file():
                raise TLSConfigError(f"tls.{k}: no such file: {path}")
        return cls(
            ca=str(section.ca),
            cert=str(section.cert),
            key=str(section.key),
            require_client_cert=section.require_client_cert,
        )

    def reload(self) -> None:
        """Read the files again; raises :class:`TLSConfigError` (keeping the old material) if unusable."""
        material = TLSMaterial.load(self.ca, self.cert, self.key)
        contexts = {roles: server.build_context(material) for roles, server in self._servers.items()}
        self.material = material
        for roles, context in contexts.items():
            self._servers[roles].context = context
        self._clients.clear()

    def server(self, allowed_roles: Iterable[str] | None = None) -> ServerTLS:
        """The server context factory admitting *allowed_roles* (any role of our CA when ``None``)."""
        roles = frozenset(allowed_roles) if allowed_roles is not None else None
        if roles not in self._servers:
            self._servers[roles] = ServerTLS(self, roles)
        return self._servers[roles]

    def client_creator(self, hostname: str) -> IOpenSSLClientConnectionCreator:
        """Client TLS for a server that must present a certificate of our CA naming *hostname*."""
        creator = self._clients.get(hostname)
        if creator is None:
            m = self.material
            own = ssl.PrivateCertificate.fromCertificateAndKeyPair(
                ssl.Certificate(m.chain[0]), ssl.KeyPair(m.key)
            )
            creator = ssl.optionsForClientTLS(
                hostname,
                trustRoot=ssl.Certificate(m.cas[0]),
                clientCertificate=own,
                extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
            )
            if len(self._clients) >= MAX_CLIENT_CREATORS:
                del self._clients[next(iter(self._clients))]
            self._clients[hostname] = creator
        return creator


@dataclass(frozen=True)
class PeerIdentity:
    """Who a verified certificate says the peer is."""

    name: str
    role: str
    hosts: tuple[str, ...] = ()

    @classmethod
    def from_x509(cls, cert: crypto.X509) -> PeerIdentity:
        c = cert.to_cryptography()

        def attr(oid: x509.ObjectIdentifier) -> str:
            values = c.subject.get_attributes_for_oid(oid)
            return str(values[0].value) if values else ""

        try:
            san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            hosts = tuple(str(v) for v in san.get_values_for_type(x509.DNSName)) + tuple(
                str(v) for v in san.get_values_for_type(x509.IPAddress)
            )
        except x509.ExtensionNotFound:
            hosts = ()
        return cls(
            name=attr(NameOID.COMMON_NAME),
            role=attr(NameOID.ORGANIZATIONAL_UNIT_NAME),
            hosts=hosts,
        )


def peer_identity(transport: Any) -> PeerIdentity | None:
    """The verified identity of the peer on *transport*, or ``None`` without TLS or certificate."""
    getter = getattr(transport, "getPeerCertificate", None)
    if getter is None:
        return None
    cert = getter()
    return PeerIdentity.from_x509(cert) if cert is not None else None


def request_identity(request: Any) -> PeerIdentity | None:
    """The verified identity of the client of a ``twisted.web`` request."""
    channel = getattr(request, "channel", None)
    return peer_identity(getattr(channel, "transport", None) or request.transport)


def _load_pem_chain(path: str) -> list[crypto.X509]:
    data = Path(path).read_bytes()
    marker = b"-----END CERTIFICATE-----"
    blocks = [b + marker for b in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in b]
    if not blocks:
        raise TLSConfigError(f"{path}: no PEM certificate in it")
    return [crypto.load_certificate(crypto.FILETYPE_PEM, b) for b in blocks]


@implementer(IOpenSSLContextFactory)
class ServerTLS:
    """A server context factory: our certificate, peer verification, role admission.

    *allowed_roles* ``None`` admits any certificate from our CA; a set admits only those
    roles. With ``require_client_cert`` false a client without a certificate is admitted
    (and has no identity); a certificate it does present is still verified. The context is
    built once, and again when the settings reload.
    """

    def __init__(self, settings: TLSSettings, allowed_roles: Iterable[str] | None = None) -> None:
        self.settings = settings
        self.allowed_roles = frozenset(allowed_roles) if allowed_roles is not None else None
        self.context = self.build_context(settings.material)

    def build_context(self, material: TLSMaterial) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        ctx.use_certificate(material.chain[0])
        for intermediate in material.chain[1:]:
            ctx.add_extra_chain_cert(intermediate)
        ctx.use_privatekey(material.key)
        ctx.check_privatekey()
        store = ctx.get_cert_store()
        assert store is not None
        for ca in material.cas:
            store.add_cert(ca)
        ctx.set_session_id(b"kraken")
        flags = SSL.VERIFY_PEER
        if self.settings.require_client_cert:
            flags |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        ctx.set_verify(flags, self._verify)
        return ctx

    def _verify(self, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        if not ok:
            subject = PeerIdentity.from_x509(cert).name
            reason = _VERIFY_ERRORS.get(errno, f"verify error {errno}")
            log.warn("rejected TLS peer {subject!r}: {reason}", subject=subject, reason=reason, errno=errno)
            return False
        if depth == 0 and self.allowed_roles is not None:
            who = PeerIdentity.from_x509(cert)
            if who.role not in self.allowed_roles:
                log.warn(
                    "rejected TLS peer {name!r}: role {role!r} not allowed here (allowed: {allowed})",
                    name=who.name,
                    role=who.role,
                    allowed=", ".join(sorted(self.allowed_roles)),
                )
                return False
        return True

    def getContext(self) -> SSL.Context:
        return self.context


def client_creator(settings: TLSSettings, hostname: str) -> IOpenSSLClientConnectionCreator:
    """A client connection creator that checks the server's certificate and *hostname*."""
    return settings.client_creator(hostname)


@implementer(IPolicyForHTTPS)
class ClientTLSPolicy:
    """An HTTPS policy for ``twisted.web.client.Agent``/treq: our CA and our client certificate."""

    def __init__(self, settings: TLSSettings) -> None:
        self.settings = settings

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return self.settings.client_creator(hostname.decode("ascii"))


@implementer(IHandshakeListener, ITransport)
class IdentifiedProtocol(ProtocolWrapper):
    """Holds the inner protocol back until the TLS handshake is done, then exposes the peer.

    The inner protocol's ``transport`` is this wrapper: ``transport.peer`` is the peer's
    :class:`PeerIdentity` (``None`` without a client certificate), and the usual transport
    methods (``getPeerCertificate``, ``write``, ``registerProducer``...) pass through.
    """

    peer: PeerIdentity | None = None
    _handshake_done = False
    _refused: Exception | None = None
    tls: TLSMemoryBIOProtocol

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))
        self.connected = 1
        self.transport = self.tls = transport
        self.factory.registerProtocol(self)

    def handshakeCompleted(self) -> None:
        self.peer = peer_identity(self.transport)
        expected = getattr(self.factory, "expected_roles", None)
        if expected is not None and (self.peer is None or self.peer.role not in expected):
            log.warn(
                "refused TLS peer {name!r} with role {role!r}: expected {expected}",
                name=self.peer.name if self.peer else None,
                role=self.peer.role if self.peer else None,
                expected=", ".join(sorted(expected)),
            )
            self._refused = RoleRefused(self.peer, expected)
            self.tls.abortConnection()
            return
        self._handshake_done = True
        self.wrappedProtocol.makeConnection(self)
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()
        ready, self.factory.ready = self.factory.ready, None
        if ready is not None:
            ready.callback(self.wrappedProtocol)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.unregisterProtocol(self)
        if self._handshake_done:
            self.wrappedProtocol.connectionLost(reason)
            return
        log.info(
            "TLS connection with {peer} closed before the handshake completed: {reason}",
            peer=self.transport.getPeer() if self.transport else None,
            reason=reason.getErrorMessage(),
        )
        ready, self.factory.ready = self.factory.ready, None
        if ready is not None:
            ready.errback(Failure(self._refused) if self._refused else reason)


class SeesTLSLayer:
    """Mixin for protocols that need Twisted's TLS protocol itself as their transport.

    autobahn reads the TLS channel binding from its transport and insists that it *is* a
    ``TLSMemoryBIOProtocol``; behind :class:`IdentifiedProtocol` it would fail. Such a protocol
    is handed the TLS layer under the wrapper (the same writes, the same producer), and keeps
    the wrapper's verified identity as ``tls_peer``.
    """

    tls_peer: PeerIdentity | None = None

    def makeConnection(self, transport: Any) -> None:
        if isinstance(transport, IdentifiedProtocol):
            self.tls_peer = transport.peer
            transport = transport.transport
        super().makeConnection(transport)  # type: ignore[misc]


class RoleRefused(Exception):
    """The peer's certificate is valid but names a role this side does not talk to."""

    def __init__(self, peer: PeerIdentity | None, expected: Iterable[str]) -> None:
        role = peer.role if peer else None
        super().__init__(f"peer role {role!r} is not one of: {', '.join(sorted(expected))}")


class IdentifiedFactory(WrappingFactory):
    """Wraps a factory for :class:`IdentifiedProtocol`.

    For one client connection, ``ready`` (when set) fires with the inner protocol once the
    handshake is done, or fails with the reason the connection closed before that.
    """

    protocol = IdentifiedProtocol

    def __init__(
        self,
        wrapped: IProtocolFactory,
        expected_roles: Iterable[str] | None = None,
        ready: Deferred[Any] | None = None,
    ) -> None:
        super().__init__(wrapped)
        self.expected_roles = frozenset(expected_roles) if expected_roles is not None else None
        self.ready = ready


def wrap_server_factory(
    factory: IProtocolFactory, settings: TLSSettings, allowed_roles: Iterable[str] | None = None
) -> TLSMemoryBIOFactory:
    """A TLS server factory around *factory* that admits only *allowed_roles*."""
    return TLSMemoryBIOFactory(settings.server(allowed_roles), False, IdentifiedFactory(factory))


def wrap_client_factory(
    factory: IProtocolFactory,
    settings: TLSSettings,
    hostname: str,
    expected_roles: Iterable[str] | None = None,
) -> TLSMemoryBIOFactory:
    """A TLS client factory around *factory* that checks the server name and, optionally, role."""
    return TLSMemoryBIOFactory(
        settings.client_creator(hostname), True, IdentifiedFactory(factory, expected_roles)
    )
