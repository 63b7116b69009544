# -*- test-case-name: tests.test_metricshead -*-
"""
A C{HEAD} to the metrics listener is answered as a C{GET} is, headers only,
and leaves no line in the log: not Twisted's warning quoting the request
and its URI (up to 16 KiB from the client) once per request.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.metrics import ServerMetrics, metricsSite


def split(response: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """
    The status line, the headers (lower-case names) and the body of one
    response.
    """
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


class HeadTests(SynchronousTestCase):
    """
    C{HEAD} of C{/healthz}, C{/metrics} and a path not found.
    """

    def setUp(self) -> None:
        self.factory = metricsSite(ServerMetrics().registry, lambda: True, reactor=Clock())
        self.factory.doStart()
        self.addCleanup(self.factory.doStop)

    def request(self, method: bytes, path: bytes) -> bytes:
        """
        The response to one request of C{method} for C{path}.
        """
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol: Any = self.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        protocol.dataReceived(method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        return transport.value()

    def test_headLikeGet(self) -> None:
        """
        A HEAD gets the status and the C{Content-Length} of the GET of the
        same path, and no body.
        """
        for path, status in [
            (b"/healthz", b"200 OK"),
            (b"/nope?" + b"q" * 4000, b"404 Not Found"),
            (b"/metrics", b"200 OK"),
        ]:
            getStatus, getHeaders, getBody = split(self.request(b"GET", path))
            headStatus, headHeaders, headBody = split(self.request(b"HEAD", path))
            self.assertEqual(getStatus, b"HTTP/1.1 " + status)
            self.assertEqual(headStatus, getStatus)
            self.assertEqual(headBody, b"")
            self.assertEqual(int(headHeaders[b"content-length"]), len(getBody), path[:20])
            if path == b"/healthz":
                self.assertEqual(headHeaders[b"content-length"], b"3")

    def test_noLine(self) -> None:
        """
        A HEAD, of any path, with a long query, leaves no line in the log.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for path in (b"/healthz", b"/metrics", b"/nope"):
            response = self.request(b"HEAD", path + b"?" + b"q" * 8000)
            self.assertTrue(response.startswith(b"HTTP/1.1 "), response[:40])
        self.assertEqual([formatEvent(e)[:200] for e in logged], [])

    def test_noServerVersion(self) -> None:
        """
        No answer (found, not found, HEAD or GET) names the web server and
        its version in a C{Server} header.
        """
        for method in (b"GET", b"HEAD"):
            for path in (b"/healthz", b"/metrics", b"/nope"):
                status, headers, _ = split(self.request(method, path))
                self.assertTrue(status.startswith(b"HTTP/1.1 "), status)
                self.assertNotIn(b"server", headers, (method, path))

    def test_asteriskTarget(self) -> None:
        """
        A C{GET} or C{HEAD} of C{*} (a target only C{OPTIONS} may have,
        which this listener refuses) is a malformed request: C{400}, the
        connection closed and one line, never Twisted's own C{405} naming
        C{OPTIONS} and the web server's version.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for method in (b"GET", b"HEAD"):
            status, headers, _ = split(self.request(method, b"*"))
            self.assertEqual((status, headers.get(b"server")), (b"HTTP/1.1 400 Bad Request", None))
        self.assertEqual(
            [formatEvent(e) for e in logged],
            ["metrics: 400 Bad Request for a malformed or oversized request from 127.0.0.1:40000"]
            * 2,
        )
