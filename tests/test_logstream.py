# -*- test-case-name: tests.test_logstream -*-
"""
The log written into a pipe whose reader stops reading: the writer never
waits for it (L{twisted_smtpd._serving.logstream}).
"""

from __future__ import annotations

import fcntl
import io
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextlib import suppress as ignoring
from typing import IO, Any

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_logwriter import RunningClock
from twisted_smtpd._serving import logwriter
from twisted_smtpd._serving.logstream import StreamOut, streamDescriptor
from twisted_smtpd._serving.logwriter import BufferedLogWriter

#: Linux's F_SETPIPE_SZ (fcntl has it from Python 3.10, on Linux).
_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class StalledPipe:
    """
    A pipe as small as the system makes one, whose reader reads only when
    told to.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.reader, writer = self.ends()
        self.out: IO[Any] = os.fdopen(writer, "w", encoding="utf-8")
        test.addCleanup(self.close)
        self.received = b""

    def ends(self) -> tuple[int, int]:
        """
        The reading and the writing end.
        """
        reader, writer = os.pipe()
        with ignoring(OSError):
            fcntl.fcntl(writer, _SETPIPE_SZ, 4096)
        return reader, writer

    def read(self) -> bytes:
        """
        Read all it holds now.
        """
        os.set_blocking(self.reader, False)
        try:
            while True:
                data = os.read(self.reader, 65536)
                if not data:
                    break
                self.received += data
        except OSError:
            # BlockingIOError: nothing more now; EIO: a terminal's other
            # end is closed.
            pass
        return self.received

    def close(self) -> None:
        if self.reader >= 0:
            os.close(self.reader)
            self.reader = -1
        with ignoring(OSError):
            self.out.close()


@contextmanager
def notWaiting(test: SynchronousTestCase, seconds: float = 3.0) -> Iterator[None]:
    """
    Fail the test when the code inside waits for longer than C{seconds}
    (blocked in a write into a pipe nobody reads).
    """

    def alarm(signum: int, frame: object) -> None:
        raise test.failureException(f"the log writer waited for its reader over {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class StalledReaderTests(SynchronousTestCase):
    """
    A reader of standard output that stops reading (a stalled journald, a
    pipeline's program suspended) never stops the server: the lines wait
    for it, up to a bound, and are lost past it, counted.
    """

    def setUp(self) -> None:
        self.pipe = StalledPipe(self)
        self.errors = io.StringIO()
        self.patch(sys, "__stderr__", self.errors)
        self.clock = RunningClock()
        self.log = Logger(namespace="other")

    def writer(self, **kwargs: Any) -> BufferedLogWriter:
        writer = BufferedLogWriter(self.pipe.out, reactor=self.clock, **kwargs)
        self.log.observer = writer
        return writer

    def test_notWaitedFor(self) -> None:
        """
        Lines past what the pipe holds wait in the writer while the reader
        reads nothing; once it reads again they all reach it, in order,
        with the flushes that come every C{interval} seconds.
        """
        self.writer(limit=1000)
        with notWaiting(self):
            for n in range(500):
                self.log.info("line {n:04d} " + "x" * 60, n=n)
            self.clock.advance(1)
        self.assertLess(len(self.pipe.read()), 500 * 60)
        for _ in range(100):
            self.clock.advance(0.5)
            self.pipe.read()
        lines = self.pipe.received.decode().splitlines()
        self.assertEqual(len(lines), 500)
        self.assertEqual(
            [line.split(" [other#info] ")[1][:9] for line in lines],
            [f"line {n:04d}" for n in range(500)],
        )
        self.assertEqual(self.errors.getvalue(), "")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_boundedThenCounted(self) -> None:
        """
        Past C{behind} bytes waiting, lines are lost and counted: standard
        error hears it once, and the first lines the reader takes again
        start with the count.
        """
        self.patch(logwriter, "STALL_WAIT", 0.2)
        self.writer(limit=100, behind=8192)
        with notWaiting(self):
            for n in range(300):
                self.log.info("line {n:04d} " + "x" * 60, n=n)
                self.clock.advance(0.1)
        (report,) = self.errors.getvalue().splitlines()
        self.assertRegex(
            report,
            r"^twisted-smtpd: cannot write the log to standard output: its reader is 8[01]\d\d"
            r" bytes behind \(EAGAIN\); lines lost so far: 1, more until it can be written again$",
        )
        for _ in range(20):
            self.pipe.read()
            self.clock.advance(0.5)
        self.log.info("after")
        self.clock.advance(1)
        lines = self.pipe.read().decode().splitlines()
        self.assertTrue(lines[-1].endswith(" [other#info] after"), lines[-1])
        notice = lines[-2]
        self.assertIn(
            " [twisted_smtpd.log#warn] log lines lost while the log could not be written"
            " (its reader is 8",
            notice,
        )
        lost = int(notice.rsplit(": ", 1)[1])
        self.assertEqual(len(lines) - 2 + lost, 300)

    def test_slowReaderLosesNothing(self) -> None:
        """
        A reader that takes bytes, however slowly, sets the pace once
        C{behind} bytes wait: lines come as fast as they like (a flood of
        refused commands), none is lost, and the server waits for the
        reader as a blocking write would.
        """
        self.patch(logwriter, "STALL_WAIT", 2.0)
        self.writer(limit=100, behind=8192)
        stop = threading.Event()

        def slowly() -> None:
            while not stop.is_set():
                self.pipe.read()
                time.sleep(0.002)

        reader = threading.Thread(target=slowly)
        reader.start()
        try:
            with notWaiting(self, 20.0):
                for n in range(2000):
                    self.log.info("line {n:04d} " + "x" * 60, n=n)
                    self.clock.advance(0.1)
        finally:
            stop.set()
            reader.join()
        for _ in range(100):
            self.pipe.read()
            self.clock.advance(0.5)
        lines = self.pipe.received.decode().splitlines()
        self.assertEqual(self.errors.getvalue(), "")
        self.assertEqual(
            [line.partition(" [other#info] ")[2][:9] for line in lines],
            [f"line {n:04d}" for n in range(2000)],
        )

    def test_stalledGivenUpOnce(self) -> None:
        """
        A reader that takes nothing for C{STALL_WAIT} seconds with
        C{behind} bytes waiting is waited for once, then given up: later
        lines are lost without waiting again, until it reads again; then
        it sets the pace again.
        """
        self.patch(logwriter, "STALL_WAIT", 0.3)
        writer = self.writer(limit=100, behind=8192)
        started = time.monotonic()
        with notWaiting(self):
            for n in range(300):
                self.log.info("line {n:04d} " + "x" * 60, n=n)
                self.clock.advance(0.1)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.3)
        self.assertLess(elapsed, 0.9)
        self.assertIn("bytes behind (EAGAIN); lines lost so far: ", self.errors.getvalue())
        self.assertTrue(writer._stalled)
        self.pipe.read()
        self.clock.advance(1)
        self.assertFalse(writer._stalled)

    def test_stallGiven(self) -> None:
        """
        A writer given its own C{stall} (a worker's, for its parent) waits
        that long for a reader that takes nothing, not L{STALL_WAIT}.
        """
        self.patch(logwriter, "STALL_WAIT", 30.0)
        self.writer(limit=100, behind=8192, stall=0.3)
        started = time.monotonic()
        with notWaiting(self):
            for n in range(300):
                self.log.info("line {n:04d} " + "x" * 60, n=n)
                self.clock.advance(0.1)
        self.assertLess(time.monotonic() - started, 0.9)
        self.assertIn("bytes behind (EAGAIN); lines lost so far: ", self.errors.getvalue())

    def test_atExitBounded(self) -> None:
        """
        At exit (the reactor stopped) the last lines wait for the reader
        a moment, not for ever.
        """
        self.patch(logwriter, "FINAL_WAIT", 0.2)
        writer = BufferedLogWriter(self.pipe.out, reactor=Clock())
        with notWaiting(self):
            for n in range(200):
                writer.forward(f"line {n:04d} " + "x" * 60 + "\n")
            writer.flush()
        self.assertLess(len(self.pipe.read()), 200 * 60)

    def test_standardErrorNotWaitedFor(self) -> None:
        """
        Standard error stalled as well (the journal takes both): the line
        about lost lines is not waited for either.
        """
        errors = StalledPipe(self)
        errors.out.write("y" * 4096)
        errors.out.flush()
        self.patch(sys, "__stderr__", errors.out)
        self.patch(logwriter, "STALL_WAIT", 0.2)
        self.writer(limit=100, behind=4096)
        with notWaiting(self):
            for n in range(200):
                self.log.info("line {n:04d} " + "x" * 60, n=n)
                self.clock.advance(0.1)
        self.assertEqual(errors.read(), b"y" * 4096)

    def test_readerGone(self) -> None:
        """
        A pipe whose reader is gone loses the lines waiting, counted, with
        the reason.
        """
        self.writer(limit=100)
        os.close(self.pipe.reader)
        self.pipe.reader = -1
        self.log.info("lost")
        self.clock.advance(1)
        self.assertIn("Broken pipe (EPIPE); lines lost so far: 1,", self.errors.getvalue())


class WatchingClock(RunningClock):
    """
    A running clock that also watches descriptors, as the reactor does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writers: list[Any] = []

    def addWriter(self, writer: Any) -> None:
        self.writers.append(writer)

    def removeWriter(self, writer: Any) -> None:
        self.writers.remove(writer)


class ReactorWatchesTests(SynchronousTestCase):
    """
    While bytes wait, the reactor watches the stream, so that a reader
    lagging for a moment gets them as soon as it reads again, without
    waiting for a timer.
    """

    def setUp(self) -> None:
        self.pipe = StalledPipe(self)
        self.errors = io.StringIO()
        self.patch(sys, "__stderr__", self.errors)
        self.clock = WatchingClock()
        self.writer = BufferedLogWriter(self.pipe.out, reactor=self.clock, limit=1000)
        self.log = Logger(namespace="other", observer=self.writer)

    def test_writtenWhenRoom(self) -> None:
        """
        The reactor watches the stream once, for as long as bytes wait;
        each time it says there is room, the reader gets more.
        """
        with notWaiting(self):
            for n in range(300):
                self.log.info("line {n:04d} " + "x" * 60, n=n)
        self.assertEqual(len(self.clock.writers), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        for _ in range(100):
            if not self.clock.writers:
                break
            self.pipe.read()
            self.clock.writers[0].doWrite()
        self.assertEqual(self.clock.writers, [])
        self.assertEqual(len(self.pipe.read().decode().splitlines()), 300)

    def test_readerGoneNotWatched(self) -> None:
        """
        A reader gone while bytes wait: they are lost, counted, and the
        reactor no longer watches the stream (which would wake it for
        ever).
        """
        with notWaiting(self):
            for n in range(300):
                self.log.info("line {n:04d} " + "x" * 60, n=n)
        os.close(self.pipe.reader)
        self.pipe.reader = -1
        self.clock.writers[0].doWrite()
        self.assertEqual(self.clock.writers, [])
        self.assertIn("Broken pipe (EPIPE); lines lost so far: ", self.errors.getvalue())

    def test_watchedAgainAfterEnd(self) -> None:
        """
        When the reactor stops watching the stream on its own (it saw the
        stream end: C{connectionLost}), the writer knows it is no longer
        watched, and has it watched again while bytes still wait.
        """
        with notWaiting(self):
            for n in range(300):
                self.log.info("line {n:04d} " + "x" * 60, n=n)
        (watched,) = self.clock.writers
        self.clock.writers.remove(watched)
        watched.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.clock.writers), 1)
        for _ in range(100):
            if not self.clock.writers:
                break
            self.pipe.read()
            self.clock.writers[0].doWrite()
        self.assertEqual(len(self.pipe.read().decode().splitlines()), 300)


class StreamDescriptorTests(SynchronousTestCase):
    """
    Only streams are written without waiting; files are written as before.
    """

    def test_regularFile(self) -> None:
        """
        A regular file is no stream: a write into it fills the disk or
        fails, it never waits for a reader.
        """
        with open(self.mktemp(), "w") as f:
            self.assertIsNone(streamDescriptor(f))

    def test_otherDevice(self) -> None:
        """
        A device that is no terminal (C{/dev/null}) takes every write at
        once: it is written as a file is, in one write per flush.
        """
        with open(os.devnull, "w") as f:
            self.assertIsNone(streamDescriptor(f))

    def test_socket(self) -> None:
        """
        A socket (journald's stream, a container's log collector) is a
        stream.
        """
        ends = socket.socketpair()
        self.addCleanup(ends[0].close)
        self.addCleanup(ends[1].close)
        with os.fdopen(os.dup(ends[0].fileno()), "w") as f:
            self.assertEqual(streamDescriptor(f), f.fileno())

    def test_noDescriptor(self) -> None:
        """
        An object with no descriptor of its own is written as before.
        """
        self.assertIsNone(streamDescriptor(io.StringIO()))

    def test_pipe(self) -> None:
        """
        A pipe is a stream.
        """
        pipe = StalledPipe(self)
        self.assertEqual(streamDescriptor(pipe.out), pipe.out.fileno())

    def test_putBounded(self) -> None:
        """
        What does not fit under the limit is not kept, none of it.
        """
        out = StreamOut(-1, 10)
        self.assertTrue(out.put(b"12345"))
        self.assertFalse(out.put(b"123456"))
        self.assertEqual(out.waiting, 5)
        self.assertEqual(out.take(), b"12345")
        self.assertEqual(out.waiting, 0)


class OverBehindTests(SynchronousTestCase):
    """
    More bytes at once than C{behind} (one long line, or what waited for a
    worker's parent that died): the reader sets the pace, nothing is lost.
    """

    def setUp(self) -> None:
        self.pipe = StalledPipe(self)
        self.errors = io.StringIO()
        self.patch(sys, "__stderr__", self.errors)
        self.clock = RunningClock()

    def test_longLineKept(self) -> None:
        """
        A line longer than C{behind} bytes, for a reader that keeps up,
        reaches it whole as it reads, and nothing is counted lost.
        """
        writer = BufferedLogWriter(self.pipe.out, reactor=self.clock, limit=100, behind=8192)
        log = Logger(namespace="other", observer=writer)
        with notWaiting(self):
            log.info("long " + "x" * 20000)
            for _ in range(100):
                self.pipe.read()
                self.clock.advance(0.5)
            log.info("after")
            self.clock.advance(0.5)
        lines = self.pipe.read().decode().splitlines()
        self.assertEqual(
            [line.partition(" [other#info] ")[2][:6] for line in lines], ["long x", "after"]
        )
        self.assertEqual(len(lines[0].partition(" [other#info] ")[2]), 20005)
        self.assertEqual(self.errors.getvalue(), "")


class ParentGoneTests(SynchronousTestCase):
    """
    A worker whose parent is gone (killed) while lines wait for it: they
    go to where C{onBrokenPipe} points standard output (its standard
    error), with the lines after them, in order.
    """

    def setUp(self) -> None:
        self.parent = StalledPipe(self)
        self.other = StalledPipe(self)
        self.errors = io.StringIO()
        self.patch(sys, "__stderr__", self.errors)
        self.clock = RunningClock()
        fd = self.parent.out.fileno()

        def toOther() -> None:
            os.dup2(self.other.out.fileno(), fd)

        self.writer = BufferedLogWriter(
            self.parent.out,
            reactor=self.clock,
            limit=100,
            behind=8192,
            onBrokenPipe=toOther,
            stall=30.0,
        )
        self.log = Logger(namespace="other", observer=self.writer)
        # The parent stops reading: lines wait for it, nearly C{behind}
        # bytes of them, none lost.
        stream = self.writer._stream
        assert stream is not None
        n = 0
        with notWaiting(self):
            while stream.waiting < 8192 - 200:
                self.log.info("line {n:04d} " + "x" * 60, n=n)
                self.clock.advance(0.1)
                n += 1
        self.lines = n
        self.waiting = stream.waiting
        os.close(self.parent.reader)
        self.parent.reader = -1

    def test_waitingLinesWritten(self) -> None:
        """
        The lines that waited for the parent, however many (more than
        C{behind} with those after them), reach the new reader, then
        those after them; none is counted lost.
        """
        with notWaiting(self):
            self.log.info("after " + "y" * 300)
            for _ in range(100):
                self.other.read()
                self.clock.advance(0.5)
        received = self.other.read()
        self.assertGreaterEqual(len(received), self.waiting)
        lines = received.decode().splitlines()
        self.assertTrue(lines[-1].endswith(" [other#info] after " + "y" * 300), lines[-1])
        self.assertEqual(
            [line.partition(" [other#info] ")[2][:9] for line in lines[1:-1]],
            [f"line {n:04d}" for n in range(self.lines - len(lines) + 2, self.lines)],
        )
        self.assertNotIn(b"lost", received)
        self.assertEqual(self.errors.getvalue(), "")

    def test_stallOfTheNewReader(self) -> None:
        """
        The new reader (standard error's: a journal, a terminal) is given
        L{STALL_WAIT <logwriter.STALL_WAIT>} seconds when it takes
        nothing, not the parent's longer C{stall}.
        """
        self.other.out.write("z" * 4096)
        self.other.out.flush()
        self.patch(logwriter, "STALL_WAIT", 0.2)
        with notWaiting(self):
            for n in range(200):
                self.log.info("later {n:04d} " + "x" * 60, n=n)
                self.clock.advance(0.1)
        self.assertIn("bytes behind (EAGAIN); lines lost so far: ", self.errors.getvalue())
