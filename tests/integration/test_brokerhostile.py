# -*- test-case-name: tests.integration.test_brokerhostile -*-
"""
L{AMQPHandler} against a fake broker over real TCP on 127.0.0.1 that
misbehaves once the handshake is done (RabbitMQ cannot be made to): a
client gets 250 only for a message the broker acknowledged, else 451
within C{confirmTimeout}; each failure leaves one sanitised line; the
handler closed at any point leaves no failure unheard, no timer and no
socket behind.
"""

from __future__ import annotations

import gc
import smtplib
from collections.abc import Callable
from typing import Any

import pika
from pika import spec
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.integration.hostilebroker import (
    HostileBroker,
    HostileBrokerFactory,
    Published,
)
from twisted_smtpd.handlers.amqp import AMQPHandler
from twisted_smtpd.testing import TestServer, listenForTests

Script = Callable[[HostileBroker, Published], None]


def deliver(port: int, count: int) -> list[int]:
    """
    C{count} transactions, one per connection; the code of each reply to
    the message (0 for a dialogue that failed otherwise).
    """
    codes = []
    for index in range(count):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
                client.sendmail(
                    "a@example.com", ["b@example.com"], f"Subject: {index}\r\n\r\nhi\r\n"
                )
            codes.append(250)
        except smtplib.SMTPResponseException as e:
            codes.append(e.smtp_code)
        except (smtplib.SMTPException, OSError):
            codes.append(0)
    return codes


def ack(broker: HostileBroker, message: Published) -> None:
    """
    What a broker should do: acknowledge the message.
    """
    broker.send(spec.Basic.Ack(delivery_tag=message.tag))


def silent(broker: HostileBroker, message: Published) -> None:
    """
    Answer nothing.
    """


class HostileBrokerTestCase(TestCase):
    """
    A fake broker, the handler in front of it and an SMTP server.
    """

    timeout = 60

    async def serve(
        self, script: Script, heartbeat: int = 0, **kwargs: Any
    ) -> tuple[AMQPHandler, TestServer, HostileBrokerFactory]:
        # What earlier tests left goes now, not in the middle of this one.
        gc.collect()
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        factory = HostileBrokerFactory(script, heartbeat)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        kwargs.setdefault("confirmTimeout", 1.0)
        kwargs.setdefault("firstRetry", 0.1)
        url = f"amqp://guest:guest@127.0.0.1:{port.getHost().port}/%2F"
        handler = AMQPHandler(url, **kwargs)
        self.addCleanup(handler.close)
        server = await listenForTests(handler)
        self.addCleanup(server.close)
        return handler, server, factory

    async def attack(
        self, script: Script, count: int = 1, lost: bool = False, **kwargs: Any
    ) -> list[int]:
        """
        C{count} transactions through the handler to a broker answering
        each message with C{script}; the replies.  The handler is closed
        after them (once a connection loss is logged if C{lost}), and must
        leave no failure unheard.
        """
        handler, server, factory = await self.serve(script, **kwargs)
        codes = await deferToThread(deliver, server.port, count)
        for _ in range(100 if lost else 0):
            if any("connection lost" in line for line in self.lines()):
                break
            await pause(0.02)
        await handler.close()
        await self.assertClean(factory)
        return codes

    async def assertClean(self, factory: HostileBrokerFactory) -> None:
        """
        Every connection to the broker is closed, and nothing failed
        unheard.
        """
        for _ in range(100):
            if all(b.transport is None or b.transport.disconnected for b in factory.connections):  # type: ignore[attr-defined]
                break
            await pause(0.02)
        for broker in factory.connections:
            self.assertTrue(broker.transport is None or broker.transport.disconnected)  # type: ignore[attr-defined]
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.logged]


def pause(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class MisbehavingBrokerTests(HostileBrokerTestCase):
    """
    Brokers answering a publish with something other than its ack.
    """

    async def test_wellBehaved(self) -> None:
        """
        The fake broker acknowledging each message: 250 each, over one
        connection (what the tests below differ from).
        """
        self.assertEqual(await self.attack(ack, 3), [250, 250, 250])

    async def test_channelClosedInsteadOfAck(self) -> None:
        """
        C{Channel.Close} instead of the ack: 451, one line naming the
        broker's code and text, sanitised, and a new connection.
        """
        text = "PRECONDITION_FAILED\x1b[31m\r\nforged line"

        def close(broker: HostileBroker, message: Published) -> None:
            broker.send(spec.Channel.Close(406, text, 60, 40))

        codes = await self.attack(close, 1, lost=True)
        self.assertEqual(codes, [451])
        lost = [line for line in self.lines() if "connection lost" in line]
        self.assertEqual(
            lost,
            [
                "message broker connection lost: channel closed by the broker:"
                " 406 PRECONDITION_FAILED [31m forged line; again in 0.1s"
            ],
        )

    async def test_acksForOtherTags(self) -> None:
        """
        Acks for tags never published, alone or C{multiple}, and on a
        channel never opened, confirm nothing: 451 after C{confirmTimeout}.
        """

        def wrongAcks(broker: HostileBroker, message: Published) -> None:
            broker.send(spec.Basic.Ack(delivery_tag=message.tag + 1))
            broker.send(spec.Basic.Ack(delivery_tag=message.tag + 5, multiple=True))
            broker.send(spec.Basic.Ack(delivery_tag=0, multiple=True))
            broker.send(spec.Basic.Ack(delivery_tag=message.tag), channel=7)

        self.assertEqual(await self.attack(wrongAcks, 2), [451, 451])
        timedOut = [line for line in self.lines() if "no confirm in time" in line]
        self.assertEqual(len(timedOut), 2)

    async def test_nack(self) -> None:
        """
        A nack: 451, the connection kept.
        """

        def nack(broker: HostileBroker, message: Published) -> None:
            broker.send(spec.Basic.Nack(delivery_tag=message.tag))

        self.assertEqual(await self.attack(nack, 2), [451, 451])

    async def test_returnOfAnotherMessage(self) -> None:
        """
        A C{Basic.Return} of a message never published before the ack of
        this one: 250.
        """

        def returnOther(broker: HostileBroker, message: Published) -> None:
            broker.send(spec.Basic.Return(312, "NO_ROUTE", "", "smtpd"))
            properties = pika.BasicProperties(message_id="never.1")
            assert broker.transport is not None
            broker.transport.write(bytes(pika.frame.Header(1, 2, properties).marshal()))
            broker.transport.write(bytes(pika.frame.Body(1, b"xx").marshal()))
            broker.transport.write(bytes(pika.frame.Heartbeat().marshal()))
            ack(broker, message)

        self.assertEqual(await self.attack(returnOther, 2), [250, 250])

    async def test_longConnectionCloseText(self) -> None:
        """
        A C{Connection.Close} whose reply text is 255 octets of control
        characters and escape sequences: 451, and one line of at most 200
        printable characters.
        """

        def close(broker: HostileBroker, message: Published) -> None:
            text = ("\x07\x1b[2J\x00\r\n" + "A" * 40) * 6
            broker.send(spec.Connection.Close(320, text[:255], 0, 0), channel=0)

        self.assertEqual(await self.attack(close, 1, lost=True), [451])
        [lost] = [line for line in self.lines() if "connection lost" in line]
        reason = lost.split("closed by the broker: ", 1)[1].rsplit("; again in", 1)[0]
        self.assertLessEqual(len(reason), 200)
        self.assertTrue(reason.isprintable() and reason.isascii(), reason)

    async def test_garbage(self) -> None:
        """
        Bytes that are no AMQP frame instead of the ack: 451 and one line.
        """

        def garbage(broker: HostileBroker, message: Published) -> None:
            assert broker.transport is not None
            broker.transport.write(b"\x01\x00\x01\x00\x00\x00\x02hi\x00garbage")

        self.assertEqual(await self.attack(garbage, 1, lost=True), [451])
        lost = [line for line in self.lines() if "connection lost" in line]
        self.assertEqual(len(lost), 1, self.lines())


class ClosedAnyTimeTests(HostileBrokerTestCase):
    """
    The handler closed at any point of its connection's life: the close
    completes, the client waiting for a confirm gets 451, and nothing is
    left behind.
    """

    async def closeWhen(
        self, script: Script, ready: Callable[[HostileBrokerFactory], bool], **kwargs: Any
    ) -> list[int]:
        """
        Send one message, close the handler once C{ready(factory)}; the
        reply to the message.
        """
        handler, server, factory = await self.serve(script, **kwargs)
        sent = deferToThread(deliver, server.port, 1)
        for _ in range(500):
            if ready(factory):
                break
            await pause(0.01)
        self.assertTrue(ready(factory))
        await handler.close()
        self.assertFalse(handler.ready)
        codes = await sent
        await self.assertClean(factory)
        return codes

    async def test_confirmPending(self) -> None:
        """
        Closed while the message waits for its confirm: 451.
        """
        codes = await self.closeWhen(silent, lambda factory: bool(factory.messages))
        self.assertEqual(codes, [451])

    async def test_blocked(self) -> None:
        """
        Closed while the broker blocks the connection, a message waiting
        for its confirm: 451, and pika's timer for the block is gone.
        """

        def block(broker: HostileBroker, message: Published) -> None:
            broker.send(spec.Connection.Blocked("low on memory"), channel=0)

        def blocked(factory: HostileBrokerFactory) -> bool:
            return any("blocked the connection" in line for line in self.lines())

        codes = await self.closeWhen(block, blocked, confirmTimeout=10.0)
        self.assertEqual(codes, [451])

    async def test_retryDelay(self) -> None:
        """
        Closed while waiting to reconnect: no new connection is made.
        """

        def drop(broker: HostileBroker, message: Published) -> None:
            assert broker.transport is not None
            broker.transport.abortConnection()  # type: ignore[attr-defined]

        codes = await self.closeWhen(drop, lambda factory: bool(factory.messages), firstRetry=30.0)
        self.assertEqual(codes, [451])

    async def test_heartbeatsMissed(self) -> None:
        """
        A broker that asked for heartbeats every second and sends none,
        closed while a message waits: 451, pika's heartbeat timers gone.
        """
        codes = await self.closeWhen(silent, lambda factory: bool(factory.messages), heartbeat=1)
        self.assertEqual(codes, [451])

    async def test_brokerClosing(self) -> None:
        """
        Closed right after the broker sent C{Connection.Close}.
        """

        def close(broker: HostileBroker, message: Published) -> None:
            broker.send(spec.Connection.Close(320, "CONNECTION_FORCED", 0, 0), channel=0)

        codes = await self.closeWhen(close, lambda factory: bool(factory.messages))
        self.assertEqual(codes, [451])


class UnreliableBrokerTests(HostileBrokerTestCase):
    """
    Brokers that come and go.
    """

    async def test_heartbeatsMissed(self) -> None:
        """
        A broker that asked for heartbeats every second and sends none is
        dropped within a few seconds: the message waiting for its confirm
        gets 451 before C{confirmTimeout}, with one line naming the cause.
        """
        codes = await self.attack(silent, 1, lost=True, heartbeat=1, confirmTimeout=20.0)
        self.assertEqual(codes, [451])
        lost = [line for line in self.lines() if "connection lost" in line]
        self.assertEqual(
            lost, ["message broker connection lost: no heartbeat from the broker; again in 0.1s"]
        )

    async def test_flapping(self) -> None:
        """
        A broker that drops every connection once its handshake is done,
        while clients keep coming: each is refused 451 at MAIL, and the
        pauses between connections double, with one line per connection
        lost.
        """
        handler, server, factory = await self.serve(ack, maxRetryDelay=0.8)
        factory.flapping = True
        codes: list[int] = []
        while factory.handshakes < 6:
            codes += await deferToThread(deliver, server.port, 1)
            self.assertLess(len(codes), 200, (factory.handshakes, self.lines()[-20:]))
            await pause(0.05)
        await handler.close()
        await self.assertClean(factory)
        self.assertEqual(set(codes), {451})
        lost = [line for line in self.lines() if "connection lost" in line]
        delays = [line.rsplit(" again in ", 1)[1] for line in lost]
        self.assertEqual(
            delays[:6], ["0.1s", "0.2s", "0.4s", "0.8s", "0.8s", "0.8s"][: len(delays)]
        )
        self.assertGreaterEqual(len(delays), 5, self.lines())
        # One line per connection lost (the last may be closed first).
        self.assertIn(len(lost), (factory.handshakes - 1, factory.handshakes))

    async def test_channelClosedThenSilent(self) -> None:
        """
        A broker that closes the channel instead of acking, then leaves the
        handler's C{Connection.Close} unanswered, its socket open: the
        next clients are refused at MAIL, the connection is dropped after
        C{connectTimeout} and made again, and messages are taken again.
        """
        answers = [ack]

        def closeChannel(broker: HostileBroker, message: Published) -> None:
            if broker.factory.answerClose:
                answers[0](broker, message)
                return
            broker.send(spec.Channel.Close(406, "PRECONDITION_FAILED", 60, 40))

        handler, server, factory = await self.serve(closeChannel, connectTimeout=0.5)
        factory.answerClose = False
        codes = await deferToThread(deliver, server.port, 2)
        self.assertEqual(codes, [451, 451])
        self.assertIn("refused MAIL: message broker unavailable", self.lines()[-1])
        factory.answerClose = True
        for _ in range(200):
            if handler.ready and len(factory.connections) >= 2:
                break
            await pause(0.02)
        self.assertEqual(await deferToThread(deliver, server.port, 1), [250])
        await handler.close()
        await self.assertClean(factory)
        lost = [line for line in self.lines() if "connection lost" in line]
        self.assertEqual(
            lost,
            [
                "message broker connection lost: channel closed by the broker:"
                " 406 PRECONDITION_FAILED; again in 0.1s"
            ],
        )
