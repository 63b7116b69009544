# -*- test-case-name: tests.test_listenreasons -*-
"""
Why a listener cannot start, as one line that is true: what is in the way
of a UNIX socket's path, a backlog (not a port) out of range, and no
traceback for either with C{--workers}.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.listeners import ListenFailed, listenReason
from twisted_smtpd._serving.service import SMTPServer
from twisted_smtpd._twistd.tap import Options
from twisted_smtpd.handlers import SinkHandler


class UnixInTheWayTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Short: a UNIX socket's path has at most 107 bytes.
        self.directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def listenFailure(self, path: str) -> str:
        """
        Start a server listening on C{unix:path}; the reason it cannot.
        """
        server = SMTPServer(SinkHandler())
        server.addEndpoint(f"unix:{path}")
        e = self.assertRaises(ListenFailed, server.privilegedStartService)
        self.addCleanup(server.stopService)
        return e.why

    def test_regularFile(self) -> None:
        """
        A file that is not a socket is named as such, not as a program
        listening.
        """
        path = os.path.join(self.directory, "smtpd.sock")
        with open(path, "w") as f:
            f.write("x")
        self.assertEqual(
            self.listenFailure(path), f"a file that is not a socket is in the way: {path}"
        )

    def test_staleSocket(self) -> None:
        """
        A socket nothing listens on (one left by another program) is named
        as such.
        """
        path = os.path.join(self.directory, "smtpd.sock")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        self.assertEqual(
            self.listenFailure(path),
            f"a socket nothing listens on is in the way (remove it): {path}",
        )

    def test_listening(self) -> None:
        """
        A socket a program listens on is said to be in use.
        """
        path = os.path.join(self.directory, "smtpd.sock")
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(other.close)
        other.bind(path)
        other.listen(1)
        self.assertEqual(
            self.listenFailure(path), "address already in use (another program listens on it)"
        )


class BacklogTests(SynchronousTestCase):
    def test_reason(self) -> None:
        """
        C{listen()}'s C{OverflowError} is a backlog out of range, C{bind()}'s
        a port out of range.
        """
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            e = self.assertRaises(OverflowError, s.listen, 2**40)
        self.assertEqual(listenReason(e), "backlog out of range")
        with socket.socket() as s:
            e = self.assertRaises(OverflowError, s.bind, ("127.0.0.1", 99999))
        self.assertEqual(listenReason(e), "port out of range (0-65535)")

    def test_workers(self) -> None:
        """
        With C{--workers 2}, a backlog out of range is one usage error
        naming the C{--listen} endpoint, not a traceback (refused with the
        other parameters, before any listening).
        """
        description = "tcp:0:interface=127.0.0.1:backlog=99999999999"
        e = self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            ["--sink", "--workers", "2", "--listen", description],
        )
        self.assertEqual(
            str(e),
            f"--listen {description!r}: tcp: backlog must be from 1 to 65535, got '99999999999'",
        )


class HAProxyTwiceTests(SynchronousTestCase):
    def test_refused(self) -> None:
        """
        C{haproxy:} given twice (which would wait for two PROXY headers on
        each connection, so that no proxy's connection could be served) is
        one usage error naming the endpoint.
        """
        for description in [
            "haproxy:haproxy:tcp:0:interface=127.0.0.1",
            "haproxy: HAProxy:ssl:0:interface=127.0.0.1",
        ]:
            e = self.assertRaises(
                usage.UsageError, Options().parseOptions, ["--sink", "--listen", description]
            )
            self.assertEqual(
                str(e),
                f"--listen {description!r}: haproxy: given twice (one PROXY header per connection)",
            )


class UnixLockTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Short: a UNIX socket's path has at most 107 bytes.
        self.directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def test_lockHeld(self) -> None:
        """
        A path whose lock file (Twisted's C{PATH.lock}) names a running
        process, as another server listening there leaves it, is said to be
        in use, naming the lock file and the process, not with Twisted's
        C{Couldn't listen on any:b'PATH': Cannot acquire lock.}.
        """
        path = os.path.join(self.directory, "smtpd.sock")
        os.symlink(str(os.getpid()), path + ".lock")
        server = SMTPServer(SinkHandler())
        server.addEndpoint(f"unix:{path}")
        e = self.assertRaises(ListenFailed, server.privilegedStartService)
        self.addCleanup(server.stopService)
        self.assertEqual(
            e.why,
            f"address already in use (its lock file {path}.lock names process"
            f" {os.getpid()}, still running)",
        )
