"""
A message's objects (its receiver, stream, decoder and the Deferreds between
them and the handler) form no reference cycle once the message is done, so
they are freed as soon as the session lets go of them, not by Python's
cyclic garbage collector, whose passes would otherwise run every few dozen
messages.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from twisted_smtpd._core.session import Session
from twisted_smtpd.handlers import SinkHandler
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.interfaces import IMessageStream
from twisted_smtpd.testing import MemorySession, memorySession


@implementer(IConsumer)
class _Collector:
    """
    A consumer that keeps the body and, like a durable handler, answers
    only when told to.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.producer: IProducer | None = None
        self.answer: Deferred[str] = Deferred()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.chunks.append(data)


class _PipingHandler(BaseHandler):
    """
    Pipes every body into a L{_Collector} and answers when the test fires
    its Deferred, after the body has ended.
    """

    def __init__(self) -> None:
        self.collectors: list[_Collector] = []

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[str]:
        collector = _Collector()
        self.collectors.append(collector)
        stream.pipe(collector)
        return collector.answer


def _startMessage(session: MemorySession) -> tuple[Any, Any]:
    session.send(b"EHLO client.example\r\n")
    session.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    receiver = session.protocol.receiver
    assert receiver is not None
    return weakref.ref(receiver), weakref.ref(receiver.stream)


class CycleTests(SynchronousTestCase):
    def setUp(self) -> None:
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)

    def assertFreed(self, *refs: weakref.ref[Any]) -> None:
        for ref in refs:
            self.assertIsNone(ref(), f"{ref()!r} still alive without the garbage collector")

    def test_drainedMessage(self) -> None:
        """
        A message the handler drains (the sink) is freed once it is
        answered.
        """
        session = memorySession(SinkHandler())
        receiverRef, streamRef = _startMessage(session)
        self.assertIn(b"250 ", session.send(b"Subject: x\r\n\r\nbody\r\n.\r\n"))
        self.assertFreed(receiverRef, streamRef)

    def test_pipedMessageAnsweredLater(self) -> None:
        """
        A message piped into a consumer and answered after its end (as the
        Maildir handler does) is freed once it is answered and the handler
        lets go of its consumer.
        """
        handler = _PipingHandler()
        session = memorySession(handler)
        receiverRef, streamRef = _startMessage(session)
        session.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        collector = handler.collectors.pop()
        self.assertIsNone(collector.producer)
        collectorRef = weakref.ref(collector)
        collector.answer.callback("OK: kept")
        del collector
        self.assertIn(b"250 2.0.0 OK: kept", session.read())
        self.assertFreed(receiverRef, streamRef, collectorRef)

    def test_failedMessage(self) -> None:
        """
        A message whose body fails (here: past the size limit) is freed
        once it is answered.
        """
        from twisted_smtpd import ServerOptions

        session = memorySession(
            SinkHandler(),
            ServerOptions(name="mx.test.invalid", disableReverseLookup=True, size=10),
        )
        receiverRef, streamRef = _startMessage(session)
        self.assertIn(b"552 ", session.send(b"x" * 100 + b"\r\n.\r\n"))
        self.assertFreed(receiverRef, streamRef)
