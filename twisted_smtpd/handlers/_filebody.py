# -*- test-case-name: tests.test_filebody,tests.integration.test_webhook -*-
"""
L{ThreadedFileBody}: an HTTP request body read from a spool file in a thread
pool, a block at a time, so that a slow disk stalls the request it sends and
nothing else on the reactor thread; and L{SpooledBody}, the spool file of one
message with the reads of it each attempt to post it started.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

#: Bytes read at a time (what Twisted's C{FileBodyProducer} reads).
BLOCK = 1 << 16


@implementer(IBodyProducer)
class ThreadedFileBody:
    """
    Produce the whole of a file, from its start, to an HTTP request.  Each
    block is read with C{os.pread} at its own offset, so that the file's
    position is never shared: a body stopped with a read in flight does not
    disturb the next body made from the same file.  The file is not closed
    here; its owner closes it once L{idle} fired.

    @ivar length: The octets of the body.
    """

    def __init__(
        self, file: IO[bytes], length: int, inThread: Callable[..., Deferred[Any]]
    ) -> None:
        """
        @param file: The spool file, all of it written out.
        @param length: Its size, as its writer counted it: not asked of the
            file system here, on the reactor thread, where a stalled disk
            (an C{fstat} on NFS writes back the file's dirty pages first)
            would stall the whole server.
        @param inThread: Run a function and its arguments in a thread pool,
            returning a L{Deferred} of its result.
        """
        self._fd = file.fileno()
        self.length = length
        self._inThread = inThread
        self._offset = 0
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._paused = False
        self._stopped = False
        self._reading = False
        self._idle: list[Deferred[None]] = []

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """
        Start reading the file and writing it to C{consumer}.

        @return: A L{Deferred} firing once the whole file is written, or
            failing with the error of a read; never fired once
            L{stopProducing} was called.
        """
        self._consumer = consumer
        done = self._done = Deferred()
        self._next()
        return done

    def pauseProducing(self) -> None:
        """
        Read no further block until L{resumeProducing}.
        """
        self._paused = True

    def resumeProducing(self) -> None:
        """
        Read on.
        """
        self._paused = False
        self._next()

    def stopProducing(self) -> None:
        """
        Read no more; a block being read is dropped.
        """
        self._stopped = True

    def idle(self) -> Deferred[None]:
        """
        @return: A L{Deferred} firing once no read is in flight, after
            which the file may be closed.
        """
        if not self._reading:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._idle.append(waiting)
        return waiting

    def _next(self) -> None:
        if self._paused or self._stopped or self._reading or self._done is None:
            return
        if self._offset >= self.length:
            done, self._done = self._done, None
            done.callback(None)
            return
        self._reading = True
        size = min(BLOCK, self.length - self._offset)
        reading = self._inThread(os.pread, self._fd, size, self._offset)
        reading.addCallbacks(self._read, self._failed)

    def _settled(self) -> None:
        self._reading = False
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)

    def _read(self, data: bytes) -> None:
        self._settled()
        if self._stopped or self._done is None:
            return
        if not data:
            # The file shrank under the request: the body cannot be whole.
            self._failed(Failure(EOFError(f"spool file ended at {self._offset} bytes")), False)
            return
        self._offset += len(data)
        assert self._consumer is not None
        self._consumer.write(data)
        self._next()

    def _failed(self, failure: Failure, reading: bool = True) -> None:
        if reading:
            self._settled()
        if self._stopped or self._done is None:
            return
        done, self._done = self._done, None
        done.errback(failure)


class SpooledBody:
    """
    The request body of one message, in its spool file, and the reads of
    it that attempts started.

    @ivar file: The spool file, all of it written out.
    @ivar length: Its size: the octets written to it.
    @ivar reads: Each attempt's reads of C{file}, done or still in flight
        (a slow or stalled disk), each a L{Deferred} firing once no read
        of that attempt is in flight.
    """

    def __init__(self, file: IO[bytes], length: int) -> None:
        self.file = file
        self.length = length
        self.reads: list[Deferred[None]] = []

    def producer(self, inThread: Callable[..., Deferred[Any]]) -> ThreadedFileBody:
        """
        A body for one attempt, read from the file's start.

        @param inThread: As for L{ThreadedFileBody}.
        """
        return ThreadedFileBody(self.file, self.length, inThread)

    def stopped(self, producer: ThreadedFileBody) -> None:
        """
        The attempt of C{producer} ended: stop it, without waiting for a
        read of the spool file still in flight (a stalled disk would hold
        the reply past every deadline); that read is kept in L{reads}, which
        the spool is closed after.  Each read is at its own offset, so that
        the next attempt's reads are never mixed up with it.
        """
        producer.stopProducing()
        self.reads.append(producer.idle())

    def closeAfterReads(self, close: Callable[[], object]) -> None:
        """
        Call C{close} once L{reads}, maybe still in flight in the thread
        pool after their attempts ended (a slow or stalled disk), are done,
        and without holding back the reply: the receiver's answer is given
        at once, even while the closing job waits for a thread of a pool
        taken by jobs on a stalled disk.  A file is never closed while a
        read of it runs.
        """
        gatherResults(self.reads).addCallback(lambda _: close())
