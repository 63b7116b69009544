# -*- test-case-name: tests.test_deadlinecheck -*-
"""
One session whose deadlines cannot be checked (its handler put something
that is not an address in C{session.remoteAddress}) is dropped with one
logged traceback; the others go on being checked and timed out.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_deadlines import LogCatcher, connectFrom
from tests.test_protocol import connect, take
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd.handlers import BaseHandler


class ReplacingPeer(BaseHandler):
    """
    Replaces C{session.remoteAddress} with C{value} at RCPT.
    """

    def __init__(self, value: object) -> None:
        self.value = value

    def onRcptTo(self, address: Address, session: Session) -> object:
        session.remoteAddress = self.value  # type: ignore[assignment]
        return None


class UncheckableSessionTests(SynchronousTestCase):
    """
    The factory's deadline sweep survives a session it cannot check.
    """

    def test_othersStillTimedOut(self) -> None:
        """
        The session whose address is C{None}, a text or an empty tuple is
        aborted at the next sweep with one logged traceback naming it; a
        quiet session of the same server still gets its 421 at
        C{socketTimeout}.
        """
        for value in (None, "192.0.2.7", ()):
            log = LogCatcher(self)
            proto, transport, clock, factory = connect(ReplacingPeer(value), socketTimeout=10)
            other, otherTransport = connectFrom(factory, "192.0.2.9")
            proto.dataReceived(
                b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            )
            take(transport)
            take(otherTransport)
            for _ in range(11):
                clock.advance(1)
            self.assertTrue(transport.disconnecting)
            self.assertNotIn(proto, factory.connections)
            [line] = log.matching("deadlines could not be checked")
            self.assertIn(f"{proto.session.id} deadlines could not be checked", line)
            self.assertEqual(len(self.flushLoggedErrors(TypeError, ValueError)), 1)
            self.assertEqual(take(otherTransport), replies.TIMEOUT)
            self.assertTrue(otherTransport.disconnecting)
            proto.connectionLost(Failure(ConnectionDone()))
            other.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(factory.connections, set())
