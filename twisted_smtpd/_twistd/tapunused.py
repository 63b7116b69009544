# -*- test-case-name: tests.test_configvalues -*-
"""
The flags of C{twistd smtpd} given where they change nothing: TLS settings
with no listener offering TLS, AUTH settings with no AUTH offered, and the
like (L{unusedFlags}), and a C{haproxy:} listener believing the PROXY
headers of anyone for want of C{--proxy-trusted}; and a C{backlog=} the
kernel lowers (L{cappedBacklogs}).  They are not refused (a
configuration that starts keeps starting, a listener may be added later):
the server logs one warning line for each at start.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.authmechanisms import decidableMechanisms, ownsOnAuth
from twisted_smtpd._serving.listeners import (
    OwnKeys,
    endpointKind,
    servesServerTLS,
    splitDescription,
)
from twisted_smtpd._serving.sni import securityLevel, splitCiphers

if TYPE_CHECKING:
    from twisted.cred.checkers import ICredentialsChecker

__all__ = ["cappedBacklogs", "unusedFlags"]

#: Where Linux keeps the most connections a listening socket's backlog
#: holds (C{net.core.somaxconn}): C{listen()} lowers a larger backlog to it
#: without a word.
SOMAXCONN = "/proc/sys/net/core/somaxconn"

#: Flags that set the TLS of every listener offering TLS, the server's own
#: or an C{ssl:} listener's with keys of its own.
_ANY_TLS = ("request-cert", "tls-ciphers", "tls-min-version", "tls-handshake-timeout")

#: Flags that set the server's own certificates (STARTTLS, C{ssl:}
#: listeners without keys of their own).
_SERVER_TLS = ("tls-cert", "tls-key", "sni")

#: The least message size every server must accept (RFC 5321 section
#: 4.5.3.1.7: 64K octets).
MIN_MESSAGE_SIZE = 65536

#: Flags that count clients by their address, or set how.
_PER_ADDRESS = (
    "max-clients-per-ip",
    "max-connection-rate",
    "max-auth-rate",
    "limit-exempt",
    "client-ipv6-prefix-length",
)

#: Flags that only matter when AUTH is offered.
_AUTH = ("allow-insecure-auth", "auth-methods", "max-auth-rate")


def _implicitTLS(description: str) -> bool:
    """
    Whether the listener of C{description} is TLS from the first byte
    (C{ssl:}, behind C{haproxy:} too): nothing is ever said before TLS.
    """
    return any(
        layer == "tls" or isinstance(layer, OwnKeys) for layer in splitDescription(description)[1]
    )


def _believesAnyone(description: str) -> bool:
    """
    Whether the listener of C{description} reads PROXY headers from peers
    that have an address (C{--proxy-trusted} would name them): a
    C{haproxy:} one but C{haproxy:unix:} (or a C{systemd:} UNIX socket),
    whose socket file's permissions decide who connects.
    """
    return "haproxy" in splitDescription(description)[1] and not _unixSocket(description)


def _unixSocket(description: str) -> bool:
    """
    Whether the listener of C{description} is a UNIX socket (C{unix:}, or
    a C{systemd:} one of C{domain=UNIX}), behind C{haproxy:} or not.
    """
    kind = endpointKind(description)
    return kind == "unix" or (kind == "systemd" and "domain=unix" in description.lower())


def _addressless(description: str) -> bool:
    """
    Whether the clients of the listener of C{description} have no address:
    a UNIX socket that reads no PROXY header.
    """
    return _unixSocket(description) and "haproxy" not in splitDescription(description)[1]


def _onlyTLS12Ciphers(options: ServerOptions) -> bool:
    """
    Whether the cipher string changes nothing of a TLS 1.3 handshake, the
    only kind the minimum version allows: it names no TLS 1.3 suite and
    sets no security level.
    """
    if options.tlsCiphers is None or options.tlsMinVersion != "TLSv1.3":
        return False
    _, suites = splitCiphers(options.tlsCiphers)
    return not suites and securityLevel(options.tlsCiphers) is None


#: A security level set in a cipher string (C{@SECLEVEL=2}, alone or at the
#: end of an element: C{DEFAULT@SECLEVEL=2}), which applies to TLS 1.3 too.
_SECURITY_LEVEL = re.compile(r"@SECLEVEL=[0-9]+")


def _ignoredTLS12Ciphers(options: ServerOptions) -> str:
    """
    The part of a cipher string naming TLS 1.3 suites that changes nothing
    of a TLS 1.3 handshake, the only kind the minimum version allows: its
    TLS 1.2 ciphers, all of it but the suites (C{TLS_*}) and a
    C{@SECLEVEL}; C{""} when it has none, names no suite, or when TLS 1.2
    is allowed.  Without a suite the TLS 1.2 ciphers are not idle words: a
    C{@SECLEVEL} alone selects no cipher and is refused, so that a string
    setting a security level for TLS 1.3 must name some.
    """
    if options.tlsCiphers is None or options.tlsMinVersion != "TLSv1.3":
        return ""
    tls12, suites = splitCiphers(options.tlsCiphers)
    if not suites:
        return ""
    elements = (_SECURITY_LEVEL.sub("", element) for element in tls12.split(":"))
    return ":".join(element for element in elements if element)


def _hiddenNeverOffered(
    listen: Sequence[str], options: ServerOptions, anyTLS: bool, noTLS: str
) -> list[str]:
    """
    One line for each C{--hide} of an extension no session ever offers:
    STARTTLS disabled, or every listener TLS from the start (STARTTLS is
    not offered inside TLS); CHUNKING with BDAT disabled; REQUIRETLS,
    offered only over TLS, with no listener offering TLS; any extension
    with EHLO disabled (an SMTP server's HELO advertises none).
    """
    if not options.lmtp and "EHLO" in options.disabledCommands:
        return [
            "--hide has no effect: EHLO is disabled (--disable EHLO): no extension is advertised"
        ]
    lines = []
    if options.hideSTARTTLS:
        if "STARTTLS" in options.disabledCommands:
            lines.append("--hide STARTTLS has no effect: STARTTLS is disabled")
        elif all(_implicitTLS(description) for description in listen):
            lines.append(
                "--hide STARTTLS has no effect: every listener is TLS from the start (ssl:),"
                " where STARTTLS is never offered"
            )
    if options.hideCHUNKING and "BDAT" in options.disabledCommands:
        lines.append("--hide CHUNKING has no effect: BDAT is disabled (--disable BDAT)")
    if options.hideREQUIRETLS and not anyTLS:
        lines.append(f"--hide REQUIRETLS has no effect: it is offered only over TLS, and {noTLS}")
    return lines


def _backlogCap() -> int | None:
    """
    The kernel's limit on a listening socket's backlog (L{SOMAXCONN}), or
    C{None} where it cannot be read (not Linux).
    """
    try:
        with open(SOMAXCONN, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _backlog(description: str) -> int | None:
    """
    The C{backlog=} the listener of C{description} gives C{listen()}, if
    it names one: a C{tcp:}, C{tcp6:}, C{unix:} or C{ssl:} listener
    (behind C{haproxy:} too); the description parses.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    base = splitDescription(description)[0]
    if base.partition(":")[0].strip().lower() not in ("tcp", "tcp6", "unix"):
        # systemd: sockets are listening already.
        return None
    parse: Any = serverFromString  # unannotated in Twisted
    endpoint = parse(reactor, base)
    backlog = getattr(endpoint, "_backlog", None)
    return backlog if isinstance(backlog, int) else None


def cappedBacklogs(listen: Sequence[str]) -> list[str]:
    """
    One line for each listener whose C{backlog=} is above the kernel's
    limit, which C{listen()} silently lowers it to.

    @param listen: The C{--listen} endpoint strings (they parse).
    """
    cap = _backlogCap()
    if cap is None:
        return []
    lines = []
    for description in listen:
        backlog = _backlog(description)
        if backlog is not None and backlog > cap:
            lines.append(
                f"--listen {description!r}: backlog={backlog} is above the kernel's limit"
                f" of {cap} (net.core.somaxconn), which it is lowered to: raise that"
                f" sysctl, or give at most {cap}"
            )
    return lines


def unusedFlags(
    given: Collection[str],
    listen: Sequence[str],
    options: ServerOptions,
    checkers: Sequence[ICredentialsChecker],
    handler: object,
    workers: int,
) -> list[str]:
    """
    One line for each flag of C{given} that has no effect in this
    configuration, in the order of the checks.

    @param given: The long names of the flags given, on the command line
        or in the configuration file.
    @param listen: The C{--listen} endpoint strings (they parse).
    @param options: The server's options.
    @param checkers: The C{--auth} checkers.
    @param handler: The delivery handler (its own C{onAuth} offers AUTH).
    @param workers: The number of processes (C{--workers}).
    """
    lines: list[str] = []
    startTLS = "STARTTLS" not in options.disabledCommands
    serverTLS = any(servesServerTLS(description, startTLS) for description in listen)
    layers = [layer for description in listen for layer in splitDescription(description)[1]]
    anyTLS = serverTLS or any(isinstance(layer, OwnKeys) for layer in layers)

    def unused(flag: str, why: str) -> None:
        if flag in given:
            lines.append(f"--{flag} has no effect: {why}")

    noTLS = "no listener offers TLS (STARTTLS is disabled and there is no ssl: listener)"
    for flag in _ANY_TLS:
        if not anyTLS:
            unused(flag, noTLS)
    for flag in _SERVER_TLS:
        if not anyTLS:
            unused(flag, noTLS)
        elif not serverTLS:
            unused(
                flag,
                "no listener offers the server's TLS (STARTTLS is disabled and every"
                " ssl: listener has keys of its own)",
            )
    if anyTLS and _onlyTLS12Ciphers(options):
        unused(
            "tls-ciphers",
            "it names only TLS 1.2 ciphers (no TLS_* suite, no @SECLEVEL) and"
            " --tls-min-version 1.3 allows only TLS 1.3",
        )
    elif anyTLS and "tls-ciphers" in given:
        # Its TLS 1.3 suites apply (and its security level): the line names
        # the rest, dropped without a word by OpenSSL for a handshake that
        # cannot be TLS 1.2, and which the string may leave out.
        ignored = _ignoredTLS12Ciphers(options)
        if ignored:
            lines.append(
                f"--tls-ciphers: {ignored!r} has no effect: TLS 1.2 ciphers, and"
                " --tls-min-version 1.3 allows only TLS 1.3 (only the TLS_* suites"
                " and any @SECLEVEL of the string apply)"
            )
    if anyTLS and not options.requestCert:
        unused("tls-ca", "no client certificate is asked for without --request-cert")
    elif not anyTLS:
        unused("tls-ca", noTLS)
    methods = () if "AUTH" in options.disabledCommands else options.authMethods
    if not checkers and not decidableMechanisms(methods, None, ownsOnAuth(handler)):
        for flag in _AUTH:
            unused(flag, "AUTH is not offered (no --auth, no --handler whose onAuth decides it)")
    elif all(_implicitTLS(description) for description in listen):
        unused("allow-insecure-auth", "every listener is TLS from the start (ssl:)")
    elif not anyTLS and not options.allowInsecureAuth:
        # No session is ever encrypted, and AUTH waits for one.
        why = f"AUTH is offered only over TLS (no --allow-insecure-auth) and {noTLS}"
        if not options.authOptional:
            why += "; AUTH being required (no --auth-optional), all mail is refused"
        unused("auth", why)
    if "hide" in given:
        lines += _hiddenNeverOffered(listen, options, anyTLS, noTLS)
    if options.lmtp and "hide" in given:
        for keyword, hidden in (
            ("PIPELINING", options.hidePIPELINING),
            ("ENHANCEDSTATUSCODES", options.hideENHANCEDSTATUSCODES),
        ):
            if hidden:
                lines.append(
                    f"--hide {keyword} has no effect: LMTP always offers it (RFC 2033 section 5)"
                )
    if "haproxy" not in layers:
        unused("proxy-trusted", "no haproxy: listener reads PROXY headers")
    elif not options.useProxy:
        lines += [
            f"--listen {description!r}: every PROXY header is believed, from any address"
            " (no --proxy-trusted): bind it where only the proxies reach it, or name them"
            " with --proxy-trusted CIDR"
            for description in listen
            if _believesAnyone(description)
        ]
    if "XCLIENT" in options.disabledCommands:
        unused("xclient", "XCLIENT is disabled")
    if "XFORWARD" in options.disabledCommands:
        unused("xforward", "XFORWARD is disabled")
    if (
        not options.maxClientsPerIp
        and options.maxConnectionRate is None
        and options.maxAuthRate is None
    ):
        why = "no per-address limit (--max-clients-per-ip, --max-connection-rate, --max-auth-rate)"
        unused("limit-exempt", why)
        unused("client-ipv6-prefix-length", why)
    elif all(_addressless(description) for description in listen):
        for flag in _PER_ADDRESS:
            unused(
                flag,
                "every listener is a UNIX socket, whose clients have no address to count"
                " (a haproxy:unix: listener counts the PROXY header's)",
            )
    if options.disableReverseLookup:
        unused("dns-server", "--no-reverse-lookup: no client name is looked up")
    if workers <= 1:
        unused("worker-timeout", "no --workers")
    if 0 < options.maxClients <= options.maxClientsPerIp:
        unused(
            "max-clients-per-ip",
            f"--max-clients {options.maxClients} refuses any connection past it first",
        )
    if 0 < options.size < MIN_MESSAGE_SIZE:
        lines.append(
            f"--size {options.size} is below the {MIN_MESSAGE_SIZE} octets RFC 5321 section"
            " 4.5.3.1.7 asks every server to accept: messages other servers take are refused"
        )
    return lines
