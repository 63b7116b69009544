# -*- test-case-name: tests.test_tlssettings -*-
"""
TLS settings beyond certificates: the cipher list and the minimum protocol
version (L{TLSPolicy}), and certificates chosen at handshake time by a
callback (L{DynamicSNI}) for servers with many domains.

pyOpenSSL's servername callback is synchronous: a handshake cannot wait
for a Deferred.  So a callback answering with a Deferred is not waited
for: that handshake goes on with the default certificate, and the context
it fires with is cached for the name, so the client's next handshake gets
it.  A callback answering at once (a context from its own cache) serves
the first handshake too.  The cache is bounded and emptied by a reload.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any
from weakref import WeakSet

from attrs import field, frozen
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._core.files import readRegular
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.cipherprobe import certificateCipher, keyKind, selfSignedRefusal
from twisted_smtpd._serving.listeners import OwnKeys

#: The minimum protocol versions C{minVersion} accepts.
TLS_VERSIONS = {"TLSv1.2": TLSVersion.TLSv1_2, "TLSv1.3": TLSVersion.TLSv1_3}


#: OpenSSL's security level command in a cipher string; the last one counts.
_SECURITY_LEVEL = re.compile(r"@SECLEVEL=([0-9]+)")


def securityLevel(ciphers: str | None) -> int | None:
    """
    The security level a cipher string sets (C{"DEFAULT:@SECLEVEL=3"}), or
    C{None} when it sets none and OpenSSL's default applies.
    """
    levels = _SECURITY_LEVEL.findall(ciphers or "")
    return int(levels[-1]) if levels else None


def _version(value: str) -> str:
    name = value.strip()
    if not name.upper().startswith("TLS"):
        name = "TLSv" + name
    name = "TLSv" + name[3:].lstrip("vV")
    if name not in TLS_VERSIONS:
        raise ValueError(f"unknown TLS version {value!r}; expected 1.2 or 1.3")
    return name


#: OpenSSL's option refusing renegotiation (1.1.0h and later); pyOpenSSL
#: leaves the name out where the library has none.
_NO_RENEGOTIATION: int = getattr(SSL, "OP_NO_RENEGOTIATION", 0)


def _noProtocol(connection: SSL.Connection, offered: list[bytes]) -> Any:
    """
    Select no application protocol and go on with the handshake: the
    server does not negotiate ALPN (RFC 7301), and answers a client
    offering it as a server that does not implement the extension does,
    Postfix's among them.
    """
    return SSL.NO_OVERLAPPING_PROTOCOLS


def _namesNoProtocol(answer: object) -> bool:
    """
    Whether C{answer} is Twisted's C{CertificateOptions} made without
    C{acceptableProtocols}: from Twisted 26 on, its context ends the
    handshake of every client offering ALPN (RFC 7301) with an
    C{internal_error} alert, offering no protocol to select; answered
    without a protocol, as the server's own contexts answer, the client
    gets its session.  Protocols it names are its own to select, and a
    bare C{OpenSSL.SSL.Context} is left as it is made.
    """
    return isinstance(answer, CertificateOptions) and not getattr(
        answer, "_acceptableProtocols", None
    )


@frozen
class TLSPolicy:
    """
    How every TLS context of the server is made.

    @ivar ciphers: An OpenSSL cipher string for TLS 1.2
        (C{"ECDHE+AESGCM:ECDHE+CHACHA20"}), or C{None} for Twisted's
        defaults.  TLS 1.3 suites named in it (C{TLS_AES_256_GCM_SHA384}:
        names beginning with C{TLS_}, see L{splitCiphers}) are the TLS 1.3
        suites of every context; without any they are OpenSSL's.  Its
        C{@SECLEVEL=N}, if any, is the security level of every context.
    @ivar minVersion: C{"TLSv1.2"} or C{"TLSv1.3"}.
    """

    ciphers: str | None = None
    minVersion: str = field(default="TLSv1.2", converter=_version)

    def newContext(self, sessionTickets: bool = False) -> SSL.Context:
        """
        A new context with this policy, before certificates.

        @param sessionTickets: Whether the context issues session tickets
            (RFC 5077, RFC 8446 section 4.6.1).
        @raise ValueError: The cipher string is not one OpenSSL can use
            (see L{check}).
        """
        kwargs: dict[str, Any] = {
            "raiseMinimumTo": TLS_VERSIONS[self.minVersion],
            "enableSessionTickets": sessionTickets,
        }
        tls12, suites = splitCiphers(self.ciphers or "")
        if self.ciphers is not None:
            _checkSuites(self.ciphers, suites)
        if not any(not element.startswith("@") for element in tls12.split(":") if element):
            if self.ciphers is not None and not suites:
                # Empty, separators or commands only (@SECLEVEL=3): as
                # OpenSSL's own parser, no cipher, not Twisted's defaults.
                raise ValueError(f"the cipher string {self.ciphers!r} selects no cipher")
            if suites and self.minVersion == "TLSv1.2":
                raise ValueError(
                    f"the cipher string {self.ciphers!r} names only TLS 1.3 suites: add TLS 1.2"
                    " ciphers, or raise the minimum version to TLS 1.3"
                )
        elif self.ciphers is not None:
            kwargs["acceptableCiphers"] = _acceptableCiphers(tls12)
        try:
            options: Any = CertificateOptions(**kwargs)
            context: SSL.Context = options.getContext()
            # A client offering ALPN (RFC 7301) is answered without a
            # protocol, as Postfix answers it: Twisted 26's contexts,
            # offering none, would end every such handshake with an
            # internal_error alert.
            context.set_alpn_select_callback(_noProtocol)
            # A TLS 1.2 client's renegotiation is refused (a no_renegotiation
            # alert) whatever the OpenSSL below: 3.0 and later refuse it by
            # default, 1.1.1 (which cryptography still builds against) lets a
            # client renegotiate without end, each a full handshake for the
            # server, and change its certificate in the middle of a session.
            if _NO_RENEGOTIATION:
                context.set_options(_NO_RENEGOTIATION)
            level = securityLevel(self.ciphers)
            if level is not None:
                # Twisted expands the string into the names of its ciphers,
                # which leaves out its @SECLEVEL=N: set again with it, so
                # that keys, groups and ciphers below it are refused.
                # (Twisted 23.10 to 26.10 keep those names in _cipherString;
                # without it, the operator's own string says the same.)
                names = getattr(options, "_cipherString", None) or tls12
                context.set_cipher_list(f"{names}:@SECLEVEL={level}".encode())
            if suites:
                context.set_tls13_ciphersuites(":".join(suites).encode())
        except SSL.Error as e:
            if self.ciphers is None:
                raise
            # Parsed, but nothing left at OpenSSL's security level ("eNULL").
            raise ValueError(f"the cipher string {self.ciphers!r} is refused: {_why(e)}") from None
        return context

    def checkCiphers(self, certificates: Sequence[tuple[str | None, str]] = ()) -> None:
        """
        Refuse now a cipher string that no TLS context can be made with
        (L{newContext}), or that leaves TLS 1.2 no cipher a certificate can
        be used with (C{"PSK"}, C{"SRP"}, C{"aNULL"}), or none the key of a
        certificate the server serves can be used with (C{"aECDSA"} for an
        RSA key): OpenSSL takes it, and every TLS 1.2 handshake would then
        fail.  With C{minVersion} C{"TLSv1.3"} no TLS 1.2 handshake is made:
        only L{newContext} is asked.  With no certificate configured, a
        security level (C{@SECLEVEL=N}) the self-signed certificate's EC
        P-256 key does not reach is refused, whatever the version.

        @param certificates: The kind of key (L{keyKind
            <twisted_smtpd._serving.cipherprobe.keyKind>}, C{None} when not
            known) and a description of each certificate served
            (L{certificateKinds}); none: any kind of key will do.
        @raise ValueError: One line saying what is wrong with the string.
        """
        self.newContext()
        if self.ciphers is None:
            return
        if any(what == SELF_SIGNED for _, what in certificates):
            why = selfSignedRefusal(self.newContext)
            if why is not None:
                raise ValueError(
                    f"the cipher string {self.ciphers!r} sets a security level that refuses"
                    f" the EC P-256 key of {SELF_SIGNED}: {why}"
                )
        if self.minVersion != "TLSv1.2":
            return
        for kind, what in certificates or ((None, ""),):
            if _certificateCipher(self, kind) is not None:
                continue
            if kind is None or _certificateCipher(self, None) is None:
                raise ValueError(
                    f"the cipher string {self.ciphers!r} selects no cipher usable with a"
                    " certificate"
                )
            raise ValueError(
                f"the cipher string {self.ciphers!r} selects no TLS 1.2 cipher usable with"
                f" the {kind} key of {what}"
            )

    def checkKey(self, key: object, name: str) -> None:
        """
        Refuse the certificate C{name}, of key C{key}, that no TLS 1.2
        cipher of this policy can be used with (an EC key under C{"aRSA"}),
        when its contexts are made: a reload as at start (L{checkCiphers}).

        @raise ValueError: One line naming the certificate.
        """
        kind = keyKind(key)
        if self.ciphers is None or self.minVersion != "TLSv1.2" or kind is None:
            return
        if _certificateCipher(self, kind) is None:
            raise ValueError(
                f"the cipher string {self.ciphers!r} selects no TLS 1.2 cipher usable with"
                f" the {kind} key of certificate {name}"
            )

    @classmethod
    def check(cls, options: ServerOptions) -> None:
        """
        Refuse now the C{tlsMinVersion} or C{tlsCiphers} of C{options} that
        no TLS context could be made with, rather than at the first
        STARTTLS or implicit TLS handshake (with no certificate configured,
        the contexts wait for their first use).

        @raise ValueError: One line naming the setting:
            C{"tlsCiphers: the cipher string 'BOGUS' selects no cipher"}
            (see L{checkCiphers}).
        """
        try:
            policy = cls(options.tlsCiphers, options.tlsMinVersion)
        except ValueError as e:
            raise ValueError(f"tlsMinVersion: {e}") from None
        if options.tlsCiphers is not None:
            try:
                policy.checkCiphers(certificateKinds(options))
            except ValueError as e:
                raise ValueError(f"tlsCiphers: {e}") from None


#: What separates the elements of an OpenSSL cipher string: a colon, and
#: as OpenSSL also takes (its C{ITEM_SEP}), a semicolon, a comma or a space.
_SEPARATORS = re.compile(r"[:;, ]+")


def splitCiphers(ciphers: str) -> tuple[str, tuple[str, ...]]:
    """
    Split a cipher string in two: the OpenSSL cipher string for TLS 1.2
    and older, and the TLS 1.3 suites it names (C{TLS_AES_256_GCM_SHA384},
    C{TLS_CHACHA20_POLY1305_SHA256}: the names beginning with C{TLS_}; no
    TLS 1.2 cipher's does), in order.  OpenSSL keeps the two apart
    (C{SSL_CTX_set_cipher_list}, C{SSL_CTX_set_ciphersuites}), and its
    cipher string silently ignores a TLS 1.3 name.
    """
    tls12: list[str] = []
    suites: list[str] = []
    for element in _SEPARATORS.split(ciphers.strip()):
        if element:
            (suites if element.upper().startswith("TLS_") else tls12).append(element)
    return ":".join(tls12), tuple(suites)


#: Whether this pyOpenSSL can set the TLS 1.3 suites
#: (C{Context.set_tls13_ciphersuites}, pyOpenSSL 25.2 and later).
SETS_TLS13_SUITES = hasattr(SSL.Context, "set_tls13_ciphersuites")


@lru_cache(maxsize=16)
def _checkSuites(ciphers: str, suites: tuple[str, ...]) -> None:
    """
    Refuse TLS 1.3 suites that cannot be set: a name OpenSSL does not know
    (it would drop it silently), or any name when this pyOpenSSL cannot
    set TLS 1.3 suites (C{Context.set_tls13_ciphersuites}, pyOpenSSL 25.2).
    Also refuse a TLS 1.3 name excluded or moved (C{!TLS_...}, C{-TLS_...},
    C{+TLS_...}): the TLS 1.3 suites are a plain list of those kept.

    @raise ValueError: One line naming the suite.
    """
    for element in _SEPARATORS.split(ciphers.strip()):
        if element[:1] in ("!", "-", "+") and element[1:].upper().startswith("TLS_"):
            raise ValueError(
                f"{element!r} in the cipher string {ciphers!r} cannot exclude nor move a TLS 1.3"
                " suite: list the TLS 1.3 suites to keep"
            )
    if not suites:
        return
    if not SETS_TLS13_SUITES:
        raise ValueError(
            f"the cipher string {ciphers!r} names TLS 1.3 suites, which this pyOpenSSL cannot"
            " set (25.2 or later can): leave them out to keep OpenSSL's"
        )
    for suite in suites:
        context = SSL.Context(SSL.TLS_METHOD)
        try:
            context.set_tls13_ciphersuites(suite.encode("ascii"))
        except (SSL.Error, UnicodeEncodeError):
            raise ValueError(
                f"the cipher string {ciphers!r} names an unknown TLS 1.3 suite {suite!r}"
            ) from None


def _acceptableCiphers(ciphers: str) -> Any:
    """
    The ciphers an OpenSSL cipher string selects.

    @raise ValueError: It is not ASCII, OpenSSL cannot parse it (C{"!!!"}),
        or it selects no cipher (C{"BOGUS"}, or only TLS 1.3 suites, which
        it does not set).
    """
    if not ciphers.isascii():
        raise ValueError(f"the cipher string {ciphers!r} is not ASCII")
    parse: Any = AcceptableCiphers.fromOpenSSLCipherString
    try:
        acceptable = parse(ciphers)
    except SSL.Error as e:
        raise ValueError(f"the cipher string {ciphers!r} is not valid: {_why(e)}") from None
    if not acceptable._ciphers:
        raise ValueError(f"the cipher string {ciphers!r} selects no cipher")
    return acceptable


def _why(error: SSL.Error) -> str:
    """
    OpenSSL's reasons for C{error}, on one line.
    """
    errors = error.args[0] if error.args and isinstance(error.args[0], list) else []
    return "; ".join(str(entry[-1]) for entry in errors if entry and entry[-1]) or str(error)


@lru_cache(maxsize=64)
def _certificateCipher(policy: TLSPolicy, kind: str | None) -> str | None:
    """
    L{certificateCipher} for C{policy} and a kind of key, asked once each.
    """
    return certificateCipher(policy.newContext, kind, securityLevel(policy.ciphers))


#: How L{certificateKinds} names the self-signed certificate.
SELF_SIGNED = "the self-signed certificate (no certificate is configured)"


def certificateKinds(
    options: ServerOptions, ownKeys: Sequence[OwnKeys] = ()
) -> list[tuple[str | None, str]]:
    """
    The kind of key of each certificate the contexts of C{options} serve,
    with its description: the configured one, or the self-signed one made
    on first use (an EC key, L{selfSignedCertificate
    <twisted_smtpd._serving.selfsigned.selfSignedCertificate>}), those of
    C{sniOptions}, and those of the C{ssl:} listeners with keys of their
    own, C{ownKeys} (L{ownCertificateKinds}).  Only the leaf certificate is parsed, for its public
    key; a file that cannot be read or parsed gives C{None} (any kind), its
    error being reported where the file is loaded.
    """
    kinds: list[tuple[str | None, str]] = []
    if options.certificate is None:
        kinds.append(("EC", SELF_SIGNED))
    else:
        kinds.append((_leafKind(options.certificate), f"certificate {options.certificate}"))
    for name, (path, _) in options.sniOptions.items():
        kinds.append((_leafKind(path), f"certificate {path} (SNI {name})"))
    return kinds + ownCertificateKinds(ownKeys)


def ownCertificateKinds(ownKeys: Sequence[OwnKeys]) -> list[tuple[str | None, str]]:
    """
    The kind of key of the certificate of each C{ssl:} listener with keys
    of its own, with its description (see L{certificateKinds}).
    """
    return [
        (_leafKind(keys.certKey), f"certificate {keys.certKey} of an ssl: listener")
        for keys in ownKeys
    ]


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


def _leafKind(path: str) -> str | None:
    """
    The kind of key of the first certificate in the PEM file C{path}, or
    C{None} if it cannot be read.
    """
    from cryptography import x509

    try:
        match = _PEM_CERTIFICATE.search(readRegular(path, "certificate"))
        if match is None:
            return None
        return keyKind(x509.load_pem_x509_certificate(match.group()).public_key())
    except (OSError, ValueError):
        return None


#: What an SNI callback may answer.
SNIResult = SSL.Context | Deferred[SSL.Context | None] | None


class DynamicSNI:
    """
    Contexts chosen by a user's C{sniCallback(name)}, cached by name.
    """

    _log = Logger()

    def __init__(self, callback: Callable[[str], object], limit: int = 4096) -> None:
        """
        @param callback: Called with the SNI name (lower case, no trailing
            dot); answers an C{OpenSSL.SSL.Context} (or an object with
            C{getContext()}, such as C{CertificateOptions}), C{None} for the
            default certificate, or a L{Deferred} of either.
        @param limit: Names kept in the cache (and waited for at once).
        """
        self._callback = callback
        self._limit = limit
        self._cache: OrderedDict[str, SSL.Context] = OrderedDict()
        self._pending: set[str] = set()
        #: The contexts L{_selectNoProtocol} was asked for, kept by reloads.
        self._noProtocol: WeakSet[SSL.Context] = WeakSet()

    def clear(self) -> None:
        """
        Forget every cached context (certificates were reloaded).
        """
        self._cache.clear()

    def contextFor(self, name: str) -> SSL.Context | None:
        """
        The context for C{name} now, or C{None} for the default one.
        """
        cached = self._cache.get(name)
        if cached is not None:
            self._cache.move_to_end(name)
            return cached
        if name in self._pending:
            return None
        try:
            result = self._callback(name)
        except Exception:
            self._log.failure("sniCallback({name!r}) failed", name=name)
            return None
        if isinstance(result, Deferred):
            if len(self._pending) < self._limit:
                self._pending.add(name)
                result.addCallback(self._answered, name)
                result.addErrback(self._failed, name)
            else:
                # Not waited for, but its failure is still the callback's
                # to log, never left unhandled in the Deferred.
                result.addErrback(self._logFailure, name)
            return None
        return self._store(name, result)

    def _selectNoProtocol(self, name: str, context: SSL.Context) -> None:
        """
        Have C{context} answer a client offering ALPN without a protocol
        (see L{_namesNoProtocol}), once: pyOpenSSL 26 refuses to change a
        context once a connection used it, so one answered again after a
        reload keeps what it was given, and one the user's own connections
        used first is served as it was made, with a warning.
        """
        if context in self._noProtocol:
            return
        try:
            context.set_alpn_select_callback(_noProtocol)
        except ValueError:
            self._log.warn(
                "sniCallback({name!r}) answered a context already used for a connection:"
                " served as made, its ALPN selection may refuse clients offering ALPN",
                name=name,
            )
        self._noProtocol.add(context)

    def _answered(self, result: object, name: str) -> None:
        self._pending.discard(name)
        self._store(name, result)

    def _failed(self, failure: Failure, name: str) -> None:
        self._pending.discard(name)
        self._logFailure(failure, name)

    def _logFailure(self, failure: Failure, name: str) -> None:
        self._log.failure("sniCallback({name!r}) failed", failure, name=name)

    def _store(self, name: str, result: object) -> SSL.Context | None:
        if result is None:
            return None
        getContext = getattr(result, "getContext", None)
        try:
            context = getContext() if getContext is not None else result
        except Exception:
            # A CertificateOptions whose key is not its certificate's makes
            # its context here, in OpenSSL's servername callback: raised
            # there, it would fail the handshake with a traceback on stderr.
            self._log.failure(
                "sniCallback({name!r}) answered {result!r}, whose context cannot be made",
                name=name,
                result=result,
            )
            return None
        if not isinstance(context, SSL.Context):
            self._log.error(
                "sniCallback({name!r}) answered {result!r}, not an SSL context",
                name=name,
                result=result,
            )
            return None
        if _namesNoProtocol(result):
            self._selectNoProtocol(name, context)
        self._cache[name] = context
        if len(self._cache) > self._limit:
            self._cache.popitem(last=False)
        return context
