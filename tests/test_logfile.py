# -*- test-case-name: tests.test_logfile -*-
"""
L{AppendingLogFile} and L{logDestination}: the file C{twistd smtpd} logs
into.
"""

from __future__ import annotations

import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._twistd.logfile import AppendingLogFile, logDestination


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

    def test_standardOutput(self) -> None:
        """
        C{--logfile=-}, or C{--nodaemon} without C{--logfile}, is standard
        output.
        """
        self.assertIs(logDestination(_Config({"logfile": "-", "nodaemon": False})), sys.stdout)
        self.assertIs(logDestination(_Config({"logfile": None, "nodaemon": True})), sys.stdout)
