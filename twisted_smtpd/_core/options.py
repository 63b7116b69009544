# -*- test-case-name: tests.test_options -*-
"""
L{ServerOptions}: every server setting, validated when it is built.

Names follow nodemailer's C{smtp-server} in Twisted's camelCase.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from attrs import field, frozen

from twisted_smtpd._core.hostname import aLabels, machineName
from twisted_smtpd._core.optionvalues import (
    MIN_RATE_WINDOW,
    MIN_TIMEOUT,
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
from twisted_smtpd._core.replies import MAX_TEXT_OCTETS

AUTH_METHODS = frozenset({"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"})
BARE_NEWLINE_POLICIES = frozenset({"reject", "normalize", "legacy"})
HIDEABLE = frozenset(
    {
        "STARTTLS",
        "SIZE",
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "REQUIRETLS",
        "CHUNKING",
    }
)
KNOWN_COMMANDS = frozenset(
    {
        "EHLO",
        "HELO",
        "LHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "BDAT",
        "RSET",
        "NOOP",
        "QUIT",
        "VRFY",
        "HELP",
        "STARTTLS",
        "AUTH",
        "XCLIENT",
        "XFORWARD",
    }
)


def _noLineBreak(instance: object, attribute: Any, value: str | None) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {type(value).__name__}")
    if value is not None and any(c in value for c in "\r\n\x00"):
        raise ValueError(f"{attribute.name} must not contain CR, LF or NUL")


def _replyText(instance: object, attribute: Any, value: str | None) -> None:
    """
    A text the server writes into its replies: printable US-ASCII only, as
    RFC 5321 section 4.2 has reply text (a client may refuse or mangle
    other bytes, and a control character would reach its terminal or log).

    @raise ValueError: Naming the setting and the first character refused,
        escaped.
    """
    _noLineBreak(instance, attribute, value)
    if value is None:
        return
    for character in value:
        if not " " <= character <= "~":
            shown = ascii(character)
            raise ValueError(
                f"{attribute.name} must be printable US-ASCII (RFC 5321 section 4.2),"
                f" got {shown} at position {value.index(character)}"
            )


def _number(*, whole: bool, positive: bool) -> Callable[[object, Any, float], None]:
    """
    A validator for a count (C{whole}) or a number of seconds: a finite
    C{int} (or C{float} for seconds, never a C{bool}), not negative, and
    above 0 if C{positive}, so that every limit bounds and every deadline
    comes.

    @raise TypeError: Naming the setting, for a value of another type.
    @raise ValueError: Naming the setting, for a value out of range.
    """
    kinds: tuple[type, ...] = (int,) if whole else (int, float)
    what = "a whole number" if whole else "a number of seconds"

    def check(instance: object, attribute: Any, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise TypeError(f"{attribute.name} must be {what}, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{attribute.name} must be finite, got {value!r}")
        if value < 0:
            raise ValueError(f"{attribute.name} must not be negative")
        if positive and value == 0:
            raise ValueError(f"{attribute.name} must be positive")

    return check


_count = _number(whole=True, positive=False)
_positiveCount = _number(whole=True, positive=True)
_seconds = _number(whole=False, positive=False)


def _timeout(instance: object, attribute: Any, value: float) -> None:
    """
    A session timeout: a finite number of seconds (L{_number}), at least
    L{MIN_TIMEOUT}: the deadline sweeper wakes every quarter of the
    shortest, and would spin on less.

    @raise TypeError: Naming the setting, for a value of another type.
    @raise ValueError: Naming the setting, for a shorter one or one not
        finite.
    """
    if isinstance(value, int | float) and not isinstance(value, bool) and value < MIN_TIMEOUT:
        raise ValueError(f"{attribute.name} must be at least {MIN_TIMEOUT:g} second, got {value!r}")
    _seconds(instance, attribute, value)


#: The largest C{size}: the EHLO keyword SIZE and the MAIL parameter SIZE=
#: take at most 20 digits (RFC 1870 section 4); a larger limit would be
#: advertised in a form clients may refuse, and no client could declare a
#: message that large.
MAX_SIZE = 10**20 - 1


def _size(instance: object, attribute: Any, value: int) -> None:
    _count(instance, attribute, value)
    if value > MAX_SIZE:
        raise ValueError(
            f"{attribute.name} must be at most {MAX_SIZE} (20 digits, RFC 1870), or 0 for"
            f" no limit, got {value}"
        )


def _prefixLength(instance: object, attribute: Any, value: int) -> None:
    _count(instance, attribute, value)
    if not 0 <= value <= 128:
        raise ValueError(f"{attribute.name} must be from 0 to 128")


def _checkRate(instance: object, attribute: Any, value: tuple[int, float] | None) -> None:
    if value is None:
        return
    count, seconds = value
    if count <= 0 or not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{attribute.name} must be a positive count per positive seconds")
    if seconds < MIN_RATE_WINDOW:
        # The deadline sweeper would wake every quarter of it.
        raise ValueError(
            f"{attribute.name} must be per at least {MIN_RATE_WINDOW:g} second,"
            f" got per {seconds!r} s"
        )


def _defaultName() -> str:
    """
    This machine's name as an ASCII domain (L{machineName}): U-labels as
    A-labels.

    @raise UnusableMachineName: A C{ValueError} saying to set C{name}.
    """
    return machineName()


def _name(value: str) -> str:
    """
    Convert C{name}: a name in U-labels (C{b\xfccher.example}) written in
    A-labels (C{xn--bcher-kva.example}) with the same IDNA rules as the
    machine's name (L{aLabels}), as a domain in SMTP is ASCII (RFC 5321
    section 4.1.2); an ASCII name (or another type) as it is, for
    L{_replyText} to check.

    @raise ValueError: Naming the setting, for a name with non-ASCII
        characters that cannot be written in A-labels.
    """
    value = plainText(value)  # type: ignore[assignment]
    if not isinstance(value, str) or value.isascii():
        return value
    try:
        return aLabels(value)
    except ValueError as e:
        raise ValueError(
            "name must be printable US-ASCII (RFC 5321 section 4.2) or a domain IDNA can"
            f" write in A-labels: {ascii(value)[:80]} is neither ({e})"
        ) from None


def _checkAuthMethods(instance: object, attribute: Any, value: tuple[str, ...]) -> None:
    unknown = set(value) - AUTH_METHODS
    if unknown:
        shown = ", ".join(ascii(m)[1:-1] for m in sorted(unknown))
        raise ValueError(f"{attribute.name}: unknown AUTH methods: {shown}")


#: The commands a session cannot do without, with what a client could
#: not do if they were disabled.
_SESSION_COMMANDS = {
    "QUIT": "a client could not end its session",
    "RSET": "a client could not drop a transaction",
}


def _checkCommands(instance: object, attribute: Any, value: tuple[str, ...]) -> None:
    unknown = set(value) - KNOWN_COMMANDS
    if unknown:
        shown = ", ".join(ascii(c)[1:-1] for c in sorted(unknown))
        raise ValueError(f"{attribute.name}: unknown commands: {shown}")
    # What every transaction needs: a server without it takes no mail.
    disabled = set(value)
    greetings = ("LHLO",) if getattr(instance, "lmtp", False) else ("EHLO", "HELO")
    needed = [greetings, ("MAIL",), ("RCPT",), ("DATA", "BDAT")]
    for commands in needed:
        if disabled.issuperset(commands):
            raise ValueError(
                f"{attribute.name} must leave {' or '.join(commands)} enabled:"
                " no transaction could be made without it"
            )
    # Every server implements them (RFC 5321 section 4.5.1): a 502 leaves
    # the client no way to end its session or to drop a transaction.
    for command, without in _SESSION_COMMANDS.items():
        if command in disabled:
            raise ValueError(
                f"{attribute.name} must leave {command} enabled: RFC 5321 section"
                f" 4.5.1 requires it ({without})"
            )
    # Without DATA, a message comes by BDAT only, which clients use only
    # where EHLO's (or LHLO's) reply offers CHUNKING (RFC 3030 section 2).
    if "DATA" in disabled:
        why = None
        if getattr(instance, "hideCHUNKING", False):
            why = "CHUNKING is hidden"
        elif not getattr(instance, "lmtp", False) and "EHLO" in disabled:
            why = "EHLO is disabled"
        if why is not None:
            raise ValueError(
                f"{attribute.name} must leave DATA enabled when {why}:"
                " clients send BDAT only where the EHLO or LHLO reply offers CHUNKING"
            )


#: The longest reply line, its code and CRLF included (RFC 5321 section
#: 4.5.3.1.5).
MAX_REPLY_LINE = 512


def _checkBanner(instance: object, attribute: Any, value: str | None) -> None:
    """
    The banner as reply text (L{_replyText}), short enough (with the name)
    that the 220 greeting (C{220 NAME ESMTP BANNER}) fits in one reply line.
    """
    _replyText(instance, attribute, value)
    kind = "LMTP" if getattr(instance, "lmtp", False) else "ESMTP"
    name = getattr(instance, "name", "")
    line = f"220 {name} {kind}" + (f" {value}" if value else "") + "\r\n"
    if len(line) > MAX_REPLY_LINE:
        # The name alone can make it too long, in the library.
        what = attribute.name if value else "name"
        raise ValueError(
            f"{what} makes a 220 greeting of {len(line)} octets, more than the"
            f" {MAX_REPLY_LINE} of a reply line (RFC 5321 section 4.5.3.1.5)"
        )
    # The other reply naming the server (replies.closing).
    line = f"221 2.0.0 {name} Closing connection\r\n"
    if len(line) > MAX_REPLY_LINE:
        raise ValueError(
            f"name makes a 221 reply of {len(line)} octets, more than the"
            f" {MAX_REPLY_LINE} of a reply line (RFC 5321 section 4.5.3.1.5)"
        )


def _checkBareNewline(instance: object, attribute: Any, value: str) -> None:
    if not isinstance(value, str) or value not in BARE_NEWLINE_POLICIES:
        raise ValueError(f"bareNewline must be one of {', '.join(sorted(BARE_NEWLINE_POLICIES))}")


#: The room a HELO or EHLO reply keeps for the client's name (the second
#: C{%s} of C{heloResponse}): the longest address literal,
#: C{[IPv6:ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]}, the name of a client
#: without a reverse name.  A longer client name is cut at run time where
#: the line would pass 512 octets.
CLIENT_NAME_ROOM = len("[IPv6:]") + 39

#: The longest text of a HELO or EHLO reply's first line (C{250 TEXT} or
#: C{250-TEXT}, CRLF): a reply line is 512 octets (RFC 5321 section
#: 4.5.3.1.5).
MAX_HELO_TEXT = 512 - len("250 \r\n")

DEFAULT_HELO_RESPONSE = "%s Nice to meet you, %s"


def _checkHelo(instance: object, attribute: Any, value: str) -> None:
    """
    The HELO/EHLO reply text: reply text (L{_replyText}) with two C{%s},
    short enough that with the server's name and an address literal
    (L{CLIENT_NAME_ROOM}) the reply's first line fits in one reply line.
    """
    _replyText(instance, attribute, value)
    try:
        value % ("a", "b")
    except (TypeError, ValueError) as e:
        raise ValueError("heloResponse must hold two %s placeholders") from e
    line = "250 " + value % (getattr(instance, "name", ""), "x" * CLIENT_NAME_ROOM) + "\r\n"
    if len(line) > MAX_REPLY_LINE:
        what = attribute.name if value != DEFAULT_HELO_RESPONSE else "name"
        raise ValueError(
            f"{what} makes a 250 reply to HELO or EHLO of {len(line)} octets with a client"
            f" name of {CLIENT_NAME_ROOM}, more than the {MAX_REPLY_LINE} of a reply line"
            " (RFC 5321 section 4.5.3.1.5)"
        )


def _checkAuthRequired(instance: object, attribute: Any, value: str) -> None:
    """
    The 530 text: reply text (L{_replyText}) of at most
    L{MAX_TEXT_OCTETS}, as every reply text from outside is (a reply line
    is at most 512 octets with its codes and CRLF, RFC 5321 section
    4.5.3.1.5), so that it is never cut.
    """
    _replyText(instance, attribute, value)
    if len(value) > MAX_TEXT_OCTETS:
        raise ValueError(
            f"{attribute.name} is {len(value)} octets, more than the {MAX_TEXT_OCTETS} of a"
            f" reply text (a reply line is at most {MAX_REPLY_LINE} octets, RFC 5321"
            " section 4.5.3.1.5)"
        )


# The converters of settings given in more than one form, each naming its
# setting in its errors (attrs gives a converter the value only).


def _authMethods(value: Iterable[str]) -> tuple[str, ...]:
    return upperWords("authMethods", value)


def _disabledCommands(value: Iterable[str]) -> tuple[str, ...]:
    return upperWords("disabledCommands", value)


def _maxConnectionRate(value: str | tuple[int, float] | None) -> tuple[int, float] | None:
    return rate("maxConnectionRate", value)


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
        literal (L{CLIENT_NAME_ROOM}) it must fit in a reply line (512
        octets, RFC 5321 section 4.5.3.1.5), and a client name too long
        for what is left is cut (C{...}).
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
    @ivar limitExemptions: Networks exempt from C{maxClientsPerIp} and
        C{maxConnectionRate} (Postfix exempts C{mynetworks}); none by default,
        not even the loopback addresses.
    @ivar clientIpv6PrefixLength: IPv6 clients are counted by their network
        of this many bits for C{maxClientsPerIp} and C{maxConnectionRate}:
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
    @ivar maxJunkCommands: Commands that move no message on (HELO, EHLO,
        LHLO, RSET, NOOP, VRFY, HELP, and BDAT 0 when it is not the last
        chunk; not XCLIENT and XFORWARD, as in Postfix) taken before each
        further one counts as an error, counted like C{maxErrors} (Postfix's
        C{smtpd_junk_command_limit}); 0 for no limit.
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

    name: str = field(factory=_defaultName, converter=_name, validator=_replyText)
    banner: str | None = field(default=None, converter=plainText, validator=_checkBanner)
    heloResponse: str = field(
        default=DEFAULT_HELO_RESPONSE, converter=plainText, validator=_checkHelo
    )
    size: int = field(default=DEFAULT_SIZE, validator=_size)
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
        default=("PLAIN", "LOGIN"), converter=_authMethods, validator=_checkAuthMethods
    )
    authOptional: bool = field(default=False, validator=switch)
    authRequiredMessage: str = field(
        default="Error: authentication required", converter=plainText, validator=_checkAuthRequired
    )
    maxAllowedUnauthenticatedCommands: int = field(default=10, validator=_count)
    maxAuthFailures: int = field(default=3, validator=_positiveCount)
    disabledCommands: tuple[str, ...] = field(
        default=(), converter=_disabledCommands, validator=_checkCommands
    )
    hidePIPELINING: bool = field(default=False, validator=switch)
    hide8BITMIME: bool = field(default=False, validator=switch)
    hideSMTPUTF8: bool = field(default=False, validator=switch)
    hideENHANCEDSTATUSCODES: bool = field(default=False, validator=switch)
    hideDSN: bool = field(default=False, validator=switch)
    hideREQUIRETLS: bool = field(default=False, validator=switch)
    hideCHUNKING: bool = field(default=False, validator=switch)
    socketTimeout: float = field(default=60.0, validator=_timeout)
    handlerTimeout: float = field(default=600.0, validator=_timeout)
    tlsHandshakeTimeout: float = field(default=30.0, validator=_timeout)
    closeTimeout: float = field(default=30.0, validator=_seconds)
    maxClients: int = field(default=0, validator=_count)
    maxClientsPerIp: int = field(default=0, validator=_count)
    maxConnectionRate: tuple[int, float] | None = field(
        default=None, converter=_maxConnectionRate, validator=_checkRate
    )
    limitExemptions: tuple[IPNetwork, ...] = field(default=(), converter=_limitExemptions)
    clientIpv6PrefixLength: int = field(default=84, validator=_prefixLength)
    minDataRate: tuple[int, float] | None = field(
        default=None, converter=_minDataRate, validator=_checkRate
    )
    maxRecipients: int = field(default=1000, validator=_positiveCount)
    maxErrors: int = field(default=20, validator=_positiveCount)
    maxJunkCommands: int = field(default=100, validator=_count)
    maxLineLength: int = field(default=512, validator=_positiveCount)
    bareNewline: str = field(default="reject", validator=_checkBareNewline)
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
