# -*- test-case-name: tests.test_stream -*-
"""
L{MessageStream}: the message body handed to L{ISMTPHandler.onData}, streamed
as it arrives, with flow control reaching back to the client's connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.options import DEFAULT_SIZE
from twisted_smtpd.interfaces import _MessageStreamInterface

#: How many bytes L{MessageStream.collect} gathers by default: the server's
#: default size limit.
COLLECT_LIMIT = DEFAULT_SIZE

#: How many chunks L{MessageStream} keeps, whatever their size, before it
#: pauses its upstream producer.  Each kept chunk costs about 40 bytes of
#: its own (its object and its place in the queue): a body sent as BDAT
#: chunks of a few octets each would otherwise take ten times C{maxBuffer}
#: in memory before the client is paused.
MAX_KEPT_CHUNKS = 4096

#: Chunks shorter than this are gathered by L{MessageStream.collect} into
#: pieces of at least this size rather than kept one object each: a body
#: sent as BDAT chunks of two octets would otherwise take about twenty
#: times C{maxBytes} in memory (each chunk's object and its place in the
#: list), and one of single octets eight times.
COLLECT_PIECE = 4096

#: What a chunk a handler keeps costs in memory beyond its octets: the
#: bytes object's header and its place in a list.  The handlers that keep
#: chunks until a threshold (the Maildir's, the spools') count it into
#: their thresholds, so that a body read a few octets at a time (tiny TLS
#: records) is held up to the threshold in memory, not in octets, which
#: would be about twenty times as much.
CHUNK_OVERHEAD = 56

_T = TypeVar("_T")


class _Writable(Protocol):
    """
    Anything with a binary C{write} method: a file, C{io.BytesIO}, a socket
    file.
    """

    def write(self, data: bytes, /) -> object: ...


def _discard(chunk: bytes) -> None:
    """
    Throw a chunk away.
    """


@implementer(_MessageStreamInterface, IPushProducer)
class MessageStream:
    """
    A message body, streamed to exactly one consumer.

    The protocol writes the decoded body in with L{_write} and ends it with
    L{_finish} or L{_fail}; the handler takes it out with exactly one of
    L{pipe}, L{pipeToFile}, L{collect} or L{drain}, called once (a second call
    raises L{RuntimeError}).  Each returns a L{Deferred} that fires once the
    body has been handed on in full, or fails if it will not arrive whole.

    Nothing is lost while no consumer is attached yet: chunks are kept, and
    once more than C{maxBuffer} bytes (or more than L{MAX_KEPT_CHUNKS}
    chunks) are kept the upstream producer (the connection) is paused until
    a consumer takes them.  A consumer given to
    L{pipe} pauses and resumes the stream as an L{IPushProducer}, which pauses
    the connection the same way.  The stream calls
    C{upstream.resumeProducing()} once for each C{upstream.pauseProducing()}
    it made, and never calls C{upstream.stopProducing()}.

    Deferreds fire synchronously whenever the body allows it: a consumer
    attached after the end gets its result at once.

    @ivar byteLength: Body bytes written in so far.
    @ivar sizeExceeded: Set by the protocol when the body passed the size
        limit (the stream then fails with a 552 L{SMTPError}).
    @ivar ended: Whether the body has ended, whole (L{_finish}) or not
        (L{_fail}).
    @ivar attached: Whether a consumer method was called.
    """

    _log = Logger()

    def __init__(self, upstream: IPushProducer | None = None, maxBuffer: int = 262144) -> None:
        """
        @param upstream: What to pause while the body cannot be handed on:
            the protocol reading the body from the client.
        @param maxBuffer: How many bytes may wait for a slow or missing
            consumer before C{upstream} is paused (so may
            L{MAX_KEPT_CHUNKS} chunks, whatever their size).
        """
        self.byteLength = 0
        self.sizeExceeded = False
        self.ended = False
        self.attached = False
        self._upstream = upstream
        self._maxBuffer = maxBuffer
        self._upstreamPaused = False
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        # Where _write sends a chunk right now: the consumer while it flows,
        # _discard once the rest is not wanted, None to keep it in _buffer.
        self._sink: Callable[[bytes], object] | None = None
        self._target: Callable[[bytes], object] | None = None
        self._onDone: Callable[[], None] | None = None
        self._onError: Callable[[Failure], None] | None = None
        self._paused = False
        self._stopped = False
        self._done = False
        self._failure: Failure | None = None

    # The consumer side: IMessageStream.

    # IMessageStream declares its parameters as plain objects; these are the
    # real types.
    def pipe(self, consumer: IConsumer) -> Deferred[int]:
        """
        Write the body into C{consumer}, registered with this stream as its
        streaming producer, so that pausing the consumer pauses the client.

        At the end the stream unregisters itself and the L{Deferred} fires
        with the byte count.  If the consumer calls L{stopProducing}, the
        rest of the body is discarded, the stream does not unregister itself
        (the consumer is done with it) and the L{Deferred} still fires with
        the byte count of the whole body once it has ended.  If
        C{consumer.write} raises, the rest is discarded, the stream stays
        registered (the consumer is broken) and the L{Deferred} fails with
        that error.

        @return: A L{Deferred} firing with the body's byte count, or failing
            if the body does not arrive whole (L{_fail}).
        @raise RuntimeError: If a consumer was already attached.
        """
        self._checkNotAttached()
        d: Deferred[int] = Deferred()

        def done() -> None:
            if not self._stopped:
                consumer.unregisterProducer()
            d.callback(self.byteLength)

        def failed(reason: Failure) -> None:
            if not self._stopped:
                consumer.unregisterProducer()
            d.errback(reason)

        if self._attach(consumer.write, done, failed, d):
            consumer.registerProducer(self, True)
            self._flush()
        return d

    def pipeToFile(self, fileObject: _Writable) -> Deferred[int]:
        """
        Write the body into a binary file object, synchronously, chunk by
        chunk.  If C{write} raises, the rest is discarded and the L{Deferred}
        fails with that error.

        @param fileObject: Anything with a C{write(bytes)} method.
        @return: A L{Deferred} firing with the byte count, or failing if the
            body does not arrive whole.
        @raise RuntimeError: If a consumer was already attached.
        """
        self._checkNotAttached()
        d: Deferred[int] = Deferred()

        def done() -> None:
            d.callback(self.byteLength)

        if self._attach(fileObject.write, done, d.errback, d):
            self._flush()
        return d

    def collect(self, maxBytes: int = COLLECT_LIMIT) -> Deferred[bytes]:
        """
        Gather the whole body in memory, at most C{maxBytes} of it.  For
        small messages only; L{pipe} and L{pipeToFile} stream any size.

        A body growing past C{maxBytes} is refused: what was gathered is
        dropped, the rest is discarded as it arrives, one line is logged and
        the L{Deferred} fails with a 552 5.3.4 L{SMTPError}, which becomes
        the reply when the handler passes it on.

        @param maxBytes: The most bytes kept; L{COLLECT_LIMIT} (the server's
            default size limit, 10,240,000) by default, 0 for no limit.
        @return: A L{Deferred} firing with the body, or failing if it does
            not arrive whole or is too big.
        @raise RuntimeError: If a consumer was already attached.
        @raise ValueError: If C{maxBytes} is negative.
        """
        if maxBytes < 0:
            raise ValueError(f"maxBytes must not be negative: {maxBytes}")
        self._checkNotAttached()
        d: Deferred[bytes] = Deferred()
        parts: list[bytes] = []
        # Short chunks are joined here first (COLLECT_PIECE).
        small = bytearray()
        kept = [0]

        def keep(chunk: bytes) -> None:
            size = len(chunk)
            kept[0] += size
            if maxBytes and kept[0] > maxBytes:
                parts.clear()
                small.clear()
                self._log.warn(
                    "Message body refused: more than {limit} bytes to collect in memory",
                    limit=maxBytes,
                )
                raise SMTPError(552, "Error: message too big to be held in memory", "5.3.4")
            if size < COLLECT_PIECE:
                small.extend(chunk)
                if len(small) < COLLECT_PIECE:
                    return
                chunk = bytes(small)
                small.clear()
            elif small:
                parts.append(bytes(small))
                small.clear()
            parts.append(chunk)

        def done() -> None:
            if small:
                parts.append(bytes(small))
            d.callback(b"".join(parts))

        if self._attach(keep, done, d.errback, d):
            self._flush()
        return d

    def drain(self) -> Deferred[int]:
        """
        Discard the body.

        @return: A L{Deferred} firing with the byte count at the end, or
            failing if the body does not arrive whole.
        @raise RuntimeError: If a consumer was already attached.
        """
        if self.attached:
            # Checked inline: a drained body (C{--sink}, a body the handler
            # leaves unread) costs no call for it.
            self._checkNotAttached()
        d: Deferred[int] = Deferred()

        def done() -> None:
            d.callback(self.byteLength)

        if self._attach(_discard, done, d.errback, d):
            self._flush()
        return d

    # IPushProducer, called by the consumer given to pipe().

    def pauseProducing(self) -> None:
        """
        Stop handing chunks on; keep them, and pause the upstream producer
        once more than C{maxBuffer} bytes (or L{MAX_KEPT_CHUNKS} chunks) are
        kept.
        """
        if self._stopped or self._done:
            return
        self._paused = True
        self._sink = None

    def resumeProducing(self) -> None:
        """
        Hand on what was kept, then resume the upstream producer if it was
        paused, and pass chunks straight through again.
        """
        if not self._paused:
            return
        self._paused = False
        self._flush()

    def stopProducing(self) -> None:
        """
        Discard the rest of the body: what is kept and what is still to come.
        The upstream producer is resumed and never paused again, so the body
        is still read to its end; the consumer's L{Deferred} then fires with
        the byte count.
        """
        if self._stopped or self._done:
            return
        self._stopped = True
        self._paused = False
        self._sink = _discard
        self._dropBuffer()
        self._maybeComplete()

    # The producer side, called by the protocol.

    def _write(self, chunk: bytes) -> None:
        """
        Add the next decoded body chunk.  Ignored once the body has ended.
        """
        if self.ended:
            return
        self.byteLength += len(chunk)
        sink = self._sink
        if sink is None:
            self._hold(chunk)
            return
        if sink is _discard:
            return
        try:
            sink(chunk)
        except Exception:
            self._consumerFailed(Failure())

    def _finish(self) -> None:
        """
        The body is complete: once everything kept is handed on, the
        consumer's L{Deferred} fires (with the byte count, or the bytes for
        L{collect}).  Ignored if the body has already ended.
        """
        if self.ended:
            return
        self.ended = True
        self._maybeComplete()

    def _fail(self, reason: Failure | BaseException) -> None:
        """
        The body will not arrive whole: it passed the size limit (C{reason}
        is a 552 L{SMTPError}) or the connection was lost.  What is kept is
        dropped, the upstream producer resumed, and the consumer's
        L{Deferred} fails with C{reason} (a L{pipe} consumer is unregistered
        first).  If no consumer is attached yet the failure waits for the
        first one; no L{Deferred} exists until then, so a failure nobody asks
        for is never logged as unhandled.  Ignored if the body has already
        ended.
        """
        if self.ended:
            return
        failure = reason if isinstance(reason, Failure) else Failure(reason)
        self.ended = True
        self._sink = _discard
        self._dropBuffer()
        if not self.attached:
            self._failure = failure
        elif not self._done and self._onError is not None:
            self._settle(failure)

    # Internals.

    def _checkNotAttached(self) -> None:
        if self.attached:
            raise RuntimeError("this message stream already has a consumer")

    def _attach(
        self,
        target: Callable[[bytes], object],
        onDone: Callable[[], None],
        onError: Callable[[Failure], None],
        d: Deferred[_T],
    ) -> bool:
        """
        Record the consumer.

        @return: C{True} to go on and hand the body on; C{False} if the body
            had already failed, in which case C{d} has failed with it.
        """
        self.attached = True
        failure, self._failure = self._failure, None
        if failure is not None:
            self._done = True
            d.errback(failure)
            return False
        self._target = target
        self._onDone = onDone
        self._onError = onError
        return True

    def _hold(self, chunk: bytes) -> None:
        """
        Keep a chunk the consumer cannot take yet; pause upstream if too much
        is kept: too many bytes, or too many chunks.
        """
        buffer = self._buffer
        buffer.append(chunk)
        self._buffered += len(chunk)
        if (
            (self._buffered > self._maxBuffer or len(buffer) > MAX_KEPT_CHUNKS)
            and not self._upstreamPaused
            and self._upstream is not None
        ):
            self._upstreamPaused = True
            self._upstream.pauseProducing()

    def _flush(self) -> None:
        """
        Hand what is kept to the consumer while it is not paused; once none is
        kept, resume upstream, complete if the body has ended, and (if the
        consumer still flows) pass chunks straight through.
        """
        target = self._target
        if target is None or self._done:
            return
        if not self._stopped:
            buffer = self._buffer
            while buffer and not self._paused:
                chunk = buffer.popleft()
                self._buffered -= len(chunk)
                try:
                    target(chunk)
                except Exception:
                    self._consumerFailed(Failure())
                    return
                if self._stopped or self._done:
                    return
            if buffer:
                return
            if not self._paused:
                self._sink = target
        if self._upstreamPaused:
            self._resumeUpstream()
        if self.ended:
            self._maybeComplete()

    def _dropBuffer(self) -> None:
        """
        Forget what is kept and let upstream go on.
        """
        self._buffer.clear()
        self._buffered = 0
        self._resumeUpstream()

    def _resumeUpstream(self) -> None:
        if self._upstreamPaused:
            self._upstreamPaused = False
            assert self._upstream is not None
            self._upstream.resumeProducing()

    def _maybeComplete(self) -> None:
        """
        Fire the consumer's L{Deferred} if the body has ended whole and all
        of it has been handed on.
        """
        if self.ended and not self._buffer and not self._done and self._onDone is not None:
            self._sink = _discard
            self._settle(None)

    def _consumerFailed(self, failure: Failure) -> None:
        """
        The consumer raised while given a chunk: fail its L{Deferred} with
        that error and discard the rest of the body.
        """
        self._stopped = True
        self._paused = False
        self._sink = _discard
        self._dropBuffer()
        if not self._done and self._onError is not None:
            self._settle(failure)

    def _settle(self, failure: Failure | None) -> None:
        """
        Tell the consumer the body's end, once: whole (C{failure} is
        C{None}) or not.  The consumer is forgotten first.  The stream, the
        consumer and their L{Deferred}s refer to one another until then, and
        once the session lets go of them they are freed at once instead of
        being left to Python's cyclic garbage collector, whose passes would
        then run every few dozen messages and walk every young object.
        """
        onDone, onError = self._onDone, self._onError
        self._done = True
        self._target = self._onDone = self._onError = None
        if failure is None:
            assert onDone is not None
            onDone()
        else:
            assert onError is not None
            onError(failure)
