# -*- test-case-name: tests.integration.test_brokerreturns -*-
"""
L{AMQPHandler} against a real RabbitMQ broker (these tests fail instead of
skipping when C{CI} is set): messages the broker returns while others are
confirmed around them, and a broker that negotiates smaller frames.
"""

from __future__ import annotations

import smtplib
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.integration.rabbitmq import RabbitMQ, requireRabbitMQ, sharedBroker
from tests.integration.test_broker import numbered
from twisted_smtpd.handlers.amqp import AMQPHandler
from twisted_smtpd.testing import TestServer, listenForTests


def longRecipient(index: int) -> str:
    """
    A recipient of 254 octets (256 with its angle brackets, the longest
    path RFC 5321 section 4.5.3.1.3 allows), in labels of at most 63.
    """
    address = f"{'a' * 60}{index:04d}@{'d' * 60}.{'d' * 60}.{'d' * 59}.example"
    assert len(address) == 254
    return address


def deliver(port: int, message: bytes) -> tuple[int, bytes]:
    """
    One transaction of C{message} to one recipient; the reply to DATA, or
    C{0} and the error if the dialogue failed.
    """
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo("client.example")
            client.mail("a@example.com")
            client.rcpt("b@example.org")
            return client.data(message)
    except (smtplib.SMTPException, OSError) as e:
        return 0, repr(e).encode()


class ReturnsTests(TestCase):
    """
    The handler publishing to a real broker that returns some messages.
    """

    timeout = 240

    async def serve(self, url: str, **kwargs: Any) -> tuple[AMQPHandler, TestServer]:
        handler = AMQPHandler(url, firstRetry=0.1, maxRetryDelay=0.5, **kwargs)
        self.addCleanup(handler.close)
        server = await listenForTests(handler)
        self.addCleanup(server.close)
        return handler, server

    async def test_bindingToggledUnderLoad(self) -> None:
        """
        Clients send messages while the only queue bound to the exchange is
        unbound and bound again, over and over: the broker returns the
        messages published meanwhile (451) and acknowledges the others, in
        any order and often several at once; every message answered 250 is
        in the queue.  (Before, a return was handed to whichever message
        the next ack was for: seen here, now and then, as a message
        answered 250 and not queued; L{tests.test_amqpconfirms} pins the
        orders that did it.)
        """
        broker = sharedBroker()
        name = "returns-" + self.id().rsplit(".", 1)[-1]

        def open() -> Any:
            import pika

            connection = pika.BlockingConnection(pika.URLParameters(broker.url))
            channel = connection.channel()
            channel.exchange_declare(name, "direct", durable=True)
            channel.queue_declare(name, durable=True)
            channel.queue_bind(name, name, routing_key="k")
            return connection, channel

        await deferToThread(lambda: open()[0].close())
        handler, server = await self.serve(broker.url, exchange=name, queue="", routingKey="k")
        accepted: set[bytes] = set()
        returned: list[bytes] = []
        lock = threading.Lock()
        done = threading.Event()
        clients, perClient = 24, 20

        def client(number: int) -> None:
            for index in range(perClient):
                message = numbered(number * 1000 + index, name)
                code, text = deliver(server.port, message)
                with lock:
                    if code == 250:
                        accepted.add(message)
                    elif b"no queue bound" in text:
                        returned.append(message)

        def toggle() -> None:
            connection, channel = open()
            bound = True
            while not done.is_set():
                if bound:
                    channel.queue_unbind(name, name, routing_key="k")
                else:
                    channel.queue_bind(name, name, routing_key="k")
                bound = not bound
                connection.sleep(0.003)
            if not bound:
                channel.queue_bind(name, name, routing_key="k")
            connection.close()

        def run() -> None:
            threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
            toggler = threading.Thread(target=toggle)
            toggler.start()
            for t in threads:
                t.start()
            for t in threads:
                t.join(200)
            done.set()
            toggler.join(30)

        await deferToThread(run)
        self.assertTrue(accepted and returned, (len(accepted), len(returned)))
        depth = await deferToThread(broker.depth, name)
        got = {body for _, body in await deferToThread(broker.consume, name, depth)}
        lost = accepted - got
        self.assertEqual(
            lost, set(), f"{len(lost)} of {len(accepted)} messages answered 250 not queued"
        )


class QueueDeletedTests(TestCase):
    """
    The handler's queue deleted while it is connected.
    """

    timeout = 120

    async def test_queueDeclaredAgain(self) -> None:
        """
        After its queue is deleted (by an operator, or expired), the
        message the broker returns is 451, the handler declares the queue
        again, and the next message is taken and queued.
        """
        broker = sharedBroker()
        queue = "deleted-" + self.id().rsplit(".", 1)[-1]
        handler = AMQPHandler(broker.url, queue=queue, firstRetry=0.1, maxRetryDelay=0.2)
        self.addCleanup(handler.close)
        server = await listenForTests(handler)
        self.addCleanup(server.close)
        code, text = await deferToThread(deliver, server.port, numbered(1, queue))
        self.assertEqual(code, 250, text)

        def delete() -> None:
            import pika

            connection = pika.BlockingConnection(pika.URLParameters(broker.url))
            connection.channel().queue_delete(queue)
            connection.close()

        await deferToThread(delete)
        code, text = await deferToThread(deliver, server.port, numbered(2, queue))
        self.assertEqual(
            (code, text),
            (451, b"4.3.0 Error: message broker did not take the message (no queue bound)"),
        )
        code, text = await deferToThread(deliver, server.port, numbered(3, queue))
        self.assertEqual(code, 250, text)
        [(properties, body)] = await deferToThread(broker.consume, queue, 1)
        self.assertEqual(body, numbered(3, queue))


class MissingExchangeTests(TestCase):
    """
    An exchange to publish to that the broker does not have.
    """

    timeout = 120

    async def test_missingExchangeRefusedAtMail(self) -> None:
        """
        With no queue to declare, a missing exchange is found at connection
        (one line naming the broker's 404), and MAIL is answered 451 before
        any message is sent; once the exchange exists, messages are
        published to it.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        broker = sharedBroker()
        name = "missing-" + self.id().rsplit(".", 1)[-1]
        handler = AMQPHandler(
            broker.url, exchange=name, queue="", routingKey="k", firstRetry=0.1, maxRetryDelay=0.2
        )
        self.addCleanup(handler.close)
        server = await listenForTests(handler)
        self.addCleanup(server.close)

        def mail() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=60) as client:
                client.ehlo("client.example")
                return client.mail("a@example.com")

        self.assertEqual(
            await deferToThread(mail),
            (451, b"4.3.0 Error: message broker unavailable, try again later"),
        )
        failed = [
            formatEvent(event)
            for event in events
            if formatEvent(event).startswith("message broker connection failed")
        ]
        self.assertEqual(
            failed[0],
            "message broker connection failed: channel closed by the broker: 404 NOT_FOUND"
            f" - no exchange '{name}' in vhost '/'; again in 0.1s",
        )

        def declare() -> None:
            import pika

            connection = pika.BlockingConnection(pika.URLParameters(broker.url))
            channel = connection.channel()
            channel.exchange_declare(name, "direct")
            channel.queue_declare(name)
            channel.queue_bind(name, name, routing_key="k")
            connection.close()

        await deferToThread(declare)
        while not handler.ready:
            await deferLater(reactor, 0.05, lambda: None)
        code, text = await deferToThread(deliver, server.port, numbered(1, name))
        self.assertEqual(code, 250, text)
        self.assertEqual(await deferToThread(broker.depth, name), 1)


class FrameMaxTests(TestCase):
    """
    A broker configured with a small C{frame_max} (C{frame_max = 8192} in
    C{rabbitmq.conf}) tunes every connection to it.
    """

    timeout = 180

    def setUp(self) -> None:
        requireRabbitMQ()

    async def test_recipientsBoundedByBrokerFrameMax(self) -> None:
        """
        Recipients past what the broker's 8 KiB frames can carry are
        refused with 452 4.5.3; the message to those accepted is published
        and confirmed on the same connection, never lost to a frame the
        broker refuses.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        broker = RabbitMQ(self.mktemp(), "frame_max = 8192\n")
        self.addCleanup(broker.shutdown)
        await deferToThread(broker.start)
        queue = "small-frames"
        handler = AMQPHandler(broker.url, queue=queue, firstRetry=0.1, maxRetryDelay=0.5)
        self.addCleanup(handler.close)
        server = await listenForTests(handler)
        self.addCleanup(server.close)

        def dialogue() -> tuple[list[int], tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=60) as client:
                client.ehlo("client.example")
                client.mail("a@example.com")
                codes = [client.rcpt(longRecipient(i))[0] for i in range(40)]
                return codes, client.data(numbered(1, "frames"))

        codes, reply = await deferToThread(dialogue)
        taken = codes.count(250)
        self.assertEqual(codes, [250] * taken + [452] * (40 - taken))
        self.assertGreater(taken, 20)
        self.assertEqual(reply[0], 250, reply)
        self.assertLess(taken, 40)
        [(properties, body)] = await deferToThread(broker.consume, queue, 1)
        self.assertEqual(len(properties.headers["recipients"]), taken)
        lines = [formatEvent(event) for event in events]
        self.assertEqual([line for line in lines if "connection lost" in line], [])
