# -*- test-case-name: tests.test_metricstimeouts -*-
"""
A connection to the metrics listener that its timeout closes, or aborts
when it is still open after that, leaves one line in the listener's log
(C{twisted_smtpd.metrics}) naming the client, and none in Twisted's own
namespace.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.metrics import ServerMetrics, metricsSite
from twisted_smtpd._serving.metricshttp import REQUEST_DEADLINE


class MetricsTimeoutLineTests(SynchronousTestCase):
    """
    The lines of the metrics listener's timeouts.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = metricsSite(ServerMetrics().registry, lambda: True, reactor=self.clock)
        self.factory.doStart()
        self.addCleanup(self.factory.doStop)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def connect(self, address: Any) -> tuple[Any, StringTransport]:
        protocol = self.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def lines(self) -> list[tuple[str, str]]:
        """
        The namespace and text of every event logged since L{setUp}.
        """
        return [(e.get("log_namespace", ""), formatEvent(e)) for e in self.logged]

    def test_idle(self) -> None:
        """
        A connection that sends nothing is closed after L{REQUEST_DEADLINE}
        seconds with one line of the listener's saying so.
        """
        _, transport = self.connect(IPv4Address("TCP", "127.0.0.1", 40000))
        self.clock.advance(REQUEST_DEADLINE)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            self.lines(),
            [
                (
                    "twisted_smtpd.metrics",
                    f"metrics: connection from 127.0.0.1:40000 timed out: idle for"
                    f" {REQUEST_DEADLINE} s",
                )
            ],
        )

    def test_requestNotWhole(self) -> None:
        """
        A request not whole within the deadline: the line says so, with
        the client's IPv6 address in brackets.
        """
        protocol, transport = self.connect(IPv6Address("TCP", "::1", 40001))
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\n")
        self.clock.advance(REQUEST_DEADLINE)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            self.lines(),
            [
                (
                    "twisted_smtpd.metrics",
                    "metrics: connection from [::1]:40001 timed out: its request was not"
                    f" whole {REQUEST_DEADLINE} s after its first byte",
                )
            ],
        )

    def test_aborted(self) -> None:
        """
        A client that reads nothing, its connection still open the abort
        timeout after the timeout, is aborted with a second line of the
        listener's; Twisted writes none of its own.
        """
        protocol, transport = self.connect(IPv4Address("TCP", "127.0.0.1", 40002))
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\n")
        # The client reads nothing: the transport holds the bytes, so the
        # connection is not gone when the channel closes it.
        self.clock.advance(REQUEST_DEADLINE)
        self.assertFalse(transport.disconnected)
        abort = protocol.wrappedProtocol.abortTimeout
        self.clock.advance(abort)
        self.assertTrue(transport.disconnected)
        self.assertEqual(
            [namespace for namespace, _ in self.lines()], ["twisted_smtpd.metrics"] * 2
        )
        self.assertEqual(
            self.lines()[1][1],
            f"metrics: connection from 127.0.0.1:40002 aborted: still open {abort} s after"
            " its timeout",
        )

    def test_answeredThenIdle(self) -> None:
        """
        After an answered request, the idle connection's timeout is the
        idle line, not the line of a request not whole.
        """
        protocol, transport = self.connect(IPv4Address("TCP", "127.0.0.1", 40003))
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.clock.advance(REQUEST_DEADLINE)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            self.lines(),
            [
                (
                    "twisted_smtpd.metrics",
                    f"metrics: connection from 127.0.0.1:40003 timed out: idle for"
                    f" {REQUEST_DEADLINE} s",
                )
            ],
        )
