# -*- test-case-name: tests.test_metricstargets -*-
"""
Tests for L{twisted_smtpd._serving.metricshttp}: the request targets the
metrics listener serves, the absolute form (RFC 9112 section 3.2.2)
included.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.metrics import ServerMetrics, metricsSite
from twisted_smtpd._serving.metricshttp import originForm


class OriginFormTests(SynchronousTestCase):
    """
    L{originForm}: the path and query of a request target.
    """

    def test_absoluteForm(self) -> None:
        """
        An C{http} or C{https} URI, its scheme in any case, gives the part
        after its authority; an empty path is C{/}.
        """
        for target, expected in [
            (b"http://127.0.0.1:9100/metrics", b"/metrics"),
            (b"HTTPS://[::1]:9100/healthz?x=1", b"/healthz?x=1"),
            (b"Http://host", b"/"),
            (b"http://host?x=1", b"/?x=1"),
            (b"http://host/a/b?c/d", b"/a/b?c/d"),
        ]:
            self.assertEqual(originForm(target), expected, target)

    def test_otherFormsKept(self) -> None:
        """
        A path, C{*}, an authority (C{host:port}) or a URI of another
        scheme is left as it is.
        """
        for target in [
            b"/metrics",
            b"/http://host/metrics",
            b"*",
            b"127.0.0.1:9100",
            b"ftp://host/metrics",
            b"http:/metrics",
        ]:
            self.assertEqual(originForm(target), target)


class AbsoluteFormTests(SynchronousTestCase):
    """
    Requests to the listener with each form of request target.
    """

    def setUp(self) -> None:
        self.factory = metricsSite(ServerMetrics().registry, lambda: True, reactor=Clock())
        self.factory.doStart()
        self.addCleanup(self.factory.doStop)

    def request(self, target: bytes, method: bytes = b"GET") -> bytes:
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol: Any = self.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        for byte in method + b" " + target + b" HTTP/1.1\r\nHost: other.example\r\n\r\n":
            protocol.dataReceived(bytes([byte]))
        return transport.value()

    def test_absoluteFormServed(self) -> None:
        """
        C{GET http://127.0.0.1:9100/metrics} is answered as C{GET
        /metrics} is, whatever its host and that of the C{Host} header;
        C{/healthz} likewise, with a query, an upper-case scheme, and
        C{HEAD}.
        """
        answer = self.request(b"http://127.0.0.1:9100/metrics")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:80])
        self.assertIn(b"smtpd_connections_total", answer)
        answer = self.request(b"HTTPS://localhost/healthz?probe=1")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:80])
        self.assertTrue(answer.endswith(b"\r\n\r\nok\n"), answer[-80:])
        answer = self.request(b"http://[::1]:9100/healthz", b"HEAD")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:80])
        self.assertTrue(answer.endswith(b"\r\n\r\n"), answer[-80:])

    def test_otherFormsAsBefore(self) -> None:
        """
        A target in authority form, or a URI of another scheme, is a path
        not found (404), as before; C{*} stays a bad request (400).
        """
        for target, status in [
            (b"127.0.0.1:9100", b"404"),
            (b"ftp://host/metrics", b"404"),
            (b"http://host", b"404"),
            (b"*", b"400"),
        ]:
            answer = self.request(target)
            self.assertTrue(answer.startswith(b"HTTP/1.1 " + status + b" "), (target, answer[:80]))
