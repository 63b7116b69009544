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
