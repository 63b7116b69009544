# -*- test-case-name: tests.test_tls -*-
"""
The server's TLS configuration: certificates read from PEM files, SNI,
client certificates, a self-signed fallback, and reloading without a restart.

L{ServerTLS} is what C{transport.startTLS} (STARTTLS, RFC 3207) and implicit
TLS listeners are given; L{tlsInfo} and L{peerCertificateVerified} read what a
finished handshake settled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any
from weakref import WeakKeyDictionary

from attrs import define, frozen
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLContextFactory, IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from twisted_smtpd._core.files import readRegular
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.printable import validHostname
from twisted_smtpd._core.session import TLSInfo
from twisted_smtpd._serving.selfsigned import selfSignedCertificate
from twisted_smtpd._serving.sni import DynamicSNI, TLSPolicy, _why, securityLevel

_PRIVATE_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


@frozen
class _Credentials:
    """
    A certificate chain and its private key, loaded and checked.

    @ivar certificate: The leaf certificate.
    @ivar chain: The certificates that follow it in the file.
    @ivar key: The private key.
    @ivar name: The certificate file's path, for errors.
    """

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: Any
    name: str = ""


def _read(path: str, what: str) -> bytes:
    """
    A certificate, key or CA file: a regular file of at most
    L{FILE_LIMIT <twisted_smtpd._core.files.FILE_LIMIT>} bytes.  A path
    naming something else, such as C{/dev/zero}, a log file or a named
    pipe, is refused before it fills the memory or blocks the start.

    @raise ValueError: C{"cannot read <what> <path>: <why>"}.
    """
    try:
        return readRegular(path, what)
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror or e}") from e


def _parseCredentials(
    certificatePEM: bytes,
    keyPEM: bytes,
    certificateName: str,
    keyName: str,
    what: tuple[str, str] = ("certificate", "private key"),
) -> _Credentials:
    certificateWhat, keyWhat = what
    try:
        certificates = x509.load_pem_x509_certificates(certificatePEM)
    except ValueError as e:
        raise ValueError(
            f"cannot read {certificateWhat} {certificateName}: no PEM certificate"
        ) from e
    try:
        key = serialization.load_pem_private_key(keyPEM, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ValueError(f"cannot read {keyWhat} {keyName}: no unencrypted PEM private key") from e
    if not isinstance(key, _PRIVATE_KEY_TYPES):
        raise ValueError(f"cannot read {keyWhat} {keyName}: unsupported key type")
    if certificates[0].public_key() != key.public_key():
        matching = [c.public_key() == key.public_key() for c in certificates]
        if any(matching):
            raise ValueError(
                f"cannot read {certificateWhat} {certificateName}: the certificate of {keyName} is"
                f" number {matching.index(True) + 1} of {len(certificates)}; the file must"
                " start with it, its chain after it"
            )
        raise ValueError(
            f"cannot read {certificateWhat} {certificateName}: it does not match {keyName}"
        )
    return _Credentials(certificates[0], tuple(certificates[1:]), key, certificateName)


def _readCredentials(
    certificatePath: str,
    keyPath: str | None,
    what: tuple[str, str] = ("certificate", "private key"),
) -> _Credentials:
    """
    Load a certificate chain file and its key (from C{keyPath}, or from the
    certificate file when C{None}).

    @param what: How errors name the certificate file and the key file.
    @raise ValueError: Naming the file that cannot be read or used.
    """
    certificatePEM = _read(certificatePath, what[0])
    keyPEM = certificatePEM if keyPath is None else _read(keyPath, what[1])
    return _parseCredentials(
        certificatePEM, keyPEM, certificatePath, keyPath or certificatePath, what
    )


def _readAuthorities(path: str) -> tuple[x509.Certificate, ...]:
    data = _read(path, "CA certificates")
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError as e:
        raise ValueError(f"cannot read CA certificates {path}: no PEM certificate") from e


def _normaliseName(name: str) -> str:
    """
    Lower-case, without a trailing dot, IDNA-encoded (clients send A-labels).

    @raise ValueError: C{name} is not a host name (or C{*.} and one): it
        holds white space, control characters or an empty label, say.
    """
    name = name.strip().rstrip(".").lower()
    try:
        encoded = name.encode("idna").decode("ascii")
    except UnicodeError as e:
        raise ValueError(f"invalid SNI host name: {name!r}") from e
    host = encoded[2:] if encoded.startswith("*.") else encoded
    if not validHostname(host, underscore=True):
        raise ValueError(f"invalid SNI host name: {name!r}")
    return encoded


@define
class _ConnectionState:
    """
    What a TLS connection needs kept beside it.

    @ivar generation: The configuration it started with, kept alive (with its
        contexts and their callbacks) for as long as the connection lives.
    @ivar verified: C{True} once the client's chain verified with no error,
        C{False} after any error, C{None} before either.
    """

    generation: _Generation
    verified: bool | None = None


_states: WeakKeyDictionary[SSL.Connection, _ConnectionState] = WeakKeyDictionary()


class _Generation:
    """
    The contexts built from one reading of the files.
    """

    def __init__(
        self,
        default: _Credentials,
        named: Mapping[str, _Credentials],
        authorities: tuple[x509.Certificate, ...] | None,
        requestCert: bool,
        rejectUnauthorized: bool,
        policy: TLSPolicy | None = None,
        dynamic: DynamicSNI | None = None,
        sessionContext: bytes = b"twisted-smtpd",
        prepare: Callable[[SSL.Context], object] | None = None,
    ) -> None:
        self._policy = policy if policy is not None else TLSPolicy()
        self._prepare = prepare
        self._dynamic = dynamic
        self._sessionContext = sessionContext
        self._authorities = authorities
        self._requestCert = requestCert
        self._rejectUnauthorized = rejectUnauthorized
        self._exact: dict[str, SSL.Context] = {}
        self._wildcards: dict[str, SSL.Context] = {}
        #: The leaf certificates: C{""} for the default one, then by name.
        self.certificates = {"": default.certificate} | {
            name: credentials.certificate for name, credentials in named.items()
        }
        for name, credentials in named.items():
            context = self._makeContext(credentials, selectsByName=False)
            if name.startswith("*."):
                self._wildcards[name[1:]] = context
            else:
                self._exact[name] = context
        self.default = self._makeContext(default, selectsByName=bool(named) or dynamic is not None)

    def _makeContext(self, credentials: _Credentials, selectsByName: bool) -> SSL.Context:
        # CertificateOptions gives Twisted's ciphers and the TLS 1.2 floor; the
        # certificate goes in as a cryptography object (newer than the stubs).
        # Session tickets (RFC 5077, RFC 8446 section 4.6.1) let a client
        # resume with an abbreviated handshake; they are encrypted with keys
        # of the generation's default context (OpenSSL takes them from the
        # context a connection started with, whatever SNI picks), so a
        # reload makes every earlier ticket useless.  Not with client
        # certificates: a resumed handshake does not verify the chain again,
        # and the verification result is kept per connection.
        context = self._policy.newContext(sessionTickets=not self._requestCert)
        # One session id context for every context of the server, so that
        # a session resumes whichever SNI context it was made with.
        context.set_session_id(self._sessionContext)
        if self._prepare is not None:
            self._prepare(context)
        loader: Any = context
        try:
            loader.use_certificate(credentials.certificate)
            loader.use_privatekey(credentials.key)
            for extra in credentials.chain:
                loader.add_extra_chain_cert(extra)
            context.check_privatekey()
            self._policy.checkKey(credentials.key, credentials.name)
        except SSL.Error as e:
            # "ee key too small", "ca md too weak": OpenSSL's security level.
            level = securityLevel(self._policy.ciphers)
            where = "" if level is None else f" at the security level {level} of the cipher string"
            raise ValueError(
                f"cannot use certificate {credentials.name}{where}: {_why(e)}"
            ) from None
        if self._requestCert:
            mode = SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE
            if self._rejectUnauthorized:
                mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            if self._authorities is None:
                context.set_default_verify_paths()
            else:
                store = context.get_cert_store()
                assert store is not None
                for authority in self._authorities:
                    store.add_cert(crypto.X509.from_cryptography(authority))
                    loader.add_client_ca(authority)
            context.set_verify(mode, self._verify)
        if selectsByName:
            context.set_tlsext_servername_callback(self._selectContext)
        return context

    def track(self, connection: SSL.Connection) -> _ConnectionState:
        """
        The state kept for C{connection}, created on first use.
        """
        state = _states.get(connection)
        if state is None:
            state = _states[connection] = _ConnectionState(self)
        return state

    def contextFor(self, servername: bytes | None) -> SSL.Context | None:
        """
        The context for an SNI name: an exact entry, else a wildcard entry
        covering its first label, else C{None} for the default.
        """
        if not servername:
            return None
        try:
            name = servername.decode("ascii").rstrip(".").lower()
        except UnicodeDecodeError:
            return None
        context = self._exact.get(name)
        if context is None and self._wildcards:
            dot = name.find(".")
            if dot > 0:
                context = self._wildcards.get(name[dot:])
        return context

    def _selectContext(self, connection: SSL.Connection) -> None:
        self.track(connection)
        servername = connection.get_servername()
        context = self.contextFor(servername)
        if context is None and self._dynamic is not None and servername:
            try:
                name = servername.decode("ascii").rstrip(".").lower()
            except UnicodeDecodeError:
                return
            if not validHostname(name, underscore=True):
                # The client's bytes, not a host name ("../x", spaces,
                # control characters): never the callback's to see (RFC
                # 6066 section 3 names hosts as DNS does).
                return
            context = self._dynamic.contextFor(name)
        if context is not None:
            connection.set_context(context)

    def _verify(
        self, connection: SSL.Connection, certificate: object, error: int, depth: int, ok: int
    ) -> bool:
        state = self.track(connection)
        if not ok:
            state.verified = False
        elif depth == 0 and state.verified is None:
            state.verified = True
        return bool(ok) or not self._rejectUnauthorized


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class ServerTLS:
    """
    Builds and holds the server's TLS configuration; reloadable.

    Every context allows TLS 1.2 and later with Twisted's default ciphers,
    and, unless client certificates are requested, issues session tickets
    so that a returning client resumes with an abbreviated handshake: the
    ticket keys are made afresh, in memory only, with each L{reload}, which
    ends resumption of every earlier session.

    Without a certificate, a self-signed one is served; when no other file
    is configured either (no SNI certificates, no CAs for client
    certificates), it and the contexts are made on first use (the first
    STARTTLS, or an implicit TLS listener starting), so that a server no
    client asks for TLS never loads OpenSSL's certificate and key code
    (about 1.8 MiB).

    @ivar selfSigned: Whether no certificate was configured, so a self-signed
        one is served.
    """

    _log = Logger()

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
    ) -> None:
        """
        Read every file and build the contexts.

        @param certificate: Path of the PEM certificate chain (leaf first), or
            C{None} to serve a self-signed certificate for C{hostname} (a
            warning is logged).
        @param privateKey: Path of the unencrypted PEM private key; C{None}
            when it is in the certificate file.
        @param caCertificates: Path of a PEM bundle of the CAs that sign client
            certificates; without it, the system's default CAs.
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
        if certificate is None:
            self._log.warn(
                "No TLS certificate configured: serving a self-signed certificate for "
                "{hostname}; clients that verify certificates will refuse it",
                hostname=hostname,
            )
        self._generation: _Generation | None = None
        if not self._onFirstUse():
            self._generation = self._build()

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

    def _current(self) -> _Generation:
        """
        The contexts in use, made now if they waited for their first use.

        @raise ValueError: The self-signed certificate cannot be used.
        """
        generation = self._generation
        if generation is None:
            generation = self._generation = self._build()
            for observer in self._madeObservers:
                try:
                    observer()
                except Exception:
                    # The contexts are made: TLS goes on without it.
                    self._log.failure("Telling of the self-signed certificate failed")
        return generation

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
            _normaliseName(name): _readCredentials(certificate, key)
            for name, (certificate, key) in self._sniOptions.items()
        }
        authorities = None
        if self._requestCert and self._caPath is not None:
            authorities = _readAuthorities(self._caPath)
        try:
            return _Generation(
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

    @classmethod
    def fromOptions(cls, options: ServerOptions) -> ServerTLS:
        """
        The TLS configuration C{options} describe: certificate, key, client
        certificate CAs, SNI, ciphers, minimum version and SNI callback.

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
    client sent, the protocol version, the cipher and the client's
    certificate.

    @param transport: A transport after C{startTLS}, or one of a TLS
        listener: its C{getHandle()} gives the C{OpenSSL.SSL.Connection}.
    @return: The details; all C{None} if C{transport} is not a TLS transport.
    """
    connection = _connection(transport)
    if connection is None:
        return TLSInfo()
    servername = connection.get_servername()
    return TLSInfo(
        servername=servername.decode("ascii", "replace") if servername else None,
        protocol=connection.get_protocol_version_name(),
        cipher=connection.get_cipher_name(),
        peerCertificate=connection.get_peer_certificate(),
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
