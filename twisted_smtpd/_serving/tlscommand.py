# -*- test-case-name: tests.test_starttls -*-
"""
STARTTLS (RFC 3207) and the end of a TLS handshake inside a session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.grammar import Phase
from twisted_smtpd._serving.flow import PAUSE_HOOK
from twisted_smtpd._serving.tls import tlsInfo

if TYPE_CHECKING:
    from twisted_smtpd._serving.protocol import SMTPProtocol


def startTLS(p: SMTPProtocol, argument: bytes) -> None:
    """
    Answer 220 and switch the connection to TLS.
    """
    factory = p._serverFactory
    if argument:
        p._fail(catalogue.SYNTAX_ERROR)
        return
    if p.session.secure:
        p._fail(catalogue.ALREADY_SECURE)
        return
    if factory is None or not factory.startTLSAvailable:
        p._fail(catalogue.NOT_IMPLEMENTED)
        return
    contextFactory = factory.tls.contextFactory()
    p._send(catalogue.READY_FOR_TLS)
    # The 220 must leave in plaintext, before the switch.
    p._flush()
    # RFC 3207 section 4.2 and CVE-2011-0411: whatever the client
    # pipelined behind STARTTLS in plaintext is discarded, never run.
    p._buffer = b""
    # Hold commands, but keep reading: the handshake needs it.
    p._waiting = True
    p._startingTLS = True
    p._handshakeSince = p._clock.seconds()
    transport: Any = p.transport
    transport.startTLS(contextFactory)


def handshakeCompleted(p: SMTPProtocol, implicit: bool) -> None:
    """
    Record the TLS session; after STARTTLS forget everything the client
    said before (RFC 3207 section 4.2: a new EHLO is needed, the envelope
    and any AUTH are gone), then ask C{onSecure}.
    """
    session = p.session
    session.secure = True
    session.tls = tlsInfo(p.transport)
    p._emit("secure", tls=session.tls)
    if implicit:
        p._beginSession()
        return
    p._startingTLS = False
    p._resetTransaction()
    p._phase = Phase.CONNECTED
    session.user = None
    session.openingCommand = None
    session.hostNameAppearsAs = None
    session.transmissionType = "SMTP"
    p._setPause(PAUSE_HOOK, True)
    p._hookThenResume(p._handler.onSecure, _accept, p._closeWith)


def _accept(result: object) -> None:
    """
    Nothing to say when onSecure accepts.
    """
