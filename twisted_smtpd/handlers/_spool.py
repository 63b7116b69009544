# -*- test-case-name: tests.test_mbox,tests.test_pipe -*-
"""
L{Spool}: receive a message body into an anonymous temporary file, in bounded
memory, so that a delivery starts only once the whole message has passed
every check (size limit, bare line ends) and is not kept in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import IO, Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_smtpd._stream import CHUNK_OVERHEAD

#: Bytes kept in memory before they are written out, and the most that may
#: wait while a write is in flight before the client is paused.
SPOOL_THRESHOLD = 1 << 18


def _createSpool(directory: str | None) -> IO[bytes]:
    # An anonymous file (O_TMPFILE where the system has it): a crash leaves
    # nothing behind.
    return tempfile.TemporaryFile(dir=directory)


def _writeChunks(spool: Spool, chunks: list[bytes]) -> None:
    """
    In a pool thread: append C{chunks} to the spool file, creating it first.
    """
    if spool.file is None:
        spool.file = _createSpool(spool.directory)
    spool.file.writelines(chunks)


def _rewind(spool: Spool, chunks: list[bytes]) -> IO[bytes]:
    """
    In a pool thread: write the last C{chunks}, flush and rewind the file.
    """
    _writeChunks(spool, chunks)
    f = spool.file
    assert f is not None
    f.flush()
    f.seek(0)
    return f


def _close(spool: Spool) -> None:
    """
    In a pool thread: close the spool file, if any (it disappears with it).
    """
    f, spool.file = spool.file, None
    if f is not None:
        f.close()


def _ignore(failure: Failure) -> None:
    """
    Closing a file being dropped cannot fail in a way worth a reply.
    """


@implementer(IConsumer)
class Spool:
    """
    An L{IConsumer} for L{IMessageStream.pipe} writing the body to an
    anonymous temporary file in C{directory}, in a thread pool.

    At most L{SPOOL_THRESHOLD} bytes wait in memory, plus the chunk being
    written; while a write is in flight and that much waits again, the
    stream (so the client) is paused.  A write failure is kept and reported
    by L{finish}; the rest of the body is then dropped, and the stream read
    on, so that the client gets its reply at the end.

    Its state changes on the reactor thread only, except C{file}, which
    belongs to the one thread job in flight.

    @ivar file: The spool file, once something was written.
    @ivar directory: Where the file is made (the system's temporary
        directory for C{None}).
    """

    def __init__(
        self,
        directory: str | None,
        inThread: Callable[..., Deferred[Any]],
        threshold: int | None = None,
    ) -> None:
        """
        @param directory: Where to make the file.
        @param inThread: Runs a function with arguments in a thread pool,
            returning a L{Deferred} of its result.
        @param threshold: Bytes kept in memory before a write,
            L{SPOOL_THRESHOLD} by default.
        """
        self.directory = directory
        self.file: IO[bytes] | None = None
        self._inThread = inThread
        self._threshold = SPOOL_THRESHOLD if threshold is None else threshold
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._writing: Deferred[None] | None = None
        self._producer: IPushProducer | None = None
        self._paused = False
        self._failure: Failure | None = None

    # IConsumer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Keep the stream to pause it while the disk is behind.
        """
        self._producer = cast(IPushProducer, producer)

    def unregisterProducer(self) -> None:
        """
        Forget the stream.
        """
        self._producer = None

    def write(self, data: bytes) -> None:
        """
        Keep C{data}; write what is kept once past the threshold.
        """
        if self._failure is not None:
            return
        self._chunks.append(data)
        # The memory it takes (CHUNK_OVERHEAD), not only its octets.
        self._buffered += len(data) + CHUNK_OVERHEAD
        if self._buffered >= self._threshold:
            if self._writing is None:
                self._spill()
            elif not self._paused and self._producer is not None:
                self._paused = True
                self._producer.pauseProducing()

    # The end.

    def finish(self) -> Deferred[IO[bytes]]:
        """
        Once the body has ended: write what is left and rewind the file.

        @return: A L{Deferred} firing with the file, positioned at its start
            (the caller closes it), or failing with the write's L{OSError},
            the file then being closed.
        """
        d = self._afterWrite()

        def written(ignored: None) -> Deferred[IO[bytes]]:
            if self._failure is not None:
                return closeAndFail(self._failure)
            chunks, self._chunks, self._buffered = self._chunks, [], 0
            rewound: Deferred[IO[bytes]] = self._inThread(_rewind, self, chunks)
            return rewound.addErrback(closeAndFail)

        def closeAndFail(failure: Failure) -> Deferred[IO[bytes]]:
            def closed(ignored: None) -> Failure:
                return failure

            return self.close().addCallback(closed)

        return d.addCallback(written)

    def close(self) -> Deferred[None]:
        """
        Drop the body: wait for a write in flight, then close the file.

        @return: A L{Deferred} firing once the file is closed; it never
            fails.
        """
        self._chunks, self._buffered = [], 0
        d = self._afterWrite()

        def closeNow(ignored: None) -> Deferred[None]:
            if self.file is None:
                return succeed(None)
            return self._inThread(_close, self).addErrback(_ignore)

        return d.addCallback(closeNow)

    # Internals.

    def _afterWrite(self) -> Deferred[None]:
        """
        A L{Deferred} firing once no write is in flight (a write ending may
        start the next one).
        """
        writing = self._writing
        if writing is None:
            return succeed(None)
        d: Deferred[None] = Deferred()

        def check(ignored: None) -> None:
            self._afterWrite().chainDeferred(d)

        writing.addCallback(check)
        return d

    def _spill(self) -> None:
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        writing: Deferred[None] = self._inThread(_writeChunks, self, chunks)
        done: Deferred[None] = Deferred()
        self._writing = done

        def written(ignored: None) -> None:
            self._writing = None
            if self._buffered >= self._threshold and self._failure is None:
                self._spill()
            self._resume()
            done.callback(None)

        def failed(failure: Failure) -> None:
            self._writing = None
            if self._failure is None:
                self._failure = failure
            self._chunks, self._buffered = [], 0
            self._resume()
            done.callback(None)

        writing.addCallbacks(written, failed)

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._producer is not None:
                self._producer.resumeProducing()
