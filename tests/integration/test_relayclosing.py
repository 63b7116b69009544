# -*- test-case-name: tests.integration.test_relayclosing -*-
"""
C{twistd smtpd --relay} in front of a next hop that answers a RCPT with
421 and closes, as a server shutting down does: the rest of the
transaction is refused with one clear 451, the message too (after its
body), so that the client keeps every recipient, those accepted before the
421 included, for a later try.

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
#: The recipient the next hop answers 421 for.
CLOSER = b"carol@example.net"


class ClosingNextHop(ThreadedNextHop):
    """
    A next hop taking EHLO (no extension but PIPELINING), MAIL, RSET and
    RCPT with 250, and answering the RCPT for L{CLOSER} with C{421 4.3.2}
    before closing the connection.

    @ivar commands: Every command line received, in order, over all
        sessions.
    """

    def __init__(self) -> None:
        self.commands: list[bytes] = []
        super().__init__()

    def _command(self, connection: socket.socket, reader: BinaryIO, line: bytes) -> bool:
        command = line.rstrip(b"\r\n")
        self.commands.append(command)
        verb = command[:4].upper()
        if verb == b"EHLO":
            connection.sendall(b"250-nexthop.example\r\n250 PIPELINING\r\n")
        elif verb == b"RCPT" and CLOSER in command:
            connection.sendall(b"421 4.3.2 Shutting down\r\n")
            return False
        elif verb == b"QUIT":
            connection.sendall(b"221 2.0.0 Bye\r\n")
            return False
        elif verb in (b"DATA", b"BDAT"):
            connection.sendall(b"554 5.5.1 Not in this test\r\n")
            return False
        else:
            connection.sendall(b"250 2.0.0 OK\r\n")
        return True


class ClosingNextHopTests(ServerTestCase):
    """
    C{--relay} to a next hop closing with 421 in the middle of a
    transaction.
    """

    def setUp(self) -> None:
        self.nextHop = ClosingNextHop()
        self.addCleanup(self.nextHop.stop)
        self.front = self.spawn(
            "--relay", f"127.0.0.1:{self.nextHop.port}", "--no-reverse-lookup", maildir=False
        )

    def client(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.front.port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        return client

    def closedTransaction(self) -> smtplib.SMTP:
        """
        A client whose transaction has one recipient accepted, then one the
        next hop answered 421 for (given to the client as 451).
        """
        client = self.client()
        self.assertEqual(client.mail(SENDER)[0], 250)
        self.assertEqual(client.rcpt("bob@example.org")[0], 250)
        code, text = client.rcpt(CLOSER.decode())
        self.assertEqual((code, text), (451, b"4.3.2 Shutting down"))
        return client

    def test_restOfTheTransactionRefused(self) -> None:
        """
        After the next hop's 421 (given to the client as 451), a later RCPT
        gets 451 4.4.2 saying the session to the next hop was lost, and so
        does the message after its body, for every recipient, the one
        accepted before the 421 included: nothing is sent on the closed
        session.  The loss is logged once; a new transaction goes to a new
        session.
        """
        client = self.client()
        self.assertEqual(client.mail(SENDER)[0], 250)
        self.assertEqual(client.rcpt("bob@example.org")[0], 250)
        self.assertEqual(client.rcpt(CLOSER.decode()), (451, b"4.3.2 Shutting down"))
        lost = (451, b"4.4.2 Error: the session to the next hop was lost")
        self.assertEqual(client.rcpt("dave@example.org"), lost)
        self.assertEqual(client.data(b"Subject: x\r\n\r\nbody\r\n"), lost)
        self.assertEqual(client.rset()[0], 250)
        self.assertEqual(client.mail(SENDER)[0], 250)
        self.assertEqual(client.rcpt("bob@example.org")[0], 250)
        client.quit()
        self.assertEqual([c for c in self.nextHop.commands if c[:4] in (b"DATA", b"BDAT")], [])
        self.assertEqual(self.nextHop.commands.count(b"RCPT TO:<dave@example.org>"), 0)
        waitUntil(lambda: " message 20 bytes " in self.front.output, CLIENT_TIMEOUT, "the log")
        output = self.front.output
        # The handler's one line; each refusal has the server's own.
        self.assertEqual(output.count(f"next hop 127.0.0.1:{self.nextHop.port} "), 1, output)
        self.assertIn(
            f"next hop 127.0.0.1:{self.nextHop.port} closed the session at RCPT"
            " carol@example.net: 421 4.3.2 Shutting down",
            output,
        )
        self.assertIn(
            "451 4.4.2 <dave@example.org>: Error: the session to the next hop was lost", output
        )
