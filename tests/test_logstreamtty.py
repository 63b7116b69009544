# -*- test-case-name: tests.test_logstreamtty -*-
"""
The log written into a terminal whose reader stops, or into a descriptor
that says it takes a write and then takes nothing
(L{twisted_smtpd._serving.logstream}).
"""

from __future__ import annotations

import errno
import io
import os
import sys
from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests.test_logstream import StalledPipe, WatchingClock, notWaiting
from tests.test_logwriter import RunningClock
from twisted_smtpd._serving.logstream import StreamOut
from twisted_smtpd._serving.logwriter import BufferedLogWriter


class Terminal(StalledPipe):
    """
    A pseudo-terminal whose reader (the terminal emulator, C{sshd}) reads
    only when told to.
    """

    def ends(self) -> tuple[int, int]:
        """
        The terminal's two ends.
        """
        return os.openpty()


class TerminalTests(SynchronousTestCase):
    """
    A terminal (C{twistd -n smtpd} run by hand) is written without
    waiting for its reader, as a pipe is.
    """

    def setUp(self) -> None:
        self.terminal = Terminal(self)
        self.errors = io.StringIO()
        self.patch(sys, "__stderr__", self.errors)
        self.clock = RunningClock()

    def test_stoppedReaderNotWaitedFor(self) -> None:
        """
        A terminal whose reader stops reading: lines wait in the writer
        instead of the server waiting in a write (which, with a
        terminal, waits whenever it gives more than the room left, though
        C{poll} said there was room); once the reader reads again, every
        line reaches it, in order.
        """
        writer = BufferedLogWriter(self.terminal.out, reactor=self.clock, limit=100)
        assert writer._stream is not None
        self.addCleanup(writer._stream.close)
        log = Logger(namespace="other", observer=writer)
        with notWaiting(self):
            for n in range(1000):
                log.info("line {n:04d} " + "x" * 60, n=n)
                self.clock.advance(0.1)
        for _ in range(200):
            self.terminal.read()
            self.clock.advance(0.5)
        lines = self.terminal.received.decode().splitlines()
        self.assertEqual(
            [line.partition(" [other#info] ")[2][:9] for line in lines],
            [f"line {n:04d}" for n in range(1000)],
        )
        self.assertEqual(self.errors.getvalue(), "")

    def test_repointed(self) -> None:
        """
        Standard output pointed elsewhere once the writer was made
        (C{twistd} without C{-n} daemonizes after the server is built, and
        points it to C{/dev/null}): the lines go where it points now, not
        on into the terminal through the writer's own descriptor, which
        is closed.
        """
        writer = BufferedLogWriter(self.terminal.out, reactor=self.clock, limit=100)
        stream = writer._stream
        assert stream is not None
        self.addCleanup(stream.close)
        own = stream.fd
        self.assertNotEqual(own, self.terminal.out.fileno())
        log = Logger(namespace="other", observer=writer)
        log.info("before")
        self.clock.advance(1)
        elsewhere = StalledPipe(self)
        os.dup2(elsewhere.out.fileno(), self.terminal.out.fileno())
        log.info("after")
        self.clock.advance(1)
        self.assertIn(b" [other#info] before", self.terminal.read())
        self.assertNotIn(b"after", self.terminal.read())
        self.assertTrue(elsewhere.read().endswith(b" [other#info] after\n"))
        with self.assertRaises(OSError):
            os.fstat(own)
        self.assertEqual(self.errors.getvalue(), "")


class RefusingWrites:
    """
    C{os.write} for one descriptor that C{poll} says takes a write, which
    then takes nothing (C{EAGAIN}): a non-blocking terminal with room for
    less than a line's end (C{ONLCR} makes it two bytes).
    """

    def __init__(self, test: SynchronousTestCase, fd: int) -> None:
        self.fd = fd
        self.calls = 0
        self.refusing = True
        self._write = os.write
        test.patch(os, "write", self.write)

    def write(self, fd: int, data: Any) -> int:
        if fd != self.fd or not self.refusing:
            return self._write(fd, data)
        self.calls += 1
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")


class RefusedThoughWritableTests(SynchronousTestCase):
    """
    A descriptor that C{poll} says takes a write, which then takes nothing,
    costs no CPU spent writing again and again.
    """

    def setUp(self) -> None:
        self.pipe = StalledPipe(self)
        self.errors = io.StringIO()
        self.patch(sys, "__stderr__", self.errors)

    def test_makeRoomGivesUp(self) -> None:
        """
        L{StreamOut.makeRoom} gives such a reader up after C{stall} seconds
        of nothing taken, as one C{poll} says is full, trying again only a
        few times meanwhile.
        """
        stream = StreamOut(self.pipe.out.fileno(), 10)
        refusing = RefusingWrites(self, stream.fd)
        stream.put(b"12345")
        with notWaiting(self):
            self.assertFalse(stream.makeRoom(10, 0.3))
        self.assertLess(refusing.calls, 100)
        self.assertEqual(stream.waiting, 5)

    def test_drainPauses(self) -> None:
        """
        L{StreamOut.drain} waiting for the last lines (at exit) tries such
        a reader again only a few times, not as often as it can.
        """
        stream = StreamOut(self.pipe.out.fileno(), 10)
        refusing = RefusingWrites(self, stream.fd)
        stream.put(b"12345")
        with notWaiting(self):
            stream.drain(0.3)
        self.assertLess(refusing.calls, 100)
        self.assertEqual(stream.waiting, 5)

    def test_notWatched(self) -> None:
        """
        The reactor, which would call the writer again at once for ever
        (the stream stays writable to C{poll}), stops watching such a
        stream: the writer tries again C{interval} seconds later; once the
        stream takes bytes again, the reactor watches it again.
        """
        clock = WatchingClock()
        writer = BufferedLogWriter(self.pipe.out, reactor=clock, limit=100)
        log = Logger(namespace="other", observer=writer)
        for n in range(300):
            log.info("line {n:04d} " + "x" * 60, n=n)
        self.assertEqual(len(clock.writers), 1)
        self.pipe.read()
        refusing = RefusingWrites(self, self.pipe.out.fileno())
        clock.writers[0].doWrite()
        self.assertEqual(clock.writers, [])
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        self.assertEqual(refusing.calls, 1)
        refusing.refusing = False
        for n in range(300, 400):
            log.info("line {n:04d} " + "x" * 60, n=n)
        clock.advance(writer._interval)
        for _ in range(100):
            self.pipe.read()
            if clock.writers:
                clock.writers[0].doWrite()
            else:
                clock.advance(writer._interval)
        lines = self.pipe.read().decode().splitlines()
        self.assertEqual(len(lines), 400)
        self.assertEqual(self.errors.getvalue(), "")
