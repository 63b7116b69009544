# -*- test-case-name: tests.integration.test_webhookearly -*-
"""
L{WebhookHandler} against a receiver that answers before it has read the
request body, then goes on reading it slowly: the next attempt's body is
whole, never mixed with what the first attempt still sends.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.test_handlers import feed, makeSession
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers.webhook import WebhookHandler

#: Large enough that the first request is still being sent, slowly, when
#: the second one starts.
MESSAGE = b"Subject: big\r\n\r\n" + os.urandom(3 * 1024 * 1024).hex().encode() + b"\r\n"


class _EarlyRefusal(Protocol):
    """
    Answer (503 unless told) as soon as the request head is in, then read
    the rest a little at a time.
    """

    def __init__(self, server: _Receiver, status: bytes = b"503 Busy") -> None:
        self._server = server
        self._status = status
        self._head = b""
        self._answered = False
        self._pace: LoopingCall | None = None

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        if self._answered:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
            return
        self._head += data
        if b"\r\n\r\n" in self._head:
            self._answered = True
            self.transport.write(b"HTTP/1.1 " + self._status + b"\r\nContent-Length: 0\r\n\r\n")
            self.transport.pauseProducing()  # type: ignore[attr-defined]
            self._pace = LoopingCall(self.transport.resumeProducing)  # type: ignore[attr-defined]
            self._pace.start(0.01, now=False)

    def connectionLost(self, reason: object = None) -> None:
        if self._pace is not None and self._pace.running:
            self._pace.stop()
        self._server.lost()


class _Accepting(Protocol):
    """
    Read one whole request (C{Content-Length}), keep its body, answer 200.
    """

    def __init__(self, server: _Receiver) -> None:
        self._server = server
        self._data = b""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self._data += data
        head, found, body = self._data.partition(b"\r\n\r\n")
        if not found:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) >= length:
            self._server.bodies.append(body[:length])
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            self._data = b""

    def connectionLost(self, reason: object = None) -> None:
        self._server.lost()


class _Receiver(Factory):
    """
    The first connection answers early (503 unless told) and reads
    slowly; the others accept.

    @ivar bodies: The request bodies accepted, whole.
    """

    noisy = False

    def __init__(self, early: bytes = b"503 Busy") -> None:
        self.early = early
        self.connections = 0
        self.bodies: list[bytes] = []
        self.open = 0
        self._idle: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        self.connections += 1
        self.open += 1
        if self.connections == 1:
            return _EarlyRefusal(self, self.early)
        return _Accepting(self)

    def lost(self) -> None:
        self.open -= 1
        if self.open == 0:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def closed(self) -> Deferred[None]:
        """
        Fires once no connection is open.
        """
        d: Deferred[None] = Deferred()
        if self.open == 0:
            d.callback(None)
        else:
            self._idle.append(d)
        return d


class EarlyAnswerTests(TestCase):
    """
    A receiver answering before it read the body.
    """

    timeout = 60

    async def test_retryBodyWhole(self) -> None:
        """
        After an early 503, the second attempt (on a new connection, while
        the first is still being read) sends the request body whole, and
        is accepted; nothing is logged as an error.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        receiver = _Receiver()
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(receiver)
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        handler = WebhookHandler(url, firstRetry=0.05, timeout=30)
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, MESSAGE)
        self.assertEqual(await d, "OK: queued as s1d.1")
        await handler.close()
        await receiver.closed()
        self.assertEqual(receiver.connections, 2)
        [body] = receiver.bodies
        self.assertIn(MESSAGE, body)
        errors = [formatEvent(e) for e in events if e["log_level"] >= LogLevel.error]
        self.assertEqual(errors, [])

    async def test_earlySuccessNotTaken(self) -> None:
        """
        A 200 that comes whole before the request body was sent cannot mean
        the receiver took the message: the attempt counts as failed and the
        next one, sending the body whole, is the one accepted.
        """
        receiver = _Receiver(early=b"200 OK")
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(receiver)
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        handler = WebhookHandler(url, firstRetry=0.05, timeout=30)
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, MESSAGE)
        self.assertEqual(await d, "OK: queued as s1d.1")
        await handler.close()
        await receiver.closed()
        self.assertEqual(receiver.connections, 2)
        [body] = receiver.bodies
        self.assertIn(MESSAGE, body)
