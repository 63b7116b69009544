"""
Endpoint strings whose kinds are written in capitals or with spaces
(C{TCP:2525}, C{" haproxy :tcp:25"}): the same endpoints, for C{--listen},
C{--metrics} and L{SMTPServer.listen}.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_tap import parse
from twisted_smtpd import ServerOptions, SMTPServer
from twisted_smtpd._serving.listeners import normaliseKinds, splitDescription
from twisted_smtpd._twistd.tapconfig import metricsDescription
from twisted_smtpd.handlers import SinkHandler


class NormaliseKindsTests(SynchronousTestCase):
    def test_kinds(self) -> None:
        """
        Each layer's kind is stripped and in lower case; the rest is as
        given.
        """
        for given, expected in [
            ("TCP:2525", "tcp:2525"),
            (" tcp :2525:interface=127.0.0.1", "tcp:2525:interface=127.0.0.1"),
            (" HAProxy :TCP:25", "haproxy:tcp:25"),
            ("haproxy: SSL :465:privateKey=A Key.pem", "haproxy:ssl:465:privateKey=A Key.pem"),
            ("UNIX:/run/Mail Socket", "unix:/run/Mail Socket"),
            ("tcp", "tcp"),
        ]:
            self.assertEqual(normaliseKinds(given), expected)
        self.assertEqual(splitDescription(" HAProxy :TCP:25"), ("tcp:25", ["haproxy"]))

    def test_flags(self) -> None:
        """
        C{--listen} and C{--metrics} take them (their lines keep the
        operator's words); the metrics are served on the form Twisted's
        parsers know.
        """
        config = parse("--sink", "--listen", "TCP:0:interface=127.0.0.1")
        self.assertEqual(config["listen"], ["TCP:0:interface=127.0.0.1"])
        given = " Haproxy : TCP:0:interface=127.0.0.1"
        config = parse("--sink", "--metrics", given)
        self.assertEqual(config["metrics"], given)
        self.assertEqual(metricsDescription(given), "haproxy:tcp:0:interface=127.0.0.1")


class _Greeting(Protocol):
    """
    Reads the server's first line.
    """

    def __init__(self) -> None:
        self.received = b""
        self.line: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n" in self.received and not self.line.called:
            self.line.callback(self.received)
            self.transport.loseConnection()  # type: ignore[union-attr]


class ListenTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_library(self) -> Generator[Deferred[Any], Any, None]:
        """
        L{SMTPServer.listen} listens on C{TCP:0:interface=127.0.0.1}, where
        Twisted alone knows no endpoint type C{'tcp'}.
        """
        server = SMTPServer(SinkHandler(), ServerOptions(name="mx.example.com"))
        self.addCleanup(server.close)
        port = yield server.listen("TCP:0:interface=127.0.0.1")
        client = _Greeting()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        greeting = yield client.line
        self.assertEqual(greeting, b"220 mx.example.com ESMTP\r\n")
