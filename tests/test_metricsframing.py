"""
Tests for L{twisted_smtpd._serving.metricshttp}: a request whose framing is
ambiguous (request smuggling forms) is refused, never answered.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.metrics import ServerMetrics, metricsSite


class TransferCodingTests(SynchronousTestCase):
    """
    A request with a C{Transfer-Encoding} whose last coding is not
    C{chunked} has a body of no length a server can know: 400 and close
    (RFC 9112 section 6.3, item 4), never an answer with the bytes after
    its head read as the next request.
    """

    def setUp(self) -> None:
        self.factory = metricsSite(ServerMetrics().registry, lambda: True, reactor=Clock())
        self.factory.doStart()
        self.addCleanup(self.factory.doStop)

    def connect(self) -> tuple[Any, StringTransport]:
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol = self.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_identityRefused(self) -> None:
        """
        C{Transfer-Encoding: identity} (which Twisted ignores, reading no
        body) gets 400, the connection closed and one log line; the
        request smuggled behind it is not answered.
        """
        for coding in [b"identity", b"IDENTITY", b"Identity"]:
            logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            protocol, transport = self.connect()
            protocol.dataReceived(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + coding + b"\r\n\r\n"
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            self.assertEqual(transport.value(), b"HTTP/1.1 400 Bad Request\r\n\r\n", coding)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(
                [formatEvent(e) for e in logged],
                [
                    "metrics: 400 Bad Request for a malformed or oversized request"
                    " from 127.0.0.1:40000"
                ],
            )

    def test_identityWithLengthRefused(self) -> None:
        """
        C{Transfer-Encoding: identity} beside a C{Content-Length} of 0 is
        refused the same way: the two headers disagree on the framing.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            b"Transfer-Encoding: identity\r\n\r\n"
        )
        self.assertEqual(transport.value(), b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self.assertTrue(transport.disconnecting)

    def test_plainRequestAnswered(self) -> None:
        """
        A request without C{Transfer-Encoding} is answered as before.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertFalse(transport.disconnecting)
