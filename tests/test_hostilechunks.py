"""
Hostile BDAT (RFC 3030) clients against the memory and the replies of a
session: tests over a L{StringTransport} with a L{task.Clock}.
"""

from __future__ import annotations

import tracemalloc

from twisted.trial.unittest import SynchronousTestCase

from tests.test_protocol import RecordingHandler, connect, take
from twisted_smtpd._core.session import Session
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

ENVELOPE = b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"


def _heldAfter(action: object) -> int:
    """
    The memory Python objects made by C{action()} still take once it
    returned.
    """
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        action()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


class CollectTinyChunksTests(SynchronousTestCase):
    """
    C{collect} holds about the bytes it gathers, however small the chunks
    they came in: a client sending its body as BDAT chunks of two octets
    makes one chunk object per two octets.
    """

    def test_tinyChunksHeldCompactly(self) -> None:
        """
        200,000 chunks of two octets (400,000 octets) take less than twice
        their size while C{collect} gathers them, not about twenty times.
        """
        stream = MessageStream()
        d = stream.collect()
        source = b"0123456789"

        def feed() -> None:
            for i in range(200_000):
                k = i % 5 * 2
                # A new two-octet object each time, as slicing a read makes.
                stream._write(source[k : k + 2])

        held = _heldAfter(feed)
        self.assertLess(held, 800_000, f"{held} bytes held for 400,000 octets of body")
        stream._finish()
        self.assertEqual(self.successResultOf(d), source * 40_000)

    def test_orderKeptAcrossSizes(self) -> None:
        """
        Short and long chunks mixed come out joined in their order.
        """
        stream = MessageStream()
        d = stream.collect()
        pieces = [b"a", b"B" * 4096, b"cd", b"e" * (4095), b"f", b"g" * 3]
        for piece in pieces:
            stream._write(piece)
        stream._finish()
        self.assertEqual(self.successResultOf(d), b"".join(pieces))

    def test_limitCountsShortChunks(self) -> None:
        """
        Short chunks count towards C{maxBytes} as they come.
        """
        stream = MessageStream()
        d = stream.collect(maxBytes=10)
        for _ in range(6):
            stream._write(b"xy")
        stream._finish()
        self.assertEqual(self.failureResultOf(d).value.code, 552)  # type: ignore[attr-defined]

    def test_bdatTwoOctetChunks(self) -> None:
        """
        Over a session, a body sent as 60,000 BDAT chunks of two octets to a
        handler that collects it costs the server less than twice the
        body's size, and arrives whole.
        """
        handler = RecordingHandler()
        proto, transport, clock, factory = connect(handler)
        proto.dataReceived(ENVELOPE)
        take(transport)
        batch = b"BDAT 2\r\nxy" * 6000

        def send() -> None:
            for _ in range(10):
                proto.dataReceived(batch)
                transport.clear()

        held = _heldAfter(send)
        self.assertLess(held, 240_000, f"{held} bytes held for 120,000 octets of body")
        proto.dataReceived(b"BDAT 0 LAST\r\n")
        self.assertEqual(take(transport), b"250 2.0.0 OK: queued as X1\r\n")
        self.assertEqual(handler.messages[0][2], b"xy" * 60_000)


class _CountingFile:
    """
    A binary file keeping what is written and how many writes made it.
    """

    def __init__(self) -> None:
        self.data = bytearray()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.data += data
        self.writes += 1


class _PipingToFile(BaseHandler):
    """
    C{onData} pipes the body into a L{_CountingFile}, as the ready
    handlers' spools keep each chunk they are given until they write.
    """

    def __init__(self) -> None:
        self.file = _CountingFile()

    def onData(self, stream: IMessageStream, session: Session) -> object:
        return stream.pipeToFile(self.file)


class ShortChunksJoinedTests(SynchronousTestCase):
    """
    A body sent as BDAT chunks of a few octets reaches the handler in
    pieces of thousands of octets: a handler keeping each piece it is given
    (Maildir's spill buffer, the AMQP and webhook spools) then keeps about
    the body's size in memory, not twenty times its size.
    """

    def test_twoOctetChunksReachTheHandlerJoined(self) -> None:
        """
        20,000 chunks of two octets make about ten writes, and the body
        arrives whole and in order.
        """
        handler = _PipingToFile()
        proto, transport, clock, factory = connect(handler)
        proto.dataReceived(ENVELOPE)
        body = bytes(range(256)) * 160
        proto.dataReceived(b"".join(b"BDAT 2\r\n" + body[i : i + 2] for i in range(0, 40960, 2)))
        self.assertEqual(handler.file.writes, 10)
        proto.dataReceived(b"BDAT 1 LAST\r\nz")
        self.assertEqual(handler.file.writes, 11)
        self.assertEqual(bytes(handler.file.data), body + b"z")
        self.assertTrue(take(transport).endswith(b"250 2.0.0 OK: message queued\r\n"))

    def test_largeChunksUnchanged(self) -> None:
        """
        A chunk read in large pieces reaches the handler in those pieces,
        not copied into others; a short piece between them is not held
        back behind the next.
        """
        handler = _PipingToFile()
        proto, transport, clock, factory = connect(handler)
        proto.dataReceived(ENVELOPE)
        proto.dataReceived(b"BDAT 20000\r\n" + b"a" * 10000)
        proto.dataReceived(b"b" * 9990)
        proto.dataReceived(b"c" * 10 + b"BDAT 10000 LAST\r\n" + b"d" * 10000)
        self.assertEqual(handler.file.writes, 4)
        self.assertEqual(
            bytes(handler.file.data), b"a" * 10000 + b"b" * 9990 + b"c" * 10 + b"d" * 10000
        )


class DataTinyReadsTests(SynchronousTestCase):
    """
    A DATA body read a few octets at a time (tiny TLS records, TCP
    segments a client sends one by one) reaches the handler in pieces of
    thousands of octets, as a BDAT body in tiny chunks does: a handler
    keeping each piece it is given keeps about the body's size.
    """

    def test_oneOctetReadsReachTheHandlerJoined(self) -> None:
        """
        A 40,960-octet body read one octet at a time makes ten writes to
        the handler's file, and arrives whole and in order.
        """
        handler = _PipingToFile()
        proto, transport, clock, factory = connect(handler)
        proto.dataReceived(ENVELOPE + b"DATA\r\n")
        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n"
        body = line * 640
        for i in range(len(body)):
            proto.dataReceived(body[i : i + 1])
        self.assertEqual(handler.file.writes, 10)
        proto.dataReceived(b".\r\n")
        self.assertEqual(bytes(handler.file.data), body)
        self.assertTrue(take(transport).endswith(b"250 2.0.0 OK: message queued\r\n"))


class AMQPBodyTinyChunksTests(SynchronousTestCase):
    """
    The AMQP handler gathers each message in memory for its publish: a body
    read a few octets at a time (tiny TLS records of a DATA body) must take
    about its own size there, not twenty times it, up to the broker's
    message size limit.
    """

    def test_tinyChunksHeldCompactly(self) -> None:
        """
        200,000 chunks of two octets take less than twice their size while
        the body is gathered, and come out whole and in order.
        """
        from twisted_smtpd.handlers._amqpframes import Body

        body = Body(10_000_000)
        source = b"0123456789"

        def feed() -> None:
            for i in range(200_000):
                k = i % 5 * 2
                body.write(source[k : k + 2])

        held = _heldAfter(feed)
        self.assertLess(held, 800_000, f"{held} bytes held for 400,000 octets of body")
        pieces = [b"a", b"B" * 4096, b"cd"]
        for piece in pieces:
            body.write(piece)
        data = body.take()
        self.assertEqual(data, source * 40_000 + b"".join(pieces))
