# -*- test-case-name: tests.test_lmtpowed -*-
"""
A session that closes on a deadline or a forced stop while an LMTP client
waits for the replies of a message sends its 421 once per accepted
recipient (RFC 2033 section 4.2), as Dovecot's LMTP server fails every
reply of the command it fails; a BDAT chunk before the LAST one, and any
SMTP message, still get one.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_deadlines import HANDLER_TIMEOUT, LogCatcher, Stuck
from tests.test_protocol import RecordingHandler, connect, take
from twisted_smtpd._serving import deadlines

#: Three recipients accepted, the third after a refused one.
ENVELOPE = (
    b"LHLO c\r\nMAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n"
    b"RCPT TO:<bad\r\nRCPT TO:<c@e.com>\r\n"
)


class OwedRepliesTests(SynchronousTestCase):
    """
    The 421 that ends a session is repeated for every reply still owed.
    """

    def assertClosedWith(self, sent: bytes, reply: bytes, count: int) -> None:
        """
        C{sent} ends with C{count} copies of C{reply}, and no more.
        """
        self.assertTrue(sent.endswith(reply * count), sent)
        self.assertFalse(sent.endswith(reply * (count + 1)), sent)

    def test_handlerTimeoutAfterDot(self) -> None:
        """
        C{onData} not answering within C{handlerTimeout} after the final
        dot gets each of the three accepted recipients a 421, with one log
        line.
        """
        log = LogCatcher(self)
        proto, transport, clock, _ = connect(Stuck("onData"), lmtp=True, handlerTimeout=30)
        proto.dataReceived(ENVELOPE + b"DATA\r\nhi\r\n.\r\n")
        take(transport)
        clock.advance(30)
        self.assertEqual(take(transport), HANDLER_TIMEOUT * 3)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(log.matching("handler timeout")), 1)

    def test_handlerTimeoutAfterLastChunk(self) -> None:
        """
        The same after C{BDAT ... LAST}.
        """
        proto, transport, clock, _ = connect(Stuck("onData"), lmtp=True, handlerTimeout=30)
        proto.dataReceived(ENVELOPE + b"BDAT 3\r\nabcBDAT 2 LAST\r\nde")
        take(transport)
        clock.advance(30)
        self.assertEqual(take(transport), HANDLER_TIMEOUT * 3)

    def test_handlerStopsReadingLastChunk(self) -> None:
        """
        A handler that stops reading in the middle of the LAST chunk times
        out with a 421 for each recipient too: the chunk's replies are the
        message's.
        """
        proto, transport, clock, _ = connect(
            Stuck("unread"), lmtp=True, handlerTimeout=30, socketTimeout=300
        )
        proto.dataReceived(ENVELOPE + b"BDAT 2000000 LAST\r\n" + b"x" * 1000000)
        take(transport)
        clock.advance(30)
        self.assertClosedWith(take(transport), HANDLER_TIMEOUT, 3)

    def test_silenceInDataBody(self) -> None:
        """
        A client silent in the middle of a DATA body is timed out with a 421
        for each recipient: the replies it will wait for once it sends the
        dot.
        """
        proto, transport, clock, _ = connect(lmtp=True, socketTimeout=60)
        proto.dataReceived(ENVELOPE + b"DATA\r\nhalf a bo")
        take(transport)
        clock.advance(60)
        self.assertClosedWith(take(transport), replies.TIMEOUT, 3)

    def test_forcedShutdownAfterDot(self) -> None:
        """
        A stop that cuts the transaction while C{onData} has not answered
        sends every recipient its 421.
        """
        proto, transport, clock, _ = connect(Stuck("onData"), lmtp=True)
        proto.dataReceived(ENVELOPE + b"DATA\r\nhi\r\n.\r\n")
        take(transport)
        deadlines.shutdown(proto, True)
        self.assertEqual(take(transport), replies.SHUTDOWN * 3)

    def test_betweenChunksOneReply(self) -> None:
        """
        Silence after a chunk before the LAST one owes one reply: the 421
        answers the next BDAT command, once.
        """
        proto, transport, clock, _ = connect(RecordingHandler(), lmtp=True, socketTimeout=60)
        proto.dataReceived(ENVELOPE + b"BDAT 3\r\nabc")
        take(transport)
        clock.advance(60)
        self.assertEqual(take(transport), replies.TIMEOUT)

    def test_inChunkBeforeLastOneReply(self) -> None:
        """
        Silence inside a chunk before the LAST one owes that chunk's one
        reply.
        """
        proto, transport, clock, _ = connect(RecordingHandler(), lmtp=True, socketTimeout=60)
        proto.dataReceived(ENVELOPE + b"BDAT 30\r\nabc")
        take(transport)
        clock.advance(60)
        self.assertEqual(take(transport), replies.TIMEOUT)

    def test_smtpOneReply(self) -> None:
        """
        In SMTP a message has one reply, whatever its recipients.
        """
        proto, transport, clock, _ = connect(Stuck("onData"), handlerTimeout=30)
        proto.dataReceived(ENVELOPE.replace(b"LHLO", b"EHLO") + b"DATA\r\nhi\r\n.\r\n")
        take(transport)
        clock.advance(30)
        self.assertEqual(take(transport), HANDLER_TIMEOUT)

    def test_silenceInRefusedLastChunk(self) -> None:
        """
        A client silent in the middle of a LAST chunk refused for the size
        limit (its octets read and dropped, as it is within the limit of
        what is dropped) is owed that chunk's replies,
        one per recipient: each gets the 421.
        """
        proto, transport, clock, _ = connect(lmtp=True, size=100, socketTimeout=60)
        proto.dataReceived(ENVELOPE + b"BDAT 120 LAST\r\nabcde")
        take(transport)
        clock.advance(60)
        self.assertEqual(take(transport), replies.TIMEOUT * 3)

    def test_silenceInRefusedChunkBeforeLast(self) -> None:
        """
        The same in a refused chunk before the LAST one owes one reply.
        """
        proto, transport, clock, _ = connect(lmtp=True, size=100, socketTimeout=60)
        proto.dataReceived(ENVELOPE + b"BDAT 120\r\nabcde")
        take(transport)
        clock.advance(60)
        self.assertEqual(take(transport), replies.TIMEOUT)
