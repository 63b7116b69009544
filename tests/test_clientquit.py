# -*- test-case-name: tests.test_clientquit -*-
"""
The outcome of a dialogue is handed on without waiting for the reply to
QUIT (as Postfix's C{smtp_skip_quit_response = yes}); the connection is
still closed, within L{QUIT_TIMEOUT} even when the next hop reads nothing
more.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.trial.unittest import SynchronousTestCase

from tests.test_client import EHLO_PIPELINING, FakeEndpoint, TLSStringTransport, sessionRequest
from twisted_smtpd._smtpclient.client import DeliveryError, DeliveryResult, deliver
from twisted_smtpd._smtpclient.clientprotocol import QUIT_TIMEOUT
from twisted_smtpd._smtpclient.clientsession import RSET_TIMEOUT, ClientSession, openSession


class StuckTransport(TLSStringTransport):
    """
    A connection whose peer reads nothing more: closing it never
    completes, only an abort ends it.
    """

    aborted = False

    def loseConnection(self) -> None:
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.aborted = True
        StringTransportWithDisconnection.loseConnection(self)


def stuckEndpoint() -> FakeEndpoint:
    """
    A L{FakeEndpoint} connecting to a L{StuckTransport}.
    """
    endpoint = FakeEndpoint()
    endpoint.transport = StuckTransport()
    return endpoint


class QuitNotAwaitedTests(SynchronousTestCase):
    """
    L{deliver} and L{openSession} hand their outcome on at once after
    saying QUIT.
    """

    def deliver(self, endpoint: FakeEndpoint, clock: Clock) -> Deferred[DeliveryResult]:
        return deliver(
            endpoint,  # type: ignore[arg-type]
            sender="alice@example.com",
            recipients=["bob@example.org"],
            stream=b"Subject: hi\r\n\r\nbody\r\n",
            heloName="client.example",
            tls="none",
            reactor=clock,
        )

    def assertClosedByDeadline(self, transport: Any, clock: Clock) -> None:
        """
        QUIT is the last thing written, the close is begun, and a next hop
        that never lets it complete is cut off after L{QUIT_TIMEOUT}.
        """
        self.assertTrue(transport.value().endswith(b"QUIT\r\n"))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        clock.advance(QUIT_TIMEOUT - 0.1)
        self.assertFalse(transport.aborted)
        clock.advance(0.1)
        self.assertTrue(transport.aborted)

    def test_refusedGreeting(self) -> None:
        """
        A greeting refusing the session fails the delivery with that reply
        as soon as QUIT is written, not once QUIT is answered.
        """
        clock, endpoint = Clock(), stuckEndpoint()
        result = self.deliver(endpoint, clock)
        endpoint.protocol.dataReceived(b"554 5.7.1 go away\r\n")
        error = self.failureResultOf(result, DeliveryError).value
        self.assertEqual((error.code, error.stage), (554, "greeting"))
        self.assertClosedByDeadline(endpoint.transport, clock)

    def test_refusedSender(self) -> None:
        """
        A refused MAIL fails the delivery at once, QUIT unanswered.
        """
        clock, endpoint = Clock(), stuckEndpoint()
        result = self.deliver(endpoint, clock)
        protocol = endpoint.protocol
        protocol.dataReceived(b"220 mx ESMTP\r\n")
        protocol.dataReceived(EHLO_PIPELINING)
        protocol.dataReceived(b"553 5.7.1 no\r\n503 5.5.1 no\r\n554 5.5.1 no\r\n")
        error = self.failureResultOf(result, DeliveryError).value
        self.assertEqual((error.code, error.stage), (553, "mail"))
        self.assertClosedByDeadline(endpoint.transport, clock)

    def test_delivered(self) -> None:
        """
        The 250 after the body is the outcome at once, QUIT unanswered.
        """
        clock, endpoint = Clock(), stuckEndpoint()
        result = self.deliver(endpoint, clock)
        protocol = endpoint.protocol
        protocol.dataReceived(b"220 mx ESMTP\r\n")
        protocol.dataReceived(EHLO_PIPELINING)
        protocol.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
        protocol.dataReceived(b"250 2.0.0 queued\r\n")
        self.assertEqual(self.successResultOf(result).recipients[0].reply.code, 250)
        # The reply to QUIT coming does not lift the deadline of the close.
        protocol.dataReceived(b"221 2.0.0 bye\r\n")
        self.assertClosedByDeadline(endpoint.transport, clock)

    def test_sessionRefused(self) -> None:
        """
        L{openSession} fails with a refused EHLO at once, QUIT unanswered.
        """
        clock, endpoint = Clock(), stuckEndpoint()
        opened: Deferred[ClientSession] = Deferred.fromCoroutine(
            openSession(endpoint, sessionRequest(), clock)  # type: ignore[arg-type]
        )
        endpoint.protocol.dataReceived(b"220 mx ESMTP\r\n")
        endpoint.protocol.dataReceived(b"421 4.3.2 shutting down\r\n")
        error = self.failureResultOf(opened, DeliveryError).value
        self.assertEqual((error.code, error.stage), (421, "hello"))
        self.assertClosedByDeadline(endpoint.transport, clock)


class RsetDeadlineTests(SynchronousTestCase):
    """
    The RSET that checks an idle session before the next message has a
    deadline of its own, Postfix's C{smtp_rset_timeout}.
    """

    def test_silentNextHop(self) -> None:
        """
        A next hop that no longer answers (a session a firewall dropped
        while idle): the RSET fails after L{RSET_TIMEOUT} seconds, not
        after the reply timeout, and the session is dropped; the commands
        of a session that answered keep the reply timeout.
        """
        clock = Clock()
        endpoint = FakeEndpoint()
        request = evolve(sessionRequest(), timeout=300.0)
        opening = Deferred.fromCoroutine(openSession(endpoint, request, clock))  # type: ignore[arg-type]
        endpoint.protocol.dataReceived(b"220 mx ESMTP\r\n")
        endpoint.protocol.dataReceived(b"250 mx\r\n")
        session = self.successResultOf(opening)
        answered = Deferred.fromCoroutine(session.rset())
        endpoint.protocol.dataReceived(b"250 2.0.0 ok\r\n")
        self.assertEqual(self.successResultOf(answered).code, 250)
        mail = Deferred.fromCoroutine(session.mail("a@example.com", ""))
        clock.advance(RSET_TIMEOUT * 2)
        self.assertNoResult(mail)
        endpoint.protocol.dataReceived(b"250 ok\r\n")
        self.successResultOf(mail)
        checked = Deferred.fromCoroutine(session.rset())
        clock.advance(RSET_TIMEOUT - 0.1)
        self.assertNoResult(checked)
        clock.advance(0.1)
        error = self.failureResultOf(checked, DeliveryError).value
        self.assertEqual((error.code, error.enhanced, error.stage), (451, "4.4.2", "rset"))
        self.assertFalse(session.usable)
