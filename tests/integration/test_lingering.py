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

import ssl
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from tests.integration.helpers import RECIPIENT, SENDER, ServerTestCase, connect, readReply
from tests.integration.test_tlsoperability import ServerCase
from tests.integration.tlsclients import startTLS

#: What the client writes of its chunk before it reads (bounded: the
#: chunk it announces is larger).
WRITTEN = 150 * 2**20
#: The most one client write takes.
PIECE = 2**20
#: What a TLS client writes of its chunk before it reads.
TLS_WRITTEN = 64 * 2**20


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


def _refusedOverTLS(port: int, starttls: bool) -> tuple[int, str, bytes]:
    """
    Over TLS (after STARTTLS, or from the start), open a transaction,
    announce a chunk too large to drop, write L{TLS_WRITTEN} octets of it,
    then read.

    @return: The octets written, the reply line (or the error that ended the
        writing or the reading), and what came after the reply (C{b""}:
        the server's close_notify).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with connect(port) as raw:
        if starttls:
            startTLS(raw)
        with ctx.wrap_socket(raw) as tls:
            stream = tls.makefile("rb")
            if not starttls:
                readReply(stream)
            tls.sendall(b"EHLO client.example.com\r\n")
            readReply(stream)
            tls.sendall(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\n".encode())
            readReply(stream)
            readReply(stream)
            tls.sendall(b"BDAT 200000000 LAST\r\n")
            piece = b"x" * PIECE
            written = 0
            try:
                while written < TLS_WRITTEN:
                    tls.sendall(piece)
                    written += PIECE
                line = stream.readline().decode("ascii", "replace")
                rest = stream.read()
            except OSError as e:
                return written, repr(e), b""
            return written, line, rest


class TLSLingeringCloseTests(ServerCase):
    @inlineCallbacks
    def check(self, starttls: bool) -> Any:
        """
        Over TLS, a client still writing its chunk after the server's 552
        writes all it means to, then reads the 552 and the server's
        close_notify.
        """
        implicit, plain = yield self.serve(size=2000)
        written, line, rest = yield deferToThread(
            _refusedOverTLS, plain if starttls else implicit, starttls
        )
        self.assertEqual(written, TLS_WRITTEN, line)
        self.assertTrue(line.startswith("552 5.3.4 "), line)
        self.assertEqual(rest, b"")
        yield self.waitForSessionsGone()
        self.assertEqual([line for line in self.lines if "close not done" in line], [])

    def test_implicitTLS(self) -> Any:
        """
        On an C{ssl:} listener.
        """
        return self.check(starttls=False)

    def test_afterSTARTTLS(self) -> Any:
        """
        After STARTTLS on a C{tcp:} listener.
        """
        return self.check(starttls=True)
