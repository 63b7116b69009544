# -*- test-case-name: tests.integration.test_brokerstall -*-
"""
L{AMQPHandler} against a broker that stops reading, over real TCP on
127.0.0.1: a fake broker (RabbitMQ cannot be made to) completes the
handshake, then reads nothing more, its socket open.  Whatever the handler
published past the kernel's buffers would wait in memory, unread; the
handler waits for the send buffer to drain for C{confirmTimeout} seconds
at most, then drops the connection, and what it left unsent with it.
"""

from __future__ import annotations

import gc
import smtplib
import socket
import struct
from typing import Any

import pika
from pika import spec
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from twisted_smtpd import ServerOptions
from twisted_smtpd.handlers.amqp import AMQPHandler
from twisted_smtpd.testing import listenForTests

#: The fake broker's receive buffer, fixed (no autotuning, which on this
#: machine lets a loopback socket take up to C{tcp_rmem}'s 32 MiB unread).
RECEIVE_BUFFER = 65536

# Larger than what the sockets' buffers take on both sides: the fake
# broker's fixed one and the handler's send buffer (C{tcp_wmem}, 4 MiB).
MESSAGE = b"Subject: large\r\n\r\n" + (b"x" * 998 + b"\r\n") * 8000


def methodFrame(method: object, channel: int = 0) -> bytes:
    return bytes(pika.frame.Method(channel, method).marshal())


class DeafBroker(Protocol):
    """
    Answers the handshake of pika's publisher (to a confirmed channel with
    its queue declared), then reads nothing more.
    """

    def connectionMade(self) -> None:
        self.buffer = b""
        self.frames = 0
        self.factory.connections += 1  # type: ignore[attr-defined]
        self.factory.accepted.append(self.transport)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.buffer.startswith(b"AMQP"):
            self.buffer = self.buffer[8:]
            self.transport.write(  # type: ignore[union-attr]
                methodFrame(
                    spec.Connection.Start(
                        server_properties={
                            "capabilities": {"publisher_confirms": True, "basic.nack": True}
                        },
                        mechanisms="PLAIN",
                        locales="en_US",
                    )
                )
            )
        answers = {
            1: spec.Connection.Tune(channel_max=0, frame_max=131072, heartbeat=0),
            3: spec.Connection.OpenOk(),
            4: spec.Channel.OpenOk(),
            5: spec.Confirm.SelectOk(),
            6: spec.Queue.DeclareOk(queue="smtpd", message_count=0, consumer_count=0),
        }
        while len(self.buffer) >= 7:
            size = struct.unpack(">I", self.buffer[3:7])[0]
            if len(self.buffer) < size + 8:
                return
            self.buffer = self.buffer[size + 8 :]
            self.frames += 1
            answer = answers.get(self.frames)
            if answer is not None:
                self.transport.write(methodFrame(answer, 0 if self.frames < 4 else 1))  # type: ignore[union-attr]
            if self.frames == 6:
                # Deaf from now on.
                self.transport.pauseProducing()  # type: ignore[union-attr]
                return


def brokerFactory(test: TestCase, protocol: type[DeafBroker]) -> Factory:
    """
    A factory of C{protocol} whose connections are closed when C{test}
    ends: deaf, one would not see the handler close its end, and would be
    left open for the garbage collector to close.
    """
    factory = Factory.forProtocol(protocol)
    factory.connections = 0  # type: ignore[attr-defined]
    factory.accepted = []  # type: ignore[attr-defined]

    def closeAll() -> None:
        for transport in factory.accepted:  # type: ignore[attr-defined]
            transport.abortConnection()

    test.addCleanup(closeAll)
    return factory


class StalledBrokerTests(TestCase):
    """
    The handler in front of a broker that stopped reading.
    """

    timeout = 60

    async def test_deafBrokerDropped(self) -> None:
        """
        Messages larger than the sockets' buffers: the first fills them,
        the next waits for them to drain, is answered 451 after
        C{confirmTimeout}, and the connection is dropped with one line
        naming the cause, then made again.
        """
        # Objects earlier tests left for the garbage collector go now, not
        # while this test's sockets are open: one of them, seen closing a
        # descriptor number it no longer held when collected, closed the
        # fake broker's socket in the middle of this test.
        gc.collect()
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        factory = brokerFactory(self, DeafBroker)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        # Inherited by the connections it accepts.
        port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.addCleanup(port.stopListening)
        handler = AMQPHandler(
            f"amqp://guest:guest@127.0.0.1:{port.getHost().port}/%2F",
            confirmTimeout=1.0,
            firstRetry=0.1,
        )
        self.addCleanup(handler.close)
        options = ServerOptions(name="mx.test.invalid", disableReverseLookup=True, size=1 << 26)
        server = await listenForTests(handler, options)
        self.addCleanup(server.close)

        def send() -> list[Any]:
            replies = []
            for _ in range(3):
                try:
                    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
                        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
                    replies.append(250)
                except smtplib.SMTPResponseException as e:
                    replies.append(e.smtp_code)
            return replies

        replies = await deferToThread(send)
        self.assertEqual(replies, [451, 451, 451])
        lines = [formatEvent(e) for e in logged]
        stall = "the broker did not read what was sent within 1s"
        dropped = [line for line in lines if stall in line]
        self.assertEqual(len(dropped), 1, lines)
        # Made again after the drop.
        for _ in range(100):
            if factory.connections >= 2:  # type: ignore[attr-defined]
                break
            pause: Deferred[None] = Deferred()
            reactor.callLater(0.05, pause.callback, None)
            await pause
        self.assertGreaterEqual(factory.connections, 2)  # type: ignore[attr-defined]


class ClosingBroker(DeafBroker):
    """
    L{DeafBroker} that fires its factory's C{answered} once it has answered
    its C{at}-th frame of the handshake.
    """

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        answered: Deferred[None] = self.factory.answered  # type: ignore[attr-defined]
        if self.frames >= self.factory.at and not answered.called:  # type: ignore[attr-defined]
            answered.callback(None)


class ClosedDuringHandshakeTests(TestCase):
    """
    The handler closed in the middle of its handshake with the broker.
    """

    timeout = 60

    async def closeAt(self, frame: int) -> None:
        factory = brokerFactory(self, ClosingBroker)
        factory.at = frame  # type: ignore[attr-defined]
        factory.answered = Deferred()  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        handler = AMQPHandler(
            f"amqp://guest:guest@127.0.0.1:{port.getHost().port}/%2F", connectTimeout=0.5
        )
        handler.start()
        await factory.answered  # type: ignore[attr-defined]
        # At once, before the handler reads the broker's answer.
        await handler.close()
        self.assertFalse(handler.ready)
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_closedAtEveryFrame(self) -> None:
        """
        Closed right after the broker answered any step of the handshake
        (the last one, C{Queue.DeclareOk}, included), the handler leaves no
        call to the broker failing unheard: with C{Confirm.SelectOk}
        answered, pika failed the queue's declaration on the closing
        channel, and its error was logged as unhandled when collected.
        """
        for frame in range(1, 7):
            await self.closeAt(frame)
