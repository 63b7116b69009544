# -*- test-case-name: tests.test_clientchunks -*-
"""
A next hop refusing a BDAT chunk (RFC 3030) and closing the connection
behind its refusal: the refusal, received first, is the verdict.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_client import FakeEndpoint, sessionRequest
from twisted_smtpd._smtpclient.clientsession import CHUNK_SIZE, ClientSession, openSession
from twisted_smtpd._stream import MessageStream


class ChunkRefusedThenClosedTests(SynchronousTestCase):
    """
    L{ClientSession.bdat} after a refused chunk and a lost connection.
    """

    def setUp(self) -> None:
        self.endpoint = FakeEndpoint()
        opening = Deferred.fromCoroutine(openSession(self.endpoint, sessionRequest(), Clock()))
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

    def say(self, data: bytes) -> None:
        self.endpoint.protocol.dataReceived(data)

    def test_closedWhileStreaming(self) -> None:
        """
        The first chunk refused with 552, then the connection closed while
        the body still streams: the result is the 552, and the session is
        not used again.
        """
        stream = MessageStream()
        sent = Deferred.fromCoroutine(self.session.bdat(stream, 1))
        stream._write(b"y" * CHUNK_SIZE)
        self.say(b"552 5.3.4 message too big\r\n")
        self.endpoint.transport.loseConnection()
        [reply] = self.successResultOf(sent)
        self.assertEqual(
            (reply.code, reply.enhanced, reply.text), (552, "5.3.4", "message too big")
        )
        self.assertFalse(self.session.usable)

    def test_closedAfterLastChunk(self) -> None:
        """
        Every chunk sent, the first refused with 554, then the connection
        closed before the later chunks are answered: the result is the 554.
        """
        stream = MessageStream()
        sent = Deferred.fromCoroutine(self.session.bdat(stream, 1))
        stream._write(b"y" * CHUNK_SIZE)
        stream._write(b"z" * CHUNK_SIZE)
        stream._finish()
        self.assertIn(b"BDAT 0 LAST\r\n", self.endpoint.transport.value())
        self.say(b"554 5.6.0 content refused\r\n")
        self.endpoint.transport.loseConnection()
        [reply] = self.successResultOf(sent)
        self.assertEqual((reply.code, reply.enhanced), (554, "5.6.0"))
        self.assertFalse(self.session.usable)
