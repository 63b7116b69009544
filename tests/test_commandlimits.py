# -*- test-case-name: tests.test_commandlimits -*-
"""
Regression tests for the session counters and limits a hostile client
probed: every way of keeping one connection busy must reach C{maxErrors}
(or another limit) and leave one log line naming the client.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests import replies
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
        proto.dataReceived(b"BDAT 20\r\n" + b"x" * 20)
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
        size refusal is closed within C{maxErrors} chunks.
        """
        proto, transport, clock, _ = connect(size=10)
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 20\r\n" + b"x" * 20)
        sent = 0
        while not proto.closing and sent < 1000:
            proto.dataReceived(b"BDAT 1\r\nx")
            sent += 1
        self.assertTrue(proto.closing)
        self.assertEqual(sent, 19)
        self.assertTrue(take(transport).endswith(BDAT_DISCARDED + replies.TOO_MANY_ERRORS))
