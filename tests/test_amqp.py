# -*- test-case-name: tests.test_amqp -*-
"""
Unit tests for L{AMQPHandler}: its settings, the C{--amqp} flags, and the
refusals it makes without a broker.  Publishing to a real RabbitMQ is in
L{tests.integration.test_broker}.
"""

from __future__ import annotations

import sys

import pika
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_handlers import makeSession
from tests.test_tap import parse
from twisted_smtpd import SMTPError
from twisted_smtpd._core.session import Address, Envelope, Session
from twisted_smtpd._stream import MessageStream
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
        properties = handler._properties(envelopeFields(session), 1700000000)
        return len(pika.frame.Header(1, 10_000_000, properties).marshal())

    def test_recipientsBoundedByFrame(self) -> None:
        """
        Of a thousand 254-octet recipients, those that fit in one frame are
        accepted (more than the hundred RFC 5321 section 4.5.3.1.8 asks
        for), the next is refused with 452 4.5.3 and one log line; the
        frame with those accepted fits in C{frame_max}, and one more would
        not (within the margin kept).
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
        self.assertEqual(
            [formatEvent(event) for event in events],
            [f"s1d recipient refused: {accepted} recipients already fill an AMQP frame"],
        )

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
