# -*- test-case-name: tests.integration.test_relaypoison -*-
"""
C{twistd smtpd --relay} in front of a next hop whose replies carry escape
sequences and controls, and whose 250 after the message is followed by
garbage in the same packet: the client gets the next hop's verdicts (a 250
for the message it took), and neither the replies nor the log lines of the
process carry a control character of the next hop's.

The next hop is a small SMTP server in a thread of the test, on an
ephemeral port of 127.0.0.1; every wait of it and of the client is
bounded.
"""

from __future__ import annotations

import smtplib
import socket
from typing import BinaryIO

from tests.integration.helpers import CLIENT_TIMEOUT, ServerTestCase
from tests.integration.nexthops import ThreadedNextHop, waitUntil

SENDER = "alice@example.com"
#: The recipient the next hop refuses, with a poisoned text.
REFUSED = b"mallory@example.net"
#: Escape sequences (7-bit and C1), BEL, NUL, DEL, a bare CR.
POISON = b"\x1b[2J\x1b]0;owned\x07 \xc2\x9b31m \x00 \x7f \rcr"


class PoisoningNextHop(ThreadedNextHop):
    """
    A next hop taking EHLO (PIPELINING only), MAIL, RSET and RCPT with
    250, refusing L{REFUSED} with a poisoned 550, and answering the end of
    the data with 250 followed by a poisoned line that is no reply.
    """

    def __init__(self) -> None:
        self.messages = 0
        super().__init__()

    def _command(self, connection: socket.socket, reader: BinaryIO, line: bytes) -> bool:
        verb = line[:4].upper()
        if verb == b"EHLO":
            connection.sendall(b"250-nexthop.example\r\n250 PIPELINING\r\n")
        elif verb == b"RCPT" and REFUSED in line:
            connection.sendall(b"550 5.1.1 " + POISON + b" unknown\r\n")
        elif verb == b"QUIT":
            connection.sendall(b"221 2.0.0 Bye\r\n")
            return False
        elif verb == b"DATA":
            connection.sendall(b"354 Go ahead\r\n")
            while line not in (b".\r\n", b""):
                line = reader.readline(4096)
            self.messages += 1
            connection.sendall(b"250 2.0.0 Queued as P1\r\n" + POISON + b"\r\n")
        else:
            connection.sendall(b"250 2.0.0 OK\r\n")
        return True


class PoisoningNextHopTests(ServerTestCase):
    """
    C{--relay} to a next hop with poisoned replies.
    """

    def setUp(self) -> None:
        self.nextHop = PoisoningNextHop()
        self.addCleanup(self.nextHop.stop)
        self.front = self.spawn(
            "--relay", f"127.0.0.1:{self.nextHop.port}", "--no-reverse-lookup", maildir=False
        )

    def test_verdictsPassedOnClean(self) -> None:
        """
        The refused recipient gets 550 5.1.1 with the text made safe; the
        message, which the next hop took with 250, gets 250 (not sent
        again), however the next hop broke the protocol after it; the log
        holds the refusal once and no control character of the next hop's.
        """
        client = smtplib.SMTP("127.0.0.1", self.front.port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        self.assertEqual(client.mail(SENDER)[0], 250)
        self.assertEqual(client.rcpt("bob@example.org")[0], 250)
        code, refusal = client.rcpt(REFUSED.decode())
        self.assertEqual(code, 550)
        self.assertTrue(refusal.startswith(b"5.1.1 "), refusal)
        self.assertTrue(refusal.endswith(b" unknown"), refusal)
        for poison in (b"\x1b", b"\x00", b"\x07", b"\x7f", b"\xc2\x9b", b"\r"):
            self.assertNotIn(poison, refusal)
        self.assertEqual(client.data(b"Subject: x\r\n\r\nbody\r\n"), (250, b"2.0.0 Queued as P1"))
        client.quit()
        self.assertEqual(self.nextHop.messages, 1)
        waitUntil(lambda: "passed to 127.0.0.1:" in self.front.output, CLIENT_TIMEOUT, "the log")
        output = self.front.output
        self.assertEqual(output.count(f"refused {REFUSED.decode()}"), 1, output)
        for poison in ("\x1b", "\x00", "\x07", "\x7f", "\x9b", "\r"):
            self.assertNotIn(poison, output)
