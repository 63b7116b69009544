# -*- test-case-name: tests.test_unixclient -*-
"""
A client of a C{unix:} listener, which has no IP address: named
C{localhost} (as Postfix names it) in the greeting reply and the
C{Received:} header, never an empty address literal C{[]}.
"""

from __future__ import annotations

import os
import smtplib
import socket
import tempfile

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from twisted_smtpd import ServerOptions, SMTPServer
from twisted_smtpd.handlers import MaildirHandler


def _session(path: str) -> tuple[bytes, bytes]:
    """
    Deliver one message over the UNIX socket at C{path}.

    @return: The EHLO reply's first line and the 250 reply to the message.
    """
    client = smtplib.SMTP()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    client.sock = sock
    try:
        code, _ = client.getreply()
        assert code == 220, code
        code, ehlo = client.ehlo("client.example")
        assert code == 250, code
        client.mail("a@example.com")
        client.rcpt("b@example.com")
        code, queued = client.data(b"Subject: unix\r\n\r\nbody\r\n")
        assert code == 250, (code, queued)
        client.quit()
    finally:
        client.close()
    return ehlo.split(b"\n")[0], queued


class UnixClientTests(TestCase):
    """
    A session over a real UNIX socket.
    """

    async def test_namedLocalhost(self) -> None:
        """
        The EHLO reply greets C{localhost}, and the C{Received:} header names
        the client C{(localhost [127.0.0.1])}: Postfix's words for a client
        with no IP address.
        """
        folder = tempfile.mkdtemp(dir=os.getcwd())
        path = os.path.join(folder, "smtpd.sock")
        maildir = os.path.join(folder, "Maildir")
        handler = MaildirHandler(maildir, traceHeaders=True, hostname="mx.example")
        server = SMTPServer(handler, ServerOptions(name="mx.example"))
        port = await server.listen(f"unix:{path}:lockfile=0")
        self.addCleanup(port.stopListening)
        ehlo, queued = await deferToThread(_session, path)
        self.assertEqual(ehlo, b"mx.example Nice to meet you, localhost")
        [name] = os.listdir(os.path.join(maildir, "new"))
        with open(os.path.join(maildir, "new", name), "rb") as f:
            stored = f.read()
        received = stored.split(b"\r\n")[1]
        self.assertTrue(
            received.startswith(b"Received: from client.example (localhost [127.0.0.1]) by"),
            received,
        )
        self.assertIn(name.encode(), queued)


def _boundSession(path: str, name: str) -> bytes:
    """
    Greet the server at the UNIX socket C{path} from a client socket bound
    to the relative path C{name} (in the current directory), and quit.

    @return: The EHLO reply.
    """
    if os.path.lexists(name):
        os.remove(name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
        sock.settimeout(10)
        sock.connect(path)
        client = smtplib.SMTP()
        client.sock = sock
        code, _ = client.getreply()
        assert code == 220, code
        code, ehlo = client.ehlo("client.example")
        assert code == 250, code
        client.quit()
    finally:
        sock.close()
        os.remove(name)
    return ehlo


class BoundNameTests(TestCase):
    """
    The path a UNIX client bound its socket to is its own choice: it never
    passes the client for an IP address.
    """

    async def test_addressLikePathNotTrusted(self) -> None:
        """
        A client bound to the relative path C{127.0.0.1} is still a UNIX
        socket's client, named C{localhost}: not the loopback address that
        C{useXClient} trusts, so XCLIENT is not offered to it.
        """
        folder = tempfile.mkdtemp(dir=os.getcwd())
        path = os.path.join(folder, "smtpd.sock")
        server = SMTPServer(
            MaildirHandler(os.path.join(folder, "Maildir")),
            ServerOptions(name="mx.example", useXClient=["127.0.0.0/8"]),
        )
        port = await server.listen(f"unix:{path}:lockfile=0")
        self.addCleanup(port.stopListening)
        ehlo = await deferToThread(_boundSession, path, "127.0.0.1")
        self.assertTrue(ehlo.startswith(b"mx.example Nice to meet you, localhost\n"), ehlo)
        self.assertNotIn(b"XCLIENT", ehlo)

    def test_hostPort(self) -> None:
        """
        L{hostPort} gives a UNIX client's bound path as its host, but for
        one that would read as an IP address or as XCLIENT's C{unknown},
        or an abstract name (which would read as one once its NUL is
        dropped, as C{--pipe}'s environment drops it): then the host is
        empty, as for an unbound client.
        """
        from twisted.internet.address import UNIXAddress

        from twisted_smtpd._core.session import hostPort

        self.assertEqual(hostPort(UNIXAddress(b"/run/client.sock")), ("/run/client.sock", 0))
        self.assertEqual(hostPort(UNIXAddress(None)), ("", 0))
        for name in (b"127.0.0.1", b"::1", b"192.0.2.7", b"unknown", b"\x00127.0.0.1"):
            self.assertEqual(hostPort(UNIXAddress(name)), ("", 0), name)


class UnixPeerTests(TestCase):
    """
    L{unixPeer}.
    """

    def test_unixPeer(self) -> None:
        """
        An unbound UNIX client (empty name) or a bound one (its path) is a
        UNIX socket's peer; an IP client, whatever its port, and XCLIENT's
        C{unknown} are not.
        """
        from twisted_smtpd._core.session import unixPeer

        self.assertTrue(unixPeer(("", 0)))
        self.assertTrue(unixPeer(("/run/client.sock", 0)))
        self.assertFalse(unixPeer(("192.0.2.1", 25)))
        self.assertFalse(unixPeer(("192.0.2.1", 0)))
        self.assertFalse(unixPeer(("2001:db8::1", 0)))
        self.assertFalse(unixPeer(("unknown", 0)))
