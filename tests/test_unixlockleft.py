# -*- test-case-name: tests.test_unixlockleft -*-
"""
A UNIX listener that fails to bind after Twisted took its lock file
(C{PATH.lock}: a path too long for a UNIX socket, a file in the way) leaves
no lock file behind, for the next start or another program to trip on;
a lock file held by another process is left alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.listeners import ListenFailed
from twisted_smtpd._serving.service import SMTPServer
from twisted_smtpd.handlers import SinkHandler


class LockLeftTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def paths(self) -> list[str]:
        """
        Paths a UNIX socket cannot be bound at once its lock file is taken:
        one too long (a UNIX socket's path has at most 107 bytes), one
        where a file that is not a socket is.
        """
        inTheWay = os.path.join(self.directory, "file")
        with open(inTheWay, "w"):
            pass
        return [os.path.join(self.directory, "x" * 120), inTheWay]

    def test_service(self) -> None:
        """
        Started as a service (C{twistd smtpd}), the listener fails with
        L{ListenFailed} and its lock file is gone.
        """
        for path in self.paths():
            server = SMTPServer(SinkHandler())
            server.addEndpoint(f"unix:{path}")
            self.assertRaises(ListenFailed, server.privilegedStartService)
            self.addCleanup(server.stopService)
            self.assertFalse(os.path.lexists(path + ".lock"), path)

    def test_listen(self) -> None:
        """
        L{SMTPServer.listen}'s L{Deferred} fails with Twisted's error, and
        the lock file is gone.
        """
        for path in self.paths():
            server = SMTPServer(SinkHandler(), reactor=reactor)
            self.failureResultOf(server.listen(f"unix:{path}"), CannotListenError)
            self.assertFalse(os.path.lexists(path + ".lock"), path)

    def test_heldByAnother(self) -> None:
        """
        A lock file held by another running process (here, process 1) is
        not removed: the listener fails saying so.
        """
        path = os.path.join(self.directory, "s.sock")
        os.symlink("1", path + ".lock")
        server = SMTPServer(SinkHandler())
        server.addEndpoint(f"unix:{path}")
        e = self.assertRaises(ListenFailed, server.privilegedStartService)
        self.addCleanup(server.stopService)
        self.assertIn("names process 1, still running", e.why)
        self.assertEqual(os.readlink(path + ".lock"), "1")
