# -*- test-case-name: tests.integration.test_lingering -*-
"""
A server that ends a session while its client is still sending (a BDAT
chunk too large to drop) closes lingering: the client finishes writing,
then reads its last reply, instead of a write failing on a connection the
server reset.  A real C{twistd smtpd} on 127.0.0.1.

A client that takes a failed write for a lost connection (Dovecot's LMTP
proxy, Python's C{smtplib}) never reads the reply the server sent before
its reset: Dovecot answered C{451 4.4.0 Proxy failed (connection lost)} and
retried a message it should have bounced.  (Linux keeps what a socket had
received before the reset readable; stacks that drop it, as Windows does,
lose the reply even to a client that reads after the failed write.)
"""

from __future__ import annotations

import time

from tests.integration.helpers import RECIPIENT, SENDER, ServerTestCase, connect, readReply

#: What the client writes of its chunk before it reads (bounded: the
#: chunk it announces is larger).
WRITTEN = 150 * 2**20
#: The most one client write takes.
PIECE = 2**20


class LingeringCloseTests(ServerTestCase):
    def test_refusedChunkReplyNotReset(self) -> None:
        """
        A client that announces C{BDAT 200000000 LAST} to a server with
        C{--size 2000} (a chunk past what the server reads and drops) and
        writes 150 MB of it before it reads, writes them all (no
        C{EPIPE} or C{ECONNRESET}), then reads the C{552} and the end of
        the connection.
        """
        server = self.startServer("--sink", "--size", "2000", maildir=False)
        client = connect(server.port)
        self.addCleanup(client.close)
        stream = client.makefile("rb")
        self.addCleanup(stream.close)
        self.assertEqual(readReply(stream)[0], 220)
        client.sendall(b"EHLO client.example.com\r\n")
        self.assertEqual(readReply(stream)[0], 250)
        client.sendall(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\n".encode())
        self.assertEqual(readReply(stream)[0], 250)
        self.assertEqual(readReply(stream)[0], 250)
        client.sendall(b"BDAT 200000000 LAST\r\n")
        piece = b"x" * PIECE
        written = 0
        began = time.monotonic()
        try:
            while written < WRITTEN:
                client.sendall(piece)
                written += PIECE
        except OSError as e:
            self.fail(f"write failed after {written} octets: {e!r}")
        try:
            code, lines = readReply(stream)
            end = client.recv(100)
        except OSError as e:
            self.fail(f"read failed after {written} octets written: {e!r}")
        self.assertEqual((code, end), (552, b""), lines)
        self.assertLess(time.monotonic() - began, 10)
        server.waitForLog("refused: BDAT discard limit")
