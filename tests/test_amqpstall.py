# -*- test-case-name: tests.test_amqpstall -*-
"""
A broker that stops reading what is published to it: Twisted's transport
buffers whatever is written, without bound, so that L{AMQPHandler} would
hold every message published to it in memory (each answered 451 once its
confirm timed out) for as long as the TCP connection stays open.  The
handler watches the transport's flow control instead: a message waits for
the send buffer to drain, and a broker that reads nothing within
C{confirmTimeout} has its connection dropped, and what it left unread
freed.
"""

from __future__ import annotations

from pika import spec
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted
from twisted.internet.protocol import Factory
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase

from tests.test_amqp import URL, TwistedProtocolConnectionTests, methodFrame
from tests.test_handlers import makeSession
from twisted_smtpd import SMTPError
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers._amqpconnection import BrokerConnection, SendWatch
from twisted_smtpd.handlers.amqp import AMQPHandler

BODY = b"Subject: stalled\r\n\r\n" + b"x" * 1000 + b"\r\n"


class StalledBrokerTests(TwistedProtocolConnectionTests):
    """
    The broker connection's send buffer full (the transport paused its
    producer) when a message is to be published.
    """

    def deliver(self) -> object:
        """
        Start the delivery of one message, its body whole.
        """
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession(id="stalled"))
        stream._write(BODY)
        stream._finish()
        return d

    def stall(self) -> SendWatch:
        """
        Complete the handshake, then fill the send buffer.
        """
        self.connected()
        producer = self.transport.producer
        self.assertIsInstance(producer, SendWatch)
        producer.pauseProducing()
        return producer

    def test_notReadingDropped(self) -> None:
        """
        Nothing more is published while the broker reads nothing; once
        C{confirmTimeout} passes, the message is answered 451, and the
        connection is dropped (with what it holds unsent), with one line,
        and made again.
        """
        self.stall()
        sent = len(self.transport.value())
        d = self.deliver()
        self.clock.advance(29.9)
        self.assertNoResult(d)
        self.assertEqual(len(self.transport.value()), sent)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(len(self.transport.value()), sent)
        self.assertTrue(self.transport.disconnected)
        self.lose(ConnectionAborted())
        self.assertEqual(
            self.lines(),
            [
                "stalled message broker unavailable at the end of DATA",
                "message broker connection lost: the broker did not read what was sent"
                " within 30s; again in 0.5s",
            ],
        )
        self.clock.advance(0.5)
        self.assertEqual(len(self.endpoint.connections), 2)

    def test_readingAgainPublishes(self) -> None:
        """
        A broker that reads again within C{confirmTimeout} gets the message,
        whose confirm is then waited for as usual.
        """
        producer = self.stall()
        sent = len(self.transport.value())
        d = self.deliver()
        self.clock.advance(20)
        self.assertEqual(len(self.transport.value()), sent)
        producer.resumeProducing()
        self.assertGreater(len(self.transport.value()), sent + len(BODY))
        self.assertNoResult(d)
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=1), 1))
        self.assertEqual(self.successResultOf(d), "OK: queued as stalled.1")
        self.assertFalse(self.transport.disconnecting)

    def test_notStalledPublishesAtOnce(self) -> None:
        """
        With room in the send buffer, the message is published at once.
        """
        self.connected()
        sent = len(self.transport.value())
        d = self.deliver()
        self.assertGreater(len(self.transport.value()), sent + len(BODY))
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=1), 1))
        self.assertEqual(self.successResultOf(d), "OK: queued as stalled.1")

    def test_closingTransportNotHeld(self) -> None:
        """
        A transport closing while its send buffer was full resumes the
        watch once the buffer drains: the watch unregisters itself then,
        or the transport would wait for it before it closes.
        """
        producer = self.stall()
        self.transport.loseConnection()
        producer.resumeProducing()
        self.assertIsNone(self.transport.producer)


class TLSTransportTests(SynchronousTestCase):
    """
    Over TLS (C{amqps://}) the send buffer watched is the TCP
    transport's.
    """

    def test_watchBelowTLS(self) -> None:
        """
        The watch is registered on the transport below TLS, not on TLS's:
        a TLS transport with a producer registered sends no close alert,
        and so does not close, when the connection is closed politely.
        """
        handler = AMQPHandler(URL.replace("amqp://", "amqps://"), reactor=MemoryReactorClock())
        factory = TLSMemoryBIOFactory(
            optionsForClientTLS("localhost"),
            True,
            Factory.forProtocol(lambda: BrokerConnection(handler._parameters)),
        )
        tls = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5671))
        assert tls is not None
        tcp = StringTransport()
        tls.makeConnection(tcp)
        connection = tls.wrappedProtocol
        self.assertIs(connection.transport, tls)
        self.assertIsInstance(tcp.producer, SendWatch)
        self.assertIs(tcp.producer, connection.sending)
        self.assertIsNone(tls._producer)
