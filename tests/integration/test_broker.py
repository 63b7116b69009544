# -*- test-case-name: tests.integration.test_broker -*-
"""
L{AMQPHandler} against a real RabbitMQ broker on 127.0.0.1 (Debian package
C{rabbitmq-server}; these tests fail instead of skipping when C{CI} is set):
what is published, publisher confirms and nacks, the size limit, a broker
that is down, and a broker killed and restarted under load.
"""

from __future__ import annotations

import os
import smtplib
import threading
import time
from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.certs import CertificateAuthority
from tests.integration.helpers import freePort
from tests.integration.rabbitmq import RabbitMQ, sharedBroker
from twisted_smtpd.handlers.amqp import AMQPHandler
from twisted_smtpd.testing import TestServer, listenForTests

MESSAGE = b"From: alice@example.com\r\nSubject: queued\r\n\r\nhello\r\n"


def numbered(index: int, tag: str = "t") -> bytes:
    """
    A message with a unique C{Message-ID}.
    """
    return (
        f"From: a@example.com\r\nMessage-ID: <{tag}-{index}@test.invalid>\r\n"
        f"Subject: {index}\r\n\r\nbody {index}\r\n"
    ).encode()


def send(port: int, message: bytes = MESSAGE, size: int | None = None) -> tuple[int, bytes]:
    """
    One transaction; the reply to MAIL if it failed, else the reply to DATA.
    """
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example")
        options = [f"SIZE={size}"] if size is not None else []
        code, text = client.mail("a@example.com", options)
        if code != 250:
            return code, text
        client.rcpt("b@example.org")
        return client.data(message)


class BrokerTests(TestCase):
    """
    The handler publishing to a real broker.
    """

    timeout = 180

    def setUp(self) -> None:
        self.broker = sharedBroker()
        self.queue = "q-" + self.id().rsplit(".", 1)[-1]

    async def serve(self, **kwargs: Any) -> tuple[AMQPHandler, TestServer]:
        kwargs.setdefault("queue", self.queue)
        kwargs.setdefault("firstRetry", 0.1)
        kwargs.setdefault("maxRetryDelay", 0.5)
        url = kwargs.pop("url", self.broker.url)
        handler = AMQPHandler(url, **kwargs)
        self.addCleanup(handler.close)
        server = await listenForTests(handler)
        self.addCleanup(server.close)
        return handler, server

    async def test_publishedWithEnvelope(self) -> None:
        """
        The message is the body, persistent, with the envelope in its
        headers and the id of the 250 reply as its message id.
        """
        handler, server = await self.serve()
        code, text = await deferToThread(send, server.port)
        self.assertEqual(code, 250, text)
        [(properties, body)] = await deferToThread(self.broker.consume, self.queue, 1)
        self.assertEqual(body, MESSAGE)
        self.assertEqual(properties.delivery_mode, 2)
        self.assertEqual(properties.content_type, "message/rfc822")
        self.assertEqual(text.decode(), f"2.0.0 OK: queued as {properties.message_id}")
        headers = properties.headers
        self.assertEqual(headers["sender"], "a@example.com")
        self.assertEqual(headers["recipients"], ["b@example.org"])
        self.assertEqual(headers["helo"], "client.example")
        self.assertEqual(headers["clientAddress"], "127.0.0.1")
        self.assertEqual(headers["messageId"], properties.message_id)
        self.assertTrue(properties.message_id.startswith(headers["sessionId"] + "."))

    async def test_manyLongRecipients(self) -> None:
        """
        Recipients of the longest path (256 octets with its brackets) are
        accepted while the envelope fits in one frame, then refused with
        452 4.5.3; the client sends the message to those accepted (as
        Postfix's client does, keeping the rest for another transaction),
        and the broker takes it with every one in its headers.  (Before,
        all 1000 were accepted and the oversized header frame made the
        broker drop the connection: 451 for ever.)
        """
        handler, server = await self.serve()

        def sendMany() -> tuple[list[str], tuple[int, bytes], tuple[int, bytes]]:
            accepted = []
            with smtplib.SMTP("127.0.0.1", server.port, timeout=60) as client:
                client.ehlo("client.example")
                client.mail("a@example.com")
                for index in range(1000):
                    recipient = f"{'a' * 60}{index:04d}@{'d' * 60}.{'d' * 60}.{'d' * 59}.example"
                    reply = client.rcpt(recipient)
                    if reply[0] != 250:
                        break
                    accepted.append(recipient)
                return accepted, reply, client.data(MESSAGE)

        accepted, refusal, reply = await deferToThread(sendMany)
        self.assertEqual(refusal, (452, b"4.5.3 Error: too many recipients"))
        self.assertEqual(reply[0], 250, reply)
        self.assertGreater(len(accepted), 100)
        [(properties, body)] = await deferToThread(self.broker.consume, self.queue, 1)
        self.assertEqual(body, MESSAGE)
        self.assertEqual(properties.headers["recipients"], accepted)

    async def test_nack(self) -> None:
        """
        A queue that refuses more than one message (C{x-overflow}
        C{reject-publish}) makes the broker nack the second: 451, and the
        queue holds one message.
        """
        arguments = {"x-max-length": 1, "x-overflow": "reject-publish"}
        handler, server = await self.serve(queueArguments=arguments)
        first = await deferToThread(send, server.port)
        second = await deferToThread(send, server.port)
        self.assertEqual(first[0], 250)
        self.assertEqual(
            second,
            (451, b"4.3.0 Error: message broker did not take the message (refused by the broker)"),
        )
        self.assertEqual(await deferToThread(self.broker.depth, self.queue), 1)

    async def test_unroutable(self) -> None:
        """
        A routing key no queue is bound to is 451, not a silent loss.
        """
        handler, server = await self.serve(routingKey="nowhere-" + self.queue)
        code, text = await deferToThread(send, server.port)
        self.assertEqual(
            (code, text),
            (451, b"4.3.0 Error: message broker did not take the message (no queue bound)"),
        )

    async def test_sizeLimit(self) -> None:
        """
        Over C{maxMessageSize}, a declared SIZE is refused at MAIL and a
        body at its end, both 552; nothing is published.
        """
        handler, server = await self.serve(maxMessageSize=1000)
        code, text = await deferToThread(send, server.port, MESSAGE, 1001)
        self.assertEqual(
            (code, text), (552, b"5.3.4 Error: message too big for the message broker")
        )
        big = b"Subject: big\r\n\r\n" + b"x" * 2000 + b"\r\n"
        code, text = await deferToThread(send, server.port, big)
        self.assertEqual(
            (code, text), (552, b"5.3.4 Error: message too big for the message broker")
        )
        code, text = await deferToThread(send, server.port, MESSAGE, 500)
        self.assertEqual(code, 250)
        self.assertEqual(await deferToThread(self.broker.depth, self.queue), 1)

    async def test_confirmTimeout(self) -> None:
        """
        A broker that takes a message but does not confirm it in time (its
        processes stopped) gets 451; once it runs again, the late confirm
        is ignored and the next message is published as usual.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        broker = RabbitMQ(self.mktemp())
        self.addCleanup(broker.shutdown)
        await deferToThread(broker.start)
        handler, server = await self.serve(url=broker.url, confirmTimeout=3.0)
        self.assertEqual((await deferToThread(send, server.port))[0], 250)
        await deferToThread(broker.pause)
        try:
            code, text = await deferToThread(send, server.port)
        finally:
            broker.resume()
        self.assertEqual(
            (code, text),
            (451, b"4.3.0 Error: message broker did not confirm the message (no confirm in time)"),
            "\n".join(formatEvent(e) for e in events),
        )
        self.assertEqual((await deferToThread(send, server.port))[0], 250)
        # The unconfirmed message reached the queue too: at least once.
        self.assertEqual(await deferToThread(broker.depth, self.queue), 3)

    async def test_brokerUnreachable(self) -> None:
        """
        With no broker listening, MAIL is refused with 451 at once, before
        any message text is sent.
        """
        url = f"amqp://guest:guest@127.0.0.1:{freePort()}/%2F"
        handler, server = await self.serve(url=url)
        started = time.monotonic()
        code, text = await deferToThread(send, server.port)
        self.assertEqual(
            (code, text), (451, b"4.3.0 Error: message broker unavailable, try again later")
        )
        self.assertLess(time.monotonic() - started, 10)
        self.assertFalse(handler.ready)

    async def test_refusalsNamed(self) -> None:
        """
        A wrong password and a missing virtual host each leave one line
        naming the broker's reply code and text (pika's Twisted adapter
        reports both as C{1}), and MAIL is answered 451.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        port = self.broker.port
        cases = [
            (
                f"amqp://guest:wrong@127.0.0.1:{port}/%2F",
                "closed by the broker: 403 ACCESS_REFUSED - Login was refused using"
                " authentication mechanism PLAIN",
            ),
            (
                f"amqp://guest:guest@127.0.0.1:{port}/nowhere",
                "closed by the broker: 530 NOT_ALLOWED - vhost nowhere not found",
            ),
        ]
        for url, reason in cases:
            handler, server = await self.serve(url=url)
            code, text = await deferToThread(send, server.port)
            self.assertEqual(code, 451, text)
            failed = [
                formatEvent(event)
                for event in events
                if formatEvent(event).startswith("message broker connection failed")
            ]
            self.assertTrue(failed[-1].startswith(f"message broker connection failed: {reason}"))
            await handler.close()

    async def test_brokerKilledMidLoad(self) -> None:
        """
        Clients send messages while the broker is killed (C{SIGKILL}) and
        restarted: they get 451 or lose the connection meanwhile and try
        again; every message that got 250 is in the queue afterwards.

        RabbitMQ may not keep across a C{SIGKILL} a queue declared moments
        before (seen with 3.10: "Recovering 0 queues" at the restart, and
        every message confirmed before the kill gone with the queue): the
        broker is restarted cleanly once after the handler declared it,
        before the load begins.
        """
        broker = RabbitMQ(self.mktemp())
        self.addCleanup(broker.shutdown)
        await deferToThread(broker.start)
        handler, server = await self.serve(url=broker.url, confirmTimeout=10)
        first = numbered(999_999)
        code, text = await deferToThread(send, server.port, first)
        self.assertEqual(code, 250, text)
        await deferToThread(broker.stop)
        await deferToThread(broker.start)
        accepted: set[bytes] = {first}
        refusals: list[object] = []
        lock = threading.Lock()
        perClient = 25

        def client(number: int) -> None:
            for index in range(perClient):
                message = numbered(number * 1000 + index)
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        code, text = send(server.port, message)
                    except (smtplib.SMTPException, OSError) as e:
                        code, text = 0, repr(e).encode()
                    if code == 250:
                        with lock:
                            accepted.add(message)
                        break
                    with lock:
                        refusals.append((code, text))
                    time.sleep(0.05)

        def killAndRestart() -> None:
            deadline = time.monotonic() + 60
            while len(accepted) < 21 and time.monotonic() < deadline:
                time.sleep(0.01)
            broker.stop(kill=True)
            time.sleep(1)
            broker.start()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        threads.append(threading.Thread(target=killAndRestart))

        def run() -> None:
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)

        await deferToThread(run)
        self.assertEqual(len(accepted), 1 + 4 * perClient)
        self.assertTrue(refusals, "the broker was never seen down")
        self.assertTrue(all(code in (0, 451) for code, _ in refusals), refusals[:5])  # type: ignore[misc]
        depth = await deferToThread(broker.depth, self.queue)
        got = await deferToThread(broker.consume, self.queue, depth)
        self.assertEqual(accepted - {body for _, body in got}, set())

    async def test_tls(self) -> None:
        """
        C{amqps://} speaks TLS to the broker, verified against
        C{caCertificates}; a broker whose CA is not trusted is unavailable
        (451 at MAIL).
        """
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = ca.server("localhost")
        tlsPort = freePort()
        broker = RabbitMQ(
            self.mktemp(),
            f"listeners.ssl.1 = 127.0.0.1:{tlsPort}\n"
            f"ssl_options.cacertfile = {ca.certificatePath}\n"
            f"ssl_options.certfile = {issued.certificatePath}\n"
            f"ssl_options.keyfile = {issued.keyPath}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n",
        )
        self.addCleanup(broker.shutdown)
        await deferToThread(broker.start)
        url = f"amqps://guest:guest@localhost:{tlsPort}/%2F"
        handler, server = await self.serve(url=url, caCertificates=ca.certificatePath)
        code, text = await deferToThread(send, server.port)
        self.assertEqual(code, 250, text)
        [(properties, body)] = await deferToThread(broker.consume, self.queue, 1)
        self.assertEqual(body, MESSAGE)
        untrusted, other = await self.serve(url=url)
        code, text = await deferToThread(send, other.port)
        self.assertEqual(code, 451, text)
