# -*- test-case-name: tests.integration.test_errorsleep -*-
"""
The error tarpit of a real C{twistd smtpd}, over a real socket: past
C{--soft-error-limit} errors each reply comes C{--error-sleep} seconds
late, refusals and acceptances alike, until a message accepted forgives
the errors or the session goes on to C{421 4.7.0} at C{maxErrors}.
"""

from __future__ import annotations

import socket
import time

from tests.integration.helpers import ServerTestCase, connect, readReply

SLEEP = 0.2


class ErrorSleepTests(ServerTestCase):
    """
    C{twistd smtpd --error-sleep 0.2} and C{smtplib}.
    """

    def test_refusalsPastLimitLate(self) -> None:
        """
        Replies 11 to 20 to unknown commands each take at least the sleep
        (the 20th followed by the 421 of the error limit); one log line
        names the client; a new session is answered at once meanwhile.
        """
        server = self.startServer(
            "--sink", "--no-reverse-lookup", "--error-sleep", str(SLEEP), maildir=False
        )
        client = self.smtp()
        client.ehlo("client.example.com")
        times = []
        for _ in range(19):
            started = time.monotonic()
            code, _text = client.docmd("FROB")
            times.append(time.monotonic() - started)
            self.assertEqual(code, 500)
        for seconds in times[10:]:
            self.assertGreaterEqual(seconds, SLEEP)
        other = self.smtp()
        started = time.monotonic()
        self.assertEqual(other.noop()[0], 250)
        self.assertLess(time.monotonic() - started, SLEEP * 5)
        started = time.monotonic()
        code, _text = client.docmd("FROB")
        self.assertGreaterEqual(time.monotonic() - started, SLEEP)
        self.assertEqual(code, 500)
        self.assertEqual(client.getreply()[0], 421)
        server.waitForLog("soft error limit reached (10 errors): replies delayed by 0.2 s")
        self.assertEqual(server.output.count("soft error limit reached"), 1)
        self.assertIn("127.0.0.1", server.output)

    def test_everyReplyPastLimitLate(self) -> None:
        """
        Past the limit the replies that accept are late too: NOOP, MAIL,
        RCPT and the 354 of DATA each take at least the sleep; the 250 of
        the message accepted does not, and neither does the reply after
        it (the errors are forgiven).
        """
        sleep = 1.0
        self.startServer(
            "--sink",
            "--no-reverse-lookup",
            "--soft-error-limit",
            "2",
            "--error-sleep",
            str(sleep),
            maildir=False,
        )
        client = self.smtp()
        client.ehlo("client.example.com")
        for _ in range(2):
            self.assertEqual(client.docmd("FROB")[0], 500)
        for command, argument, code in [
            ("NOOP", "", 250),
            ("MAIL", "FROM:<s@example.com>", 250),
            ("RCPT", "TO:<r@example.com>", 250),
            ("DATA", "", 354),
        ]:
            started = time.monotonic()
            self.assertEqual(client.docmd(command, argument)[0], code, command)
            self.assertGreaterEqual(time.monotonic() - started, sleep, command)
        started = time.monotonic()
        client.send(b"Subject: hi\r\n\r\nhi\r\n.\r\n")
        self.assertEqual(client.getreply()[0], 250)
        self.assertEqual(client.noop()[0], 250)
        self.assertLess(time.monotonic() - started, sleep / 2)

    def test_halfCloseWhileStartTLSHeld(self) -> None:
        """
        A client past the limit that sends C{STARTTLS} and shuts its sending
        side while the 220 is held reads the 220, then the end of the
        connection at once, not a reset after C{--tls-handshake-timeout}.
        """
        sleep = 0.5
        server = self.startServer(
            "--sink",
            "--no-reverse-lookup",
            "--soft-error-limit",
            "1",
            "--error-sleep",
            str(sleep),
            "--tls-handshake-timeout",
            "20",
            maildir=False,
        )
        client = connect(server.port)
        self.addCleanup(client.close)
        stream = client.makefile("rb")
        self.addCleanup(stream.close)
        self.assertEqual(readReply(stream)[0], 220)
        client.sendall(b"EHLO client.example.com\r\nFROB\r\n")
        self.assertEqual(readReply(stream)[0], 250)
        self.assertEqual(readReply(stream)[0], 500)
        client.sendall(b"STARTTLS\r\n")
        client.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        self.assertEqual(readReply(stream)[0], 220)
        self.assertEqual(stream.read(), b"")
        self.assertLess(time.monotonic() - started, 10)
        self.assertNotIn("TLS handshake timeout", server.output)
