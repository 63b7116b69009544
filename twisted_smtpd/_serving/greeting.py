# -*- test-case-name: tests.test_protocol -*-
"""
The start of a session: the reverse lookup of the client, C{onConnect} (and
C{onSecure} on an implicit TLS connection), then the 220 greeting or the
refusal.  Functions of the protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.replies import Reply
from twisted_smtpd._serving.flow import PAUSE_HOOK

if TYPE_CHECKING:
    from twisted_smtpd._serving.context import SessionControl


def beginSession(p: SessionControl) -> None:
    """
    Hold reading, look the client's name up (unless turned off or known from
    the hosts file), then run the connect hooks.
    """
    p.setPause(PAUSE_HOOK, True)
    factory = p.server
    if factory is not None and not p.options.disableReverseLookup:
        ip = p.session.remoteAddress[0]
        known = factory.knownName(ip)
        if known is not None:
            _lookedUp(p, known)
            return
        d = factory.reverseLookup(ip)
        d.addCallback(lambda name: _lookedUp(p, name))
    else:
        runConnectHooks(p)


def _lookedUp(p: SessionControl, name: str | None) -> None:
    if name:
        p.session.clientHostname = name
    if p.connected and not p.closing:
        runConnectHooks(p)


def runConnectHooks(p: SessionControl, previousAddress: tuple[str, int] | None = None) -> None:
    """
    C{onConnect}, then C{onSecure} on an implicit TLS connection, then the
    greeting; a refusal closes the session with its reply.

    @param previousAddress: The client's address before, when the session
        began already and starts over as another client's (XCLIENT): its
        C{connect} event carries it, and refused now, the session still
        ends with C{onClose} and a C{close} event.
    """
    again = previousAddress is not None
    p.began = True
    if again:
        p.emit("connect", previousAddress=previousAddress)
    else:
        p.emit("connect")
    if p.implicitTLS and not again:
        # The handshake finished before the session began: told now, so
        # that observers see it after the connect event, with the client
        # named by its reverse lookup.
        p.emit("secure", tls=p.session.tls)

    def refused(reply: Reply) -> None:
        if not again:
            p.refused = True
        p.closeWith(reply)

    def greet(result: object) -> None:
        options = p.options
        p.reply(catalogue.greeting(options.name, options.banner, options.lmtp))

    def connected(result: object) -> None:
        if p.implicitTLS:
            p.hookThenResume(p.handler.onSecure, greet, p.closeWith)
        else:
            greet(result)

    p.hookThenResume(p.handler.onConnect, connected, refused)
