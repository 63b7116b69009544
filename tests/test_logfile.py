# -*- test-case-name: tests.test_logfile -*-
"""
L{AppendingLogFile} and L{logDestination}: the file C{twistd smtpd} logs
into.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.logwriter import BufferedLogWriter
from twisted_smtpd._twistd.logfile import AppendingLogFile, ReopenOnSignal, logDestination


class _Config(dict[str, object]):
    """
    Parsed C{smtpd} options with C{twistd}'s as C{parent}.
    """

    def __init__(self, parent: dict[str, object]) -> None:
        super().__init__()
        self.parent = parent


class AppendingLogFileTests(SynchronousTestCase):
    """
    The log file is written at its end as it is at each write.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())

    def truncate(self) -> None:
        """
        Do what logrotate's C{copytruncate} does after copying.
        """
        with open(self.path, "r+b") as f:
            f.truncate(0)

    def test_copytruncate(self) -> None:
        """
        After another program truncated the file, the next line is written
        at its start, not after a hole of NUL bytes as long as the old
        content.
        """
        log = AppendingLogFile.fromFullPath(self.path)
        self.addCleanup(log.close)
        log.write("old line\n" * 100)
        log.flush()
        self.truncate()
        log.write("new line\n")
        log.flush()
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"new line\n")

    def test_existingFileKept(self) -> None:
        """
        An existing file is appended to.
        """
        with open(self.path, "w") as f:
            f.write("before\n")
        log = AppendingLogFile.fromFullPath(self.path)
        self.addCleanup(log.close)
        log.write("after\n")
        log.flush()
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"before\nafter\n")

    def test_reopenAppends(self) -> None:
        """
        The file opened again (L{AppendingLogFile.reopen}, after a move) is
        appended to as well.
        """
        log = AppendingLogFile.fromFullPath(self.path)
        self.addCleanup(log.close)
        log.write("first\n")
        os.rename(self.path, self.path + ".1")
        log.reopen()
        log.write("x" * 10 + "\n")
        log.flush()
        self.truncate()
        log.write("second\n")
        log.flush()
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"second\n")
        with open(self.path + ".1", "rb") as f:
            self.assertEqual(f.read(), b"first\n")


class DestinationTests(SynchronousTestCase):
    """
    L{logDestination} follows C{twistd}'s options.
    """

    def test_logfile(self) -> None:
        """
        C{--logfile PATH} is an L{AppendingLogFile} on that path.
        """
        path = os.path.abspath(self.mktemp())
        out = logDestination(_Config({"logfile": path, "nodaemon": False}))
        self.addCleanup(out.close)
        self.assertIsInstance(out, AppendingLogFile)
        self.assertEqual(out.path, path)

    def test_cannotOpen(self) -> None:
        """
        A C{--logfile} in a directory that does not exist, or naming a
        directory, ends the start with status 1 and one line on standard
        error naming the flag and the file, not a traceback.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        for path, why in [
            (os.path.join(directory, "missing", "smtpd.log"), "No such file or directory"),
            (directory, "Is a directory"),
        ]:
            stderr = io.StringIO()
            self.patch(sys, "__stderr__", stderr)
            e = self.assertRaises(
                SystemExit, logDestination, _Config({"logfile": path, "nodaemon": False})
            )
            self.assertEqual(e.code, 1)
            self.assertEqual(
                stderr.getvalue(),
                f"twistd smtpd: --logfile {path!r}: {why}; see --help\n",
            )

    def test_standardOutput(self) -> None:
        """
        C{--logfile=-}, or C{--nodaemon} without C{--logfile}, is standard
        output.
        """
        self.assertIs(logDestination(_Config({"logfile": "-", "nodaemon": False})), sys.stdout)
        self.assertIs(logDestination(_Config({"logfile": None, "nodaemon": True})), sys.stdout)


class _Reactor:
    """
    Records what a signal handler schedules; never running, so the writer
    writes each line at once.
    """

    running = False

    def __init__(self) -> None:
        self.fromThread: list[Callable[[], object]] = []

    def callFromThread(self, f: Callable[[], object]) -> None:
        self.fromThread.append(f)


class _RunningReactor(Clock):
    """
    A running reactor's clock: the writer buffers lines until it advances.
    """

    running = True

    def __init__(self) -> None:
        super().__init__()
        self.fromThread: list[Callable[[], object]] = []

    def callFromThread(self, f: Callable[[], object]) -> None:
        self.fromThread.append(f)


class _FullLogFile(AppendingLogFile):
    """
    A log file on a disk that fills up: with C{full} set, writes into the
    file open now fail as they would with C{ENOSPC}; a file opened again
    (logrotate moved the full one away and compressed it) has room.
    """

    full = False

    def _openFile(self) -> None:
        super()._openFile()
        self.full = False

    def write(self, data: str) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write(data)


class ReopenOnSignalTests(SynchronousTestCase):
    """
    SIGUSR1 reopens the log file and leaves one line; it never ends the
    process.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "smtpd.log")
        self.reactor: _Reactor | _RunningReactor = _Reactor()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def read(self, path: str) -> str:
        with open(path, encoding="utf-8") as f:
            return f.read()

    def signalled(self, writer: BufferedLogWriter | None) -> None:
        """
        Install the handler, deliver SIGUSR1 to it, and run what it
        scheduled.
        """
        previous = signal.getsignal(signal.SIGUSR1)
        reopener = ReopenOnSignal(writer, self.reactor)
        reopener.install()
        self.addCleanup(reopener.uninstall)
        handler = signal.getsignal(signal.SIGUSR1)
        self.assertNotIn(handler, (previous, signal.SIG_DFL, None))
        assert callable(handler)
        handler(signal.SIGUSR1, None)
        self.assertEqual(len(self.reactor.fromThread), 1)
        self.reactor.fromThread.pop()()

    def messages(self) -> list[tuple[LogLevel, str]]:
        return [(e["log_level"], formatEvent(e)) for e in self.events]

    def test_reopenAfterMove(self) -> None:
        """
        After logrotate moved the file, SIGUSR1 has the lines go into a new
        file at the same path; the buffered lines go into the old one first,
        and one info line says the file was reopened.
        """
        logFile = AppendingLogFile.fromFullPath(self.path)
        self.addCleanup(logFile.close)
        writer = BufferedLogWriter(logFile, reactor=self.reactor)
        writer.line("before", {})
        os.rename(self.path, self.path + ".1")
        self.signalled(writer)
        writer.line("after", {})
        self.assertIn("] before\n", self.read(self.path + ".1"))
        self.assertNotIn("after", self.read(self.path + ".1"))
        self.assertTrue(self.read(self.path).endswith("] after\n"))
        self.assertEqual(
            self.messages(), [(LogLevel.info, f"Log file {self.path} reopened (SIGUSR1)")]
        )

    def test_reopenFails(self) -> None:
        """
        A file that cannot be opened again leaves one error line naming it,
        and the lines go on into the old file.
        """
        logFile = AppendingLogFile.fromFullPath(self.path)
        self.addCleanup(logFile.close)
        writer = BufferedLogWriter(logFile, reactor=self.reactor)
        moved = self.directory + ".old"
        shutil.move(self.directory, moved)
        self.signalled(writer)
        writer.line("still here", {})
        self.assertIn("] still here\n", self.read(os.path.join(moved, "smtpd.log")))
        [(level, text)] = self.messages()
        self.assertEqual(level, LogLevel.error)
        self.assertTrue(
            text.startswith(
                f"Reopening the log file {self.path} failed, logging on into the old one: "
                "No such file or directory"
            ),
            text,
        )

    def fullWriter(self) -> tuple[_FullLogFile, BufferedLogWriter, _RunningReactor]:
        """
        A writer buffering lines for a file whose disk filled up after
        C{"before"} was written into it.
        """
        logFile = _FullLogFile.fromFullPath(self.path)
        self.addCleanup(logFile.close)
        self.reactor = reactor = _RunningReactor()
        writer = BufferedLogWriter(logFile, reactor=reactor)
        writer.line("before", {})
        reactor.advance(1)
        logFile.full = True
        return logFile, writer, reactor

    def test_reopenWhenFull(self) -> None:
        """
        When the disk is full, the buffered lines cannot go into the old
        file, but SIGUSR1 still opens the new one (logrotate moved the full
        one away to compress it): they go into it.
        """
        logFile, writer, reactor = self.fullWriter()
        writer.line("buffered", {})
        os.rename(self.path, self.path + ".1")
        self.signalled(writer)
        reactor.advance(1)
        self.assertEqual(self.read(self.path + ".1").count("\n"), 1)
        lines = self.read(self.path).splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].endswith("] buffered"), lines)
        self.assertEqual(
            self.messages(), [(LogLevel.info, f"Log file {self.path} reopened (SIGUSR1)")]
        )

    def test_reopenAfterFailedRotation(self) -> None:
        """
        A log file left closed (its rotation could not open the next one)
        is opened again on SIGUSR1, the buffered lines written into it.
        """
        logFile = AppendingLogFile.fromFullPath(self.path)
        self.addCleanup(logFile.close)
        reactor = self.reactor = _RunningReactor()
        writer = BufferedLogWriter(logFile, reactor=reactor)
        logFile._file.close()
        writer.line("buffered", {})
        self.signalled(writer)
        reactor.advance(1)
        lines = self.read(self.path).splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].endswith("] buffered"), lines)
        self.assertEqual(
            self.messages(), [(LogLevel.info, f"Log file {self.path} reopened (SIGUSR1)")]
        )

    def test_reopenFailsWhenFull(self) -> None:
        """
        When the disk is full and the file cannot be opened again either,
        the buffered lines are kept for the next write and the failure
        leaves its error line.
        """
        logFile, writer, reactor = self.fullWriter()
        writer.line("buffered", {})
        shutil.move(self.directory, self.directory + ".old")
        self.signalled(writer)
        [(level, text)] = self.messages()
        self.assertEqual(level, LogLevel.error)
        self.assertTrue(text.startswith(f"Reopening the log file {self.path} failed"), text)
        logFile.full = False
        reactor.advance(1)
        lines = self.read(os.path.join(self.directory + ".old", "smtpd.log")).splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[1].endswith("] buffered"), lines)

    def test_standardOutput(self) -> None:
        """
        Logging to standard output, SIGUSR1 only leaves its line.
        """
        out = io.StringIO()
        self.signalled(BufferedLogWriter(out, reactor=self.reactor))
        self.assertEqual(
            self.messages(),
            [(LogLevel.info, "SIGUSR1: logging to standard output, no log file to reopen")],
        )

    def test_syslog(self) -> None:
        """
        With C{twistd}'s syslog observer (no writer), SIGUSR1 only leaves
        its line.
        """
        self.signalled(None)
        self.assertEqual(
            self.messages(), [(LogLevel.info, "SIGUSR1: logging to syslog, no log file to reopen")]
        )

    def test_uninstall(self) -> None:
        """
        L{ReopenOnSignal.uninstall} puts the previous handler back.
        """
        previous = signal.getsignal(signal.SIGUSR1)
        reopener = ReopenOnSignal(None, self.reactor)
        reopener.install()
        reopener.uninstall()
        self.assertEqual(signal.getsignal(signal.SIGUSR1), previous)


class _FillingFile:
    """
    A raw file on a disk with C{room} bytes left: a write takes what fits
    (as C{write(2)} does), then fails with C{ENOSPC}.
    """

    def __init__(self, real: Any, room: int) -> None:
        self.real = real
        self.room = room

    def write(self, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        count = self.real.write(bytes(data[: self.room]))
        self.room -= count
        return int(count)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class PartialWriteTests(SynchronousTestCase):
    """
    A write the disk takes only part of (it fills up) is an error, and the
    line cut short is not glued to the next one.
    """

    def test_cutLineNotGlued(self) -> None:
        """
        Lines written into a disk that fills up part way through a batch
        are lost, counted, all of them; once it has room again the lines
        that follow (the count of the lost ones first) each start a line of
        their own: every line of a JSON log is JSON or the piece of a line
        cut short, never two glued together.
        """
        path = os.path.abspath(self.mktemp())
        log = AppendingLogFile.fromFullPath(path)
        self.addCleanup(log.close)
        self.patch(sys, "__stderr__", io.StringIO())
        filling = _FillingFile(log._file, 300)
        log._file = filling  # type: ignore[assignment]
        writer = BufferedLogWriter(log, json=True, reactor=Clock())
        for n in range(5):
            writer.line(f"line {n} " + "y" * 100, {"n": n})
        self.assertEqual(writer._lost, 4)
        filling.room = 1 << 20
        writer.line("after", {"n": 5})
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
        self.assertEqual(lines[-1], b"")
        self.assertEqual(json.loads(lines[0])["n"], 0)
        self.assertFalse(lines[1].endswith(b"}"), lines[1])
        self.assertEqual(json.loads(lines[2])["lost"], 4)
        self.assertEqual(json.loads(lines[3])["n"], 5)
        self.assertEqual(len(lines), 5)
