# -*- test-case-name: tests.test_amqpunconfirmed -*-
"""
What L{AMQPHandler} answers and logs for a message published but never
confirmed (the connection lost, or no confirm in time): the broker may hold
it all the same, so the reply does not say that it did not take it, and
the log line says that it may; a message the broker refused or returned is
not held, and is said so.
"""

from __future__ import annotations

from pika import spec
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost

from tests.test_amqp import TwistedProtocolConnectionTests, methodFrame
from tests.test_handlers import makeSession
from twisted_smtpd import SMTPError
from twisted_smtpd._stream import MessageStream


class UnconfirmedTests(TwistedProtocolConnectionTests):
    """
    One message published on a ready connection, then no ack.
    """

    def publish(self) -> Deferred[str]:
        self.connected()
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession(id="s1"))
        stream._write(b"Subject: x\r\n\r\nx\r\n")
        stream._finish()
        self.assertNoResult(d)
        return d

    def assertUnconfirmed(self, d: Deferred[str], problem: str) -> None:
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(
            error.message, f"Error: message broker did not confirm the message ({problem})"
        )
        self.assertIn(
            f"s1 message s1.1 not confirmed by the broker: {problem};"
            " the broker may hold it all the same (sent again, it is queued twice)",
            self.lines(),
        )

    def test_connectionLost(self) -> None:
        """
        The connection lost between the publish and its confirm (the broker
        restarted): 451, the client sends it again, and the line says the
        broker may have it already.
        """
        d = self.publish()
        self.lose(ConnectionLost())
        self.assertUnconfirmed(d, "ConnectionLost")

    def test_noConfirmInTime(self) -> None:
        """
        No confirm within C{confirmTimeout}: the same.
        """
        d = self.publish()
        self.clock.advance(30)
        self.assertUnconfirmed(d, "no confirm in time")

    def test_nack(self) -> None:
        """
        A nack is the broker's refusal: it did not take the message, and
        the reply and line say so alone.
        """
        d = self.publish()
        self.feed(methodFrame(spec.Basic.Nack(delivery_tag=1), 1))
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual(
            error.message, "Error: message broker did not take the message (refused by the broker)"
        )
        self.assertIn(
            "s1 message s1.1 not confirmed by the broker: refused by the broker", self.lines()
        )
