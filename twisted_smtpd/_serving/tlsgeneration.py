# -*- test-case-name: tests.test_tls -*-
"""
The OpenSSL contexts made from one reading of the TLS files (a
generation, replaced whole by a reload): one per certificate, the SNI
selection between them, client certificate verification, and the state
kept beside each TLS connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from weakref import WeakKeyDictionary, WeakSet

from attrs import define
from cryptography import x509
from OpenSSL import SSL, crypto

from twisted_smtpd._core.printable import validHostname
from twisted_smtpd._serving.logging import loggable
from twisted_smtpd._serving.sni import DynamicSNI, TLSPolicy, _why, securityLevel
from twisted_smtpd._serving.tlsfiles import _Credentials


@define
class _ConnectionState:
    """
    What a TLS connection needs kept beside it.

    @ivar generation: The configuration it started with, kept alive (with its
        contexts and their callbacks) for as long as the connection lives.
    @ivar verified: C{True} once the client's chain verified with no error,
        C{False} after any error, C{None} before either.
    @ivar failure: The first error of the client's chain: OpenSSL's
        verification error code and the depth of the certificate it is
        about (0 for the client's own), or C{None}.
    """

    generation: _Generation
    verified: bool | None = None
    failure: tuple[int, int] | None = None


_states: WeakKeyDictionary[SSL.Connection, _ConnectionState] = WeakKeyDictionary()


#: The most octets the names of the CAs (each with its two octets of
#: length) may take: a TLS certificate request carries them in a list of at
#: most 65535 octets (RFC 5246 section 7.4.4), less in TLS 1.3, where the
#: request's other extensions share that length (RFC 8446 section 4.3.2:
#: its signature algorithms, some 60 octets with OpenSSL 4, more with
#: post-quantum ones); 1 KiB is left for them.
MAX_AUTHORITY_NAMES = 65535 - 1024


def checkAuthorityNames(authorities: tuple[x509.Certificate, ...], path: str) -> None:
    """
    Refuse CAs whose names a certificate request cannot carry: OpenSSL
    would fail every handshake that asks for a client certificate (an
    C{internal error} alert).

    @raise ValueError: Their names take more than L{MAX_AUTHORITY_NAMES}.
    """
    size = sum(_nameOctets(authority) for authority in authorities)
    if size > MAX_AUTHORITY_NAMES:
        raise ValueError(
            f"cannot use CA certificates {path}: the names of its {len(authorities)} CAs take"
            f" {size:,} octets, more than a TLS certificate request carries (64 KiB); keep"
            " only the CAs that sign client certificates"
        )


def _nameOctets(authority: x509.Certificate) -> int:
    """
    The octets the name of C{authority} takes in a certificate request.
    """
    try:
        return 2 + len(authority.subject.public_bytes())
    except ValueError:
        # A name cryptography does not read (a string that is not what its
        # type says), which OpenSSL sends all the same: not counted.
        return 0


def weakAuthorities(
    policy: TLSPolicy, authorities: tuple[x509.Certificate, ...], path: str
) -> list[str]:
    """
    One warning per CA of C{path} that OpenSSL's security level (the
    cipher string's C{@SECLEVEL}, else OpenSSL's own) refuses in a client's
    chain (a key too small, a weak digest): no client certificate it signs
    can verify.  Checked the way OpenSSL checks a certificate of its own.
    """
    warnings = []
    probe: Any = policy.newContext()
    level = securityLevel(policy.ciphers)
    where = "OpenSSL's security level" if level is None else f"the security level {level}"
    for number, authority in enumerate(authorities, 1):
        try:
            probe.use_certificate(authority)
        except SSL.Error as e:
            subject = loggable(authority.subject.rfc4514_string(), 200)
            warnings.append(
                f"CA certificates {path}: number {number} ({subject}) can verify no client"
                f" certificate at {where} of the cipher string:"
                f" {_why(e).replace('ee key', 'key')}"
            )
    return warnings


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
        self._credentials = (default, dict(named))
        #: The arguments after the credentials, for L{renewed}.
        self._settings = (
            authorities,
            requestCert,
            rejectUnauthorized,
            self._policy,
            dynamic,
            sessionContext,
            prepare,
        )
        #: Warnings about these files (see L{weakAuthorities}).
        self.warnings: list[str] = []
        #: The C{sniCallback}'s contexts L{_adopt} has made verify clients.
        self._adopted: WeakSet[SSL.Context] = WeakSet()
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

    def renewed(self) -> _Generation:
        """
        A generation of the same certificates and settings with contexts,
        and so session ticket keys, of its own: no file is read.

        @raise ValueError: A certificate cannot be used (as at start).
        """
        default, named = self._credentials
        generation = _Generation(default, named, *self._settings)
        generation.warnings = self.warnings
        return generation

    def _makeContext(self, credentials: _Credentials, selectsByName: bool) -> SSL.Context:
        # CertificateOptions gives Twisted's cipher list and the TLS 1.2 floor;
        # the certificate goes in as a cryptography object, which pyOpenSSL
        # takes without its deprecated wrappers (the type stubs predate that).
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

    def _adopt(self, context: SSL.Context) -> SSL.Context:
        """
        A context the C{sniCallback} answered, made to verify client
        certificates against the configured CAs (the system's without any)
        and to name them to the client, as the server's own contexts do,
        once per generation: OpenSSL verifies a client's chain with the
        store of the context serving the handshake, which the callback made
        without them (every client refused, or one of another CA of its
        store taken).
        """
        if not self._requestCert or context in self._adopted:
            return context
        self._adopted.add(context)
        try:
            if self._authorities is None:
                context.set_default_verify_paths()
                return context
            authorities = [crypto.X509.from_cryptography(each) for each in self._authorities]
            store = context.get_cert_store()
            assert store is not None
            for authority in authorities:
                store.add_cert(authority)
            context.set_client_ca_list([authority.get_subject() for authority in authorities])
        except ValueError:
            # pyOpenSSL 26 refuses to change a context once a connection
            # used it (one answered again after a reload): its store, not
            # guarded, has the new CAs, and it names those it named first.
            pass
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
                context = self._adopt(context)
        if context is not None:
            connection.set_context(context)

    def _verify(
        self, connection: SSL.Connection, certificate: object, error: int, depth: int, ok: int
    ) -> bool:
        state = self.track(connection)
        if not ok:
            state.verified = False
            if state.failure is None:
                state.failure = (error, depth)
        elif depth == 0 and state.verified is None:
            state.verified = True
        return bool(ok) or not self._rejectUnauthorized
