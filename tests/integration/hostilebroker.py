# -*- test-case-name: tests.integration.test_brokerhostile -*-
"""
A fake AMQP 0-9-1 broker over real TCP, for the tests of L{AMQPHandler}
against a broker that misbehaves: it answers the handshake of pika's
publisher (a confirmed channel, its queue declared), then hands every
message published to a script that decides what to answer, if anything.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pika
from pika import spec
from twisted.internet.protocol import Factory, Protocol


def methodFrame(method: object, channel: int = 0) -> bytes:
    """
    One method frame, as the broker sends it.
    """
    return bytes(pika.frame.Method(channel, method).marshal())


class Published:
    """
    A message published to the fake broker.

    @ivar tag: Its delivery tag (1, 2, ... on its channel).
    @ivar messageId: Its C{message_id} property.
    """

    def __init__(self, tag: int, messageId: str) -> None:
        self.tag = tag
        self.messageId = messageId


class HostileBroker(Protocol):
    """
    Answers the handshake, then calls C{factory.script(self, published)}
    for each message whose body arrived.  Answers the client's
    C{Channel.Close} and C{Connection.Close}.
    """

    factory: HostileBrokerFactory

    def connectionMade(self) -> None:
        self.buffer = b""
        self.tag = 0
        self.pending: tuple[int, str] | None = None
        self.remaining = 0
        self.received: list[object] = []
        self.factory.connections.append(self)

    def send(self, method: object, channel: int = 1) -> None:
        """
        Send one method frame.
        """
        assert self.transport is not None
        self.transport.write(methodFrame(method, channel))

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        if self.buffer.startswith(b"AMQP"):
            self.buffer = self.buffer[8:]
            self.send(
                spec.Connection.Start(
                    server_properties={
                        "capabilities": {"publisher_confirms": True, "basic.nack": True}
                    },
                    mechanisms="PLAIN",
                    locales="en_US",
                ),
                0,
            )
        while len(self.buffer) >= 7:
            size = struct.unpack(">I", self.buffer[3:7])[0]
            if len(self.buffer) < size + 8:
                return
            consumed, frame = pika.frame.decode_frame(self.buffer)
            self.buffer = self.buffer[consumed:]
            self.frameReceived(frame)
            if self.transport is None or self.transport.disconnecting:  # type: ignore[attr-defined]
                return

    def frameReceived(self, frame: Any) -> None:
        self.received.append(frame)
        if isinstance(frame, pika.frame.Method):
            method = frame.method
            answer = {
                spec.Connection.StartOk: spec.Connection.Tune(
                    channel_max=0, frame_max=131072, heartbeat=self.factory.heartbeat
                ),
                spec.Connection.Open: spec.Connection.OpenOk(),
                spec.Channel.Open: spec.Channel.OpenOk(),
                spec.Confirm.Select: spec.Confirm.SelectOk(),
                spec.Queue.Declare: spec.Queue.DeclareOk(
                    queue="smtpd", message_count=0, consumer_count=0
                ),
                spec.Channel.Close: spec.Channel.CloseOk(),
                spec.Connection.Close: spec.Connection.CloseOk(),
            }.get(type(method))
            if isinstance(method, spec.Connection.Close) and not self.factory.answerClose:
                answer = None
            if answer is not None:
                self.send(answer, frame.channel_number)
                if isinstance(method, spec.Queue.Declare):
                    self.factory.handshakes += 1
                    if self.factory.flapping:
                        assert self.transport is not None
                        self.transport.loseConnection()
            if isinstance(method, spec.Basic.Publish):
                self.tag += 1
        elif isinstance(frame, pika.frame.Header):
            self.pending = (self.tag, frame.properties.message_id)
            self.remaining = frame.body_size
            if self.remaining == 0:
                self.published()
        elif isinstance(frame, pika.frame.Body):
            self.remaining -= len(frame.fragment)
            if self.remaining <= 0:
                self.published()

    def published(self) -> None:
        assert self.pending is not None
        tag, messageId = self.pending
        self.pending = None
        message = Published(tag, messageId)
        self.factory.messages.append(message)
        self.factory.script(self, message)


class HostileBrokerFactory(Factory):
    """
    Makes L{HostileBroker}s running C{script}.

    @ivar connections: Every connection accepted.
    @ivar messages: Every message published.
    @ivar handshakes: How many handshakes were completed.
    @ivar flapping: Whether to drop each connection once its handshake is
        done.
    @ivar answerClose: Whether to answer the client's C{Connection.Close}.
    """

    protocol = HostileBroker
    noisy = False

    def __init__(
        self, script: Callable[[HostileBroker, Published], None], heartbeat: int = 0
    ) -> None:
        self.script = script
        self.heartbeat = heartbeat
        self.connections: list[HostileBroker] = []
        self.messages: list[Published] = []
        self.handshakes = 0
        self.flapping = False
        self.answerClose = True
