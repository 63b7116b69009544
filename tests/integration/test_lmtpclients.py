# -*- test-case-name: tests.integration.test_lmtpclients -*-
"""
C{twistd smtpd --lmtp} with real LMTP clients: Python's C{smtplib.LMTP}
over a UNIX socket, as a Dovecot-style local delivery socket is used, and
Postfix's C{lmtp} client over TCP.  A handler answers each recipient on its
own (L{tests.integration.perrecipienthandler}); the replies after the message
must be one per accepted recipient, in order (RFC 2033 section 4.2), and
each recipient's fate in the client the one its reply gave.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import socket

from tests.integration.helpers import CLIENT_TIMEOUT, ServerTestCase, readReply
from tests.integration.nexthops import DELIVERY_TIMEOUT, Postfix, shortDirectory, waitUntil

HANDLER = "tests.integration.perrecipienthandler:make"
BODY = b"Subject: lmtp\r\n\r\nbody\r\n"


class SmtplibUnixSocketTests(ServerTestCase):
    """
    C{smtplib.LMTP} connected to a C{unix:} listener.
    """

    def setUp(self) -> None:
        directory = shortDirectory("lm")
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = str(directory / "lmtp")
        self.startServer(
            "--lmtp",
            "--handler",
            HANDLER,
            "--no-reverse-lookup",
            maildir=False,
            listen=[f"unix:{self.path}"],
        )

    def test_repliesPerRecipient(self) -> None:
        """
        After the message, one reply per accepted recipient in the order of
        the RCPT commands (a refused RCPT owes none), the next transaction
        pipelined behind the final dot answered after them; EHLO is refused
        before LHLO and a second LHLO is taken.
        """
        client = smtplib.LMTP(self.path, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        self.assertEqual(client.docmd("EHLO", "client.example")[0], 500)
        self.assertEqual(client.docmd("HELO", "client.example")[0], 500)
        self.assertEqual(client.docmd("LHLO", "client.example")[0], 250)
        self.assertEqual(client.ehlo("client.example")[0], 250)
        self.assertEqual(client.mail("alice@example.com")[0], 250)
        recipients = ["ok1@example.org", "busy@example.org", "gone@example.org", "broken@x"]
        for recipient in recipients:
            self.assertEqual(client.rcpt(recipient)[0], 250)
        self.assertEqual(client.rcpt("<bad")[0], 501)
        self.assertEqual(client.rcpt("ok2@example.org")[0], 250)
        # smtplib.LMTP reads one reply after the dot (its ehlo sends LHLO);
        # the others follow it, then
        # the replies to the transaction pipelined behind the dot.
        assert client.sock is not None
        client.sock.sendall(
            b"DATA\r\n"
            + BODY
            + b".\r\nMAIL FROM:<bob@example.com>\r\nRCPT TO:<ok3@example.org>\r\n"
            + b"DATA\r\n"
        )
        codes = [client.getreply()[0] for _ in range(1 + 5 + 3)]
        self.assertEqual(codes, [354, 250, 452, 550, 451, 250, 250, 250, 354])
        client.sock.sendall(BODY + b".\r\n")
        self.assertEqual(client.getreply()[0], 250)
        client.quit()
        self.server.waitForLog(" message ", count=2)
        self.assertIn(
            ": 250,452,550,451,250 delivered 23 octets to ok1; 452 mailbox busy;"
            " 550 no such mailbox; 451 Error: internal error, try again later;"
            " 250 delivered 23 octets to ok2",
            self.server.output,
        )

    def test_handlerTimeoutAnswersEveryRecipient(self) -> None:
        """
        A handler that never answers (C{--handler-timeout}) gets every
        accepted recipient its 421, then the connection closes.
        """
        self.stopServer()
        self.startServer(
            "--lmtp",
            "--handler",
            HANDLER,
            "--handler-timeout",
            "1",
            "--no-reverse-lookup",
            maildir=False,
            listen=[f"unix:{self.path}"],
        )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CLIENT_TIMEOUT)
        self.addCleanup(sock.close)
        sock.connect(self.path)
        stream = sock.makefile("rb")
        self.addCleanup(stream.close)
        sock.sendall(
            b"LHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<hang1@example.org>\r\n"
            b"RCPT TO:<hang2@example.org>\r\nRCPT TO:<hang3@example.org>\r\nDATA\r\n"
            + BODY
            + b".\r\n"
        )
        codes = [readReply(stream)[0] for _ in range(1 + 1 + 1 + 3 + 1 + 3)]
        self.assertEqual(codes, [220, 250, 250, 250, 250, 250, 354, 421, 421, 421])
        self.assertEqual(stream.read(), b"")


class PostfixLMTPTests(ServerTestCase):
    """
    Postfix's C{lmtp} client delivering every message to C{twistd smtpd
    --lmtp} (C{default_transport = lmtp:inet:...}).
    """

    def postfix(self, *args: str) -> Postfix:
        """
        Start the server with C{args} and a Postfix delivering to it.
        """
        Postfix.require(self)
        self.startServer(
            "--lmtp", "--handler", HANDLER, "--no-reverse-lookup", *args, maildir=False
        )
        port = self.server.port
        postfix = Postfix(
            relayhost=port, settings={"default_transport": f"lmtp:inet:127.0.0.1:{port}"}
        )
        postfix.start(self)
        return postfix

    def send(self, postfix: Postfix, recipients: list[str]) -> None:
        """
        Submit one message to C{recipients} through Postfix's smtpd.
        """
        client = self.smtp(postfix.port)
        self.assertEqual(client.sendmail("alice@example.com", recipients, BODY), {})
        client.quit()

    def test_eachRecipientItsFate(self) -> None:
        """
        Each recipient's reply decides its fate in Postfix: sent on 250,
        deferred on 452 and on the 451 of an exception, bounced on 550.
        """
        postfix = self.postfix()
        self.send(
            postfix,
            ["ok@example.org", "busy@example.org", "gone@example.org", "broken@example.org"],
        )
        waitUntil(lambda: postfix.count("status=") >= 4, DELIVERY_TIMEOUT, "the deliveries")
        log = postfix.log
        statuses = dict(re.findall(r"to=<(\w+)@example\.org>.* status=(\w+)", log))
        self.assertEqual(
            statuses,
            {"ok": "sent", "busy": "deferred", "gone": "bounced", "broken": "deferred"},
            log,
        )
        self.assertIn("said: 452 4.2.1 mailbox busy", log)
        self.assertIn("said: 550 5.1.1 no such mailbox", log)

    def test_handlerTimeoutDefersEveryRecipient(self) -> None:
        """
        With a handler that never answers, every recipient is deferred by
        the server's own 421, none by a lost connection.
        """
        postfix = self.postfix("--handler-timeout", "1")
        self.send(postfix, ["hang1@example.org", "hang2@example.org"])
        waitUntil(lambda: postfix.count("status=deferred") >= 2, DELIVERY_TIMEOUT, "the deferrals")
        log = postfix.log
        first = [line for line in log.splitlines() if "status=deferred" in line][:2]
        self.assertEqual(len([line for line in first if "said: 421 4.3.0" in line]), 2, log)
