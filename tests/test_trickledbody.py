"""
A message body that comes slowly (a few octets, then nothing for a while)
reaches the handler within about a second, whatever the server holds back
to join short pieces (L{twisted_smtpd._core.data.SHORT_PIECE}): a handler
passing the body on (C{--relay}, C{--lmtp-to}) must not leave its next hop
waiting past its own timeout (Postfix's C{smtpd_timeout}: 300 s, 10 s
under stress) for the next 4 KiB of a body trickling in.

Tests over a L{StringTransport} with a L{task.Clock}.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_client import FakeEndpoint, sessionRequest
from tests.test_data import POLICIES, bodies, reference, splitAt
from tests.test_protocol import connect, take
from twisted_smtpd._core.data import ChunkDecoder, DataDecoder
from twisted_smtpd._core.session import Session
from twisted_smtpd._smtpclient.clientsession import ClientSession, openSession
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

ENVELOPE = b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"

#: Seconds within which the handler (and a next hop) must have a body's
#: first octets: well under the 300 s Postfix's smtpd waits for a word.
HEARD_WITHIN = 2.0


class _File:
    """
    What a handler's file was given, write by write.
    """

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


class _Piping(BaseHandler):
    """
    C{onData} pipes the body into a L{_File} as it comes.
    """

    def __init__(self) -> None:
        self.file = _File()

    def onData(self, stream: IMessageStream, session: Session) -> object:
        return stream.pipeToFile(self.file)


class DecoderFlushTests(SynchronousTestCase):
    """
    The decoders hand on the short pieces they hold when asked, in order,
    and nothing twice.
    """

    def test_dataFlush(self) -> None:
        """
        L{DataDecoder.flush} gives the held body, once; a CR whose LF may
        come next stays held, and the rest of the body follows in order.
        """
        decoder = DataDecoder()
        self.assertEqual(decoder.feed(b"Subject: x\r\n..a\r"), ([], None))
        self.assertEqual(decoder.flush(), b"Subject: x\r\n.a")
        self.assertEqual(decoder.flush(), b"")
        chunks, rest = decoder.feed(b"\nb\r\n.\r\nQUIT\r\n")
        self.assertEqual((b"".join(chunks), rest), (b"\r\nb\r\n", b"QUIT\r\n"))

    def test_dataFlushPastTheLimit(self) -> None:
        """
        Past the size limit nothing is held, so nothing is flushed.
        """
        decoder = DataDecoder(maxSize=4)
        decoder.feed(b"abc")
        decoder.feed(b"defg")
        self.assertTrue(decoder.sizeExceeded)
        self.assertEqual(decoder.flush(), b"")

    def test_chunkFlush(self) -> None:
        """
        L{ChunkDecoder.flush} gives the held octets of the chunks so far,
        once; the next chunk's octets follow them.
        """
        decoder = ChunkDecoder()
        decoder.expect(5, False)
        self.assertEqual(decoder.feed(b"abcdeBDAT"), ([], b"BDAT"))
        self.assertEqual(decoder.flush(), b"abcde")
        self.assertEqual(decoder.flush(), b"")
        decoder.expect(2, True)
        self.assertEqual(decoder.feed(b"fg"), ([b"fg"], b""))


class FlushAnywhereTests(SynchronousTestCase):
    """
    Flushing between any two feeds changes nothing in the body handed on
    but where it is cut.
    """

    @settings(deadline=None)
    @given(
        body=bodies,
        tail=st.binary(max_size=8),
        data=st.data(),
        policy=st.sampled_from(POLICIES),
        maxSize=st.sampled_from([0, 0, 5, 40]),
    )
    def test_dataFlushAnywhere(
        self, body: bytes, tail: bytes, data: st.DataObject, policy: str, maxSize: int
    ) -> None:
        """
        A session split anywhere, flushed after any feed, decodes as the
        byte-at-a-time reference does, each octet once and in order;
        nothing is held past the limit.
        """
        message = body + b"\r\n.\r\n" + tail
        pieces = splitAt(message, data.draw(st.lists(st.integers(0, len(message)), max_size=8)))
        flushes = data.draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
        decoder = DataDecoder(maxSize, policy)
        out: list[bytes] = []
        rest = None
        for index, (piece, flush) in enumerate(zip(pieces, flushes, strict=True)):
            chunks, rest = decoder.feed(piece)
            out.extend(chunks)
            if rest is not None:
                # What followed the end: the rest of this piece and the next.
                rest += b"".join(pieces[index + 1 :])
                break
            if flush:
                out.append(decoder.flush())
        expected, expectedRest, bare = reference(message, policy)
        self.assertEqual(rest, expectedRest)
        self.assertEqual(decoder.bareNewlineSeen, bare)
        if decoder.sizeExceeded:
            self.assertLessEqual(len(b"".join(out)), maxSize)
            self.assertTrue(expected.startswith(b"".join(out)))
        else:
            self.assertEqual(b"".join(out), expected)
        self.assertEqual(decoder.flush(), b"")

    @settings(deadline=None)
    @given(
        sizes=st.lists(st.integers(0, 9000), min_size=1, max_size=6),
        data=st.data(),
    )
    def test_chunkFlushAnywhere(self, sizes: list[int], data: st.DataObject) -> None:
        """
        BDAT chunks read in any pieces, flushed after any read, come out
        whole and in order.
        """
        decoder = ChunkDecoder()
        sent = b""
        out: list[bytes] = []
        for number, size in enumerate(sizes):
            chunk = bytes([65 + number]) * size
            sent += chunk
            decoder.expect(size, number == len(sizes) - 1)
            raw = chunk + b"NEXT"
            pieces = splitAt(raw, data.draw(st.lists(st.integers(0, len(raw)), max_size=5)))
            for piece in pieces:
                chunks, rest = decoder.feed(piece)
                out.extend(chunks)
                if data.draw(st.booleans()):
                    out.append(decoder.flush())
                if rest is not None:
                    break
        self.assertTrue(decoder.ended)
        self.assertEqual(b"".join(out), sent)


class TrickledBodyTests(SynchronousTestCase):
    """
    A session whose client sends its body slowly.
    """

    def test_dataLineReachesTheHandler(self) -> None:
        """
        A line of a DATA body, then nothing: the handler has it within a
        second or two, not once 4 KiB have come; the body ends whole and
        in order.
        """
        handler = _Piping()
        proto, transport, clock, factory = connect(handler)
        proto.dataReceived(ENVELOPE + b"DATA\r\n")
        proto.dataReceived(b"Subject: slow\r\n")
        clock.advance(HEARD_WITHIN)
        self.assertEqual(handler.file.data, b"Subject: slow\r\n")
        proto.dataReceived(b"\r\n..body\r")
        clock.advance(HEARD_WITHIN)
        self.assertEqual(handler.file.data, b"Subject: slow\r\n\r\n.body")
        proto.dataReceived(b"\n.\r\n")
        self.assertEqual(handler.file.data, b"Subject: slow\r\n\r\n.body\r\n")
        self.assertTrue(take(transport).endswith(b"250 2.0.0 OK: message queued\r\n"))

    def test_bdatChunkReachesTheHandler(self) -> None:
        """
        A short BDAT chunk, then nothing: the handler has it within a
        second or two; the next chunks follow it in order.
        """
        handler = _Piping()
        proto, transport, clock, factory = connect(handler)
        proto.dataReceived(ENVELOPE + b"BDAT 15\r\nSubject: slow\r\n")
        clock.advance(HEARD_WITHIN)
        self.assertEqual(handler.file.data, b"Subject: slow\r\n")
        proto.dataReceived(b"BDAT 6 LAST\r\n\r\nbody")
        self.assertEqual(handler.file.data, b"Subject: slow\r\n\r\nbody")
        self.assertTrue(take(transport).endswith(b"250 2.0.0 OK: message queued\r\n"))

    def test_tinyReadsStillJoined(self) -> None:
        """
        A body read one octet at a time within the same second still
        reaches the handler joined.
        """
        handler = _Piping()
        proto, transport, clock, factory = connect(handler)
        proto.dataReceived(ENVELOPE + b"DATA\r\n")
        body = b"0123456789abcd\r\n" * 1024
        for i in range(len(body)):
            proto.dataReceived(body[i : i + 1])
        self.assertEqual(len(handler.file.writes), 4)
        proto.dataReceived(b".\r\n")
        self.assertEqual(handler.file.data, body)


class _Relaying(BaseHandler):
    """
    C{onData} passes the body on to a next hop's open session with BDAT,
    as the relay does.
    """

    def __init__(self, session: ClientSession) -> None:
        self.session = session

    def onData(self, stream: IMessageStream, session: Session) -> object:
        sent: Deferred[Any] = Deferred.fromCoroutine(self.session.bdat(stream, 1))
        return sent.addCallback(lambda replies: None)


class NextHopHearsTests(SynchronousTestCase):
    """
    A body passed on to a next hop offering CHUNKING while the client
    sends it slowly.
    """

    def test_nextHopHearsOfATrickledDataBody(self) -> None:
        """
        The first line of a DATA body, then nothing: the next hop has a
        BDAT chunk of it within a few seconds.
        """
        clock = Clock()
        endpoint = FakeEndpoint()
        opening = Deferred.fromCoroutine(openSession(endpoint, sessionRequest(), clock))  # type: ignore[arg-type]
        endpoint.protocol.dataReceived(b"220 mx ESMTP\r\n")
        endpoint.protocol.dataReceived(b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        client = self.successResultOf(opening)
        endpoint.transport.clear()
        proto, transport, clock, factory = connect(_Relaying(client), clock)
        proto.dataReceived(ENVELOPE + b"DATA\r\n")
        proto.dataReceived(b"Subject: slow\r\n")
        clock.advance(HEARD_WITHIN)
        clock.advance(HEARD_WITHIN)
        self.assertEqual(endpoint.transport.value(), b"BDAT 15\r\nSubject: slow\r\n")
        endpoint.protocol.dataReceived(b"250 2.0.0 chunk ok\r\n")
        proto.dataReceived(b"\r\nbody\r\n.\r\n")
        self.assertTrue(endpoint.transport.value().endswith(b"BDAT 0 LAST\r\n"))
        endpoint.protocol.dataReceived(b"250 2.0.0 chunk ok\r\n250 2.0.0 queued\r\n")
        self.assertTrue(take(transport).endswith(b"250 2.0.0 OK: message queued\r\n"))
