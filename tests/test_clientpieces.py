# -*- test-case-name: tests.test_clientpieces -*-
"""
A body reaching the relay in pieces of a few octets (a DATA body in tiny
TLS records) is gathered for its next BDAT chunk without costing more
memory than the octets themselves.
"""

from __future__ import annotations

import tracemalloc

from twisted.trial.unittest import SynchronousTestCase

from tests.test_clientsession import RecordingProtocol
from twisted_smtpd._smtpclient.clientsession import CHUNK_SIZE, _ChunkWriter


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
