# -*- test-case-name: tests.test_badlock -*-
"""
A UNIX socket whose lock file (Twisted's C{PATH.lock}) is a symbolic link
to no process id (text, control characters, a number no process can have),
left by another program or put there by a local user, fails the listener
with one line naming the lock file, its target escaped, not with Twisted's
C{ValueError} or a port said to be out of range.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.listeners import ListenFailed
from twisted_smtpd._serving.service import SMTPServer
from twisted_smtpd.handlers import SinkHandler

#: Lock file targets naming no process, and how the line shows them.
TARGETS = [
    ("abc", "'abc'"),
    ("\x1b[31mred", "'\\x1b[31mred'"),
    ("12 34", "'12 34'"),
    ("9" * 30, "'" + "9" * 30 + "'"),
    ("\u0661\u0662", "'\\u0661\\u0662'"),
]


class BadLockTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Short: a UNIX socket's path has at most 107 bytes.
        self.directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def test_lockNamingNoProcess(self) -> None:
        """
        Each target fails the start with L{ListenFailed}, one printable
        line naming the lock file and the target, escaped; nothing listens.
        """
        for number, (target, shown) in enumerate(TARGETS):
            path = os.path.join(self.directory, f"s{number}.sock")
            os.symlink(target, path + ".lock")
            server = SMTPServer(SinkHandler())
            server.addEndpoint(f"unix:{path}")
            e = self.assertRaises(ListenFailed, server.privilegedStartService)
            self.addCleanup(server.stopService)
            self.assertEqual(
                e.why,
                f"its lock file {path}.lock names no process ({shown}); remove it"
                " if no server listens on that path",
            )
            self.assertTrue(e.why.isprintable() and e.why.isascii(), e.why)
            self.assertFalse(os.path.exists(path))
