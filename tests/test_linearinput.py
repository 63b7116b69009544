"""
Tests for the input path of L{twisted_smtpd._serving.protocol}: one large
read of many small commands, chunks or messages costs copying in proportion
to its size, never to its size times the number of commands in it.

The work is counted, not timed: the read is a L{CountingBytes}, whose
slices and concatenations add the octets they copy to a tally and are
themselves counted.  Copying the rest of the read after each command (what
made such a read cost its square) copies about C{N * size / 2} octets for
C{N} commands; handling it in place copies each octet a few times.
"""

from __future__ import annotations

from typing import Any, SupportsIndex

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_protocol import RecordingHandler, connect, take
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd._serving.protocol import SMTPProtocol

#: Commands (or chunks, or messages) in the read of each test.
COUNT = 2000
#: At most this many octets copied per octet of the read (each command's
#: line, its parsed argument, a chunk's octets): the rest of the read copied
#: per command costs hundreds per octet at COUNT.
BOUND = 8


class CountingBytes(bytes):
    """
    Bytes that add to L{copied} the octets each of their slices and
    concatenations copies; those are L{CountingBytes} too.
    """

    copied = 0

    def __getitem__(self, key: SupportsIndex | slice) -> Any:
        value: Any = bytes.__getitem__(self, key)
        if isinstance(key, slice):
            CountingBytes.copied += len(value)
            return CountingBytes(value)
        return value

    def __add__(self, other: bytes) -> CountingBytes:  # type: ignore[override]
        value = bytes.__add__(self, other)
        CountingBytes.copied += len(value)
        return CountingBytes(value)


def feedCounted(proto: SMTPProtocol, data: bytes) -> int:
    """
    Hand C{data} to C{proto} as one read.

    @return: The octets copied while it was handled.
    """
    CountingBytes.copied = 0
    proto.dataReceived(CountingBytes(data))
    return CountingBytes.copied


class SlowRcpt(RecordingHandler):
    """
    C{onRcptTo} answers later, with a L{Deferred} kept in C{pending}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deferred[None]] = []

    def onRcptTo(self, address: Address, session: Session) -> object:
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d


class LinearInputTests(SynchronousTestCase):
    """
    A read of C{COUNT} small commands copies at most C{BOUND} times its size,
    whatever path consumes it; every command is still answered in order.
    """

    def assertLinear(self, copied: int, data: bytes) -> None:
        self.assertLessEqual(copied, BOUND * len(data), f"{copied} octets copied for {len(data)}")

    def test_commandLines(self) -> None:
        """
        Command lines (NOOP, no junk limit) are taken from the read in place.
        """
        proto, transport, _, _ = connect(maxJunkCommands=0)
        take(transport)
        data = b"NOOP\r\n" * COUNT
        self.assertLinear(feedCounted(proto, data), data)
        self.assertEqual(take(transport), replies.OK * COUNT)

    def test_recipients(self) -> None:
        """
        RCPT lines handed to a hook that answers at once.
        """
        proto, transport, _, _ = connect(maxRecipients=COUNT)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@example.com>\r\n")
        take(transport)
        data = b"RCPT TO:<r@example.com>\r\n" * COUNT
        self.assertLinear(feedCounted(proto, data), data)
        self.assertEqual(take(transport), replies.RCPT_OK * COUNT)

    def test_recipientsHeldByHook(self) -> None:
        """
        While a hook holds the commands after its own, the rest of the read
        waits where it is: each answer takes the next command in place.
        """
        handler = SlowRcpt()
        proto, transport, _, _ = connect(handler, maxRecipients=COUNT)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@example.com>\r\n")
        take(transport)
        data = b"RCPT TO:<r@example.com>\r\n" * COUNT
        copied = feedCounted(proto, data)
        for i in range(COUNT):
            self.assertEqual(len(handler.pending), i + 1)
            handler.pending[i].callback(None)
        self.assertLinear(copied + CountingBytes.copied, data)
        self.assertEqual(take(transport), replies.RCPT_OK * COUNT)

    def test_unfinishedLineKeepsOnlyItself(self) -> None:
        """
        A read ending inside a line keeps only that line's start while its
        end is awaited, not the commands before it.
        """
        proto, transport, _, _ = connect(maxJunkCommands=0)
        take(transport)
        proto.dataReceived(b"NOOP\r\n" * COUNT + b"NO")
        self.assertEqual(take(transport), replies.OK * COUNT)
        self.assertEqual(proto._buffer[proto._pos :], b"NO")
        self.assertEqual(len(proto._buffer), 2)
        proto.dataReceived(b"OP\r\n")
        self.assertEqual(take(transport), replies.OK)

    def test_closedSessionKeepsNothing(self) -> None:
        """
        A session closed while it handles a read (the error limit reached
        at the end of a refused chunk, or at a message's end) keeps none of
        what followed in that read: nothing will handle it.
        """
        proto, transport, _, _ = connect(maxErrors=1)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"BDAT 3\r\nabc" + b"NOOP\r\n" * 100)
        self.assertTrue(take(transport).endswith(replies.TOO_MANY_ERRORS))
        self.assertEqual(proto._buffer, b"")

    def test_bdatChunks(self) -> None:
        """
        C{BDAT 1} chunks: each chunk's octet is handed on, and what follows
        it is not copied.
        """
        handler = RecordingHandler()
        proto, transport, _, _ = connect(handler)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n")
        take(transport)
        data = b"BDAT 1\r\nx" * COUNT + b"BDAT 0 LAST\r\n"
        self.assertLinear(feedCounted(proto, data), data)
        ok = b"250 2.0.0 OK: queued as X1\r\n"
        chunks = b"".join(b"250 2.0.0 OK: %d octets received\r\n" % n for n in range(1, COUNT + 1))
        self.assertEqual(take(transport), chunks + ok)
        self.assertEqual(handler.messages, [("s@example.com", ["r@example.com"], b"x" * COUNT)])

    def test_refusedBdatChunks(self) -> None:
        """
        Refused chunks (no transaction) are dropped in place (every refusal
        answered at once: no error tarpit).
        """
        proto, transport, _, _ = connect(maxErrors=COUNT + 1, errorSleep=0)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        data = b"BDAT 1\r\nx" * COUNT
        self.assertLinear(feedCounted(proto, data), data)
        self.assertEqual(take(transport), replies.NEED_MAIL * COUNT)

    def test_messages(self) -> None:
        """
        Whole DATA transactions in one read: the end of each body is found
        without copying the transactions after it.
        """
        handler = RecordingHandler()
        proto, transport, _, _ = connect(handler)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        message = b"MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\nDATA\r\na\r\n.\r\n"
        data = message * COUNT
        self.assertLinear(feedCounted(proto, data), data)
        ok = b"250 2.0.0 OK: queued as X1\r\n"
        once = replies.MAIL_OK + replies.RCPT_OK + replies.START_DATA + ok
        self.assertEqual(take(transport), once * COUNT)
        self.assertEqual(len(handler.messages), COUNT)
        self.assertEqual(handler.messages[-1], ("s@example.com", ["r@example.com"], b"a\r\n"))
