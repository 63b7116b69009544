# -*- test-case-name: tests.test_amqpconfirms -*-
"""
Which message a publisher confirm is for: L{AMQPHandler} answers 250 to a
message the broker acknowledged and did not return, and 451 to one it
returned (unroutable) or refused, whatever the order the broker sends its
C{Basic.Return}, C{Basic.Ack} and C{Basic.Nack} frames in and whether an
ack covers several messages (C{multiple}); names the broker could never
take, refused at start; the negotiated C{frame_max}; a missing exchange;
the queue declared again once a message comes back.
"""

from __future__ import annotations

import pika
from pika import spec
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_amqp import (
    HANDSHAKE,
    URL,
    FakeEndpoint,
    TwistedProtocolConnectionTests,
    longRecipient,
    methodFrame,
)
from tests.test_handlers import makeSession
from tests.test_tap import parse
from twisted_smtpd import SMTPError
from twisted_smtpd._core.session import Address, Envelope
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers._envelope import messageId
from twisted_smtpd.handlers.amqp import AMQPHandler


def returnFrames(messageIdentifier: str, body: bytes) -> bytes:
    """
    The frames of a C{Basic.Return} (RFC: AMQP 0-9-1 section 1.8.3.10) of
    the message published with C{message_id} C{messageIdentifier}.
    """
    method = methodFrame(spec.Basic.Return(312, "NO_ROUTE", "", "smtpd"), 1)
    properties = spec.BasicProperties(message_id=messageIdentifier, delivery_mode=2)
    header = bytes(pika.frame.Header(1, len(body), properties).marshal())
    content = bytes(pika.frame.Body(1, body).marshal())
    return method + header + content


class ConfirmAttributionTests(TwistedProtocolConnectionTests):
    """
    Two messages in flight on the one channel; the second is returned.
    """

    def publishTwo(self) -> tuple[Deferred[str], Deferred[str], str, str]:
        """
        Publish two messages from two sessions, both awaiting confirms.
        """
        self.connected()
        results = []
        identifiers = []
        for name in ("first", "second"):
            session = makeSession(id=name)
            stream = MessageStream()
            d = self.handler.onData(stream, session)
            stream._write(b"Subject: " + name.encode() + b"\r\n\r\nx\r\n")
            stream._finish()
            self.assertNoResult(d)
            results.append(d)
            identifiers.append(messageId(session))
        return results[0], results[1], identifiers[0], identifiers[1]

    def assertVerdicts(self, first: Deferred[str], second: Deferred[str]) -> None:
        """
        The first message is taken (250), the second, returned, is not
        (451 4.3.0 naming the missing queue), with one line each.
        """
        error = self.failureResultOf(second, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertIn("no queue bound", error.message)
        self.assertEqual(self.successResultOf(first), "OK: queued as first.1")
        self.assertEqual(
            self.lines(),
            [
                "first published first.1",
                "second message second.1 not confirmed by the broker: no queue bound",
                "message broker returned a message as unroutable; declaring queue smtpd again",
            ],
        )

    def test_returnThenSingleAcks(self) -> None:
        """
        The second message is returned, then the broker acknowledges the
        first, then the second, one ack each (RabbitMQ acks an unroutable
        message at once and a persisted one later): the return is the
        second's, not the first's.
        """
        first, second, one, two = self.publishTwo()
        self.feed(returnFrames(two, b"Subject: second\r\n\r\nx\r\n"))
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=1), 1))
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=2), 1))
        self.assertVerdicts(first, second)

    def test_returnThenMultipleAck(self) -> None:
        """
        The second message is returned, then one ack with C{multiple}
        covers both: the first is taken, the second is not.
        """
        first, second, one, two = self.publishTwo()
        self.feed(returnFrames(two, b"Subject: second\r\n\r\nx\r\n"))
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=2, multiple=True), 1))
        self.assertVerdicts(first, second)

    def test_returnedFirstAckedOutOfOrder(self) -> None:
        """
        The first message is returned and acknowledged after the second:
        the second's ack, arriving while the first's return is pending,
        still means the second is taken.
        """
        first, second, one, two = self.publishTwo()
        self.feed(returnFrames(one, b"Subject: first\r\n\r\nx\r\n"))
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=2), 1))
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=1), 1))
        error = self.failureResultOf(first, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(self.successResultOf(second), "OK: queued as second.1")
        self.assertEqual(
            [line.split(" ", 1)[0] for line in self.lines()],
            ["second", "first", "message"],
        )

    def test_lateReturnForgotten(self) -> None:
        """
        A return for a message no longer awaiting its confirm (it timed
        out) is not kept, and does not touch the next message.
        """
        first, second, one, two = self.publishTwo()
        self.clock.advance(30)
        for d in (first, second):
            self.failureResultOf(d, SMTPError)
        self.feed(returnFrames(one, b"Subject: first\r\n\r\nx\r\n"))
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=2, multiple=True), 1))
        self.assertEqual(
            [formatEvent(e) for e in self.events[self.mark :]][-2:],
            [
                "first message first.1 not confirmed by the broker: no confirm in time;"
                " the broker may hold it all the same (sent again, it is queued twice)",
                "second message second.1 not confirmed by the broker: no confirm in time;"
                " the broker may hold it all the same (sent again, it is queued twice)",
            ],
        )
        confirms = self.handler._confirms
        assert confirms is not None
        self.assertEqual((confirms.awaiting, confirms.returned), (set(), set()))

    def test_timedOutPublishesForgotten(self) -> None:
        """
        Publishes whose confirm did not come in time are forgotten by pika
        too, not only by the handler: a broker that confirms nothing for a
        long time (a quorum queue without its majority) does not grow the
        server's memory by each message it times out.  A late ack for them
        leaves the next message's verdict alone.
        """
        first, second, one, two = self.publishTwo()
        channel = self.handler._channel
        self.assertEqual(len(channel._deliveries), 2)
        self.clock.advance(30)
        for d in (first, second):
            self.failureResultOf(d, SMTPError)
        self.assertEqual(channel._deliveries, {})
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=2, multiple=True), 1))
        session = makeSession(id="third")
        stream = MessageStream()
        third = self.handler.onData(stream, session)
        stream._write(b"Subject: third\r\n\r\nx\r\n")
        stream._finish()
        self.assertNoResult(third)
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=3), 1))
        self.assertEqual(self.successResultOf(third), "OK: queued as third.1")
        self.assertEqual(channel._deliveries, {})


class NameLengthTests(SynchronousTestCase):
    """
    Exchange, queue and routing key names are AMQP short strings (at most
    255 octets): a longer one is a configuration error found at start, not
    a failure of every connection or publish.
    """

    def test_longNamesRefused(self) -> None:
        """
        A name over 255 octets in UTF-8 is refused with a C{ValueError}
        naming which one; 255 octets are accepted.
        """
        for keyword, what in (
            ("exchange", "exchange"),
            ("queue", "queue"),
            ("routingKey", "routing key"),
        ):
            AMQPHandler(URL, reactor=MemoryReactorClock(), **{keyword: "n" * 255})
            e = self.assertRaises(
                ValueError, AMQPHandler, URL, reactor=MemoryReactorClock(), **{keyword: "é" * 128}
            )
            self.assertEqual(str(e), f"the {what} name is over 255 octets")

    def test_longQueueIsOneUsageLine(self) -> None:
        """
        C{twistd smtpd --amqp-queue} with too long a name is one usage line
        naming that flag (not the URL, which holds a password).
        """
        e = self.assertRaises(usage.UsageError, parse, "--amqp", URL, "--amqp-queue", "q" * 256)
        self.assertEqual(str(e), "--amqp-queue: the queue name is over 255 octets")


class NegotiatedFrameMaxTests(TwistedProtocolConnectionTests):
    """
    A broker may tune the connection to a smaller C{frame_max} than the one
    asked for: the envelope's bound at RCPT and at the end of DATA follows
    the negotiated value, so that no header frame the broker would refuse
    (closing the connection every transaction shares) is published.
    """

    def tuned(self) -> None:
        """
        Complete the handshake with a broker tuning C{frame_max} to 8 KiB.
        """
        small = methodFrame(spec.Connection.Tune(channel_max=0, frame_max=8192, heartbeat=0))
        self.feed(HANDSHAKE[0], small, *HANDSHAKE[2:])
        self.assertTrue(self.handler.ready)
        self.mark = len(self.events)

    def test_recipientsBoundedByNegotiatedFrame(self) -> None:
        """
        Recipients are refused with 452 4.5.3 once the headers would not
        fit in the negotiated 8 KiB, not the 128 KiB asked for.
        """
        self.tuned()
        session = makeSession(envelope=Envelope(mailFrom=Address("a@example.com"), rcptTo=[]))
        with self.assertRaises(SMTPError) as caught:
            for index in range(100):
                self.handler.onRcptTo(longRecipient(index), session)
                session.envelope.rcptTo.append(longRecipient(index))
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (452, "4.5.3"))
        self.assertGreater(len(session.envelope.rcptTo), 20)
        self.assertLess(len(session.envelope.rcptTo), 32)

    def test_oversizedEnvelopeNotPublished(self) -> None:
        """
        An envelope that fits 128 KiB but not the negotiated 8 KiB is
        answered 451 at the end of DATA, and nothing is published.
        """
        self.tuned()
        sent = len(self.transport.value())
        session = makeSession(
            envelope=Envelope(
                mailFrom=Address("a@example.com"), rcptTo=[longRecipient(i) for i in range(40)]
            )
        )
        stream = MessageStream()
        d = self.handler.onData(stream, session)
        stream._write(b"Subject: x\r\n\r\nx\r\n")
        stream._finish()
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(len(self.transport.value()), sent)


class MissingExchangeTests(TwistedProtocolConnectionTests):
    """
    With an exchange and no queue to declare (C{queue=""}), the handler
    checks at each connection that the exchange exists (a passive
    C{Exchange.Declare}): publishing to a missing one would make the
    broker close the channel under every message, each sent whole before
    its 451.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.clock = MemoryReactorClock()
        self.handler = AMQPHandler(URL, exchange="mail", queue="", reactor=self.clock)
        self.endpoint = FakeEndpoint()
        self.handler._endpoint = lambda: self.endpoint  # type: ignore[method-assign]
        self.handler.start()
        [self.connection] = self.endpoint.connections

    def test_missingExchangeIsUnavailable(self) -> None:
        """
        A broker answering the check with C{404 NOT_FOUND} leaves the
        handler unavailable (MAIL 451 at once) with one line naming the
        broker's reply, and it tries again later.
        """
        self.feed(*HANDSHAKE[:5])
        self.assertFalse(self.handler.ready)
        declared = self.transport.value()
        self.assertIn(b"mail", declared[-40:])
        text = "NOT_FOUND - no exchange 'mail' in vhost '/'"
        self.feed(methodFrame(spec.Channel.Close(404, text, 40, 10), 1))
        self.assertFalse(self.handler.ready)
        failure = self.failureResultOf(
            self.handler.onMailFrom(Address("a@example.com"), makeSession()), SMTPError
        )
        self.assertEqual((failure.value.code, failure.value.enhanced), (451, "4.3.0"))
        self.assertEqual(
            [formatEvent(e) for e in self.events][:1],
            [
                f"message broker connection failed: channel closed by the broker: 404 {text};"
                " again in 0.5s"
            ],
        )
        self.clock.advance(0.5)
        self.assertEqual(len(self.endpoint.connections), 2)

    def test_existingExchange(self) -> None:
        """
        A broker answering the check with C{Exchange.DeclareOk} leaves the
        handler ready.
        """
        self.feed(*HANDSHAKE[:5], methodFrame(spec.Exchange.DeclareOk(), 1))
        self.assertTrue(self.handler.ready)


class RedeclareTests(TwistedProtocolConnectionTests):
    """
    A message returned as unroutable means the queue the handler declared
    at connection is gone or unbound (deleted, or expired with
    C{x-expires}): the handler declares it again, so that the next
    messages are taken rather than refused until the next reconnection.
    """

    def publish(self, name: str) -> Deferred[str]:
        session = makeSession(id=name)
        stream = MessageStream()
        d = self.handler.onData(stream, session)
        stream._write(b"Subject: x\r\n\r\nx\r\n")
        stream._finish()
        return d

    def test_queueDeclaredAgain(self) -> None:
        """
        After a return, the next frame the handler sends is a
        C{Queue.Declare} of its queue, once however many messages come
        back meanwhile; with the queue back, the next message is taken.
        """
        self.connected()
        first, second = self.publish("first"), self.publish("second")
        self.transport.clear()
        for tag, name in ((1, "first"), (2, "second")):
            self.feed(returnFrames(f"{name}.1", b"x"))
            self.feed(methodFrame(spec.Basic.Ack(delivery_tag=tag), 1))
        for d in (first, second):
            self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)
        declare = methodFrame(spec.Queue.Declare(queue="smtpd", durable=True, arguments=None), 1)
        self.assertEqual(self.transport.value(), declare)
        self.feed(methodFrame(spec.Queue.DeclareOk("smtpd", 0, 0), 1))
        third = self.publish("third")
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=3), 1))
        self.assertEqual(self.successResultOf(third), "OK: queued as third.1")
        self.assertEqual(
            self.lines().count(
                "message broker returned a message as unroutable; declaring queue smtpd again"
            ),
            1,
        )
        # Another return later declares it again.
        self.transport.clear()
        fourth = self.publish("fourth")
        self.transport.clear()
        self.feed(returnFrames("fourth.1", b"x"))
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=4), 1))
        self.failureResultOf(fourth, SMTPError)
        self.assertEqual(self.transport.value(), declare)

    def test_declareRefused(self) -> None:
        """
        A broker refusing the declaration (the queue now exists with other
        arguments) closes the channel: the handler reconnects, with one
        line naming the broker's reply.
        """
        self.connected()
        d = self.publish("first")
        self.feed(returnFrames("first.1", b"x"))
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=1), 1))
        self.failureResultOf(d, SMTPError)
        text = "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'smtpd'"
        self.feed(methodFrame(spec.Channel.Close(406, text, 50, 10), 1))
        self.feed(methodFrame(spec.Connection.CloseOk()))
        self.lose(ConnectionDone())
        self.assertEqual(
            self.lines()[-1],
            f"message broker connection lost: channel closed by the broker: 406 {text};"
            " again in 0.5s",
        )
        self.clock.advance(0.5)
        self.assertEqual(len(self.endpoint.connections), 2)

    def test_otherQueueNotDeclared(self) -> None:
        """
        Publishing through the default exchange with a routing key that
        names another queue than the one declared, a return is that other
        queue's absence: nothing is declared.
        """
        handler = AMQPHandler(URL, routingKey="elsewhere", reactor=self.clock)
        handler._endpoint = lambda: self.endpoint  # type: ignore[method-assign]
        handler.start()
        self.connection = self.endpoint.connections[-1]
        self.handler = handler
        self.connected()
        d = self.publish("first")
        self.transport.clear()
        self.feed(returnFrames("first.1", b"x"))
        self.feed(methodFrame(spec.Basic.Ack(delivery_tag=1), 1))
        self.failureResultOf(d, SMTPError)
        self.assertEqual(self.transport.value(), b"")


class CloseDeadlineTests(TwistedProtocolConnectionTests):
    """
    Closing the handler waits for the broker's C{Connection.CloseOk} for
    at most C{connectTimeout} seconds: a broker that stopped answering
    (its processes stopped, heartbeats off) does not hold the close for
    ever.
    """

    def test_silentBrokerDropped(self) -> None:
        """
        With no answer to the close, the connection is dropped after 10
        seconds and the close completes; nothing is logged for it.
        """
        self.connected()
        d = self.handler.close()
        self.assertNoResult(d)
        self.clock.advance(9.9)
        self.assertNoResult(d)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnecting)
        self.lose(ConnectionAborted())
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.lines(), [])

    def test_answeredClose(self) -> None:
        """
        A broker answering the close ends it at once, with no timer left
        behind.
        """
        self.connected()
        d = self.handler.close()
        self.feed(methodFrame(spec.Channel.CloseOk(), 1))
        self.feed(methodFrame(spec.Connection.CloseOk()))
        self.lose(ConnectionDone())
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])
