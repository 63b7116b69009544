# -*- test-case-name: tests.test_protocol -*-
"""
The end of a session's connection, however it came: what was in flight is
logged and failed, the server stops counting the connection, and C{onClose}
is told.  Run once per connection, never per command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from twisted_smtpd._serving import tlscommand as _tlscommand
from twisted_smtpd._serving import transaction as _transaction
from twisted_smtpd._serving.hooks import runCloseHook

if TYPE_CHECKING:
    from twisted_smtpd._serving.protocol import SMTPProtocol
    from twisted_smtpd._serving.server import SMTPServerFactory


def connectionLost(p: SMTPProtocol, reason: Failure = connectionDone) -> None:
    """
    Fail a message in flight, forget the connection, tell C{onClose}.

    @param p: The session whose connection is gone.
    @param reason: Why it is gone.
    """
    # Closed by the server (a timeout, a 421: logged already), or by the
    # client, a FIN included.
    serverClosed = p.closing and not p.readClosed
    p.connected, p.closing = False, True
    factory = p.server
    if p.sessionOver:
        if factory is not None:
            factory.forget(p)
    else:
        _endSession(p, reason, serverClosed, factory)
    if factory is not None:
        factory.connectionGone(p)


def sessionOver(p: SMTPProtocol) -> None:
    """
    End the session of C{p} while its connection stays open a little
    longer (a lingering close, L{lingering
    <twisted_smtpd._serving.lingering>}): a message in flight is
    abandoned, the close event and C{onClose} come now, as for a close
    that does not linger, so that a handler's work for the session (a
    message waiting for its turn at a webhook) ends with the session; the
    connection keeps its place under the limits until L{connectionLost}.
    """
    _endSession(p, connectionDone, True, None)
    p.sessionOver = True


def _endSession(
    p: SMTPProtocol, reason: Failure, serverClosed: bool, forget: SMTPServerFactory | None
) -> None:
    # What connectionLost tells of the session itself: once, whether at
    # the connection's end or when a lingering close began.  The factory
    # (forget) forgets it only at the connection's end: a lingering
    # connection keeps its place under the limits, its deadlines checked.
    if p.tarpit is not None:
        # A reply held past softErrorLimit is never sent: the slot is
        # freed now, not when its timer ends.
        p.tarpit.cancel(p)
    # Why, then what was lost.
    if p.times.handshakeSince is not None and not p.refused:
        _tlscommand.handshakeFailed(p, reason)
    elif p.session.tls is not None and not serverClosed:
        _tlscommand.sessionFailed(p, reason)
    if not serverClosed:
        _transaction.chunkLost(p)
    receiver = p.receiver
    if receiver is not None:
        if not (serverClosed or receiver.ended or receiver.finished):
            _transaction.messageLost(p, receiver)
        try:
            receiver.abandon(reason)
        except Exception:
            # The consumer onData piped the body to raised, told of its end
            # (its unregisterProducer): the handler's bug, logged as
            # onData's.  The connection is still forgotten and onClose
            # told, or the limits would count it for good.
            p.logFailure(Failure(), "onData")  # type: ignore[no-untyped-call]
        p.receiver = None
    if forget is not None:
        forget.forget(p)
    # A session that never began (no connect event, no onConnect: an
    # implicit TLS handshake never finished, or the client or server
    # left during the reverse lookup) has no close either.
    if p.began and not p.refused:
        p.emit("close")
        runCloseHook(p)
