# -*- test-case-name: tests.test_filebody -*-
"""
L{ThreadedFileBody}: a request body read from a file a block at a time in a
thread pool, with its reads run here only when the test says.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd.handlers._filebody import BLOCK, ThreadedFileBody


class _Reads:
    """
    An C{inThread} whose jobs wait until L{run}.
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((d, f, args))
        return d

    def run(self) -> None:
        """
        Run the jobs waiting, and those they add, in order.
        """
        while self.jobs:
            d, f, args = self.jobs.pop(0)
            try:
                result = f(*args)
            except Exception:
                d.errback(Failure())
            else:
                d.callback(result)


class _Consumer:
    """
    Keeps what it is given.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)


class ThreadedFileBodyTests(SynchronousTestCase):
    """
    The body is the whole file, read in blocks outside the caller, and
    honours pauses and stops.
    """

    def spool(self, content: bytes) -> IO[bytes]:
        f = tempfile.TemporaryFile()  # noqa: SIM115
        self.addCleanup(f.close)
        f.write(content)
        f.flush()
        # A position left at the end: reads do not depend on it.
        return f

    def test_wholeFile(self) -> None:
        """
        The body's length is the one given, and its blocks, written in
        order, are the file, whatever the file's position.
        """
        content = bytes(range(256)) * (BLOCK // 100)
        reads = _Reads()
        body = ThreadedFileBody(self.spool(content), len(content), reads)
        self.assertEqual(body.length, len(content))
        consumer = _Consumer()
        d = body.startProducing(consumer)
        self.assertEqual(consumer.data, [])
        self.assertNoResult(d)
        reads.run()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(b"".join(consumer.data), content)
        self.assertEqual([len(b) for b in consumer.data], [BLOCK, BLOCK, len(content) - 2 * BLOCK])

    def test_pauseAndResume(self) -> None:
        """
        While paused, no further block is read; a block read meanwhile is
        still written.  Resuming reads on.
        """
        content = b"x" * (3 * BLOCK)
        reads = _Reads()
        body = ThreadedFileBody(self.spool(content), len(content), reads)
        consumer = _Consumer()
        d = body.startProducing(consumer)
        body.pauseProducing()
        reads.run()
        self.assertEqual(len(consumer.data), 1)
        self.assertEqual(reads.jobs, [])
        body.resumeProducing()
        body.resumeProducing()
        self.assertEqual(len(reads.jobs), 1)
        reads.run()
        self.assertEqual(b"".join(consumer.data), content)
        self.successResultOf(d)

    def test_stopWithReadInFlight(self) -> None:
        """
        Stopped while a block is being read, the body writes nothing more
        and its Deferred never fires; L{ThreadedFileBody.idle} fires once
        the read is done, so the file may then be closed.
        """
        reads = _Reads()
        body = ThreadedFileBody(self.spool(b"y" * 10), 10, reads)
        consumer = _Consumer()
        d = body.startProducing(consumer)
        body.stopProducing()
        idle = body.idle()
        self.assertNoResult(idle)
        reads.run()
        self.successResultOf(idle)
        self.successResultOf(body.idle())
        self.assertEqual(consumer.data, [])
        self.assertNoResult(d)

    def test_emptyFile(self) -> None:
        """
        An empty file is an empty body, ended without a read.
        """
        reads = _Reads()
        body = ThreadedFileBody(self.spool(b""), 0, reads)
        self.assertEqual(body.length, 0)
        self.successResultOf(body.startProducing(_Consumer()))
        self.assertEqual(reads.jobs, [])

    def test_readFails(self) -> None:
        """
        A read that fails fails the body with its error.
        """
        reads = _Reads()
        spool = self.spool(b"z" * 10)
        body = ThreadedFileBody(spool, 10, reads)
        d = body.startProducing(_Consumer())
        spool.close()
        reads.run()
        self.failureResultOf(d, OSError)
        self.successResultOf(body.idle())

    def test_fileShrank(self) -> None:
        """
        A file found shorter than its length fails the body: it cannot be
        sent whole.
        """
        reads = _Reads()
        spool = self.spool(b"z" * 10)
        body = ThreadedFileBody(spool, 10, reads)
        spool.truncate(4)
        consumer = _Consumer()
        d = body.startProducing(consumer)
        reads.run()
        self.assertIn("ended at 4 bytes", str(self.failureResultOf(d, EOFError).value))
        self.assertEqual(consumer.data, [b"zzzz"])
