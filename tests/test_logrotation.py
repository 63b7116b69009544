# -*- test-case-name: tests.test_logrotation -*-
"""
L{AppendingLogFile}'s rotation by size: a next file that cannot be opened
loses no line, and is tried again until it can; a file deleted while
written is replaced; a rotation that cannot be done is said, at start and
when it is skipped.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_logfile import _Config
from twisted_smtpd._serving.logwriter import BufferedLogWriter
from twisted_smtpd._twistd import tap as _tap
from twisted_smtpd._twistd.logfile import AppendingLogFile, logDestination


class _NoInodeLogFile(AppendingLogFile):
    """
    A log file in a directory where, with C{noRoom} set, no new file can be
    made (no inode or quota left, as C{open(2)} fails with C{ENOSPC}),
    while the file open still takes writes.
    """

    noRoom = False

    def _openFile(self) -> None:
        if self.noRoom and not os.path.exists(self.path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
        super()._openFile()


class RotationTests(SynchronousTestCase):
    """
    The file is rotated by size; the old file is closed only once the next
    one is open.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "smtpd.log")
        self.patch(sys, "__stderr__", io.StringIO())

    def read(self, path: str) -> list[str]:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()

    def writer(self, logFile: AppendingLogFile) -> BufferedLogWriter:
        """
        A writer writing each line at once (its clock is no running
        reactor) into C{logFile}, which is closed at the end.
        """
        self.addCleanup(logFile.close)
        return BufferedLogWriter(logFile, reactor=Clock())

    def test_nextFileCannotBeOpened(self) -> None:
        """
        When the rotation cannot open the next file, the lines go on into
        the old one, now C{path.1}, after one warning line saying so; the
        next file is tried again at each write and, once it opens, the
        lines go into it after one line saying where the others went.  No
        line is lost.
        """
        logFile = _NoInodeLogFile("smtpd.log", self.directory, rotateLength=200)
        writer = self.writer(logFile)
        writer.line("first " + "x" * 200, {})
        logFile.noRoom = True
        writer.line("during 1", {})
        writer.line("during 2", {})
        self.assertFalse(os.path.exists(self.path))
        logFile.noRoom = False
        writer.line("after", {})
        old = self.read(self.path + ".1")
        self.assertEqual(len(old), 4, old)
        self.assertTrue(old[0].endswith("] first " + "x" * 200), old)
        self.assertTrue(old[1].endswith("] during 1"), old)
        self.assertIn(
            f" [twisted_smtpd.log#warn] Rotating the log file {self.path} failed, the next"
            " file could not be opened (No space left on device (ENOSPC)): the lines go on"
            f" into {self.path}.1, and the next file is tried again at each write",
            old[2],
        )
        self.assertTrue(old[3].endswith("] during 2"), old)
        new = self.read(self.path)
        self.assertEqual(len(new), 2, new)
        self.assertTrue(new[0].endswith("] after"), new)
        self.assertIn(
            f" [twisted_smtpd.log#warn] Log file {self.path} opened at last after its rotation"
            f" failed (No space left on device (ENOSPC)): the lines before are in {self.path}.1",
            new[1],
        )
        self.assertEqual(writer._lost, 0)
        self.assertEqual(sys.__stderr__.getvalue(), "")  # type: ignore[union-attr]
        self.assertFalse(os.path.exists(self.path + ".2"))

    def test_rotated(self) -> None:
        """
        A rotation that can open the next file moves the older files up by
        one and leaves no line of its own.
        """
        logFile = AppendingLogFile("smtpd.log", self.directory, rotateLength=100)
        writer = self.writer(logFile)
        for n in range(3):
            writer.line(f"line {n} " + "x" * 100, {})
        for n, suffix in enumerate((".2", ".1", "")):
            [line] = self.read(self.path + suffix)
            self.assertTrue(line.endswith(f"] line {n} " + "x" * 100), line)

    def test_deletedFileReplaced(self) -> None:
        """
        A file deleted while it is written is replaced by a new one at its
        rotation (the lines of its size went into the deleted one), which
        says so in one line; nothing is renamed.
        """
        logFile = AppendingLogFile("smtpd.log", self.directory, rotateLength=200)
        writer = self.writer(logFile)
        writer.line("first", {})
        os.remove(self.path)
        writer.line("unseen " + "x" * 200, {})
        self.assertFalse(os.path.exists(self.path))
        writer.line("after", {})
        lines = self.read(self.path)
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].endswith("] after"), lines)
        self.assertIn(
            f" [twisted_smtpd.log#warn] Log file {self.path} no longer named the file written"
            " when it was to be rotated (deleted, or moved away without SIGUSR1): it is opened"
            " again",
            lines[1],
        )
        self.assertEqual(os.listdir(self.directory), ["smtpd.log"])

    def test_movedFileNotRenamed(self) -> None:
        """
        A file moved away without SIGUSR1 (logrotate without C{postrotate}
        and without C{copytruncate}), a new one made in its place, is not
        renamed again at its rotation: the new one is opened.
        """
        logFile = AppendingLogFile("smtpd.log", self.directory, rotateLength=200)
        writer = self.writer(logFile)
        os.rename(self.path, self.path + ".1")
        open(self.path, "w").close()
        writer.line("into the moved file " + "x" * 200, {})
        writer.line("after", {})
        self.assertEqual(sorted(os.listdir(self.directory)), ["smtpd.log", "smtpd.log.1"])
        [moved] = self.read(self.path + ".1")
        self.assertIn("] into the moved file ", moved)
        lines = self.read(self.path)
        self.assertTrue(lines[0].endswith("] after"), lines)
        self.assertIn(" no longer named the file written", lines[1])


class UnwritableDirectoryTests(SynchronousTestCase):
    """
    A log file in a directory the server's user cannot write is never
    rotated (nothing can be renamed or made there); it says so, at start
    and at the first rotation skipped.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "smtpd.log")
        real = os.access

        def access(path: str, mode: int, **kwargs: Any) -> bool:
            # As for a user other than root, to whom every directory can be
            # written: this one cannot.
            if path == self.directory and mode & os.W_OK:
                return False
            return real(path, mode, **kwargs)

        self.patch(os, "access", access)

    def test_rotationSkippedSaid(self) -> None:
        """
        The first rotation skipped leaves one line saying the file grows
        on; the lines go on into it.
        """
        logFile = AppendingLogFile("smtpd.log", self.directory, rotateLength=100)
        self.addCleanup(logFile.close)
        writer = BufferedLogWriter(logFile, reactor=Clock())
        for n in range(3):
            writer.line(f"line {n} " + "x" * 100, {})
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 4, lines)
        self.assertIn(
            f" [twisted_smtpd.log#warn] Log file {self.path} not rotated: its directory"
            f" {self.directory} cannot be written; it grows on past 100 bytes, its rotation"
            " tried again at each write",
            lines[2],
        )
        self.assertEqual(os.listdir(self.directory), ["smtpd.log"])

    def test_warnedAtStart(self) -> None:
        """
        C{--logfile} in such a directory starts the server with one warning
        naming the file and what to do.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        out = logDestination(_Config({"logfile": self.path, "nodaemon": False}))
        self.addCleanup(out.close)
        self.assertEqual(
            [(event["log_level"], formatEvent(event)) for event in events],
            [
                (
                    LogLevel.warn,
                    f"--logfile {self.path!r}: its directory cannot be written, so the file is"
                    " never rotated at 10000000 bytes and grows on: give it a directory the"
                    " server's user can write, or rotate it with logrotate's copytruncate",
                )
            ],
        )

    def test_writableNotWarned(self) -> None:
        """
        A directory that can be written leaves no warning.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        path = os.path.abspath(self.mktemp())
        out = logDestination(_Config({"logfile": path, "nodaemon": False}))
        self.addCleanup(out.close)
        self.assertEqual(len(events), 0)


class RotatedFilesKeptTests(SynchronousTestCase):
    """
    C{--log-rotate-keep N}: the rotation keeps C{PATH.1} to C{PATH.N} and
    deletes the older files, 10 unless told, all of them with 0.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "smtpd.log")

    def rotateUnder(self, config: dict[str, object], rotations: int) -> None:
        """
        Open the log file as C{twistd smtpd} does with the options
        C{config}, over rotated files C{PATH.1} to C{PATH.15} left by
        earlier runs, and write lines to rotate it C{rotations} times.
        """
        for number in range(1, 16):
            with open(f"{self.path}.{number}", "w") as f:
                f.write(f"old {number}\n")
        options = _Config({"logfile": self.path, "nodaemon": False})
        options.update(config)
        logFile = logDestination(options)
        self.assertIsInstance(logFile, AppendingLogFile)
        logFile.rotateLength = 100
        writer = BufferedLogWriter(logFile, reactor=Clock())
        self.addCleanup(logFile.close)
        for n in range(rotations + 1):
            writer.line(f"line {n} " + "x" * 100, {})

    def numbers(self) -> list[int]:
        names = os.listdir(self.directory)
        return sorted(int(name.rpartition(".")[2]) for name in names if name != "smtpd.log")

    def test_defaultKeepsTen(self) -> None:
        """
        Without the flag, ten rotated files are kept: the oldest past them
        are deleted at the first rotation, and the disk use stays bounded
        (110 MB) however long the log is written.
        """
        self.rotateUnder({}, 3)
        self.assertEqual(self.numbers(), list(range(1, 11)))
        with open(self.path + ".1", encoding="utf-8") as f:
            self.assertIn("] line 2 ", f.read())
        with open(self.path + ".10", encoding="utf-8") as f:
            self.assertEqual(f.read(), "old 7\n")

    def test_keep(self) -> None:
        """
        C{--log-rotate-keep 3} keeps C{PATH.1} to C{PATH.3}, the newest.
        """
        self.rotateUnder({"log-rotate-keep": 3}, 5)
        self.assertEqual(self.numbers(), [1, 2, 3])
        for number, line in [(1, 4), (2, 3), (3, 2)]:
            with open(f"{self.path}.{number}", encoding="utf-8") as f:
                self.assertIn(f"] line {line} ", f.read())
        with open(self.path, encoding="utf-8") as f:
            self.assertIn("] line 5 ", f.read())

    def test_zeroKeepsAll(self) -> None:
        """
        C{--log-rotate-keep 0} deletes nothing, as C{twistd}'s own log file.
        """
        self.rotateUnder({"log-rotate-keep": 0}, 2)
        self.assertEqual(self.numbers(), list(range(1, 18)))


class RotateLengthTests(SynchronousTestCase):
    """
    C{--log-rotate-length BYTES}: the size at which the log file is
    rotated, 10 MB unless told, never with 0.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "smtpd.log")

    def written(self, config: dict[str, object], lines: int) -> list[str]:
        """
        Write C{lines} lines of about 1 KB into the log file opened as
        C{twistd smtpd} opens it with the options C{config}.

        @return: The names in the log's directory.
        """
        options = _Config({"logfile": self.path, "nodaemon": False})
        options.update(config)
        logFile = logDestination(options)
        self.addCleanup(logFile.close)
        writer = BufferedLogWriter(logFile, reactor=Clock())
        for n in range(lines):
            writer.line(f"line {n} " + "x" * 1000, {})
            writer.flush()
        return sorted(os.listdir(self.directory))

    def test_default(self) -> None:
        """
        Without the flag the file is rotated at 10 MB, not at C{twistd}'s
        1 MB: ten rotated files hold 100 MB of lines.
        """
        logFile = logDestination(_Config({"logfile": self.path, "nodaemon": False}))
        self.addCleanup(logFile.close)
        self.assertEqual(logFile.rotateLength, 10_000_000)

    def test_length(self) -> None:
        """
        C{--log-rotate-length 5000}: a file is rotated once it holds 5000
        bytes, so 20 lines of about 1 KB make four rotated files.
        """
        names = self.written({"log-rotate-length": 5000}, 20)
        self.assertEqual(names, ["smtpd.log"] + [f"smtpd.log.{n}" for n in range(1, 4)])
        for name in names[1:]:
            size = os.path.getsize(os.path.join(self.directory, name))
            self.assertTrue(5000 <= size < 6100, size)

    def test_zeroNeverRotates(self) -> None:
        """
        C{--log-rotate-length 0} never rotates (logrotate does, with
        C{copytruncate} or C{postrotate kill -USR1}), past 1 MB too.
        """
        names = self.written({"log-rotate-length": 0}, 1100)
        self.assertEqual(names, ["smtpd.log"])
        self.assertGreater(os.path.getsize(self.path), 1_000_000)

    def test_parsed(self) -> None:
        """
        A whole number of bytes, 0 or more; from a configuration file too;
        warned of, with C{--log-rotate-keep}, where no log file is written.
        """
        logfile = {"logfile": os.path.abspath(self.mktemp()), "nodaemon": False}
        config = RotateKeepOptionTests.parse(self, ["--sink"], **logfile)
        self.assertEqual(config["log-rotate-length"], 10_000_000)
        config = RotateKeepOptionTests.parse(
            self, ["--sink", "--log-rotate-length", "0"], **logfile
        )
        self.assertEqual((config["log-rotate-length"], config["unused"]), (0, []))
        path = self.mktemp() + ".toml"
        with open(path, "w") as f:
            f.write("sink = true\nlog-rotate-length = 50000000\n")
        config = RotateKeepOptionTests.parse(self, ["--config", path], **logfile)
        self.assertEqual(config["log-rotate-length"], 50_000_000)
        for bad in ("-1", "10M", "1.5"):
            e = self.assertRaises(
                usage.UsageError, _tap.Options().parseOptions, ["--log-rotate-length", bad]
            )
            self.assertIn("--log-rotate-length: ", str(e))
        config = RotateKeepOptionTests.parse(
            self, ["--sink", "--log-rotate-length", "5", "--log-rotate-keep", "2"], nodaemon=True
        )
        self.assertEqual(
            config["unused"],
            [
                "--log-rotate-keep and --log-rotate-length have no effect: the log goes to"
                " standard output (no twistd --logfile)"
            ],
        )


class RotateKeepOptionTests(SynchronousTestCase):
    """
    The flag C{--log-rotate-keep}, on the command line or in a
    configuration file.
    """

    def parse(self, arguments: list[str], **parent: object) -> _tap.Options:
        config = _tap.Options()
        config.parent = {"pidfile": None, **parent}  # type: ignore[attr-defined]
        config.parseOptions(arguments)
        return config

    def test_parsed(self) -> None:
        """
        A whole number, 0 or more, 10 by default; from a configuration file
        too.
        """
        logfile = {"logfile": os.path.abspath(self.mktemp()), "nodaemon": False}
        self.assertEqual(self.parse(["--sink"], **logfile)["log-rotate-keep"], 10)
        config = self.parse(["--sink", "--log-rotate-keep", "100"], **logfile)
        self.assertEqual(config["log-rotate-keep"], 100)
        self.assertEqual(config["unused"], [])
        path = self.mktemp() + ".toml"
        with open(path, "w") as f:
            f.write("sink = true\nlog-rotate-keep = 0\n")
        self.assertEqual(self.parse(["--config", path], **logfile)["log-rotate-keep"], 0)
        for bad in ("-1", "ten", "1.5"):
            e = self.assertRaises(
                usage.UsageError, _tap.Options().parseOptions, ["--log-rotate-keep", bad]
            )
            self.assertIn("--log-rotate-keep: ", str(e))

    def test_unused(self) -> None:
        """
        Given where the server writes no log file (standard output, or
        C{twistd --syslog} with text), the flag is warned of at start.
        """
        for parent, why in [
            ({"nodaemon": True}, "the log goes to standard output (no twistd --logfile)"),
            ({"logfile": "-"}, "the log goes to standard output (no twistd --logfile)"),
            (
                {"syslog": True, "nodaemon": False},
                "twistd --syslog writes the log (--log-format text)",
            ),
        ]:
            config = self.parse(["--sink", "--log-rotate-keep", "5"], **parent)
            self.assertEqual(config["unused"], [f"--log-rotate-keep has no effect: {why}"])
        config = self.parse(["--sink"], nodaemon=True)
        self.assertEqual(config["unused"], [])
