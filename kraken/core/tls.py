"""Mutual TLS between kraken components, and the identity of the peer at the other end.

:class:`TLSSettings` loads the ``tls`` section's files once and builds every context from
them: a server's :class:`ServerTLS` (one per set of admitted roles) verifies the peer
certificate against our CA during the handshake and, when the endpoint names the roles it
admits, refuses any other role before a single application byte moves; client connection
creators (one per server name and expected roles) verify the server's certificate, its
hostname or IP address (service_identity) *and* its role, and present our own certificate.
``TLSSettings.reload()`` reads the files again (the servers do on SIGHUP).

Server listeners bound the connections still handshaking (:mod:`kraken.core.pending`): a
deadline from accept (``tls.handshake_timeout``) and caps per listener and per client address.

Protocols learn who they talk to with :func:`peer_identity` (raw TCP) or
:func:`request_identity` (``twisted.web``); :func:`wrap_server_factory` and
:func:`wrap_client_factory` make TLS factories whose inner protocol only sees
``connectionMade`` once the handshake is complete, so it can authorise at once.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl as stdlib_ssl
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from prometheus_client import Counter
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import verify_certificate_hostname, verify_certificate_ip_address
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLContextFactory,
    IProtocolFactory,
    IReactorTime,
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
from kraken.core.pending import PendingConnections, PendingLimits, socket_of, source_of, unread_bytes
from kraken.core.reactor import default_reactor

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


MAX_CLIENT_CREATORS = 1024  # client contexts kept, one per server name and roles dialled
DEFAULT_HANDSHAKE_LIMITS = PendingLimits(
    timeout=TLSSection.handshake_timeout,
    max_pending=TLSSection.max_handshakes,
    max_per_source=TLSSection.max_handshakes_per_source,
)


class TLSSettings:
    """The ``tls`` config section, loaded once: CA bundle, our certificate and key, client-cert policy.

    Server contexts (one per set of admitted roles) and client connection creators (one per
    server name) are built from the loaded material once and reused. :meth:`reload` reads the
    files again (after a certificate was re-issued); new connections then use the new material,
    and a reload that fails leaves the old one in place.
    """

    def __init__(
        self,
        ca: str,
        cert: str,
        key: str,
        require_client_cert: bool = True,
        handshake: PendingLimits = DEFAULT_HANDSHAKE_LIMITS,
    ) -> None:
        self.ca = ca
        self.cert = cert
        self.key = key
        self.require_client_cert = require_client_cert
        self.handshake = handshake
        self.material = TLSMaterial.load(ca, cert, key)
        self._servers: dict[frozenset[str] | None, ServerTLS] = {}
        self._clients: dict[tuple[str, frozenset[str]], IOpenSSLClientConnectionCreator] = {}

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
            handshake=PendingLimits(
                timeout=section.handshake_timeout,
                max_pending=section.max_handshakes,
                max_per_source=section.max_handshakes_per_source,
            ),
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

    def client_creator(self, hostname: str, expected_roles: Iterable[str]) -> IOpenSSLClientConnectionCreator:
        """Client TLS for a server whose certificate (of our CA) names *hostname* and a role of
        *expected_roles*."""
        roles = frozenset(expected_roles)
        if not roles:
            raise ValueError("a TLS client must name the server roles it expects")
        creator = self._clients.get((hostname, roles))
        if creator is None:
            m = self.material
            own = ssl.PrivateCertificate.fromCertificateAndKeyPair(
                ssl.Certificate(m.chain[0]), ssl.KeyPair(m.key)
            )
            checks_name = ssl.optionsForClientTLS(
                hostname,
                trustRoot=ssl.Certificate(m.cas[0]),
                clientCertificate=own,
                extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
            )
            creator = RoleCheckingCreator(checks_name, hostname, roles)
            if len(self._clients) >= MAX_CLIENT_CREATORS:
                del self._clients[next(iter(self._clients))]
            self._clients[(hostname, roles)] = creator
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


def client_creator(
    settings: TLSSettings, hostname: str, expected_roles: Iterable[str]
) -> IOpenSSLClientConnectionCreator:
    """A client connection creator that checks the server's certificate, *hostname* and role."""
    return settings.client_creator(hostname, expected_roles)


@implementer(IOpenSSLClientConnectionCreator)
class RoleCheckingCreator:
    """Client TLS that verifies the server's name *and* its role during the handshake.

    *inner* (Twisted's ``ClientTLSOptions``) makes the connection: our CA, our certificate,
    SNI. Each connection then gets one verify callback that, for the server's own certificate,
    demands the name dialled (service_identity) and a role of *expected_roles*; a wrong role is
    logged with both roles and the connection fails with :class:`RoleRefused`.
    """

    def __init__(
        self, inner: IOpenSSLClientConnectionCreator, hostname: str, expected_roles: frozenset[str]
    ) -> None:
        self.inner = inner
        self.hostname = hostname
        self.expected_roles = expected_roles
        try:
            self.ip: str | None = str(ipaddress.ip_address(hostname))
        except ValueError:
            self.ip = None

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:  # noqa: N803
        connection = self.inner.clientConnectionForTLS(tlsProtocol)
        mode = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        connection.set_verify(mode, partial(self._verify, tlsProtocol))
        return connection

    def _verify(
        self, tls: TLSMemoryBIOProtocol, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int,
        ok: int,
    ) -> bool:
        if not ok:
            return False
        if depth > 0:
            return True
        try:
            self._check_name(cert)
            self._check_role(cert)
        except (RoleRefused, VerificationError, CertificateError):
            tls.failVerification(Failure())
            return False
        except Exception:  # an exception escaping an OpenSSL callback would be lost
            log.failure("while verifying the certificate of {host}", host=self.hostname)
            return False
        return True

    def _check_name(self, cert: crypto.X509) -> None:
        if self.ip is not None:
            verify_certificate_ip_address(cert.to_cryptography(), self.ip)
        else:
            verify_certificate_hostname(cert.to_cryptography(), self.hostname)

    def _check_role(self, cert: crypto.X509) -> None:
        server = PeerIdentity.from_x509(cert)
        if server.role in self.expected_roles:
            return
        log.warn(
            "refused TLS server {host} ({name!r}): it presents role {role!r}, expected {expected}",
            host=self.hostname,
            name=server.name,
            role=server.role,
            expected=", ".join(sorted(self.expected_roles)),
        )
        raise RoleRefused(server, self.expected_roles)


@implementer(IPolicyForHTTPS)
class ClientTLSPolicy:
    """An HTTPS policy for ``twisted.web.client.Agent``/treq: our CA and client certificate, and
    servers that must present one of *expected_roles*."""

    def __init__(self, settings: TLSSettings, expected_roles: Iterable[str]) -> None:
        self.settings = settings
        self.expected_roles = frozenset(expected_roles)
        if not self.expected_roles:
            raise ValueError("a TLS client must name the server roles it expects")

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return self.settings.client_creator(hostname.decode("ascii"), self.expected_roles)


@implementer(IHandshakeListener, ITransport)
class IdentifiedProtocol(ProtocolWrapper):
    """Holds the inner protocol back until the TLS handshake is done, then exposes the peer.

    The inner protocol's ``transport`` is this wrapper: ``transport.peer`` is the peer's
    :class:`PeerIdentity` (``None`` without a client certificate), and the usual transport
    methods (``getPeerCertificate``, ``write``, ``registerProducer``...) pass through.
    On a server, the connection counts as pending (deadline, caps) until the handshake is done.
    """

    peer: PeerIdentity | None = None
    _handshake_done = False
    tls: TLSMemoryBIOProtocol
    factory: IdentifiedFactory

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))
        self.connected = 1
        self.transport = self.tls = transport
        self.factory.registerProtocol(self)
        pending = self.factory.pending
        if pending is not None:
            stalled = partial(_stalled, transport.getHandle(), socket_of(transport))
            pending.admit(self, source_of(transport.getPeer()), transport.abortConnection, stalled)

    def handshakeCompleted(self) -> None:
        if self.factory.pending is not None:
            self.factory.pending.done(self)
        self.peer = peer_identity(self.transport)
        self._handshake_done = True
        self.wrappedProtocol.makeConnection(self)
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()
        ready, self.factory.ready = self.factory.ready, None
        if ready is not None:
            ready.callback(self.wrappedProtocol)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.unregisterProtocol(self)
        pending = self.factory.pending
        was_pending = pending.done(self) if pending is not None else False
        if self._handshake_done:
            self.wrappedProtocol.connectionLost(reason)
            return
        peer = self.transport.getPeer() if self.transport else None
        # On a server, a connection the pending limits aborted was logged there; the others are
        # logged once per address and interval, as a flood of them must not flood the log.
        quiet = pending is not None and (
            not was_pending or pending.offenders.should_log(("closed", source_of(peer))) is None
        )
        if not quiet:
            log.info(
                "TLS connection with {peer} closed before the handshake completed: {reason}",
                peer=peer,
                reason=reason.getErrorMessage(),
            )
        ready, self.factory.ready = self.factory.ready, None
        if ready is not None:
            ready.errback(reason)


def _stalled(connection: SSL.Connection, sock: socket.socket | None) -> bool:
    """Whether a server connection has no complete ClientHello read and no bytes waiting."""
    return connection.get_state_string() == b"before SSL initialization" and unread_bytes(sock) == 0


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
    handshake is done, or fails with the reason the connection closed before that. On a
    server, *pending* bounds the connections still handshaking.
    """

    protocol = IdentifiedProtocol

    def __init__(
        self,
        wrapped: IProtocolFactory,
        ready: Deferred[Any] | None = None,
        pending: PendingConnections | None = None,
    ) -> None:
        super().__init__(wrapped)
        self.ready = ready
        self.pending = pending


def wrap_server_factory(
    factory: IProtocolFactory,
    settings: TLSSettings,
    allowed_roles: Iterable[str] | None = None,
    clock: IReactorTime | None = None,
    aborted: Counter | None = None,
) -> TLSMemoryBIOFactory:
    """A TLS server factory around *factory* that admits only *allowed_roles*.

    Connections still handshaking are bounded by ``settings.handshake`` (deadline on *clock*,
    the global reactor by default; caps); aborts are counted in *aborted* by reason.
    """
    clock = clock if clock is not None else default_reactor()
    pending = PendingConnections(clock, "tls_handshake", settings.handshake, aborted)
    identified = IdentifiedFactory(factory, pending=pending)
    return TLSMemoryBIOFactory(settings.server(allowed_roles), False, identified)


def wrap_client_factory(
    factory: IProtocolFactory,
    settings: TLSSettings,
    hostname: str,
    expected_roles: Iterable[str],
) -> TLSMemoryBIOFactory:
    """A TLS client factory around *factory* that checks the server's name and role."""
    return TLSMemoryBIOFactory(
        settings.client_creator(hostname, expected_roles), True, IdentifiedFactory(factory)
    )


class RoleCheckingSSLContext(stdlib_ssl.SSLContext):
    """A standard-library client context (``urllib``, ``http.client``) that, after the handshake
    has checked CA and host name, also demands a server role of ``expected_roles``."""

    expected_roles: frozenset[str] = frozenset()

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> stdlib_ssl.SSLSocket:
        tls = super().wrap_socket(sock, *args, **kwargs)
        der = tls.getpeercert(binary_form=True)
        server = PeerIdentity.from_x509(crypto.load_certificate(crypto.FILETYPE_ASN1, der)) if der else None
        if server is None or server.role not in self.expected_roles:
            tls.close()
            raise stdlib_ssl.SSLCertVerificationError(str(RoleRefused(server, self.expected_roles)))
        return tls


def stdlib_client_context(
    ca: str | None, cert: str | None, key: str | None, expected_roles: Iterable[str]
) -> stdlib_ssl.SSLContext:
    """A standard-library TLS client context: trust *ca* (system CAs when ``None``), present
    *cert*/*key* when given, and talk only to servers presenting a role of *expected_roles*."""
    context = RoleCheckingSSLContext(stdlib_ssl.PROTOCOL_TLS_CLIENT)
    context.expected_roles = frozenset(expected_roles)
    context.minimum_version = stdlib_ssl.TLSVersion.TLSv1_2
    if ca:
        context.load_verify_locations(cafile=ca)
    else:
        context.load_default_certs()
    if cert:
        context.load_cert_chain(cert, key)
    return context
