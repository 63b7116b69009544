# -*- test-case-name: tests.test_files -*-
"""
Tests for L{twisted_smtpd._core.files}: the files a configuration names are
regular files, opened without waiting on a named pipe; and each option that
names one (certificates, keys, CA bundles, C{--auth file:}, C{--mbox},
C{ssl:} endpoint files) refuses a named pipe with one line instead of
blocking the start.
"""

from __future__ import annotations

import os
import signal
import stat
from typing import Any

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from tests.test_tap import parse
from twisted_smtpd._core.files import (
    FILE_LIMIT,
    NotRegularFile,
    _kind,
    openRegular,
    readRegular,
)
from twisted_smtpd._serving.service import SMTPServer
from twisted_smtpd._serving.tls import ServerTLS
from twisted_smtpd.handlers import SinkHandler
from twisted_smtpd.handlers.relay import loadTrustRoot

#: How long a test may be blocked on a named pipe before it fails: only a
#: regression ever waits at all.
BLOCKED = 20.0


def failIfBlocked(testCase: SynchronousTestCase) -> None:
    """
    Fail C{testCase}, instead of hanging it for good, if it is still
    running after L{BLOCKED} seconds: a named pipe opened or read in
    blocking mode waits for a writer that never comes.
    """

    def blocked(signum: int, frame: Any) -> None:
        raise testCase.failureException("blocked on a named pipe")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.setitimer(signal.ITIMER_REAL, BLOCKED)

    def restore() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    testCase.addCleanup(restore)


class _FileTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.fifo = os.path.join(self.directory, "fifo")
        os.mkfifo(self.fifo)
        failIfBlocked(self)


class OpenRegularTests(_FileTestCase):
    """
    L{openRegular} and L{readRegular}.
    """

    def test_regularFile(self) -> None:
        """
        A regular file, or a symbolic link to one, is read; the descriptor
        is blocking and close-on-exec.
        """
        path = os.path.join(self.directory, "cert.pem")
        with open(path, "wb") as f:
            f.write(b"PEM")
        link = os.path.join(self.directory, "link.pem")
        os.symlink(path, link)
        self.assertEqual(readRegular(path, "certificate"), b"PEM")
        self.assertEqual(readRegular(link, "certificate"), b"PEM")
        fd = openRegular(path)
        self.addCleanup(os.close, fd)
        self.assertTrue(os.get_blocking(fd))
        self.assertFalse(os.get_inheritable(fd))

    def test_namedPipe(self) -> None:
        """
        A named pipe is refused at once, with no writer (reading) or no
        reader (writing) at its other end, and with one.
        """
        e = self.assertRaises(ValueError, readRegular, self.fifo, "certificate")
        self.assertEqual(
            str(e), f"cannot read certificate {self.fifo}: not a regular file (a named pipe)"
        )
        appending = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        e = self.assertRaises(NotRegularFile, openRegular, self.fifo, appending)
        self.assertEqual((e.path, e.kind), (self.fifo, "a named pipe"))
        reader = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        e = self.assertRaises(NotRegularFile, openRegular, self.fifo, appending)
        self.assertEqual(str(e), "not a regular file (a named pipe)")

    def test_otherKinds(self) -> None:
        """
        A device never ends and a directory holds no text: both are
        refused, naming what they are.
        """
        e = self.assertRaises(ValueError, readRegular, os.devnull, "private key")
        self.assertEqual(
            str(e), f"cannot read private key {os.devnull}: not a regular file (a character device)"
        )
        e = self.assertRaises(NotRegularFile, openRegular, self.directory)
        self.assertEqual(e.kind, "a directory")
        self.assertEqual(_kind(stat.S_IFSOCK), "a socket")
        self.assertEqual(_kind(stat.S_IFBLK), "a block device")

    def test_missing(self) -> None:
        """
        A missing file is the L{OSError} it always was.
        """
        missing = os.path.join(self.directory, "missing")
        self.assertRaises(FileNotFoundError, readRegular, missing, "certificate")
        self.assertRaises(FileNotFoundError, openRegular, missing)

    def test_tooLarge(self) -> None:
        """
        A regular file larger than the limit is refused before it is read
        whole.
        """
        big = os.path.join(self.directory, "big")
        with open(big, "wb") as f:
            f.truncate(FILE_LIMIT + 1)
        e = self.assertRaises(ValueError, readRegular, big, "CA certificates")
        self.assertEqual(
            str(e), f"cannot read CA certificates {big}: larger than {FILE_LIMIT} bytes"
        )


class NamedPipeOptionTests(_FileTestCase):
    """
    Every file a configuration names and the start reads or opens refuses a
    named pipe with one line naming the option, instead of blocking.
    """

    def setUp(self) -> None:
        super().setUp()
        ca = CertificateAuthority(os.path.join(self.directory, "ca"))
        self.ca = ca
        self.server = ca.server("mx.example.com")

    def test_serverTLS(self) -> None:
        """
        L{ServerTLS} (C{SMTPServer}'s certificates, read at start and at
        each reload) refuses a named pipe as certificate, key, CA bundle or
        SNI certificate.
        """
        cert, key = self.server.certificatePath, self.server.keyPath
        message = f"{self.fifo}: not a regular file (a named pipe)"
        for args, kwargs, what in [
            ((self.fifo,), {}, "certificate"),
            ((cert, self.fifo), {}, "private key"),
            ((cert, key, self.fifo), {"requestCert": True}, "CA certificates"),
            ((cert, key), {"sniOptions": {"a.example": (self.fifo, None)}}, "certificate"),
        ]:
            e = self.assertRaises(ValueError, ServerTLS, *args, **kwargs)
            self.assertEqual(str(e), f"cannot read {what} {message}")

    def test_sslEndpoint(self) -> None:
        """
        An C{ssl:} endpoint whose key or certificate is a named pipe is
        refused before Twisted's parser reads it.
        """
        cert = self.server.certificatePath
        e = self.assertRaises(
            ValueError,
            SMTPServer(SinkHandler()).addEndpoint,
            f"ssl:0:privateKey={self.fifo}:certKey={cert}",
        )
        self.assertEqual(
            str(e), f"cannot read privateKey {self.fifo}: not a regular file (a named pipe)"
        )

    def test_caBundles(self) -> None:
        """
        The CA bundle of C{--relay-ca}, C{--webhook-ca} and C{--amqp-ca}
        (L{loadTrustRoot}) refuses a named pipe.
        """
        e = self.assertRaises(ValueError, loadTrustRoot, self.fifo)
        self.assertEqual(
            str(e), f"cannot read CA certificates {self.fifo}: not a regular file (a named pipe)"
        )

    def test_twistdFlags(self) -> None:
        """
        Under C{twistd}, each is a usage error of one line naming the flag
        and the path: C{--tls-cert}, C{--tls-key}, C{--tls-ca}, C{--sni},
        C{--auth file:}, C{--mbox}, and C{--relay-ca}.
        """
        cert = self.server.certificatePath
        pipe = "not a regular file (a named pipe)"
        for args, expected in [
            (("--sink", "--tls-cert", self.fifo), "--tls-cert: cannot read certificate"),
            (
                ("--sink", "--tls-cert", cert, "--tls-key", self.fifo),
                "--tls-key: cannot read private key",
            ),
            (("--sink", "--tls-ca", self.fifo), "--tls-ca: cannot read CA certificates"),
            (("--sink", "--sni", f"a.example={self.fifo}"), "--sni: cannot read certificate"),
            (("--sink", "--auth", f"file:{self.fifo}"), f"--auth 'file:{self.fifo}':"),
            (("--mbox", self.fifo), f"--mbox '{self.fifo}':"),
            (
                ("--relay", "mx.example", "--relay-ca", self.fifo),
                "--relay-ca: cannot read CA certificates",
            ),
        ]:
            e = self.assertRaises(usage.UsageError, parse, *args)
            self.assertTrue(str(e).startswith(expected), (args, str(e)))
            self.assertTrue(str(e).endswith(pipe), (args, str(e)))
            self.assertIn(self.fifo, str(e))
