# -*- test-case-name: tests.test_unixlockleft -*-
"""
A UNIX listener that fails to bind after Twisted took its lock file
(C{PATH.lock}: a path too long for a UNIX socket, a file in the way) leaves
no lock file behind, for the next start or another program to trip on;
a lock file held by another process is left alone.  A start of C{twistd
smtpd} that ends because a later listener fails leaves neither the socket
nor the lock file of the UNIX listeners bound before it.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import sys
import tempfile

from twisted.internet import reactor
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_tap import parse
from twisted_smtpd._serving.listeners import ListenFailed, _Listener
from twisted_smtpd._serving.service import SMTPServer
from twisted_smtpd._twistd.daemon import SMTPDaemon
from twisted_smtpd._twistd.tap import makeService
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


class EndedStartTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.err = io.StringIO()
        self.patch(sys, "__stderr__", self.err)
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.busy = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"

    def test_laterListenerFails(self) -> None:
        """
        C{twistd smtpd} with two UNIX listeners (one behind C{haproxy:})
        and then a port in use ends with one line, and the sockets and lock
        files of the two listeners bound before are gone: the reactor never
        runs to stop them, and the next start would find a socket nothing
        listens on in the way.
        """
        first = os.path.join(self.directory, "a.sock")
        second = os.path.join(self.directory, "b.sock")
        config = parse(
            "--sink",
            "--listen",
            f"unix:{first}",
            "--listen",
            f"haproxy:unix:{second}",
            "--listen",
            self.busy,
        )
        server = makeService(config)
        assert isinstance(server, SMTPDaemon)
        self.addCleanup(self.closePorts, server)
        exit = self.assertRaises(SystemExit, server.privilegedStartService)
        self.assertEqual(exit.code, 1)
        self.assertEqual(
            self.err.getvalue(),
            f"twistd smtpd: --listen {self.busy!r}: address already in use"
            " (another program listens on it); see --help\n",
        )
        self.assertEqual(os.listdir(self.directory), [])

    def test_adoptedSocketKept(self) -> None:
        """
        A UNIX socket the server was handed (systemd's, as
        C{systemd:domain=UNIX}) is not removed when a later listener
        cannot start: it is the socket's owner's, which keeps serving it.
        """
        path = os.path.join(self.directory, "systemd.sock")
        handed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(handed.close)
        handed.bind(path)
        handed.listen(1)
        handed.setblocking(False)
        server = makeService(parse("--sink", "--listen", self.busy))
        assert isinstance(server, SMTPDaemon)
        self.addCleanup(self.closePorts, server)
        (failing,) = list(server)
        failing.disownServiceParent()
        adopted = _Listener(
            # A copy, which adopting it closes.
            AdoptedStreamServerEndpoint(reactor, os.dup(handed.fileno()), socket.AF_UNIX),
            server.factory,
        )
        adopted.setServiceParent(server)
        failing.setServiceParent(server)
        self.assertRaises(SystemExit, server.privilegedStartService)
        self.assertIsNotNone(adopted.port)
        self.assertTrue(os.path.exists(path))

    def test_workersBindFails(self) -> None:
        """
        The parent of C{--workers}, which binds every listener while the
        options are read, removes the UNIX socket it bound before a later
        listener failed.
        """
        path = os.path.join(self.directory, "a.sock")
        self.assertRaises(
            usage.UsageError,
            parse,
            "--sink",
            "--workers",
            "2",
            "--listen",
            f"unix:{path}",
            "--listen",
            self.busy,
        )
        self.assertEqual(os.listdir(self.directory), [])

    def test_deliveryFilesMade(self) -> None:
        """
        The Maildir (with the directories above it that the start made)
        and the mbox file a start made while its options were read are
        removed when it ends because a listener cannot start.
        """
        for flag, path in [
            ("--maildir", os.path.join(self.directory, "made", "Maildir")),
            ("--mbox", os.path.join(self.directory, "mbox")),
        ]:
            server = makeService(parse(flag, path, "--listen", self.busy))
            assert isinstance(server, SMTPDaemon)
            self.assertTrue(os.path.exists(path))
            self.assertRaises(SystemExit, server.privilegedStartService)
            self.assertEqual(os.listdir(self.directory), [], flag)

    def test_deliveryFilesKept(self) -> None:
        """
        A Maildir that existed before the start (its C{cur} made now), or
        one holding a message, stays when the start ends; only what the
        start made and left empty goes.
        """
        path = os.path.join(self.directory, "Maildir")
        os.makedirs(os.path.join(path, "new"))
        os.makedirs(os.path.join(path, "tmp"))
        with open(os.path.join(path, "new", "1.message"), "w") as f:
            f.write("Subject: kept\n")
        server = makeService(parse("--maildir", path, "--listen", self.busy))
        assert isinstance(server, SMTPDaemon)
        self.assertRaises(SystemExit, server.privilegedStartService)
        self.assertEqual(sorted(os.listdir(path)), ["new", "tmp"])
        self.assertEqual(os.listdir(os.path.join(path, "new")), ["1.message"])

    def test_messageKeepsMaildir(self) -> None:
        """
        A Maildir the start made that holds a message when the start ends
        is kept whole: its empty C{tmp} and C{cur} too.
        """
        path = os.path.join(self.directory, "Maildir")
        server = makeService(parse("--maildir", path, "--listen", self.busy))
        assert isinstance(server, SMTPDaemon)
        with open(os.path.join(path, "new", "1.message"), "w") as f:
            f.write("Subject: kept\n")
        self.assertRaises(SystemExit, server.privilegedStartService)
        self.assertEqual(sorted(os.listdir(path)), ["cur", "new", "tmp"])

    def test_refusedOption(self) -> None:
        """
        Under C{twistd}, a flag refused after the Maildir was made (here
        C{--auth-optional} without AUTH offered) ends with its one line,
        and the Maildir is gone.
        """
        from twisted_smtpd._twistd import tap
        from twisted_smtpd._twistd.heldsignals import HeldSignals

        self.patch(tap, "HELD", HeldSignals())
        for number in HeldSignals.numbers:
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        path = os.path.join(self.directory, "Maildir")
        options = tap.Options()
        options.parent = {}  # type: ignore[attr-defined]
        exit = self.assertRaises(
            SystemExit, options.parseOptions, ["--maildir", path, "--auth-optional"]
        )
        self.assertEqual(exit.code, 1)
        self.assertTrue(self.err.getvalue().startswith("twistd smtpd: --auth-optional needs"))
        self.assertEqual(os.listdir(self.directory), [])

    def closePorts(self, server: SMTPDaemon) -> None:
        """
        Close the sockets of the listeners C{server} bound, without the
        reactor's turn that Twisted's C{stopListening} waits for.
        """
        for service in server:
            port = getattr(service, "port", None)
            if port is not None:
                reactor.removeReader(port)
                port.socket.close()
