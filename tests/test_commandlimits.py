# -*- test-case-name: tests.test_commandlimits -*-
"""
Regression tests for the session counters and limits a hostile client
probed: every way of keeping one connection busy must reach C{maxErrors}
(or another limit) and leave one log line naming the client.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

import twisted_smtpd._serving.transaction as dropping
from tests import replies
from tests.test_deadlines import LogCatcher
from tests.test_protocol import BDAT_DISCARDED, connect, take, transaction


class DiscardedChunkTests(SynchronousTestCase):
    """
    The BDAT chunks a client sends after the one that took its message past
    the size limit are refusals like any other (Postfix's C{skip_bdat}
    counts each as an error): without that, a client could send C{BDAT 1}
    and one octet without end, each chunk answered 552 and resetting the
    idle timeout, and no limit would ever end its session.
    """

    def test_discardedChunksCountAsErrors(self) -> None:
        """
        Each chunk dropped after the size refusal counts towards
        C{maxErrors}: the one that reaches it gets its 552, then
        C{421 4.7.0 Too many errors} and the connection closes.
        """
        proto, transport, clock, _ = connect(size=10, maxErrors=5)
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 12\r\n" + b"x" * 12)
        self.assertEqual(take(transport), replies.SIZE_EXCEEDED)
        for _ in range(3):
            proto.dataReceived(b"BDAT 1\r\nx")
        self.assertEqual(take(transport), BDAT_DISCARDED * 3)
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(b"BDAT 1\r\nxBDAT 1\r\nx")
        self.assertEqual(take(transport), BDAT_DISCARDED + replies.TOO_MANY_ERRORS)
        self.assertTrue(proto.closing)

    def test_endlessDiscardEnds(self) -> None:
        """
        With the default limits, a client repeating C{BDAT 1} after the
        size refusal is closed within C{maxErrors} chunks (past
        C{softErrorLimit}, each reply a second late).
        """
        proto, transport, clock, _ = connect(size=10)
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 12\r\n" + b"x" * 12)
        sent = 0
        while not proto.closing and sent < 1000:
            proto.dataReceived(b"BDAT 1\r\nx")
            clock.advance(1)
            sent += 1
        self.assertTrue(proto.closing)
        self.assertEqual(sent, 19)
        self.assertTrue(take(transport).endswith(BDAT_DISCARDED + replies.TOO_MANY_ERRORS))


class DropLimitTests(SynchronousTestCase):
    """
    A refused BDAT chunk is read and dropped (RFC 3030 section 2), but not
    past one and a half times the size limit, where Postfix's C{skip_bdat}
    stops reading: a chunk announced with up to 18 digits would otherwise
    keep one connection reading without end.  (These tests set
    L{DROP_SLACK <twisted_smtpd._serving.transaction.DROP_SLACK>}, the
    least that is dropped past the limit, to 0.)
    """

    def setUp(self) -> None:
        self.patch(dropping, "DROP_SLACK", 0)

    def test_slackRead(self) -> None:
        """
        By default at least C{DROP_SLACK} octets past the size limit are
        read and dropped: a client that sends an oversized message in one
        chunk reads its 552 after the chunk, not a connection reset with
        its octets unread (which can take the 552 with it), and one that
        announces more is still cut off.
        """
        self.patch(dropping, "DROP_SLACK", 64 * 2**20)
        proto, transport, clock, _ = connect(size=1000)
        transaction(proto, transport)
        take(transport)
        proto.dataReceived(b"BDAT 400000 LAST\r\n" + b"x" * 400000)
        self.assertEqual(take(transport), replies.SIZE_EXCEEDED)
        self.assertFalse(proto.closing)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        take(transport)
        proto.dataReceived(b"BDAT %d LAST\r\n" % (1000 + 64 * 2**20 + 1))
        self.assertEqual(take(transport), replies.SIZE_EXCEEDED)
        self.assertTrue(proto.closing)

    def test_refusedHugeChunkCloses(self) -> None:
        """
        A refused BDAT announcing more octets than can be dropped is not
        read: its refusal is sent, one line names the client and the
        limit, and the connection closes.
        """
        catcher = LogCatcher(self)
        proto, transport, clock, _ = connect(size=1000)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"BDAT 999999999999999999\r\n" + b"x" * 100)
        self.assertEqual(take(transport), replies.NEED_MAIL)
        self.assertTrue(proto.closing)
        self.assertIsNone(proto.discard)
        [line] = catcher.matching("BDAT discard limit")
        self.assertIn("192.0.2.7 refused: BDAT discard limit (1500 octets) reached", line)

    def test_refusedChunkWithinLimitRead(self) -> None:
        """
        A refused chunk no larger than one and a half times the size limit
        is still read and dropped, and the session goes on.
        """
        proto, transport, clock, _ = connect(size=1000)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"BDAT 1500\r\n" + b"x" * 1500 + b"NOOP\r\n")
        self.assertEqual(take(transport), replies.NEED_MAIL + replies.OK)
        self.assertFalse(proto.closing)

    def test_oversizedHugeChunkCloses(self) -> None:
        """
        A chunk taking a message far past the size limit is answered 552
        without being read, the message's C{message} event is still told,
        and the session closes with one line for the limit.
        """
        catcher = LogCatcher(self)
        proto, transport, clock, factory = connect(size=1000)
        events: list[str] = []
        factory.addObserver(lambda event, session, data: events.append(event))
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 800\r\n" + b"x" * 800)
        take(transport)
        proto.dataReceived(b"BDAT 701 LAST\r\n" + b"x" * 100)
        self.assertEqual(take(transport), replies.SIZE_EXCEEDED)
        self.assertTrue(proto.closing)
        self.assertIn("message", events)
        self.assertEqual(len(catcher.matching("refused: BDAT discard limit (1500 octets)")), 1)

    def test_oversizedHugeChunkOneRefusalEvent(self) -> None:
        """
        The 552 of a message refused for its size by a chunk too large to
        drop is told once, by the message's C{message} event: no C{reject}
        event repeats it (the limit has its own line).
        """
        proto, transport, clock, factory = connect(size=1000)
        events: list[str] = []
        factory.addObserver(lambda event, session, data: events.append(event))
        transaction(proto, transport)
        take(transport)
        proto.dataReceived(b"BDAT 1600 LAST\r\n" + b"x" * 100)
        self.assertEqual(take(transport), replies.SIZE_EXCEEDED)
        self.assertTrue(proto.closing)
        self.assertEqual((events.count("message"), events.count("reject")), (1, 0))

    def test_discardedHugeChunkCloses(self) -> None:
        """
        After the size refusal, a chunk too large to drop is answered
        with its 552 and the session closes, unread.
        """
        proto, transport, clock, _ = connect(size=1000)
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 1100\r\n" + b"x" * 1100)
        self.assertEqual(take(transport), replies.SIZE_EXCEEDED)
        proto.dataReceived(b"BDAT 999999999999\r\nxxxx")
        self.assertEqual(take(transport), BDAT_DISCARDED)
        self.assertTrue(proto.closing)

    def test_noSizeLimitNoDropLimit(self) -> None:
        """
        Without a size limit (C{size=0}), as in Postfix, nothing bounds a
        refused chunk: it is read and dropped.
        """
        proto, transport, clock, _ = connect(size=0)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"BDAT 999999999999999999\r\n" + b"x" * 100)
        self.assertEqual(take(transport), b"")
        self.assertFalse(proto.closing)
