# -*- test-case-name: tests.test_summary -*-
"""
The startup summary of C{twistd smtpd}: one line per listener with its
address, one with the settings that matter (delivery, size limit, AUTH),
one per TLS certificate with its subject and expiry (a warning when it is
near), those of C{ssl:} listeners with keys of their own included, in the
C{twisted_smtpd.startup} namespace.
"""

from __future__ import annotations

import contextlib
import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from cryptography import x509
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import Logger

from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.version import __version__
from twisted_smtpd._serving.logging import loggable

if TYPE_CHECKING:
    from twisted_smtpd._serving.service import SMTPServer

#: A certificate expiring within this many days is logged as a warning.
EXPIRY_WARNING_DAYS = 14

_log = Logger(namespace="twisted_smtpd.startup")


def formatAddress(address: object) -> str:
    """
    A listening address as text: C{127.0.0.1:25}, C{[::1]:25}, or a UNIX
    socket's quoted path (C{'/run/smtpd.sock'}).
    """
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        return repr(text)
    return str(address)


def logListener(description: str, address: object, note: str = "") -> None:
    """
    Log that C{description} listens on C{address}; its control characters
    escaped (it comes from the command line or a configuration file).
    """
    where = formatAddress(address)
    _log.info(
        "listening: {description} on {address}{note}",
        description=printable(description),
        address=where,
        note=f" ({note})" if note else "",
    )


def logStopped(description: str, address: object) -> None:
    """
    Log that C{description} no longer listens (the server is stopping).
    """
    _log.info(
        "stopped listening: {description} on {address}",
        description=printable(description),
        address=formatAddress(address),
    )


def logSummary(server: SMTPServer, delivery: str, now: datetime.datetime | None = None) -> None:
    """
    Log the summary of a server that has just started.

    @param delivery: What is done with messages (C{"maildir ./Maildir"}).
    @param now: The time to measure certificate expiry from.
    """
    for description, port in server.listening():
        logListener(description, port.getHost())
    factory = server.factory
    options = factory.options
    if factory.authEnabled:
        auth = ",".join(factory.authMechanisms) + (" (required)" if factory.authRequired else "")
    else:
        auth = "off"
    _log.info(
        "ready: twisted-smtpd {version}, {protocol} as {name}, delivery {delivery},"
        " size limit {size}, AUTH {auth}, max clients {clients}",
        version=__version__,
        protocol="LMTP" if options.lmtp else "SMTP",
        name=options.name,
        delivery=delivery,
        size=options.size or "none",
        auth=auth,
        clients=options.maxClients or "unlimited",
    )
    logCertificates(server, now)


class Served(NamedTuple):
    """
    A leaf certificate the server serves.

    @ivar listener: C{""} for the server's own certificates (STARTTLS and
        every C{ssl:} listener without keys of its own), else the endpoint
        string of the C{ssl:} listener with keys of its own that serves it.
    @ivar servername: C{""} for the default certificate, else its SNI name.
    @ivar certificate: The certificate.
    @ivar selfSigned: Whether it is the self-signed one made for want of a
        configured certificate.
    """

    listener: str
    servername: str
    certificate: x509.Certificate
    selfSigned: bool


def servedCertificates(server: SMTPServer) -> list[Served]:
    """
    The leaf certificates C{server} serves: its own (when in use,
    L{SMTPServer.usesOwnCertificates
    <twisted_smtpd._serving.service.SMTPServer.usesOwnCertificates>}; none
    while the self-signed one waits for its first use),
    then one per C{ssl:} listener with keys of its own.
    """
    served = []
    tls = None
    if server.usesOwnCertificates():
        # None if its files could never be read (a reload says why).
        with contextlib.suppress(ValueError):
            tls = server.factory.tls
    if tls is not None:
        for name, certificate in tls.certificates().items():
            # A worker of --workers serves its parent's, as a file.
            selfSigned = tls.selfSigned or getattr(server, "sharedSelfSigned", False)
            served.append(Served("", name, certificate, selfSigned and not name))
    for own in server.listenerTLS():
        for _, certificate in own.certificates().items():
            served.append(Served(own.label, "", certificate, False))
    return served


def logCertificates(server: SMTPServer, now: datetime.datetime | None = None) -> None:
    """
    Log each TLS certificate's subject and expiry (see
    L{servedCertificates}); at warning level when it expires within
    L{EXPIRY_WARNING_DAYS} days or has expired.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    _logWarnings(server)
    for listener, name, certificate, selfSigned in servedCertificates(server):
        # The endpoint string, from the command line.
        listener = printable(listener)
        expires: Any = certificate.not_valid_after_utc
        # Whole days, towards zero: a day and a half ago is one day ago.
        days = (expires - now).days if expires >= now else -(now - expires).days
        # Read from a file, not trusted: RFC 4514 escapes neither line
        # breaks nor other control characters.
        subject = loggable(certificate.subject.rfc4514_string(), 400)
        fields = {
            "subject": subject,
            "servername": name or None,
            "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "days": days,
            "selfSigned": selfSigned,
            "listener": listener or None,
        }
        which = f"TLS certificate for SNI {name}" if name else "TLS certificate"
        if listener:
            which = f"TLS certificate of {listener}"
        if selfSigned:
            which += " (self-signed)"
        if expires < now:
            text = f"{which}: {subject}, expired {fields['expires']} ({-days} days ago)"
        else:
            text = f"{which}: {subject}, expires {fields['expires']} (in {days} days)"
        if days < EXPIRY_WARNING_DAYS:
            _log.warn("{text}; renew it", text=text, **fields)
        else:
            _log.info("{text}", text=text, **fields)


def _logWarnings(server: SMTPServer) -> None:
    """
    Log, once each, the warnings of the TLS configurations in use (a CA of
    client certificates no chain can verify to), those of C{ssl:}
    listeners with keys of their own included.
    """
    configurations = list(server.listenerTLS())
    if server.usesOwnCertificates():
        with contextlib.suppress(ValueError):
            configurations.insert(0, server.factory.tls)
    warnings = [text for tls in configurations for text in tls.warnings()]
    for text in dict.fromkeys(warnings):
        _log.warn("{text}", text=text)
