# -*- test-case-name: tests.test_tls -*-
"""
The server's TLS configuration: certificates read from PEM files, SNI,
client certificates, a self-signed fallback, and reloading without a restart.

L{ServerTLS} is what C{transport.startTLS} (STARTTLS, RFC 3207) and implicit
TLS listeners are given; L{tlsInfo} and L{peerCertificateVerified} read what a
finished handshake settled.  The files are read and checked by
L{twisted_smtpd._serving.tlsfiles}, the contexts of each reading made by
L{twisted_smtpd._serving.tlsgeneration}.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from twisted.internet.interfaces import (
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.optionvalues import sniName
from twisted_smtpd._core.session import TLSInfo
from twisted_smtpd._serving import lingering
from twisted_smtpd._serving.flow import socketUnder
from twisted_smtpd._serving.selfsigned import selfSignedCertificate
from twisted_smtpd._serving.sni import DynamicSNI, TLSPolicy
from twisted_smtpd._serving.tlsfiles import (
    _Credentials,
    _parseCredentials,
    _readAuthorities,
    _readCredentials,
)
from twisted_smtpd._serving.tlsgeneration import (
    _Generation,
    _states,
    checkAuthorityNames,
    weakAuthorities,
)


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class ServerTLS:
    """
    Builds and holds the server's TLS configuration; reloadable.

    Every context allows TLS 1.2 and later with Twisted's default ciphers,
    and, unless client certificates are requested, issues session tickets
    so that a returning client resumes with an abbreviated handshake: the
    ticket keys are made afresh, in memory only, with each L{reload}, which
    ends resumption of every earlier session, and every
    L{ticketKeyLifetime} seconds (see L{_current}).

    Without a certificate, a self-signed one is served; when no other file
    is configured either (no SNI certificates, no CAs for client
    certificates), it and the contexts are made on first use (the first
    STARTTLS, or an implicit TLS listener starting), so that a server no
    client asks for TLS never loads OpenSSL's certificate and key code
    (about 1.8 MiB).

    @ivar selfSigned: Whether no certificate was configured, so a self-signed
        one is served.
    @ivar clock: What tells the age of the ticket keys; C{None} for the
        system's monotonic clock.
    """

    _log = Logger()

    #: Seconds after which the contexts, and with them the session ticket
    #: keys, are made afresh from the certificates already loaded, so that
    #: a ticket resumes for at most about that long and keys stolen from
    #: memory open no older session (Postfix renews its ticket keys every
    #: C{smtpd_tls_session_cache_timeout}, 3600 s by default).
    ticketKeyLifetime: float = 3600.0

    def __init__(
        self,
        certificate: str | None,
        privateKey: str | None = None,
        caCertificates: str | None = None,
        sniOptions: Mapping[str, tuple[str, str | None]] = {},
        requestCert: bool = False,
        rejectUnauthorized: bool = True,
        hostname: str = "localhost",
        ciphers: str | None = None,
        minVersion: str = "TLSv1.2",
        sniCallback: Callable[[str], object] | None = None,
        *,
        announce: bool = True,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        Read every file and build the contexts.

        @param certificate: Path of the PEM certificate chain (leaf first), or
            C{None} to serve a self-signed certificate for C{hostname} (a
            warning is logged).
        @param privateKey: Path of the unencrypted PEM private key; C{None}
            when it is in the certificate file.
        @param caCertificates: Path of a PEM bundle of the CAs that sign client
            certificates; without it, the system's default CAs.  It is read
            and checked (by L{reload} too) even without C{requestCert}.
        @param sniOptions: Host name (or C{*.domain} wildcard, one label) to
            C{(certificate, privateKey)} paths served to clients asking for
            that name (RFC 6066 section 3); names match case-insensitively.
        @param requestCert: Ask clients for a certificate.
        @param rejectUnauthorized: With C{requestCert}, refuse the handshake
            when the client sends no certificate or one that does not verify;
            when C{False}, accept it and report it unverified.
        @param hostname: The name in the self-signed certificate.
        @param ciphers: An OpenSSL cipher string for TLS 1.2, or C{None} for
            Twisted's defaults.
        @param minVersion: The lowest protocol version, C{"TLSv1.2"} or
            C{"TLSv1.3"}.
        @param sniCallback: Chooses a context for SNI names that
            C{sniOptions} does not cover; see L{DynamicSNI} (a Deferred
            answer serves the name from the next handshake on).
        @param announce: Whether to warn that a self-signed certificate is
            served; C{False} to check the files only (C{twistd smtpd} does
            while it parses its options; the server warns when it starts).
        @param clock: What tells the age of the session ticket keys (see
            L{ticketKeyLifetime}); by default the system's monotonic clock.
        @raise ValueError: When a file is missing or unusable
            (C{"cannot read certificate ..."}), or the cipher string or
            version is not usable.
        """
        self._policy = TLSPolicy(ciphers, minVersion)
        self._dynamic = DynamicSNI(sniCallback) if sniCallback is not None else None
        self._certificatePath = certificate
        self._privateKeyPath = privateKey
        self._caPath = caCertificates
        self._sniOptions = dict(sniOptions)
        self._requestCert = requestCert
        self._rejectUnauthorized = rejectUnauthorized
        self._hostname = hostname
        self.selfSigned = certificate is None
        self._selfSignedPEM: tuple[bytes, bytes] | None = None
        self._madeObservers: list[Callable[[], object]] = []
        # At most 32 bytes (SSL_MAX_SID_CTX_LENGTH).
        self._sessionContext = os.urandom(16).hex().encode("ascii")
        if certificate is None and announce:
            self._log.warn(
                "No TLS certificate configured: serving a self-signed certificate for "
                "{hostname}; clients that verify certificates will refuse it",
                hostname=hostname,
            )
        self.clock = clock
        self._generation: _Generation | None = None
        self._madeAt = 0.0
        if not self._onFirstUse():
            self._generation = self._build()
        elif caCertificates is not None:
            # Read at start all the same, so that a broken one is reported
            # now, not when client certificates are first asked for.
            _readAuthorities(caCertificates)

    def _onFirstUse(self) -> bool:
        """
        Whether the contexts wait for their first use: there is no file to
        read, whose errors must be reported at start.
        """
        return (
            self.selfSigned
            and not self._sniOptions
            and not (self._requestCert and self._caPath is not None)
        )

    def _seconds(self) -> float:
        return time.monotonic() if self.clock is None else self.clock.seconds()

    def _current(self) -> _Generation:
        """
        The contexts in use, made now if they waited for their first use,
        and made afresh from the same certificates when their ticket keys
        are L{ticketKeyLifetime} old (not with client certificates, which
        have no tickets): connections under way keep theirs.

        @raise ValueError: The self-signed certificate cannot be used.
        """
        generation = self._generation
        if generation is not None and self._keysExpired():
            generation = self._renew(generation)
        if generation is None:
            generation = self._generation = self._build()
            for observer in self._madeObservers:
                try:
                    observer()
                except Exception:
                    # The contexts are made: TLS goes on without it.
                    self._log.failure("Telling of the self-signed certificate failed")
        return generation

    def _keysExpired(self) -> bool:
        """
        Whether the session ticket keys are L{ticketKeyLifetime} old; never
        with client certificates (no tickets).
        """
        return not self._requestCert and self._seconds() - self._madeAt >= self.ticketKeyLifetime

    def _renew(self, generation: _Generation) -> _Generation:
        """
        Replace C{generation} by one of the same certificates with new
        ticket keys; keep it if that fails (it would not at start either),
        until the next L{ticketKeyLifetime}.
        """
        self._madeAt = self._seconds()
        try:
            generation = self._generation = generation.renewed()
        except (ValueError, SSL.Error) as e:
            self._logRenewalFailed(str(e))
        return generation

    def _logRenewalFailed(self, error: str) -> None:
        self._log.error(
            "Renewing the TLS session ticket keys failed, the old ones are kept: {error}",
            error=error,
        )

    def whenMade(self, observer: Callable[[], object]) -> None:
        """
        Call C{observer} when the contexts that wait for their first use
        (see the class description) are made; never when they were made at
        start.  It reads the new certificate with L{certificates}.
        """
        self._madeObservers.append(observer)

    def _defaultCredentials(self) -> _Credentials:
        if self.selfSigned:
            if self._selfSignedPEM is None:
                self._selfSignedPEM = selfSignedCertificate(self._hostname)
            certificatePEM, keyPEM = self._selfSignedPEM
            return _parseCredentials(certificatePEM, keyPEM, "(self-signed)", "(self-signed)")
        assert self._certificatePath is not None
        return _readCredentials(self._certificatePath, self._privateKeyPath)

    #: Called with each new context before its certificate (a listener's
    #: own Diffie-Hellman parameters).
    _prepare: Callable[[SSL.Context], object] | None = None

    def _build(self) -> _Generation:
        default = self._defaultCredentials()
        named = {
            sniName(name): _readCredentials(certificate, key)
            for name, (certificate, key) in self._sniOptions.items()
        }
        # Read and checked even when no client certificate is asked for.
        authorities = None if self._caPath is None else _readAuthorities(self._caPath)
        if self._requestCert and authorities is not None and self._caPath is not None:
            checkAuthorityNames(authorities, self._caPath)
        try:
            generation = _Generation(
                default,
                named,
                authorities,
                self._requestCert,
                self._rejectUnauthorized,
                self._policy,
                self._dynamic,
                self._sessionContext,
                self._prepare,
            )
        except SSL.Error as e:
            raise ValueError(f"cannot use the TLS certificates: {e}") from e
        self._madeAt = self._seconds()
        if self._requestCert and authorities is not None and self._caPath is not None:
            generation.warnings = weakAuthorities(self._policy, authorities, self._caPath)
        return generation

    @classmethod
    def fromOptions(cls, options: ServerOptions, *, announce: bool = True) -> ServerTLS:
        """
        The TLS configuration C{options} describe: certificate, key, client
        certificate CAs, SNI, ciphers, minimum version and SNI callback.

        @param announce: Whether to warn that a self-signed certificate is
            served (see L{__init__}).

        @raise OSError: If a file cannot be read.
        @raise ValueError: If a file does not hold what it should.
        """
        return cls(
            options.certificate,
            options.privateKey,
            options.caCertificates,
            options.sniOptions,
            options.requestCert,
            options.rejectUnauthorized,
            hostname=options.name,
            ciphers=options.tlsCiphers,
            minVersion=options.tlsMinVersion,
            sniCallback=options.sniCallback,
            announce=announce,
        )

    def reload(self) -> None:
        """
        Read every file again; handshakes that start afterwards use the new
        certificates, those in progress finish with the old ones.  The
        self-signed certificate, if any, is kept.  Sessions made before do
        not resume: their tickets were made with the old keys.

        @raise ValueError: When a file is missing or unusable; the previous
            configuration stays in use.
        """
        if self._generation is not None or not self._onFirstUse():
            self._generation = self._build()
        elif self._caPath is not None:
            _readAuthorities(self._caPath)
        if self._dynamic is not None:
            self._dynamic.clear()
        self._logReloaded()

    def _logReloaded(self) -> None:
        self._log.info("TLS certificates reloaded")

    def certificates(self) -> dict[str, x509.Certificate]:
        """
        The leaf certificates in use: C{""} for the default one, then one
        per C{sniOptions} name; none while the self-signed certificate waits
        for its first use.
        """
        if self._generation is None:
            return {}
        return dict(self._generation.certificates)

    def warnings(self) -> list[str]:
        """
        What the start summary warns of in the files in use: a CA of the
        client certificates no chain can verify to (see
        L{weakAuthorities <twisted_smtpd._serving.tlsgeneration.weakAuthorities>}).
        """
        return [] if self._generation is None else list(self._generation.warnings)

    def contextFactory(self) -> ServerTLS:
        """
        What to give C{transport.startTLS} or a TLS listener: this object,
        which always uses the configuration of the last successful
        L{reload}.  The contexts are made now if they waited for their
        first use.

        @raise ValueError: The self-signed certificate cannot be used.
        """
        self._current()
        return self

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """
        A new server-side TLS connection (L{IOpenSSLServerConnectionCreator}).
        """
        generation = self._current()
        connection = SSL.Connection(generation.default, None)
        generation.track(connection)
        return connection

    def getContext(self) -> SSL.Context:
        """
        The current default context (L{IOpenSSLContextFactory}), for APIs that
        still ask for one.
        """
        return self._current().default


def _connection(transport: object) -> SSL.Connection | None:
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    handle = getHandle()
    return handle if isinstance(handle, SSL.Connection) else None


def tlsInfo(transport: object) -> TLSInfo:
    """
    What the finished handshake on C{transport} settled: the SNI name the
    client sent, the protocol version, the cipher, the client's
    certificate and whether it verified (L{peerCertificateVerified}).

    @param transport: A transport after C{startTLS}, or one of a TLS
        listener: its C{getHandle()} gives the C{OpenSSL.SSL.Connection}.
    @return: The details; all C{None} if C{transport} is not a TLS transport.
    """
    connection = _connection(transport)
    if connection is None:
        return TLSInfo()
    servername = connection.get_servername()
    return TLSInfo(
        # A host name is ASCII (RFC 6066 section 3); any other octet a
        # client sent is kept as its escape (\xff), not a U+FFFD that hides
        # what it was.
        servername=servername.decode("ascii", "backslashreplace") if servername else None,
        protocol=connection.get_protocol_version_name(),
        cipher=connection.get_cipher_name(),
        peerCertificate=connection.get_peer_certificate(),
        peerCertificateVerified=peerCertificateVerified(transport),
    )


def peerCertificateVerified(transport: object) -> bool:
    """
    Whether the client on C{transport} sent a certificate that verified
    against the configured CAs.  Always C{True} for a certificate accepted
    with C{rejectUnauthorized}; with C{rejectUnauthorized=False}, C{False} for
    one accepted although it did not verify.
    """
    connection = _connection(transport)
    if connection is None or connection.get_peer_certificate() is None:
        return False
    state = _states.get(connection)
    return state is not None and state.verified is True


def verifyFailure(transport: object) -> str | None:
    """
    Why the client's certificate on C{transport} did not verify, for the
    line of a handshake refused for it: OpenSSL's text for the first error
    of its chain and the depth of the certificate it is about (C{certificate
    has expired (depth 0)}, C{unable to get local issuer certificate (depth
    0)}), as Postfix logs a verification failure.

    @return: The reason, or C{None} when no certificate failed to verify.
    """
    connection = _connection(transport)
    state = None if connection is None else _states.get(connection)
    if state is None or state.failure is None:
        return None
    error, depth = state.failure
    return f"{_verifyErrorText(error)} (depth {depth})"


def _verifyErrorText(error: int) -> str:
    """
    OpenSSL's text for a certificate verification error code
    (C{X509_verify_cert_error_string}, which pyOpenSSL does not wrap; the
    code alone when the binding lacks it).
    """
    try:
        from OpenSSL._util import ffi, lib

        text: bytes = ffi.string(lib.X509_verify_cert_error_string(error))
        return text.decode("ascii", "replace")
    except (ImportError, AttributeError):
        return f"verification error {error}"


def _tlsLayer(transport: object) -> TLSMemoryBIOProtocol | None:
    """
    The TLS layer of C{transport}: itself on an implicit TLS connection
    (under the session, over any PROXY layer), the protocol of the TCP
    connection after C{startTLS}.
    """
    for _ in range(4):
        if isinstance(transport, TLSMemoryBIOProtocol):
            return transport
        if getattr(transport, "TLS", False) is True:
            layer = getattr(transport, "protocol", None)
            if isinstance(layer, TLSMemoryBIOProtocol):
                return layer
        transport = getattr(transport, "transport", None)
    return None


def closeAfterCloseNotify(transport: object, lingerFor: lingering.Closing | None = None) -> bool:
    """
    Close the connection under the TLS layer of C{transport} once the
    server's close_notify alert has been written to it, without waiting
    for the client's: Twisted's TLS layer waits for the client's alert
    before it closes, and a client that sends none (most do not after
    QUIT) would hold the connection until the close's deadline.  Nothing
    requires the wait (RFC 8446 section 6.1, RFC 5246 section 7.2.1), and
    Postfix's smtpd does not wait either (C{tls_session_stop} with its
    default C{tls_fast_shutdown = yes}: one C{SSL_shutdown}, then the
    close).  The replies and the alert still go first: the connection below
    closes once what it holds is sent.

    @param lingerFor: The session whose close lingers (L{lingering
        <twisted_smtpd._serving.lingering>}), or C{None}: then, on a TCP
        connection straight under the TLS layer, only the connection's
        sending side is shut after the alert, and what the client still
        sends is read and dropped, not decrypted.

    @return: Whether the connection below was told to close: not when no
        close_notify was sent yet (a handshake not finished, replies the
        TLS layer still holds).
    """
    connection = _connection(transport)
    if connection is None or not connection.get_shutdown() & SSL.SENT_SHUTDOWN:
        return False
    layer = _tlsLayer(transport)
    below: Any = None if layer is None else layer.transport
    if below is None:
        return False
    socket = socketUnder(transport)
    # The connection itself under an implicit TLS layer, or what bypasses
    # the layer Twisted's startTLS put over it.
    bypassed = getattr(below, "_connection", None)
    if lingerFor is not None and socket is not None and (below is socket or bypassed is socket):
        lingering.begin(lingerFor, socket, below)
        below.loseWriteConnection()
        return True
    below.loseConnection()
    return True
