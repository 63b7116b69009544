# -*- test-case-name: tests.test_clientpieces -*-
"""
A body reaching the relay in pieces of a few octets (a DATA body in tiny
TLS records) is gathered for its next BDAT chunk without costing more
memory than the octets themselves, and without leaving the next hop
waiting for them longer than a few seconds.
"""

from __future__ import annotations

import tracemalloc

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_client import FakeEndpoint, sessionRequest
from tests.test_clientsession import RecordingProtocol
from twisted_smtpd._smtpclient.clientsession import (
    CHUNK_SIZE,
    ClientSession,
    _ChunkWriter,
    openSession,
)
from twisted_smtpd._stream import MessageStream

#: Seconds within which the next hop must hear of a body that trickles
#: in: well under the 300 s (10 s under stress) Postfix's smtpd waits.
HEARD_WITHIN = 5.0


class TinyPiecesTests(SynchronousTestCase):
    """
    L{_ChunkWriter} joins small pieces as they come.
    """

    def test_tinyPiecesCostTheirSize(self) -> None:
        """
        Pieces of two octets, each its own object, up to just under
        C{CHUNK_SIZE}: what the writer holds is about their size, not an
        object per piece (about twenty times as much); and the chunk that
        leaves holds them all, in order.
        """
        protocol = RecordingProtocol()
        writer = _ChunkWriter(protocol)  # type: ignore[arg-type]
        count = CHUNK_SIZE // 2 - 1
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        for index in range(count):
            writer.write(bytes((65 + index % 26, 10)))
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        self.assertEqual(protocol.written, [])
        self.assertLess(held, 3 * CHUNK_SIZE, f"{held} octets held for {count * 2}")
        writer.flush()
        [chunk] = protocol.written
        expected = b"".join(bytes((65 + index % 26, 10)) for index in range(count))
        self.assertEqual(chunk, b"BDAT %d\r\n" % len(expected) + expected)

    def test_largePieceUncopied(self) -> None:
        """
        A piece of C{CHUNK_SIZE} octets or more, nothing gathered before
        it, leaves as it is, as one chunk.
        """
        protocol = RecordingProtocol()
        writer = _ChunkWriter(protocol)  # type: ignore[arg-type]
        writer.write(b"x" * CHUNK_SIZE)
        writer.write(b"y" * 3)
        writer.write(b"z" * CHUNK_SIZE)
        writer.flush()
        self.assertEqual(
            protocol.written,
            [
                b"BDAT %d\r\n" % CHUNK_SIZE + b"x" * CHUNK_SIZE,
                b"BDAT %d\r\n" % (CHUNK_SIZE + 3) + b"y" * 3 + b"z" * CHUNK_SIZE,
            ],
        )


class TrickledBodyTests(SynchronousTestCase):
    """
    L{ClientSession.bdat} with a body that comes slowly.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        request = sessionRequest()
        opening = Deferred.fromCoroutine(openSession(self.endpoint, request, self.clock))  # type: ignore[arg-type]
        self.say(b"220 mx ESMTP\r\n")
        self.say(b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        self.session: ClientSession = self.successResultOf(opening)
        for call in (
            self.session.mail("a@example.com", ""),
            self.session.rcpt("b@example.org", ""),
        ):
            d = Deferred.fromCoroutine(call)
            self.say(b"250 ok\r\n")
            self.successResultOf(d)
        self.endpoint.transport.clear()

    def say(self, data: bytes) -> None:
        self.endpoint.protocol.dataReceived(data)

    def test_fewOctetsLeaveSoon(self) -> None:
        """
        A few octets of body, then nothing for a while (a client sending
        slowly): they leave as a chunk within a few seconds, not once
        C{CHUNK_SIZE} octets have come; the message then ends as usual,
        its reply the verdict.
        """
        stream = MessageStream()
        sent = Deferred.fromCoroutine(self.session.bdat(stream, 1))
        stream._write(b"Subject: slow\r\n")
        self.assertEqual(self.endpoint.transport.value(), b"")
        self.clock.advance(HEARD_WITHIN)
        self.assertEqual(self.endpoint.transport.value(), b"BDAT 15\r\nSubject: slow\r\n")
        self.say(b"250 2.0.0 chunk ok\r\n")
        stream._write(b"\r\nbody\r\n")
        stream._finish()
        self.assertTrue(
            self.endpoint.transport.value().endswith(b"BDAT 8\r\n\r\nbody\r\nBDAT 0 LAST\r\n")
        )
        self.say(b"250 2.0.0 chunk ok\r\n250 2.0.0 queued\r\n")
        [reply] = self.successResultOf(sent)
        self.assertEqual((reply.code, reply.text), (250, "queued"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noChunkAfterFailure(self) -> None:
        """
        The client's body fails while octets are gathered: the connection
        is dropped, and nothing is sent for them later.
        """
        stream = MessageStream()
        sent = Deferred.fromCoroutine(self.session.bdat(stream, 1))
        stream._write(b"Subject: cut\r\n")
        stream._fail(RuntimeError("client gone"))
        self.failureResultOf(sent, RuntimeError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNotIn(b"BDAT", self.endpoint.transport.value())
