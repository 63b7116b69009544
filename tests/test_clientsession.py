# -*- test-case-name: tests.test_clientsession -*-
"""
Tests for the parts of L{twisted_smtpd._smtpclient.clientsession} below the dialogue:
how a body becomes BDAT chunks, and TLS session resumption's bookkeeping.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._smtpclient.clientsession import CHUNK_SIZE, ResumingTLS, _ChunkWriter


class RecordingProtocol:
    """
    Stands for a L{ClientProtocol}: records what is written.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.chunks = 0
        self.transport = None
        self.connected = True
        self.clock = Clock()

    def writeChunk(self, data: bytes) -> Deferred[Any]:
        self.chunks += 1
        self.written.append(b"BDAT %d\r\n" % len(data) + data)
        return Deferred()


class ChunkWriterTests(SynchronousTestCase):
    """
    L{_ChunkWriter} gathers small writes into chunks.
    """

    def test_smallPiecesGathered(self) -> None:
        """
        A body arriving in many small pieces leaves in chunks of
        C{CHUNK_SIZE} octets (and the rest), not one BDAT per piece, each
        through C{writeChunk} (which counts its reply as one to wait for).
        """
        protocol = RecordingProtocol()
        writer = _ChunkWriter(protocol)  # type: ignore[arg-type]
        body = bytes(range(256)) * 400
        for start in range(0, len(body), 7):
            writer.write(body[start : start + 7])
        writer.flush()
        self.assertEqual(writer.chunks, 2)
        self.assertEqual(protocol.chunks, 2)
        first, second = protocol.written
        # The first chunk is the first whole number of pieces reaching it.
        self.assertTrue(first.startswith(b"BDAT %d\r\n" % (-(-CHUNK_SIZE // 7) * 7)))
        self.assertEqual(first.split(b"\r\n", 1)[1] + second.split(b"\r\n", 1)[1], body)

    def test_emptyFlush(self) -> None:
        """
        Nothing gathered, nothing sent: no empty BDAT chunk.
        """
        protocol = RecordingProtocol()
        writer = _ChunkWriter(protocol)  # type: ignore[arg-type]
        writer.write(b"")
        writer.flush()
        self.assertEqual((protocol.written, writer.chunks), ([], 0))


class FakeConnection:
    def __init__(self, session: object) -> None:
        self.session = session
        self.offered: object = None

    def set_session(self, session: object) -> None:
        self.offered = session

    def get_session(self) -> object:
        return self.session


class FakeCreator:
    def __init__(self) -> None:
        self.connections: list[FakeConnection] = []

    def clientConnectionForTLS(self, tlsProtocol: Any) -> FakeConnection:
        connection = FakeConnection(f"session {len(self.connections)}")
        self.connections.append(connection)
        return connection


class ResumingTLSTests(SynchronousTestCase):
    """
    L{ResumingTLS} offers the last session remembered.
    """

    def test_offersLastSession(self) -> None:
        """
        The first connection offers nothing; each later one offers the
        session of the last connection remembered.
        """
        creator = FakeCreator()
        resuming = ResumingTLS(creator)  # type: ignore[arg-type]
        first: Any = resuming.clientConnectionForTLS(None)
        self.assertIsNone(first.offered)
        resuming.remember(first)
        second: Any = resuming.clientConnectionForTLS(None)
        self.assertEqual(second.offered, "session 0")
