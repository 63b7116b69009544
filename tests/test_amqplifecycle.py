# -*- test-case-name: tests.test_amqplifecycle -*-
"""
L{AMQPHandler} closed at any point of its connection's life: the close
completes within its deadline and leaves no connection open, no timer
pending and no failure unheard.
"""

from __future__ import annotations

from typing import Any

from pika import spec
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_amqp import HANDSHAKE, URL, TwistedProtocolConnectionTests, methodFrame
from tests.test_handlers import makeSession
from twisted_smtpd import SMTPError
from twisted_smtpd._core.session import Address
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers.amqp import AMQPHandler


class PendingEndpoint:
    """
    An endpoint whose connection attempts stay pending until the test
    ends them (a host that drops the SYN: the TCP connect lasts until
    C{connectTimeout}).

    @ivar attempts: The L{Deferred} of each attempt.
    @ivar cancelled: How many attempts were cancelled.
    """

    def __init__(self) -> None:
        self.attempts: list[Deferred[Any]] = []
        self.cancelled = 0

    def connect(self, factory: Any) -> Deferred[Any]:
        def cancel(d: Deferred[Any]) -> None:
            self.cancelled += 1

        d: Deferred[Any] = Deferred(cancel)
        d.factory = factory  # type: ignore[attr-defined]
        self.attempts.append(d)
        return d


class CloseDuringConnectTests(SynchronousTestCase):
    """
    The handler closed while its TCP connection to the broker is being
    made.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.clock = MemoryReactorClock()
        self.handler = AMQPHandler(URL, reactor=self.clock)
        self.endpoint = PendingEndpoint()
        self.handler._endpoint = lambda: self.endpoint  # type: ignore[method-assign]

    def test_connectCancelled(self) -> None:
        """
        The pending connect is cancelled and the close completes at once,
        with no line logged and no timer left: before, the close waited
        for the connect (up to C{connectTimeout}), then for the whole
        handshake, and then fired while the connection it had just made
        was still open, with no deadline for the broker's answer.
        """
        self.handler.start()
        [attempt] = self.endpoint.attempts
        d = self.handler.close()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.endpoint.cancelled, 1)
        self.assertFalse(self.handler.ready)
        self.assertEqual([formatEvent(e) for e in self.events], [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connectedAfterClose(self) -> None:
        """
        An endpoint that connects all the same (its attempt cannot be
        cancelled) has the connection dropped at once, before any
        handshake.
        """
        self.handler.start()
        [attempt] = self.endpoint.attempts
        attempt.cancel = lambda: None  # type: ignore[method-assign]
        d = self.handler.close()
        protocol = attempt.factory.buildProtocol(  # type: ignore[attr-defined]
            IPv4Address("TCP", "127.0.0.1", 5672)
        )
        transport = StringTransport()
        protocol.makeConnection(transport)
        attempt.callback(protocol)
        self.assertTrue(transport.disconnecting)
        for frame in HANDSHAKE:
            protocol.dataReceived(frame)
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertIsNone(self.successResultOf(d))
        self.assertFalse(self.handler.ready)
        self.assertEqual([formatEvent(e) for e in self.events], [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FlappingBrokerTests(TwistedProtocolConnectionTests):
    """
    A broker that completes the handshake, then drops the connection.
    """

    def flap(self) -> None:
        """
        Complete the handshake on the newest connection, then lose it.
        """
        self.connection = self.endpoint.connections[-1]
        self.feed(*HANDSHAKE)
        self.assertTrue(self.handler.ready)
        self.lose(ConnectionDone())

    def delays(self) -> list[str]:
        return [
            line.rsplit(" again in ", 1)[1]
            for line in (formatEvent(e) for e in self.events)
            if line.startswith("message broker connection lost")
        ]

    def test_backsOff(self) -> None:
        """
        The pauses between attempts double up to C{maxRetryDelay} while
        every connection is dropped right after its handshake: before,
        each handshake completed started them again from C{firstRetry},
        so that such a broker was reconnected to twice a second, and two
        lines logged each time, for ever.
        """
        for delay in (0.5, 1, 2, 4, 8, 16, 30, 30):
            self.flap()
            self.clock.advance(delay)
        self.assertEqual(
            self.delays(), ["0.5s", "1.0s", "2.0s", "4.0s", "8.0s", "16.0s", "30.0s", "30.0s"]
        )
        self.assertEqual(len(self.endpoint.connections), 9)

    def test_lastingConnectionResets(self) -> None:
        """
        A connection lost after lasting as long as the next pause would
        is retried after C{firstRetry} again (lost after 8 seconds, the
        next pause 8); one lost sooner is not (after 3.9, the next 4).
        """
        for delay in (0.5, 1, 2):
            self.flap()
            self.clock.advance(delay)
        for lasted in (3.9, 8):
            self.connection = self.endpoint.connections[-1]
            self.feed(*HANDSHAKE)
            self.clock.advance(lasted)
            self.lose(ConnectionDone())
            self.clock.advance(30)
        self.assertEqual(self.delays(), ["0.5s", "1.0s", "2.0s", "4.0s", "0.5s"])

    def test_confirmedMessageResets(self) -> None:
        """
        A connection that had a message confirmed, however short it
        lasted, is retried after C{firstRetry} again.
        """
        for delay in (0.5, 1, 2):
            self.flap()
            self.clock.advance(delay)
        self.connection = self.endpoint.connections[-1]
        self.feed(*HANDSHAKE)
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession(id="s1"))
        stream._write(b"Subject: x\r\n\r\nx\r\n")
        stream._finish()
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=1), 1))
        self.assertEqual(self.successResultOf(d), "OK: queued as s1.1")
        self.lose(ConnectionDone())
        self.assertEqual(self.delays(), ["0.5s", "1.0s", "2.0s", "0.5s"])


class ChannelClosedTests(TwistedProtocolConnectionTests):
    """
    The broker closes the channel: the handler closes the connection and
    reconnects.
    """

    def test_unansweredCloseDropped(self) -> None:
        """
        A broker that closes the channel, then does not answer the
        handler's C{Connection.Close}, has its connection dropped after
        C{connectTimeout} seconds, and the handler reconnects; meanwhile
        MAIL is refused at once.  Before, the connection stayed half
        closed for as long as the broker kept its socket open (for ever,
        heartbeats off): every MAIL accepted, every message answered 451,
        no reconnection.
        """
        self.connected()
        text = "PRECONDITION_FAILED - unknown delivery tag 9"
        self.feed(methodFrame(spec.Channel.Close(406, text, 60, 80), 1))
        self.assertIn(b"\x00\x0a\x00\x32", self.transport.value())  # Connection.Close
        self.assertFalse(self.handler.ready)
        mail = self.handler.onMailFrom(Address("a@example.com"), makeSession(id="s1"))
        self.assertEqual(self.failureResultOf(mail, SMTPError).value.code, 451)
        self.clock.advance(9.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnecting)
        self.lose(ConnectionAborted())
        self.assertEqual(
            self.lines(),
            [
                "s1 refused MAIL: message broker unavailable",
                f"message broker connection lost: channel closed by the broker: 406 {text};"
                " again in 0.5s",
            ],
        )
        self.clock.advance(0.5)
        self.assertEqual(len(self.endpoint.connections), 2)
        self.connection = self.endpoint.connections[-1]
        self.feed(*HANDSHAKE)
        self.assertTrue(self.handler.ready)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closedWhileClosing(self) -> None:
        """
        The handler closed while its connection's close, begun when the
        broker closed the channel, waits for the broker's answer: the
        close completes once the broker answers, or the connection is
        dropped after C{connectTimeout}.  Before, pika refused the second
        close of a closing connection, and the handler's close raised
        C{ConnectionWrongStateError}.
        """
        self.connected()
        self.feed(methodFrame(spec.Channel.Close(406, "PRECONDITION_FAILED", 60, 40), 1))
        d = self.handler.close()
        self.assertNoResult(d)
        self.clock.advance(10)
        self.assertTrue(self.transport.disconnecting)
        self.lose(ConnectionAborted())
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.lines(), [])

    def test_closedWhileClosingAnswered(self) -> None:
        """
        The same, with the broker answering: the close completes then.
        """
        self.connected()
        self.feed(methodFrame(spec.Channel.Close(406, "PRECONDITION_FAILED", 60, 40), 1))
        d = self.handler.close()
        self.feed(methodFrame(spec.Connection.CloseOk()))
        self.lose(ConnectionDone())
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class CloseTwiceTests(TwistedProtocolConnectionTests):
    """
    The handler closed twice (by the server's shutdown and by the
    application, say).
    """

    def test_secondCloseWaits(self) -> None:
        """
        A second close fires when the first does, once the connection is
        closed: before, it fired at once, the broker's socket still open.
        """
        self.connected()
        first = self.handler.close()
        second = self.handler.close()
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.feed(methodFrame(spec.Channel.CloseOk(), 1))
        self.feed(methodFrame(spec.Connection.CloseOk()))
        self.lose(ConnectionDone())
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertIsNone(self.successResultOf(self.handler.close()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
