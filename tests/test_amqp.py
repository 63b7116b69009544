# -*- test-case-name: tests.test_amqp -*-
"""
Unit tests for L{AMQPHandler}: its settings, the C{--amqp} flags, and the
refusals it makes without a broker.  Publishing to a real RabbitMQ is in
L{tests.integration.test_broker}.
"""

from __future__ import annotations

import struct
import sys

import pika
from pika import spec
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_handlers import makeSession
from tests.test_tap import parse
from twisted_smtpd import SMTPError
from twisted_smtpd._core.session import Address, Envelope, Session
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers._amqpframes import publishProperties
from twisted_smtpd.handlers._envelope import envelopeFields
from twisted_smtpd.handlers.amqp import DEFAULT_MAX_MESSAGE_SIZE, AMQPHandler

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


class AMQPHandlerTests(SynchronousTestCase):
    """
    What L{AMQPHandler} decides on its own.
    """

    def test_defaults(self) -> None:
        """
        By default messages go through the default exchange to the durable
        queue C{smtpd}, up to RabbitMQ's own 128 MiB limit.
        """
        handler = AMQPHandler(URL, reactor=MemoryReactorClock())
        self.assertEqual(
            (handler.exchange, handler.routingKey, handler.queue), ("", "smtpd", "smtpd")
        )
        self.assertEqual(handler.maxMessageSize, DEFAULT_MAX_MESSAGE_SIZE)
        self.assertEqual(DEFAULT_MAX_MESSAGE_SIZE, 134217728)
        self.assertFalse(handler.ready)

    def test_badValues(self) -> None:
        """
        A URL that is not AMQP, or a size that is not positive, is refused.
        """
        self.assertRaises(ValueError, AMQPHandler, "http://127.0.0.1/")
        self.assertRaises(ValueError, AMQPHandler, URL, maxMessageSize=0)

    def test_declaredSizeRefused(self) -> None:
        """
        A C{SIZE} over the limit is 552 at MAIL, without connecting.
        """
        reactor = MemoryReactorClock()
        handler = AMQPHandler(URL, maxMessageSize=1000, reactor=reactor)
        failure = self.failureResultOf(
            handler.onMailFrom(Address("a@example.com", {"SIZE": "1001"}), makeSession()),
            SMTPError,
        )
        self.assertEqual((failure.value.code, failure.value.enhanced), (552, "5.3.4"))
        self.assertEqual(reactor.tcpClients, [])

    def test_bodyOverLimit(self) -> None:
        """
        A body over the limit fails C{onData} with 552 once it has ended.
        """
        handler = AMQPHandler(URL, maxMessageSize=10, reactor=MemoryReactorClock())
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        stream._write(b"0123456789")
        self.assertNoResult(d)
        stream._write(b"x")
        stream._finish()
        failure = self.failureResultOf(d, SMTPError)
        self.assertEqual(failure.value.code, 552)

    def test_notConnectedAtEndOfData(self) -> None:
        """
        If the broker is not connected when the body ends, the reply is
        451: nothing is acknowledged that the broker does not hold.
        """
        handler = AMQPHandler(URL, reactor=MemoryReactorClock())
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        stream._write(b"Subject: x\r\n\r\nx\r\n")
        stream._finish()
        failure = self.failureResultOf(d, SMTPError)
        self.assertEqual((failure.value.code, failure.value.enhanced), (451, "4.3.0"))


def longRecipient(index: int) -> Address:
    """
    A recipient of 254 octets: with its angle brackets, the 256-octet path
    RFC 5321 section 4.5.3.1.3 allows at most.
    """
    address = Address(f"{'a' * 60}{index:04d}@{'d' * 181}.example")
    assert len(address.address) == 254
    return address


class AMQPFrameBoundTests(SynchronousTestCase):
    """
    The envelope travels in the message's headers, which must fit in one
    AMQP frame (C{frame_max}, 128 KiB by default): the recipients are
    bounded at RCPT.
    """

    def session(self) -> Session:
        return makeSession(
            envelope=Envelope(mailFrom=Address(f"{'s' * 64}@{'e' * 183}.example"), rcptTo=[])
        )

    def frameSize(self, handler: AMQPHandler, session: Session) -> int:
        """
        The octets of the content header frame pika sends for C{session}'s
        envelope.
        """
        properties = publishProperties(envelopeFields(session), 1700000000)
        return len(pika.frame.Header(1, 10_000_000, properties).marshal())

    def test_recipientsBoundedByFrame(self) -> None:
        """
        Of a thousand 254-octet recipients, those that fit in one frame are
        accepted (more than the hundred RFC 5321 section 4.5.3.1.8 asks
        for), the next is refused with 452 4.5.3, logged by the session
        alone; the frame with those accepted fits in C{frame_max}, and one
        more would not (within the margin kept).
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        handler = AMQPHandler(URL, reactor=MemoryReactorClock())
        session = self.session()
        refusal = None
        for index in range(1000):
            try:
                handler.onRcptTo(longRecipient(index), session)
            except SMTPError as e:
                refusal = e
                break
            session.envelope.rcptTo.append(longRecipient(index))
        assert refusal is not None
        self.assertEqual((refusal.code, refusal.enhanced), (452, "4.5.3"))
        accepted = len(session.envelope.rcptTo)
        self.assertGreater(accepted, 100)
        self.assertLessEqual(self.frameSize(handler, session), 131072)
        session.envelope.rcptTo.append(longRecipient(accepted))
        self.assertGreater(self.frameSize(handler, session), 131072 - 64)
        # The session's reject line is the refusal's one line.
        self.assertEqual([formatEvent(event) for event in events], [])

    def test_negotiatedFrameMax(self) -> None:
        """
        The bound follows the C{frame_max} asked for in the URL (and, once
        connected, as negotiated).
        """
        handler = AMQPHandler(URL + "?frame_max=8192", reactor=MemoryReactorClock())
        session = self.session()
        with self.assertRaises(SMTPError):
            for index in range(100):
                handler.onRcptTo(longRecipient(index), session)
                session.envelope.rcptTo.append(longRecipient(index))
        self.assertLessEqual(self.frameSize(handler, session), 8192)
        self.assertGreater(len(session.envelope.rcptTo), 20)

    def test_oversizedEnvelopeAtData(self) -> None:
        """
        An envelope never checked at RCPT that would not fit in a frame is
        answered 451 with one log line, and nothing is published (the
        broker would close the connection every transaction shares).
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        handler = AMQPHandler(URL, reactor=MemoryReactorClock())
        session = makeSession(
            envelope=Envelope(
                mailFrom=Address("a@example.com"), rcptTo=[longRecipient(i) for i in range(1000)]
            )
        )
        stream = MessageStream()
        d = handler.onData(stream, session)
        stream._write(b"Subject: x\r\n\r\nx\r\n")
        stream._finish()
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["s1d envelope of 1000 recipients too large for an AMQP frame"],
        )


class AMQPOptionsTests(SynchronousTestCase):
    """
    The C{--amqp} flags of C{twistd smtpd}.
    """

    def test_flags(self) -> None:
        """
        C{--amqp URL} with exchange, routing key and queue builds an
        L{AMQPHandler}; C{--size} lowers its limit.
        """
        config = parse(
            "--amqp",
            URL,
            "--amqp-exchange",
            "amq.direct",
            "--amqp-routing-key",
            "mail",
            "--amqp-queue",
            "inbox",
            "--size",
            "5000",
        )
        handler = config["handler"]
        self.assertIsInstance(handler, AMQPHandler)
        self.assertEqual(
            (handler.url, handler.exchange, handler.routingKey, handler.queue),
            (URL, "amq.direct", "mail", "inbox"),
        )
        self.assertEqual(handler.maxMessageSize, 5000)

    def test_modifiersNeedAMQP(self) -> None:
        """
        C{--amqp-queue} without C{--amqp} is a usage error.
        """
        e = self.assertRaises(usage.UsageError, parse, "--amqp-queue", "x")
        self.assertEqual(str(e), "--amqp-queue needs --amqp")

    def test_badURL(self) -> None:
        """
        A URL that is not AMQP is one usage line.
        """
        e = self.assertRaises(usage.UsageError, parse, "--amqp", "http://127.0.0.1/")
        self.assertIn("not an amqp:// or amqps:// URL", str(e))

    def test_missingExtra(self) -> None:
        """
        Without pika, C{--amqp} says which extra to install.
        """
        saved = dict(sys.modules)

        def restore() -> None:
            sys.modules.clear()
            sys.modules.update(saved)

        self.addCleanup(restore)
        sys.modules["pika"] = None  # type: ignore[assignment]
        sys.modules.pop("twisted_smtpd.handlers.amqp", None)
        e = self.assertRaises(usage.UsageError, parse, "--amqp", URL)
        self.assertEqual(
            str(e),
            "--amqp needs the amqp extra (pika is missing): pip install 'twisted-smtpd[amqp]'",
        )


def methodFrame(method: object, channel: int = 0) -> bytes:
    """
    One AMQP method frame, as a broker sends it.
    """
    return bytes(pika.frame.Method(channel, method).marshal())


# What a broker answers to bring pika to a confirmed channel with the queue
# declared (frame_max 128 KiB, no heartbeats).
START = methodFrame(
    spec.Connection.Start(
        server_properties={
            "product": "test",
            "capabilities": {"publisher_confirms": True, "basic.nack": True},
        },
        mechanisms="PLAIN",
        locales="en_US",
    )
)
TUNE = methodFrame(spec.Connection.Tune(channel_max=0, frame_max=131072, heartbeat=0))
HANDSHAKE = (
    START,
    TUNE,
    methodFrame(spec.Connection.OpenOk()),
    methodFrame(spec.Channel.OpenOk(), 1),
    methodFrame(spec.Confirm.SelectOk(), 1),
    methodFrame(spec.Queue.DeclareOk(queue="smtpd", message_count=0, consumer_count=0), 1),
)


class FakeEndpoint:
    """
    Connects each protocol asked for to a L{StringTransport} at once.

    @ivar connections: The protocols connected, in order.
    """

    def __init__(self) -> None:
        self.connections: list[TwistedProtocolConnection] = []

    def connect(
        self, factory: Factory[TwistedProtocolConnection]
    ) -> Deferred[TwistedProtocolConnection]:
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5672))
        assert protocol is not None
        protocol.makeConnection(StringTransport())
        self.connections.append(protocol)
        return succeed(protocol)


class TwistedProtocolConnectionTests(SynchronousTestCase):
    """
    The broker connection over an in-memory transport, driven with the
    frames a broker would send.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.clock = MemoryReactorClock()
        self.handler = AMQPHandler(URL, reactor=self.clock)
        self.endpoint = FakeEndpoint()
        self.handler._endpoint = lambda: self.endpoint  # type: ignore[method-assign]
        self.handler.start()
        [self.connection] = self.endpoint.connections

    def feed(self, *frames: bytes) -> None:
        for data in frames:
            self.connection.dataReceived(data)

    def lose(self, reason: Exception) -> None:
        """
        The transport went away for C{reason}.
        """
        self.connection.connectionLost(Failure(reason))

    @property
    def transport(self) -> StringTransport:
        transport = self.connection.transport
        assert isinstance(transport, StringTransport)
        return transport

    def lines(self) -> list[str]:
        """
        The lines logged since the handshake, if it was completed.
        """
        return [formatEvent(event) for event in self.events[self.mark :]]

    mark = 0

    def connected(self) -> None:
        """
        Complete the handshake.
        """
        self.feed(*HANDSHAKE)
        self.assertTrue(self.handler.ready)
        self.mark = len(self.events)
        self.assertFalse(self.transport.disconnecting)


class BlockedTests(TwistedProtocolConnectionTests):
    """
    While the broker blocks the connection (a resource alarm: it reads
    nothing published), new transactions are refused rather than published
    into memory; a block lasting longer than C{confirmTimeout} drops the
    connection.
    """

    def mail(self) -> Deferred[None]:
        return self.handler.onMailFrom(Address("a@example.com"), Session("s1"))

    def test_blockedRefusesMail(self) -> None:
        """
        MAIL is answered 451 4.3.1 while blocked, with one line each for
        the block, the refusal and the lifting of the block.
        """
        self.connected()
        self.feed(methodFrame(spec.Connection.Blocked("low on memory\r\nx")))
        failure = self.failureResultOf(self.mail(), SMTPError)
        self.assertEqual((failure.value.code, failure.value.enhanced), (451, "4.3.1"))
        self.feed(methodFrame(spec.Connection.Unblocked()))
        self.successResultOf(self.mail())
        self.assertEqual(
            self.lines(),
            [
                "message broker blocked the connection: low on memory x",
                "s1 refused MAIL: message broker blocked (low on memory x)",
                "message broker unblocked the connection",
            ],
        )

    def test_blockedTooLong(self) -> None:
        """
        A block lasting C{confirmTimeout} seconds drops the connection,
        with one line naming it; the next connection starts unblocked.
        """
        self.connected()
        self.feed(methodFrame(spec.Connection.Blocked("low on disk")))
        self.clock.advance(29)
        self.assertFalse(self.transport.disconnecting or self.transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting or self.transport.disconnected)
        self.lose(ConnectionAborted())
        self.assertEqual(
            self.lines()[1:],
            ["message broker connection lost: blocked by the broker for too long; again in 0.5s"],
        )
        self.assertIsNone(self.handler._blockedBy)


class HandshakeFailureTests(TwistedProtocolConnectionTests):
    """
    A connection that fails, or is closed, leaves one line naming why:
    pika's Twisted adapter reports every failed handshake as C{1}, its
    number of attempts, and a connection the broker closed as closed
    cleanly.
    """

    def test_loginRefused(self) -> None:
        """
        A broker refusing the login (C{Connection.Close} after
        C{Connection.Start-Ok}) is named with its reply code and text,
        sanitised and cut to 200 characters.
        """
        self.feed(START)
        text = "ACCESS_REFUSED - Login was refused\r\nfake line\x1b[31m" + "x" * 200
        self.feed(methodFrame(spec.Connection.Close(403, text, 0, 0)))
        self.assertTrue(self.transport.disconnecting)
        self.lose(ConnectionDone())
        reason = ("403 ACCESS_REFUSED - Login was refused fake line [31m" + "x" * 200)[:200]
        self.assertEqual(
            self.lines(),
            [f"message broker connection failed: closed by the broker: {reason}; again in 0.5s"],
        )
        self.assertFalse(self.handler.ready)

    def test_virtualHostRefused(self) -> None:
        """
        A broker refusing the virtual host (C{Connection.Close} after
        C{Connection.Open}) is named with its reply code and text.
        """
        self.feed(START, TUNE)
        self.feed(methodFrame(spec.Connection.Close(530, "NOT_ALLOWED - vhost x not found", 0, 0)))
        self.lose(ConnectionDone())
        self.assertEqual(
            self.lines(),
            [
                "message broker connection failed: closed by the broker:"
                " 530 NOT_ALLOWED - vhost x not found; again in 0.5s"
            ],
        )

    def test_closedDuringHandshake(self) -> None:
        """
        A broker closing the TCP connection before the handshake ends is
        named as such.
        """
        self.feed(START)
        self.lose(ConnectionDone())
        self.assertEqual(
            self.lines(),
            ["message broker connection failed: the broker closed the connection; again in 0.5s"],
        )

    def test_handshakeDeadline(self) -> None:
        """
        A broker that does not complete the handshake within
        C{connectTimeout} is cut off, and the line names the deadline.
        """
        self.feed(START)
        self.clock.advance(9.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnected)
        self.lose(ConnectionAborted())
        self.assertEqual(
            self.lines(),
            ["message broker connection failed: no AMQP handshake within 10s; again in 0.5s"],
        )

    def test_unreadableData(self) -> None:
        """
        A frame pika cannot parse (here, a wrong frame-end octet) ends the
        connection with one line naming pika's error, not a traceback.
        """
        frame = bytearray(START)
        frame[-1] = 0
        self.feed(bytes(frame))
        self.assertTrue(self.transport.disconnected)
        self.lose(ConnectionAborted())
        self.assertEqual(
            self.lines(),
            [
                "message broker connection failed: unreadable data from the broker"
                " (InvalidFrameError); again in 0.5s"
            ],
        )

    def test_closedByBroker(self) -> None:
        """
        A broker closing an open connection (C{Connection.Close}, as
        C{rabbitmqctl close_connection} does) is named with its reply code
        and text, and the handler reconnects.
        """
        self.connected()
        text = "CONNECTION_FORCED - Closed via management plugin"
        self.feed(methodFrame(spec.Connection.Close(320, text, 0, 0)))
        self.lose(ConnectionDone())
        self.assertEqual(
            self.lines(),
            [f"message broker connection lost: closed by the broker: 320 {text}; again in 0.5s"],
        )
        self.clock.advance(0.5)
        self.assertEqual(len(self.endpoint.connections), 2)

    def test_channelClosedByBroker(self) -> None:
        """
        A broker closing the channel (a missing exchange, say) makes the
        handler close the connection and reconnect; the line names the
        broker's reply code and text.
        """
        self.connected()
        text = "NOT_FOUND - no exchange 'mail' in vhost '/'"
        self.feed(methodFrame(spec.Channel.Close(404, text, 60, 40), 1))
        self.feed(methodFrame(spec.Connection.CloseOk()))
        self.assertTrue(self.transport.disconnecting)
        self.lose(ConnectionDone())
        self.assertEqual(
            self.lines(),
            [
                f"message broker connection lost: channel closed by the broker: 404 {text};"
                " again in 0.5s"
            ],
        )

    def test_connectionLost(self) -> None:
        """
        A connection lost without a word from the broker says so.
        """
        self.connected()
        self.lose(ConnectionLost())
        self.assertEqual(
            self.lines(),
            [
                "message broker connection lost: the connection to the broker was lost;"
                " again in 0.5s"
            ],
        )


class FrameLimitTests(TwistedProtocolConnectionTests):
    """
    pika buffers an inbound frame until it is complete, whatever its size:
    a frame announcing more than C{frame_max} ends the connection at once,
    with one line, and the handler reconnects.
    """

    def test_oversizedFrame(self) -> None:
        """
        A 2 GiB frame announced after the handshake ends the connection as
        soon as its header arrives; what follows is not buffered.
        """
        self.connected()
        self.feed(struct.pack(">BHI", 1, 0, 0x7FFFFFF0))
        self.assertTrue(self.transport.disconnected)
        for _ in range(16):
            self.feed(b"\0" * 65536)
        self.assertLess(len(self.connection._impl._frame_buffer), 16)
        self.lose(ConnectionAborted())
        self.assertEqual(
            self.lines(),
            [
                "message broker connection lost: the broker sent a frame of 2147483640"
                " octets, over frame_max 131072; again in 0.5s"
            ],
        )
        self.assertFalse(self.handler.ready)
        self.clock.advance(0.5)
        self.assertEqual(len(self.endpoint.connections), 2)

    def test_fullSizeFrame(self) -> None:
        """
        A frame of exactly C{frame_max} octets, arriving in pieces, is
        read as usual.
        """
        self.connected()
        body = b"x" * (131072 - 8)
        returned = methodFrame(spec.Basic.Return(312, "NO_ROUTE", "", "smtpd"), 1)
        header = bytes(pika.frame.Header(1, len(body), pika.BasicProperties()).marshal())
        frame = bytes(pika.frame.Body(1, body).marshal())
        self.assertEqual(len(frame), 131072)
        data = returned + header + frame
        for offset in range(0, len(data), 1000):
            self.feed(data[offset : offset + 1000])
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.connection._impl._frame_buffer, b"")
        self.assertEqual(self.lines(), [])

    def test_negotiatedFrameMax(self) -> None:
        """
        The limit is C{frame_max} as the broker tuned it, here lower than
        asked for.
        """
        handshake = list(HANDSHAKE)
        handshake[1] = methodFrame(spec.Connection.Tune(channel_max=0, frame_max=4096, heartbeat=0))
        self.feed(*handshake)
        self.assertTrue(self.handler.ready)
        self.mark = len(self.events)
        self.feed(struct.pack(">BHI", 3, 1, 4096 - 8 + 1))
        self.assertTrue(self.transport.disconnected)
        self.lose(ConnectionAborted())
        self.assertEqual(
            self.lines(),
            [
                "message broker connection lost: the broker sent a frame of 4097 octets,"
                " over frame_max 4096; again in 0.5s"
            ],
        )

    def test_notAMQP(self) -> None:
        """
        A peer that is not an AMQP broker (an HTTP server's reply) is cut
        off at once rather than at the handshake's deadline: its first
        octets announce a frame far over C{frame_max}.
        """
        self.feed(b"HTTP/1.1 400 Bad Request\r\n")
        self.assertTrue(self.transport.disconnected)
        self.lose(ConnectionAborted())
        self.assertEqual(
            self.lines(),
            [
                "message broker connection failed: the broker sent a frame of 1345270070"
                " octets, over frame_max 131072; again in 0.5s"
            ],
        )


class ContentLimitTests(TwistedProtocolConnectionTests):
    """
    pika gathers the body of a message the broker sends in memory, up to
    the size its content header announces: a header announcing more than
    the handler's C{maxMessageSize} (larger than any message it published
    and could have returned) ends the connection at once, with one line.
    """

    def returned(self, size: int) -> bytes:
        """
        A C{Basic.Return} and the content header of a body of C{size}
        octets.
        """
        method = methodFrame(spec.Basic.Return(312, "NO_ROUTE", "", "smtpd"), 1)
        properties = pika.BasicProperties(message_id="unknown")
        return method + bytes(pika.frame.Header(1, size, properties).marshal())

    def test_hugeReturnedBody(self) -> None:
        """
        A returned message announcing 1 TiB is refused at its header: the
        body frames that follow are not gathered.
        """
        self.connected()
        self.feed(self.returned(1 << 40))
        self.assertTrue(self.transport.disconnected)
        frame = bytes(pika.frame.Body(1, b"x" * (131072 - 8)).marshal())
        for _ in range(8):
            self.feed(frame)
        channel = self.connection._impl._channels[1]
        self.assertEqual(channel._content_assembler._body_fragments, [])
        self.lose(ConnectionAborted())
        self.assertEqual(
            self.lines(),
            [
                f"message broker connection lost: the broker sent a message of {1 << 40}"
                f" octets, over {DEFAULT_MAX_MESSAGE_SIZE}; again in 0.5s"
            ],
        )

    def test_returnedBodyAtLimit(self) -> None:
        """
        A returned message announcing C{maxMessageSize} octets, as large as
        one the handler publishes, is read as usual.
        """
        self.connected()
        self.feed(self.returned(DEFAULT_MAX_MESSAGE_SIZE))
        frame = bytes(pika.frame.Body(1, b"x" * (131072 - 8)).marshal())
        self.feed(frame, frame)
        self.assertFalse(self.transport.disconnecting)
        channel = self.connection._impl._channels[1]
        self.assertEqual(channel._content_assembler._seen_so_far, 2 * (131072 - 8))
        self.assertEqual(self.lines(), [])
