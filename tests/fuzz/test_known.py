"""
Minimal reproductions of defects the fuzzer in L{tests.fuzz.test_session}
hit before their fixes: they stay as regression tests (a new defect the fuzzer
finds is added here, marked C{todo} until its fix lands).
"""

from __future__ import annotations

from base64 import b64encode
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.fuzz.model import EVIL, FuzzHandler, parseReplies
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd.testing import memorySession

OPTIONS = ServerOptions(name="mx.example.com", disableReverseLookup=True)


class KnownDefectTests(SynchronousTestCase):
    def test_refusedBdatChunkIsNotRun(self) -> None:
        """
        A refused BDAT's chunk is read and dropped (RFC 3030 section 2:
        the octets follow the command whatever its reply), never run as
        commands.
        """
        handler = FuzzHandler()
        session = memorySession(handler, OPTIONS)
        session.send(b"EHLO c\r\n")
        chunk = b"RSET\r\nMAIL FROM:<x@" + EVIL.encode() + b">\r\n"
        out = session.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        replies, rest = parseReplies(out)
        self.assertEqual([code for code, _ in replies], [503])
        self.assertEqual(rest, b"")
        self.assertEqual([c for c in handler.calls if EVIL in c[1]], [])

    def test_ehloInsideBdat(self) -> None:
        """
        EHLO between two BDAT chunks does not leave the session half inside
        a message: the next chunk's octets are never parsed as a command,
        and NOOP after it gets 250.
        """
        session = memorySession(FuzzHandler(), OPTIONS)
        session.send(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        session.send(b"BDAT 5\r\nabcde")
        session.send(b"EHLO c\r\n")
        out = session.send(b"BDAT 3 LAST\r\nxyzNOOP\r\n")
        replies, rest = parseReplies(out)
        self.assertEqual(rest, b"")
        self.assertNotIn(500, [code for code, _ in replies])
        self.assertEqual(replies[-1], (250, [b"2.0.0 OK"]))

    def test_ehloInsideBdatEndsTheTransfer(self) -> None:
        """
        After EHLO in the middle of a BDAT transfer, a new envelope is
        accepted: the transfer is over, not "in progress".
        """
        options = ServerOptions(name="mx.example.com", disableReverseLookup=True, authOptional=True)
        session = memorySession(FuzzHandler(), options)
        session.send(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        session.send(b"BDAT 3\r\nabc")
        session.send(b"EHLO c\r\n")
        out = session.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        replies, rest = parseReplies(out)
        self.assertEqual(rest, b"")
        self.assertEqual([code for code, _ in replies], [250, 250])

    def _authExchange(self) -> object:
        options = ServerOptions(
            name="mx.example.com",
            disableReverseLookup=True,
            allowInsecureAuth=True,
            authOptional=True,
        )
        session = memorySession(FuzzHandler(), options)
        session.send(b"EHLO c\r\n")
        self.assertEqual(session.send(b"AUTH PLAIN\r\n"), b"334 \r\n")
        return session

    def test_longSaslContinuationEndsExchange(self) -> None:
        """
        After the 500 for a continuation line over the limit, arriving in
        pieces, the exchange is over: the next line is a command again.
        """
        session: Any = self._authExchange()
        self.assertEqual(session.send(b"A" * 13000), b"500 5.5.6 Error: line too long\r\n")
        self.assertEqual(session.send(b"\r\n"), b"")
        self.assertEqual(session.send(b"NOOP\r\n"), b"250 2.0.0 OK\r\n")

    def test_saslContinuationOverLimitRefused(self) -> None:
        """
        A SASL continuation over 12288 octets (RFC 4954 section 4) is refused
        even when it holds valid credentials.
        """
        session: Any = self._authExchange()
        line = b64encode(b"\0alice\0" + b"s" * 10000)
        self.assertGreater(len(line), 12288)
        replies, _ = parseReplies(session.send(line + b"\r\n"))
        self.assertEqual(len(replies), 1)
        self.assertEqual(replies[0][0] // 100, 5)
