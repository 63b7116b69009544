# -*- test-case-name: tests.test_metricsslots -*-
"""
Tests for L{twisted_smtpd._serving.metricshttp.ConnectionLimit}: clients
holding every connection of the metrics listener, each kept under the idle
timeout by a request now and then, cannot keep a new scraper out.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.metrics import ServerMetrics, metricsSite
from twisted_smtpd._serving.metricshttp import MAX_CONNECTIONS, REQUEST_DEADLINE

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


class SlotTests(SynchronousTestCase):
    """
    A new connection with every place taken.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = metricsSite(ServerMetrics().registry, lambda: True, reactor=self.clock)
        self.factory.doStart()
        self.addCleanup(self.factory.doStop)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def connect(self, port: int) -> tuple[Any, StringTransport]:
        address = IPv4Address("TCP", "127.0.0.1", port)
        protocol = self.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.logged]

    def test_keepAliveHoggersCannotKeepAScraperOut(self) -> None:
        """
        L{MAX_CONNECTIONS} keep-alive clients each sending a C{GET} every
        9 seconds (under the idle timeout) hold every place for a minute; a
        scraper then gets in and is answered, and the client answered
        least recently is aborted, with one line naming both.
        """
        held = [self.connect(40000 + n) for n in range(MAX_CONNECTIONS)]
        for _ in range(7):
            for protocol, transport in held:
                transport.clear()
                protocol.dataReceived(GET)
                self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
                self.clock.advance((REQUEST_DEADLINE - 1) / MAX_CONNECTIONS)
        self.assertEqual([t.disconnecting for _, t in held], [False] * MAX_CONNECTIONS)
        self.assertEqual(self.lines(), [])
        scraper, transport = self.connect(50000)
        self.assertFalse(transport.disconnecting)
        self.assertEqual([t.disconnecting for _, t in held], [True] + [False] * 7)
        self.assertEqual(
            self.lines(),
            [
                "metrics: connection from 127.0.0.1:40000 aborted for a new one from"
                " 127.0.0.1:50000: 8 connections open, this one the longest unanswered"
            ],
        )
        scraper.dataReceived(GET)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_requestInProgressCounts(self) -> None:
        """
        A client always in the middle of a request (its next one begun as
        its last is answered) is no idle one but holds its place as long:
        it too is aborted when it has gone longest without an answer.
        """
        held = [self.connect(40000 + n) for n in range(MAX_CONNECTIONS)]
        for protocol, _ in held[1:]:
            protocol.dataReceived(GET)
        held[0][0].dataReceived(b"GET /healthz HTTP/1.1\r\n")
        self.connect(50000)
        self.assertEqual([t.disconnecting for _, t in held], [True] + [False] * 7)

    def test_recentlyAnsweredKept(self) -> None:
        """
        New connections, one after another, take the places of the held
        ones, least recently answered first, each aborted once: never
        that of the scraper answered a moment ago, nor one already
        aborted, whose place is being freed.
        """
        held = [self.connect(40000 + n) for n in range(MAX_CONNECTIONS)]
        for protocol, _ in reversed(held):
            protocol.dataReceived(GET)
        scraper, scraperTransport = self.connect(50000)
        scraper.dataReceived(GET)
        newcomers = [self.connect(50001 + n) for n in range(MAX_CONNECTIONS - 1)]
        self.assertFalse(scraperTransport.disconnecting)
        self.assertEqual([t.disconnecting for _, t in held], [True] * MAX_CONNECTIONS)
        self.assertEqual([t.disconnecting for _, t in newcomers], [False] * 7)
        self.assertEqual(
            [line.split()[3] for line in self.lines()],
            [f"127.0.0.1:{40000 + n}" for n in reversed(range(MAX_CONNECTIONS))],
        )

    def test_placeFreedOnceGone(self) -> None:
        """
        An aborted connection is no longer counted once it is gone, and
        one that leaves of itself frees its place: the next connection
        aborts none.
        """
        held = [self.connect(40000 + n) for n in range(MAX_CONNECTIONS)]
        self.connect(50000)
        held[0][0].connectionLost(Failure(ConnectionAborted()))
        held[1][0].connectionLost(Failure(ConnectionAborted()))
        self.connect(50001)
        self.assertEqual([t.disconnecting for _, t in held], [True, False] + [False] * 6)
        self.assertEqual(len(self.lines()), 1)
