# -*- test-case-name: tests.test_lmtpmidstream -*-
"""
An LMTP next hop failing after some recipients had their reply after the
body (RFC 2033 section 4.2): the others get a temporary failure in generic
words, as every other failure of the next hop gives its client
(L{twisted_smtpd._smtpclient.clientwire.LOCAL_FAILURES}); what the next hop
said is in the log line only, escaped.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_relayhostile import HostileTestsMixin, code, thenClose
from twisted_smtpd._smtpclient.clientwire import (
    ClientReply,
    DeliveryError,
    localReply,
    replyError,
)
from twisted_smtpd.handlers._proxyreports import describe

#: A host name the next hop puts in its words.
INTERNAL = b"lmtp.internal.example"


class MidStreamTests(HostileTestsMixin, TestCase):
    """
    L{LMTPDeliveryHandler} behind an LMTP front, its next hop failing
    between two recipients' replies.
    """

    lmtpFront = True

    async def test_garbageAfterFirstReply(self) -> None:
        """
        A first recipient's 250, then a line that is no reply, naming an
        internal host and holding a control character: the second
        recipient gets 451 4.5.0 saying the next hop broke the protocol,
        none of its words; the log line quotes them, escaped.
        """
        final = b"250 2.0.0 r0 delivered\r\nXYZ " + INTERNAL + b" secret\x1b[2J words\r\n"
        port = await self.start({"final": final}, lmtp=True)
        client = await self.client(port)
        replies = await self.transaction(client, recipients=2)
        self.assertEqual([code(r) for r in replies[-2:]], [b"250 2.0.0", b"451 4.5.0"])
        self.assertIn(b"the next hop broke the protocol", replies[-1])
        for words in (INTERNAL, b"secret", b"XYZ", b"bad reply", b"malformed"):
            self.assertNotIn(words, replies[-1])
        [line] = [line for line in self.logLines() if "failed before its reply for r1" in line]
        self.assertIn(INTERNAL.decode(), line)
        self.assertIn("secret", line)
        self.assertNotIn("\x1b", line)

    async def test_lostAfterFirstReply(self) -> None:
        """
        A first recipient's 250, then the connection closes: the second
        recipient gets 451 4.4.2 in the generic words for a failed
        connection; the log line says the connection was lost.
        """
        port = await self.start({"final": thenClose(b"250 2.0.0 r0 ok\r\n")}, lmtp=True)
        client = await self.client(port)
        replies = await self.transaction(client, recipients=2)
        self.assertEqual([code(r) for r in replies[-2:]], [b"250 2.0.0", b"451 4.4.2"])
        self.assertIn(b"the connection to the next hop failed", replies[-1])
        self.assertNotIn(b"connection lost (reply)", replies[-1])
        [line] = [line for line in self.logLines() if "failed before its reply for r1" in line]
        self.assertIn("connection lost (reply)", line)


class LocalReplyTests(SynchronousTestCase):
    """
    The reply made for a recipient whose reply never came (L{localReply}).
    """

    def test_wordsKeptForTheLogOnly(self) -> None:
        """
        Its text is the generic one, which the client's reply and a delivery
        report to the sender carry; what went wrong (the next hop's words)
        is its C{detail}, which the log line gives.
        """
        failure = "Error: bad reply from the server: malformed reply line: b'XYZ lmtp.internal'"
        error = DeliveryError(451, failure, "4.5.0", stage="reply")
        reply = localReply(error)
        generic = "Error: the next hop broke the protocol, try again later"
        self.assertEqual((reply.code, reply.enhanced, reply.text), (451, "4.5.0", generic))
        refusal = replyError(reply)
        self.assertEqual((refusal.code, refusal.enhanced, refusal.message), (451, "4.5.0", generic))
        self.assertEqual(describe(reply, detail=False), f"451 4.5.0 {generic}")
        self.assertIn("lmtp.internal", describe(reply))

    def test_serverReplyKept(self) -> None:
        """
        A failure that was the server's own reply stands for itself.
        """
        served = ClientReply(452, "4.2.2", "mailbox full")
        error = DeliveryError(452, "mailbox full", "4.2.2", stage="reply", reply=served)
        self.assertIs(localReply(error), served)
