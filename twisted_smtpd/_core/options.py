# -*- test-case-name: tests.test_optionchecks -*-
"""
L{ServerOptions}: every server setting, validated when it is built.

Names follow nodemailer's C{smtp-server} in Twisted's camelCase.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

from attrs import field, frozen

from twisted_smtpd._core.optionchecks import (
    DEFAULT_HELO_RESPONSE,
    checkAuthMethods,
    checkAuthRequired,
    checkBanner,
    checkBareNewline,
    checkCommands,
    checkHelo,
    checkRate,
    count,
    defaultName,
    errorSleep,
    hostName,
    positiveCount,
    prefixLength,
    replyText,
    seconds,
    size,
    timeout,
)
from twisted_smtpd._core.optionvalues import (
    IPNetwork,
    callableOrNone,
    filePath,
    networks,
    normaliseHosts,
    plainText,
    rate,
    sniCertificates,
    switch,
    textOrNone,
    upperWords,
)
from twisted_smtpd._core.optionvalues import trusted as trusted


def _authMethods(value: Iterable[str]) -> tuple[str, ...]:
    return upperWords("authMethods", value)


def _disabledCommands(value: Iterable[str]) -> tuple[str, ...]:
    return upperWords("disabledCommands", value)


def _maxConnectionRate(value: str | tuple[int, float] | None) -> tuple[int, float] | None:
    return rate("maxConnectionRate", value)


def _maxAuthRate(value: str | tuple[int, float] | None) -> tuple[int, float] | None:
    return rate("maxAuthRate", value)


def _minDataRate(value: str | tuple[int, float] | None) -> tuple[int, float] | None:
    return rate("minDataRate", value)


_NetworksValue = bool | Iterable[str | IPNetwork] | None


def _limitExemptions(value: _NetworksValue) -> tuple[IPNetwork, ...]:
    return networks("limitExemptions", value)


def _useProxy(value: _NetworksValue) -> tuple[IPNetwork, ...]:
    return networks("useProxy", value)


def _useXClient(value: _NetworksValue) -> tuple[IPNetwork, ...]:
    return networks("useXClient", value)


def _useXForward(value: _NetworksValue) -> tuple[IPNetwork, ...]:
    return networks("useXForward", value)


_PathValue = str | os.PathLike[str] | None


def _certificate(value: _PathValue) -> str | None:
    return filePath("certificate", value)


def _privateKey(value: _PathValue) -> str | None:
    return filePath("privateKey", value)


def _caCertificates(value: _PathValue) -> str | None:
    return filePath("caCertificates", value)


def _sniOptions(
    value: Mapping[str, tuple[str, str | None]] | None,
) -> dict[str, tuple[str, str | None]]:
    return sniCertificates("sniOptions", value)


#: The default message size limit in bytes: Postfix's C{message_size_limit}
#: default, about 10 MB.
DEFAULT_SIZE = 10_240_000


@frozen(kw_only=True)
class ServerOptions:
    """
    Every setting of an SMTP/LMTP server.  Invalid values raise C{ValueError}
    (C{TypeError} for a value of the wrong type) at construction, naming the
    setting, so a server never starts half-configured.  Counts are C{int}s,
    timeouts C{int}s or C{float}s; both must be finite.  Switches are
    C{True} or C{False} only (a text such as C{"no"} is refused, not taken
    for C{True}); file paths are strings or path objects, kept as strings.

    @ivar name: The server's host name in the greeting and replies; by
        default this machine's fully qualified name.  A name in U-labels,
        given or the machine's, is written in A-labels (C{xn--...}), as a
        domain in SMTP is ASCII; one that cannot be raises C{ValueError}.
    @ivar banner: Extra text for the 220 greeting.  Like C{name},
        C{heloResponse} and C{authRequiredMessage}, printable US-ASCII only
        (RFC 5321 section 4.2): anything else raises C{ValueError}.
    @ivar heloResponse: The 250 text for HELO/EHLO, with two C{%s}: the
        server's name and the client's; with the name and an address
        literal (L{CLIENT_NAME_ROOM
        <twisted_smtpd._core.optionchecks.CLIENT_NAME_ROOM>}) it must fit in
        a reply line (512 octets, RFC 5321 section 4.5.3.1.5), and a client
        name too long for what is left is cut (C{...}).
    @ivar size: The largest message accepted in bytes; 0 for no limit.
        L{DEFAULT_SIZE} (10,240,000 bytes, Postfix's C{message_size_limit})
        by default, so that a handler keeping a message in memory is
        bounded unless the limit is lifted on purpose.
    @ivar hideSize: Do not advertise SIZE (the limit still applies).
    @ivar lmtp: Speak LMTP (RFC 2033) instead of SMTP.
    @ivar certificate: Path of the PEM certificate chain for TLS.
    @ivar privateKey: Path of the PEM private key (default: in C{certificate}).
    @ivar caCertificates: Path of a PEM bundle of CAs for client certificates.
    @ivar sniOptions: Host name to C{(certificate, key)} paths for SNI.
    @ivar requestCert: Ask TLS clients for a certificate.
    @ivar rejectUnauthorized: Refuse the handshake when a requested client
        certificate does not verify against C{caCertificates}.
    @ivar hideSTARTTLS: Do not advertise STARTTLS (it is still accepted).
    @ivar allowInsecureAuth: Allow AUTH before TLS.
    @ivar authMethods: AUTH mechanisms offered.
    @ivar authOptional: Allow MAIL without AUTH.
    @ivar authRequiredMessage: The 530 text for MAIL before AUTH, at most
        L{MAX_TEXT_OCTETS} (480) octets.
    @ivar maxAllowedUnauthenticatedCommands: Commands allowed before AUTH when
        AUTH is required; 0 for no limit.
    @ivar maxAuthFailures: Failed AUTH attempts before 421 and close.
    @ivar disabledCommands: Commands answered with 502.
    @ivar hidePIPELINING: Do not advertise PIPELINING (never hidden in LMTP
        mode).
    @ivar hide8BITMIME: Do not advertise 8BITMIME.
    @ivar hideSMTPUTF8: Do not advertise SMTPUTF8.
    @ivar hideENHANCEDSTATUSCODES: Do not advertise nor send enhanced status
        codes (never hidden in LMTP mode).
    @ivar hideDSN: Do not advertise DSN.
    @ivar hideREQUIRETLS: Do not advertise REQUIRETLS.
    @ivar hideCHUNKING: Do not advertise CHUNKING and BINARYMIME.
    @ivar socketTimeout: Seconds of client silence before 421 and close;
        also how long a client may leave its replies unread (a write that
        makes no progress).  At least 1, as C{handlerTimeout} and
        C{tlsHandshakeTimeout}: the deadline timer wakes every quarter of
        the shortest.
    @ivar handlerTimeout: Seconds the session waits for its handler (a hook
        that answers later, or a message body the handler stopped reading)
        before 421 and close (the hook is left to finish).  The default,
        10 minutes, is the longest RFC 5321 has a client wait for a reply
        (section 4.5.3.2.6).
    @ivar tlsHandshakeTimeout: Seconds a whole TLS handshake (STARTTLS or an
        implicit TLS listener) may take before the connection is dropped.
    @ivar closeTimeout: Seconds L{SMTPServer.close} waits for transactions.
    @ivar maxClients: Concurrent connections; 0 for no limit.
    @ivar maxClientsPerIp: Concurrent connections from one client address;
        0 for no limit (Postfix's C{smtpd_client_connection_count_limit}).
    @ivar maxConnectionRate: C{(count, seconds)}: connections one client
        address may open per C{seconds} (at least 1), or C{None} for no
        limit (Postfix's C{smtpd_client_connection_rate_limit}); C{"30/60"}
        is accepted too.
    @ivar maxAuthRate: C{(count, seconds)}: AUTH commands one client
        address may give per C{seconds} (at least 1), over all its sessions,
        or C{None} for no limit (Postfix's C{smtpd_client_auth_rate_limit}):
        past it AUTH is answered C{450 4.7.1}.
    @ivar limitExemptions: Networks exempt from C{maxClientsPerIp},
        C{maxConnectionRate} and C{maxAuthRate} (Postfix exempts
        C{mynetworks}); none by default, not even the loopback addresses.
    @ivar clientIpv6PrefixLength: IPv6 clients are counted by their network
        of this many bits for C{maxClientsPerIp}, C{maxConnectionRate} and
        C{maxAuthRate}:
        84 by default, as Postfix 3.8's C{smtpd_client_ipv6_prefix_length};
        128 counts each address alone.
    @ivar minDataRate: C{(bytes, seconds)}: a DATA or BDAT transfer must
        bring at least C{bytes} every C{seconds} (at least 1: the deadline
        timer wakes every quarter of it), or is cut with 421; C{None} (the
        default) for no minimum.
    @ivar maxRecipients: Recipients per transaction.
    @ivar maxErrors: Error replies before 421 and close, counted since the
        connection or since the last message accepted (Postfix's
        C{smtpd_hard_error_limit}).
    @ivar softErrorLimit: Errors, counted as for C{maxErrors}, after which
        each reply, refusal or not, is sent C{errorSleep} seconds late
        (Postfix's C{smtpd_soft_error_limit}, 10 by default): with 10
        errors counted, the reply after the 10th refusal waits.
    @ivar errorSleep: Seconds each reply of a session past
        C{softErrorLimit} is held, the session reading no command
        meanwhile (Postfix's C{smtpd_error_sleep_time}, 1 by default); 0
        turns the delay off.  At most L{MAX_ERROR_SLEEP
        <twisted_smtpd._core.optionchecks.MAX_ERROR_SLEEP>} (300) seconds.
    @ivar maxJunkCommands: Commands that move no message on (HELO, EHLO,
        LHLO, RSET, NOOP, VRFY, HELP, and BDAT 0 when it is not the last
        chunk; not XCLIENT and XFORWARD, as in Postfix): the first
        C{maxJunkCommands + 1} are free, each further one counts as an
        error once answered, counted like C{maxErrors}, exactly as with
        Postfix's C{smtpd_junk_command_limit} (whose test is
        C{junk_cmds++ > limit}); 0 for no limit.
    @ivar maxLineLength: Longest command line in bytes, CRLF excluded
        (RFC 5321 section 4.5.3.1.4); MAIL and RCPT lines may be 1024 bytes
        longer, for their ESMTP parameters, and AUTH lines up to 12288 bytes
        (RFC 4954 section 4).
    @ivar bareNewline: What a bare CR or LF in message text does: C{"reject"}
        the message (550), C{"normalize"} it to CRLF, or keep it as it is
        (C{"legacy"}).  None of them ever ends a message.
    @ivar lenientAddresses: Accept common broken path syntax (a space after
        the colon, a missing pair of angle brackets).
    @ivar disableReverseLookup: Do not look up the client's name.
    @ivar useProxy: Networks whose PROXY headers are trusted.
    @ivar ignoredHosts: Client addresses whose sessions are not logged;
        an IPv4-mapped IPv6 address is kept in its IPv4 form, as clients'
        addresses are.
    @ivar useXClient: Networks whose XCLIENT commands are trusted.
    @ivar useXForward: Networks whose XFORWARD commands are trusted.
    @ivar tlsCiphers: An OpenSSL cipher string for TLS 1.2, or C{None} for
        Twisted's defaults; the TLS 1.3 suites named in it
        (C{TLS_AES_256_GCM_SHA384}) are the TLS 1.3 suites, OpenSSL's
        without any.
    @ivar tlsMinVersion: The lowest TLS version accepted, C{"TLSv1.2"} or
        C{"TLSv1.3"}.
    @ivar sniCallback: C{callback(name)} choosing a certificate for an SNI
        name that C{sniOptions} does not cover (a host name only: a client's
        SNI that is none gets the default certificate unasked): an
        C{OpenSSL.SSL.Context} (or an object with C{getContext()}), C{None}
        for the default certificate, or a Deferred of either.  The handshake
        cannot wait: a Deferred answer is cached and served from the next
        handshake for that name on (see C{docs/tls-auth.md}).
    """

    name: str = field(factory=defaultName, converter=hostName, validator=replyText)
    banner: str | None = field(default=None, converter=plainText, validator=checkBanner)
    heloResponse: str = field(
        default=DEFAULT_HELO_RESPONSE, converter=plainText, validator=checkHelo
    )
    size: int = field(default=DEFAULT_SIZE, validator=size)
    hideSize: bool = field(default=False, validator=switch)
    lmtp: bool = field(default=False, validator=switch)
    certificate: str | None = field(default=None, converter=_certificate)
    privateKey: str | None = field(default=None, converter=_privateKey)
    caCertificates: str | None = field(default=None, converter=_caCertificates)
    sniOptions: Mapping[str, tuple[str, str | None]] = field(factory=dict, converter=_sniOptions)
    requestCert: bool = field(default=False, validator=switch)
    rejectUnauthorized: bool = field(default=True, validator=switch)
    hideSTARTTLS: bool = field(default=False, validator=switch)
    allowInsecureAuth: bool = field(default=False, validator=switch)
    authMethods: tuple[str, ...] = field(
        default=("PLAIN", "LOGIN"), converter=_authMethods, validator=checkAuthMethods
    )
    authOptional: bool = field(default=False, validator=switch)
    authRequiredMessage: str = field(
        default="Error: authentication required", converter=plainText, validator=checkAuthRequired
    )
    maxAllowedUnauthenticatedCommands: int = field(default=10, validator=count)
    maxAuthFailures: int = field(default=3, validator=positiveCount)
    disabledCommands: tuple[str, ...] = field(
        default=(), converter=_disabledCommands, validator=checkCommands
    )
    hidePIPELINING: bool = field(default=False, validator=switch)
    hide8BITMIME: bool = field(default=False, validator=switch)
    hideSMTPUTF8: bool = field(default=False, validator=switch)
    hideENHANCEDSTATUSCODES: bool = field(default=False, validator=switch)
    hideDSN: bool = field(default=False, validator=switch)
    hideREQUIRETLS: bool = field(default=False, validator=switch)
    hideCHUNKING: bool = field(default=False, validator=switch)
    socketTimeout: float = field(default=60.0, validator=timeout)
    handlerTimeout: float = field(default=600.0, validator=timeout)
    tlsHandshakeTimeout: float = field(default=30.0, validator=timeout)
    closeTimeout: float = field(default=30.0, validator=seconds)
    maxClients: int = field(default=0, validator=count)
    maxClientsPerIp: int = field(default=0, validator=count)
    maxConnectionRate: tuple[int, float] | None = field(
        default=None, converter=_maxConnectionRate, validator=checkRate
    )
    maxAuthRate: tuple[int, float] | None = field(
        default=None, converter=_maxAuthRate, validator=checkRate
    )
    limitExemptions: tuple[IPNetwork, ...] = field(default=(), converter=_limitExemptions)
    clientIpv6PrefixLength: int = field(default=84, validator=prefixLength)
    minDataRate: tuple[int, float] | None = field(
        default=None, converter=_minDataRate, validator=checkRate
    )
    maxRecipients: int = field(default=1000, validator=positiveCount)
    maxErrors: int = field(default=20, validator=positiveCount)
    softErrorLimit: int = field(default=10, validator=positiveCount)
    errorSleep: float = field(default=1.0, validator=errorSleep)
    maxJunkCommands: int = field(default=100, validator=count)
    maxLineLength: int = field(default=512, validator=positiveCount)
    bareNewline: str = field(default="reject", validator=checkBareNewline)
    lenientAddresses: bool = field(default=False, validator=switch)
    disableReverseLookup: bool = field(default=False, validator=switch)
    useProxy: tuple[IPNetwork, ...] = field(default=(), converter=_useProxy)
    ignoredHosts: tuple[str, ...] = field(default=(), converter=normaliseHosts)
    useXClient: tuple[IPNetwork, ...] = field(default=(), converter=_useXClient)
    useXForward: tuple[IPNetwork, ...] = field(default=(), converter=_useXForward)
    tlsCiphers: str | None = field(default=None, validator=textOrNone)
    tlsMinVersion: str = field(default="TLSv1.2", validator=textOrNone)
    sniCallback: Callable[[str], object] | None = field(default=None, validator=callableOrNone)

    @property
    def enhancedStatusCodes(self) -> bool:
        """
        Whether replies carry enhanced status codes: always in LMTP
        (RFC 2033 section 4.3 requires them), else unless hidden.
        """
        return self.lmtp or not self.hideENHANCEDSTATUSCODES
