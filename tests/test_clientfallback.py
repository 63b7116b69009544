# -*- test-case-name: tests.test_clientfallback -*-
"""
Opportunistic TLS: after a failed STARTTLS handshake, one more try in
plain text on a new connection, as Postfix's smtp client at security level
C{may} (C{PLAINTEXT_FALLBACK_OK_AFTER_STARTTLS_FAILURE}); never with TLS
required, with the certificate to be verified, with REQUIRETLS or with
credentials to send.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.test_client import TLSStringTransport, sessionRequest
from twisted_smtpd._smtpclient.client import DeliveryError, deliver
from twisted_smtpd._smtpclient.clientsession import plaintextFallback
from twisted_smtpd._smtpclient.clientwire import HandshakeError

EHLO_STARTTLS = b"250-mx.example.com\r\n250-PIPELINING\r\n250 STARTTLS\r\n"


class Connections:
    """
    A client endpoint giving each connection a new string transport.
    """

    def __init__(self) -> None:
        self.transports: list[TLSStringTransport] = []

    def connect(self, factory: Factory) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = TLSStringTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.transports.append(transport)
        return succeed(protocol)

    def say(self, data: bytes) -> bytes:
        """
        Send C{data} on the last connection; return what the client wrote.
        """
        transport = self.transports[-1]
        transport.clear()
        transport.protocol.dataReceived(data)
        return transport.value()


class PlaintextFallbackTests(SynchronousTestCase):
    """
    L{deliver} and L{plaintextFallback}.
    """

    def deliver(self, connections: Connections, **kwargs: Any) -> Deferred[Any]:
        arguments: dict[str, Any] = {
            "sender": "alice@example.com",
            "recipients": ["bob@example.org"],
            "stream": b"Subject: hi\r\n\r\n.body\r\n",
            "heloName": "client.example",
            "tls": "opportunistic",
            "verify": False,
            "reactor": Clock(),
        }
        arguments.update(kwargs)
        return deliver(connections, **arguments)  # type: ignore[arg-type]

    def failHandshake(self, connections: Connections) -> None:
        """
        Greet, offer STARTTLS, accept it, then lose the connection before
        the handshake completes.
        """
        connections.say(b"220 mx ESMTP\r\n")
        self.assertEqual(connections.say(EHLO_STARTTLS), b"STARTTLS\r\n")
        connections.say(b"220 2.0.0 go ahead\r\n")
        self.assertIsNotNone(connections.transports[-1].tlsStarted)
        connections.transports[-1].loseConnection()

    def test_fallback(self) -> None:
        """
        Opportunistic TLS without verification: a second connection, with
        no STARTTLS, carries the message; one log line names the next hop
        and the reason.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        connections = Connections()
        result = self.deliver(connections)
        self.failHandshake(connections)
        self.assertEqual(len(connections.transports), 2)
        connections.say(b"220 mx ESMTP\r\n")
        sent = connections.say(EHLO_STARTTLS)
        self.assertTrue(sent.startswith(b"MAIL FROM:<alice@example.com>"), sent)
        connections.say(b"250 ok\r\n250 ok\r\n354 go\r\n")
        self.assertEqual(connections.say(b"250 2.0.0 queued\r\n"), b"QUIT\r\n")
        self.assertEqual(self.successResultOf(result).recipients[0].reply.code, 250)
        self.assertIsNone(connections.transports[-1].tlsStarted)
        lines = [formatEvent(e) for e in events if "plain text" in formatEvent(e)]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("STARTTLS handshake with", lines[0])

    def test_noFallback(self) -> None:
        """
        TLS required, the certificate to be verified, or credentials to
        send: the failed handshake fails the delivery (451 4.7.5), no
        second connection.
        """
        cases: list[dict[str, Any]] = [
            {"tls": "required"},
            {"verify": True, "tlsHostname": "mx.example.com"},
            {"username": "u", "password": "p"},
        ]
        for case in cases:
            connections = Connections()
            result = self.deliver(connections, **case)
            self.failHandshake(connections)
            error = self.failureResultOf(result, DeliveryError).value
            self.assertEqual((error.code, error.enhanced, error.stage), (451, "4.7.5", "tls"))
            self.assertIsInstance(error, HandshakeError)
            self.assertEqual(len(connections.transports), 1, case)

    def test_requestConditions(self) -> None:
        """
        L{plaintextFallback} gives a plain-text request only for
        opportunistic TLS without verification, REQUIRETLS or credentials.
        """
        allowed = evolve(sessionRequest(), tls="opportunistic", tlsCreator=object())
        plain = plaintextFallback(allowed)
        assert plain is not None
        self.assertEqual((plain.tls, plain.tlsCreator), ("none", None))
        for refused in (
            evolve(allowed, tls="required"),
            evolve(allowed, verify=True),
            evolve(allowed, requireTls=True),
            evolve(allowed, username="u", password="p"),
        ):
            self.assertIsNone(plaintextFallback(refused))

    def test_refusedAfterHandshakeIsNoHandshakeFailure(self) -> None:
        """
        An EHLO over TLS refused (the handshake went through): no fallback,
        the refusal is the outcome.
        """
        connections = Connections()
        result = self.deliver(connections)
        connections.say(b"220 mx ESMTP\r\n")
        connections.say(EHLO_STARTTLS)
        connections.say(b"220 2.0.0 go ahead\r\n")
        connections.say(b"421 4.3.2 bye\r\n")
        error = self.failureResultOf(result, DeliveryError).value
        self.assertNotIsInstance(error, HandshakeError)
        self.assertEqual(error.code, 421)
        self.assertEqual(len(connections.transports), 1)
