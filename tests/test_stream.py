# -*- test-case-name: tests.test_stream -*-
"""
Tests for L{twisted_smtpd._stream.MessageStream}.
"""

from __future__ import annotations

import gc
import io

from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests import replies
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Session
from twisted_smtpd._stream import COLLECT_LIMIT, MAX_KEPT_CHUNKS, MessageStream
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream
from twisted_smtpd.testing import MessageRecorder, memorySession


@implementer(IPushProducer)
class FakeUpstream:
    """
    An upstream producer recording what it is asked.
    """

    def __init__(self) -> None:
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


@implementer(IConsumer)
class RecordingConsumer:
    """
    A consumer keeping the very chunk objects it is given; it can pause its
    producer after each write, stop it when registered, or fail.
    """

    def __init__(self, pauseEachWrite: bool = False, stopOnRegister: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.producer: IProducer | None = None
        self.pauseEachWrite = pauseEachWrite
        self.stopOnRegister = stopOnRegister
        self.error: Exception | None = None

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.producer = producer
        if self.stopOnRegister:
            producer.stopProducing()

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.chunks.append(data)
        if self.pauseEachWrite:
            assert isinstance(self.producer, MessageStream)
            self.producer.pauseProducing()


def sizeError() -> SMTPError:
    """
    The error the protocol fails a stream with when the size limit is passed.
    """
    return SMTPError(552, "Message size exceeds fixed maximum message size", "5.3.4")


class InterfaceTests(SynchronousTestCase):
    """
    L{MessageStream} provides what it claims.
    """

    def test_interfaces(self) -> None:
        """
        It provides L{IMessageStream} and L{IPushProducer}.
        """
        stream = MessageStream()
        self.assertTrue(verifyObject(IMessageStream, stream))
        self.assertTrue(verifyObject(IPushProducer, stream))

    def test_initialState(self) -> None:
        """
        A new stream is empty, not ended, not attached, within the size.
        """
        stream = MessageStream()
        self.assertEqual(stream.byteLength, 0)
        self.assertFalse(stream.ended)
        self.assertFalse(stream.attached)
        self.assertFalse(stream.sizeExceeded)

    def test_secondAttachRaises(self) -> None:
        """
        Only one consumer method may be called, once.
        """
        for first in ("collect", "drain", "pipeToFile", "pipe"):
            for second in ("collect", "drain", "pipeToFile", "pipe"):
                stream = MessageStream()
                self._attach(stream, first)
                self.assertTrue(stream.attached)
                self.assertRaises(RuntimeError, self._attach, stream, second)

    def _attach(self, stream: MessageStream, how: str) -> object:
        if how == "pipe":
            return stream.pipe(StringTransport())
        if how == "pipeToFile":
            return stream.pipeToFile(io.BytesIO())
        if how == "collect":
            return stream.collect()
        return stream.drain()


class PipeTests(SynchronousTestCase):
    """
    L{MessageStream.pipe} streams into an L{IConsumer} with flow control.
    """

    def test_pipeWritesAndUnregisters(self) -> None:
        """
        The stream registers as a streaming producer, writes every chunk,
        and at the end unregisters and fires with the byte count.
        """
        stream = MessageStream()
        transport = StringTransport()
        d = stream.pipe(transport)
        self.assertIs(transport.producer, stream)
        self.assertTrue(transport.streaming)
        stream._write(b"Subject: hi\r\n")
        stream._write(b"\r\nbody\r\n")
        self.assertNoResult(d)
        stream._finish()
        self.assertEqual(transport.value(), b"Subject: hi\r\n\r\nbody\r\n")
        self.assertIsNone(transport.producer)
        self.assertEqual(self.successResultOf(d), 21)
        self.assertTrue(stream.ended)
        self.assertEqual(stream.byteLength, 21)

    def test_passThrough(self) -> None:
        """
        While the consumer flows, each chunk object is handed on as it is.
        """
        stream = MessageStream()
        consumer = RecordingConsumer()
        stream.pipe(consumer)
        chunk = b"x" * 1000
        stream._write(chunk)
        self.assertIs(consumer.chunks[0], chunk)

    def test_pauseBuffersThenResumes(self) -> None:
        """
        A paused consumer gets nothing; what arrives is kept and handed on in
        order when it resumes.
        """
        upstream = FakeUpstream()
        stream = MessageStream(upstream, maxBuffer=100)
        transport = StringTransport()
        stream.pipe(transport)
        stream._write(b"a")
        stream.pauseProducing()
        stream._write(b"b")
        stream._write(b"c")
        self.assertEqual(transport.value(), b"a")
        self.assertEqual(upstream.events, [])
        stream.resumeProducing()
        self.assertEqual(transport.value(), b"abc")
        stream._write(b"d")
        self.assertEqual(transport.value(), b"abcd")
        self.assertEqual(upstream.events, [])

    def test_pauseReachesUpstream(self) -> None:
        """
        Once more than C{maxBuffer} bytes are kept for a paused consumer,
        upstream is paused, once; it is resumed when all is handed on.
        """
        upstream = FakeUpstream()
        stream = MessageStream(upstream, maxBuffer=10)
        transport = StringTransport()
        stream.pipe(transport)
        stream.pauseProducing()
        stream._write(b"x" * 10)
        self.assertEqual(upstream.events, [])
        stream._write(b"y")
        stream._write(b"z")
        self.assertEqual(upstream.events, ["pause"])
        stream.resumeProducing()
        self.assertEqual(upstream.events, ["pause", "resume"])
        self.assertEqual(transport.value(), b"x" * 10 + b"yz")

    def test_manySmallChunksReachUpstream(self) -> None:
        """
        More than L{MAX_KEPT_CHUNKS} chunks kept for a paused consumer pause
        upstream, however few bytes they hold (each chunk costs memory of its
        own: a body in BDAT chunks of two octets took ten times C{maxBuffer});
        upstream is resumed and the body handed on whole once the consumer
        resumes.
        """
        upstream = FakeUpstream()
        stream = MessageStream(upstream)
        transport = StringTransport()
        stream.pipe(transport)
        stream.pauseProducing()
        for _ in range(MAX_KEPT_CHUNKS):
            stream._write(b"ab")
        self.assertEqual(upstream.events, [])
        stream._write(b"cd")
        self.assertEqual(upstream.events, ["pause"])
        stream.resumeProducing()
        self.assertEqual(upstream.events, ["pause", "resume"])
        self.assertEqual(transport.value(), b"ab" * MAX_KEPT_CHUNKS + b"cd")

    def test_consumerPausesDuringFlush(self) -> None:
        """
        A consumer that pauses again while being handed kept chunks gets them
        one resume at a time, in order; upstream resumes only when all is out.
        """
        upstream = FakeUpstream()
        stream = MessageStream(upstream, maxBuffer=1)
        consumer = RecordingConsumer(pauseEachWrite=True)
        for chunk in (b"1", b"2", b"3"):
            stream._write(chunk)
        self.assertEqual(upstream.events, ["pause"])
        d = stream.pipe(consumer)
        stream._finish()
        self.assertEqual(consumer.chunks, [b"1"])
        stream.resumeProducing()
        self.assertEqual(consumer.chunks, [b"1", b"2"])
        self.assertEqual(upstream.events, ["pause"])
        self.assertNoResult(d)
        stream.resumeProducing()
        self.assertEqual(consumer.chunks, [b"1", b"2", b"3"])
        self.assertEqual(upstream.events, ["pause", "resume"])
        self.assertEqual(self.successResultOf(d), 3)
        self.assertIsNone(consumer.producer)

    def test_finishWhilePaused(self) -> None:
        """
        The end waits for kept chunks: the L{Deferred} fires once the
        consumer resumes and has them all.
        """
        stream = MessageStream()
        transport = StringTransport()
        d = stream.pipe(transport)
        stream.pauseProducing()
        stream._write(b"late")
        stream._finish()
        self.assertNoResult(d)
        self.assertIs(transport.producer, stream)
        stream.resumeProducing()
        self.assertEqual(transport.value(), b"late")
        self.assertEqual(self.successResultOf(d), 4)
        self.assertIsNone(transport.producer)

    def test_finishWhilePausedWithNothingKept(self) -> None:
        """
        Paused with nothing kept, the end completes at once.
        """
        stream = MessageStream()
        transport = StringTransport()
        d = stream.pipe(transport)
        stream._write(b"abc")
        stream.pauseProducing()
        stream._finish()
        self.assertEqual(self.successResultOf(d), 3)

    def test_stopProducingDiscards(self) -> None:
        """
        After the consumer stops the stream, the rest is discarded, upstream
        is never paused again, the stream does not unregister itself and the
        L{Deferred} fires with the whole body's byte count at the end.
        """
        upstream = FakeUpstream()
        stream = MessageStream(upstream, maxBuffer=4)
        transport = StringTransport()
        d = stream.pipe(transport)
        stream._write(b"kept")
        stream.pauseProducing()
        stream._write(b"held back")
        self.assertEqual(upstream.events, ["pause"])
        stream.stopProducing()
        self.assertEqual(upstream.events, ["pause", "resume"])
        stream.pauseProducing()
        stream._write(b"y" * 100)
        stream.resumeProducing()
        self.assertEqual(transport.value(), b"kept")
        self.assertEqual(upstream.events, ["pause", "resume"])
        self.assertNoResult(d)
        stream._finish()
        self.assertEqual(self.successResultOf(d), 113)
        self.assertIs(transport.producer, stream)

    def test_stoppedOnRegister(self) -> None:
        """
        A consumer that stops the stream as soon as it registers (a lost
        connection) gets nothing and a byte count at the end.
        """
        stream = MessageStream()
        stream._write(b"early")
        consumer = RecordingConsumer(stopOnRegister=True)
        d = stream.pipe(consumer)
        stream._write(b"late")
        stream._finish()
        self.assertEqual(consumer.chunks, [])
        self.assertEqual(self.successResultOf(d), 9)

    def test_consumerWriteFails(self) -> None:
        """
        If the consumer raises while written to, the L{Deferred} fails with
        that error and the rest is discarded without pausing upstream.
        """
        upstream = FakeUpstream()
        stream = MessageStream(upstream, maxBuffer=1)
        consumer = RecordingConsumer()
        d = stream.pipe(consumer)
        consumer.error = OSError("disk full")
        stream._write(b"a")
        self.failureResultOf(d, OSError)
        stream.pauseProducing()
        stream._write(b"bbbb")
        stream._finish()
        self.assertEqual(consumer.chunks, [])
        self.assertEqual(upstream.events, [])

    def test_failAfterAttach(self) -> None:
        """
        A failed body unregisters the stream from its consumer, then fails
        the L{Deferred} with the reason.
        """
        stream = MessageStream()
        transport = StringTransport()
        d = stream.pipe(transport)
        stream._write(b"part")
        order: list[str] = []

        def failed(f: Failure) -> Failure:
            order.append("errback")
            self.assertIsNone(transport.producer)
            return f

        d.addErrback(failed)
        stream.sizeExceeded = True
        stream._fail(sizeError())
        self.assertEqual(order, ["errback"])
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 552)
        self.assertTrue(stream.ended)

    def test_failWhilePausedResumesUpstream(self) -> None:
        """
        A failure drops what is kept and resumes a paused upstream.
        """
        upstream = FakeUpstream()
        stream = MessageStream(upstream, maxBuffer=2)
        d = stream.pipe(StringTransport())
        stream.pauseProducing()
        stream._write(b"abc")
        stream._fail(Failure(ConnectionLost()))
        self.assertEqual(upstream.events, ["pause", "resume"])
        self.failureResultOf(d, ConnectionLost)
        stream.resumeProducing()
        self.assertEqual(upstream.events, ["pause", "resume"])


class BufferBeforeAttachTests(SynchronousTestCase):
    """
    Chunks arriving before a consumer attaches are kept, within bounds.
    """

    def test_pauseAtMaxBuffer(self) -> None:
        """
        Upstream is paused once more than C{maxBuffer} bytes wait, and
        resumed when a consumer takes them.
        """
        upstream = FakeUpstream()
        stream = MessageStream(upstream, maxBuffer=8)
        stream._write(b"12345678")
        self.assertEqual(upstream.events, [])
        stream._write(b"9")
        stream._write(b"0")
        self.assertEqual(upstream.events, ["pause"])
        f = io.BytesIO()
        d = stream.pipeToFile(f)
        self.assertEqual(upstream.events, ["pause", "resume"])
        self.assertEqual(f.getvalue(), b"1234567890")
        stream._write(b"!")
        stream._finish()
        self.assertEqual(self.successResultOf(d), 11)
        self.assertEqual(f.getvalue(), b"1234567890!")

    def test_noUpstream(self) -> None:
        """
        Without an upstream producer, chunks are simply kept.
        """
        stream = MessageStream(maxBuffer=1)
        stream._write(b"abc")
        stream._write(b"def")
        stream._finish()
        self.assertEqual(self.successResultOf(stream.collect()), b"abcdef")

    def test_attachAfterEnd(self) -> None:
        """
        A consumer attached after the end gets everything, synchronously.
        """
        stream = MessageStream()
        stream._write(b"a\r\n")
        stream._finish()
        transport = StringTransport()
        d = stream.pipe(transport)
        self.assertEqual(transport.value(), b"a\r\n")
        self.assertEqual(self.successResultOf(d), 3)
        self.assertIsNone(transport.producer)

    def test_failBeforeAttach(self) -> None:
        """
        A failure before any consumer is given to the first one to attach,
        without registering a pipe consumer; upstream is resumed at once.
        """
        upstream = FakeUpstream()
        stream = MessageStream(upstream, maxBuffer=1)
        stream._write(b"xx")
        stream._fail(sizeError())
        self.assertEqual(upstream.events, ["pause", "resume"])
        transport = StringTransport()
        d = stream.pipe(transport)
        self.assertIsNone(transport.producer)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 552)

    def test_unconsumedFailureNotLogged(self) -> None:
        """
        A failure no consumer ever asks for is not logged as an unhandled
        error in a L{Deferred}.
        """
        stream = MessageStream()
        stream._fail(Failure(ConnectionLost()))
        del stream
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])


class ConsumerMethodTests(SynchronousTestCase):
    """
    C{collect}, C{drain} and C{pipeToFile}.
    """

    def test_collect(self) -> None:
        """
        C{collect} fires with the whole body, joined.
        """
        stream = MessageStream()
        d = stream.collect()
        stream._write(b"Subject: x\r\n")
        stream._write(b"\r\n")
        self.assertNoResult(d)
        stream._finish()
        self.assertEqual(self.successResultOf(d), b"Subject: x\r\n\r\n")

    def test_collectEmpty(self) -> None:
        """
        An empty body collects to C{b""}.
        """
        stream = MessageStream()
        stream._finish()
        self.assertEqual(self.successResultOf(stream.collect()), b"")

    def test_drain(self) -> None:
        """
        C{drain} discards the body and fires with the byte count, resuming an
        upstream paused for the kept chunks.
        """
        upstream = FakeUpstream()
        stream = MessageStream(upstream, maxBuffer=2)
        stream._write(b"abc")
        d = stream.drain()
        stream._write(b"de")
        stream._finish()
        self.assertEqual(self.successResultOf(d), 5)
        self.assertEqual(upstream.events, ["pause", "resume"])

    def test_pipeToFile(self) -> None:
        """
        C{pipeToFile} writes each chunk to the file and fires with the count.
        """
        stream = MessageStream()
        f = io.BytesIO()
        d = stream.pipeToFile(f)
        stream._write(b"one\r\n")
        self.assertEqual(f.getvalue(), b"one\r\n")
        stream._write(b"two\r\n")
        stream._finish()
        self.assertEqual(f.getvalue(), b"one\r\ntwo\r\n")
        self.assertEqual(self.successResultOf(d), 10)

    def test_fileWriteFails(self) -> None:
        """
        A file whose C{write} raises fails the L{Deferred} with that error.
        """
        stream = MessageStream()
        f = io.BytesIO()
        f.close()
        d = stream.pipeToFile(f)
        stream._write(b"x")
        self.failureResultOf(d, ValueError)
        stream._finish()

    def test_failAfterCollect(self) -> None:
        """
        A lost connection fails a pending C{collect} with that reason.
        """
        stream = MessageStream()
        d = stream.collect()
        stream._write(b"part")
        stream._fail(ConnectionLost())
        self.failureResultOf(d, ConnectionLost)

    def test_afterEndIgnored(self) -> None:
        """
        Writes, ends and failures after the end change nothing.
        """
        stream = MessageStream()
        d = stream.collect()
        stream._write(b"a")
        stream._finish()
        stream._write(b"b")
        stream._fail(ConnectionLost())
        stream._finish()
        self.assertEqual(self.successResultOf(d), b"a")
        self.assertEqual(stream.byteLength, 1)


class CollectLimitTests(SynchronousTestCase):
    """
    C{collect} keeps at most C{maxBytes} in memory.
    """

    def test_collectLimitExceeded(self) -> None:
        """
        A body passing C{maxBytes} fails C{collect} with a 552 5.3.4
        L{SMTPError}, drops what was gathered, discards the rest, resumes a
        paused upstream and logs one line naming the limit.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        upstream = FakeUpstream()
        stream = MessageStream(upstream, maxBuffer=2)
        stream._write(b"abc")
        d = stream.collect(maxBytes=5)
        stream._write(b"def")
        failure = self.failureResultOf(d, SMTPError)
        self.assertEqual((failure.value.code, failure.value.enhanced), (552, "5.3.4"))
        self.assertEqual(upstream.events, ["pause", "resume"])
        stream._write(b"more")
        stream._finish()
        self.assertEqual(stream.byteLength, 10)
        self.assertEqual(stream._buffered, 0)
        lines = [formatEvent(e) for e in events]
        self.assertEqual(lines, ["Message body refused: more than 5 bytes to collect in memory"])

    def test_collectAtLimit(self) -> None:
        """
        A body of exactly C{maxBytes} is collected.
        """
        stream = MessageStream()
        d = stream.collect(maxBytes=6)
        stream._write(b"abc")
        stream._write(b"def")
        stream._finish()
        self.assertEqual(self.successResultOf(d), b"abcdef")

    def test_collectDefaultLimit(self) -> None:
        """
        Without C{maxBytes} the limit is L{COLLECT_LIMIT}, the server's
        default size limit: one byte more is refused.
        """
        self.assertEqual(COLLECT_LIMIT, ServerOptions().size)
        chunk = b"x" * 65536
        stream = MessageStream()
        d = stream.collect()
        for _ in range(COLLECT_LIMIT // len(chunk)):
            stream._write(chunk)
        stream._write(b"x" * (COLLECT_LIMIT % len(chunk)))
        self.assertNoResult(d)
        stream._write(b"!")
        self.failureResultOf(d, SMTPError)

    def test_collectNoLimit(self) -> None:
        """
        C{maxBytes=0} lifts the limit; a negative one is refused.
        """
        stream = MessageStream()
        d = stream.collect(maxBytes=0)
        stream._write(b"x" * (COLLECT_LIMIT + 1))
        stream._finish()
        self.assertEqual(len(self.successResultOf(d)), COLLECT_LIMIT + 1)
        self.assertRaises(ValueError, MessageStream().collect, -1)

    def test_collectLimitReply(self) -> None:
        """
        A handler passing on the failure of C{collect} makes the message's
        reply 552 5.3.4, even with the server's size limit lifted.
        """

        class Collecting(BaseHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                return stream.collect(maxBytes=10)

        session = memorySession(
            Collecting(), ServerOptions(name="mx.test", size=0, disableReverseLookup=True)
        )
        session.send(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        self.assertEqual(
            session.send(b"0123456789\r\nmore\r\n.\r\n"),
            b"552 5.3.4 Error: message too big to be held in memory\r\n",
        )
        self.flushLoggedErrors()


class DefaultSizeTests(SynchronousTestCase):
    """
    The server's size limit is finite by default.
    """

    def test_defaultSize(self) -> None:
        """
        L{ServerOptions.size} defaults to Postfix's 10,240,000 bytes; 0 still
        means no limit.
        """
        self.assertEqual(ServerOptions().size, 10_240_000)
        self.assertEqual(ServerOptions(size=0).size, 0)

    def test_defaultSizeRefuses(self) -> None:
        """
        With the default options a message one byte over the default limit
        is refused with 552 and never reaches the handler's C{collect}.
        """
        recorder = MessageRecorder()
        session = memorySession(recorder, ServerOptions(name="mx.test", disableReverseLookup=True))
        session.send(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        line = b"x" * 998 + b"\r\n"
        for _ in range(10_240_000 // len(line) + 1):
            self.assertEqual(session.send(line), b"")
        self.assertEqual(session.send(b".\r\n"), replies.SIZE_EXCEEDED)
        self.assertEqual(recorder.messages, [])
