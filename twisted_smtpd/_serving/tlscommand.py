# -*- test-case-name: tests.test_starttls -*-
"""
STARTTLS (RFC 3207) and the end of a TLS handshake inside a session.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.grammar import Phase
from twisted_smtpd._serving.flow import PAUSE_HOOK
from twisted_smtpd._serving.greeting import beginSession
from twisted_smtpd._serving.logging import clientAddress, loggable, unlogged
from twisted_smtpd._serving.tls import closeAfterCloseNotify, tlsInfo, verifyFailure
from twisted_smtpd._serving.tlsfailures import failureReason, tellHandshakeFailed

if TYPE_CHECKING:
    from twisted_smtpd._serving.context import SessionControl

#: The lines of a STARTTLS the server cannot honour (its own configuration,
#: not the session's doing): the session's own lines are in
#: C{twisted_smtpd.session} (C{p.log}).
_log = Logger()


def startTLS(p: SessionControl, argument: bytes) -> None:
    """
    Answer 220 and switch the connection to TLS.
    """
    factory = p.server
    if argument:
        p.fail(catalogue.SYNTAX_ERROR)
        return
    if p.session.secure:
        p.fail(catalogue.ALREADY_SECURE)
        return
    if factory is None or not factory.startTLSAvailable:
        p.fail(catalogue.NOT_IMPLEMENTED)
        return
    if getattr(p.transport, "startTLS", None) is None:
        # A connection that cannot switch (twisted_smtpd.testing's memory
        # session, a factory served over stdio): 454 rather than a 220
        # followed by an exception.
        _log.warn("STARTTLS refused: this connection cannot switch to TLS")
        p.fail(catalogue.TLS_UNAVAILABLE)
        return
    try:
        contextFactory = factory.tls.contextFactory()
    except ValueError as e:
        # The self-signed certificate, made at the first STARTTLS, failed.
        _log.error("STARTTLS refused: the TLS configuration failed: {error}", error=str(e))
        p.fail(catalogue.TLS_UNAVAILABLE)
        return
    p.reply(catalogue.READY_FOR_TLS)
    tarpit = p.tarpit
    if tarpit is not None and tarpit.holding:
        # Past softErrorLimit the 220 is held: the switch follows it.
        tarpit.then(partial(p.beginTLS, contextFactory))
        return
    p.beginTLS(contextFactory)


def pipelinedDiscarded(p: SessionControl, octets: int) -> None:
    """
    Log that C{octets} the client sent in plaintext right behind STARTTLS
    were discarded (RFC 3207 section 4.2; the command injection of
    CVE-2011-0411), as Postfix's smtpd does: one line naming the client
    and the count, never the bytes, but for a client of C{ignoredHosts}.
    """
    if octets <= 0 or unlogged(p):
        return
    p.log.warn(
        "{session} {client} improper command pipelining after STARTTLS: {octets} octets discarded",
        session=p.session.id,
        client=clientAddress(p.session.remoteAddress),
        octets=octets,
    )


def handshakeCompleted(p: SessionControl) -> None:
    """
    A TLS handshake finished (STARTTLS or implicit TLS): record the TLS
    session; after STARTTLS forget everything the client said before (RFC
    3207 section 4.2: a new EHLO is needed, the envelope and any AUTH are
    gone), then ask C{onSecure}.  On an implicit TLS
    connection the session begins instead (L{beginSession}), and its
    C{secure} event comes after its C{connect} one.  A session already
    closing (an implicit TLS connection refused at connect for a limit or
    a server shutting down, whose client finished the handshake to read its
    421) does not begin: its refusal stays its only line and event, and
    its connection closes once the TLS layer has sent the 421 and the
    server's close_notify, in this same turn, after this call
    (L{closeAfterCloseNotify}).
    """
    p.times.handshakeSince = None
    if p.closing:
        p.clock.callLater(0, closeAfterCloseNotify, p.transport)
        return
    session = p.session
    session.secure = True
    session.tls = tlsInfo(p.transport)
    if p.implicitTLS:
        # The session begins now: its C{secure} event follows its
        # C{connect} (L{runConnectHooks}), once the client is named.
        beginSession(p)
        return
    p.emit("secure", tls=session.tls)
    p.resetTransaction()
    p.phase = Phase.CONNECTED
    session.user = None
    session.openingCommand = None
    session.hostNameAppearsAs = None
    session.transmissionType = "SMTP"
    p.setPause(PAUSE_HOOK, True)
    p.hookThenResume(p.handler.onSecure, _accept, p.closeWith)


def handshakeFailed(p: SessionControl, reason: Failure) -> None:
    """
    The connection ended in the middle of a TLS handshake (a client that
    is not speaking TLS, a protocol or cipher it does not share, or one
    that went away): one log line saying why, and a C{tlsfailed} event
    (L{tellHandshakeFailed
    <twisted_smtpd._serving.tlsfailures.tellHandshakeFailed>}), but for a
    client of C{ignoredHosts}, whose sessions leave neither (a health
    check that opens an implicit TLS port and closes it).
    """
    if unlogged(p):
        return
    error = _why(reason.value)
    detail = verifyFailure(p.transport)
    if detail is not None and "certificate verify failed" in error:
        # OpenSSL's own reason says only that: which error, and of which
        # certificate of the client's chain.
        error = f"{error}: {detail}"
    p.log.info(
        "{session} {client} TLS handshake failed: {error}",
        session=p.session.id,
        client=clientAddress(p.session.remoteAddress),
        error=loggable(error, 120),
    )
    tellHandshakeFailed(p, failureReason(reason.value), error)


def sessionFailed(p: SessionControl, reason: Failure) -> None:
    """
    A TLS session ended on an error of the TLS layer after its handshake (a
    record that does not decrypt, a malformed one, a fatal alert from the
    client): one line with OpenSSL's reason, as for a failed handshake, but
    for a client of C{ignoredHosts}.  A session that simply ended (a FIN,
    a reset, the server's own close) adds none.
    """
    error = reason.value
    if not isinstance(error, SSL.Error):
        return
    if unlogged(p):
        return
    p.log.info(
        "{session} {client} TLS error: {error}: connection closed",
        session=p.session.id,
        client=clientAddress(p.session.remoteAddress),
        error=loggable(_why(error), 120),
    )


def _why(error: BaseException | None) -> str:
    """
    What ended a TLS connection, for a log line.
    """
    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list):
        # OpenSSL's reasons: (library, function, reason) triples.
        return "; ".join(str(entry[-1]) for entry in error.args[0] if entry) or "TLS error"
    if isinstance(error, ConnectionDone):
        return "connection closed"
    if isinstance(error, ConnectionLost):
        return "connection lost"
    return type(error).__name__ if error is not None else "connection lost"


def _accept(result: object) -> None:
    """
    Nothing to say when onSecure accepts.
    """
