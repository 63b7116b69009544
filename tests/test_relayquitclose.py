# -*- test-case-name: tests.test_relayquitclose -*-
"""
Closing a session to the next hop has a deadline, whatever the next hop
does after QUIT: it may answer QUIT, then read nothing more (its TLS close
alert never comes), or never answer at all; the connection is cut off
within L{QUIT_TIMEOUT} and holds no file descriptor beyond it.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.certs import CertificateAuthority
from tests.test_client import sessionRequest, startServer
from tests.test_clientquit import stuckEndpoint
from tests.test_relay import closeWith
from tests.test_relayhostile import (
    HostileFactory,
    HostileNextHop,
    HostileTestsMixin,
    code,
    silent,
)
from twisted_smtpd._smtpclient import clientprotocol, clientsession
from twisted_smtpd._smtpclient.clientprotocol import QUIT_TIMEOUT
from twisted_smtpd._smtpclient.clientsession import ClientSession, openSession
from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler
from twisted_smtpd.handlers.relay import RelayHandler

#: The deadline of the close in the tests on real sockets.
SHORT_QUIT = 0.3


def openFds() -> int:
    """
    How many file descriptors this process holds.
    """
    return len(os.listdir("/proc/self/fd"))


class QuitDeadlineTests(SynchronousTestCase):
    """
    L{ClientSession.quit}, closing an idle session, is bounded by
    L{QUIT_TIMEOUT} in all.
    """

    def test_answeredThenStuck(self) -> None:
        """
        QUIT answered, then the close never completes (the next hop reads
        nothing more): the connection is aborted after L{QUIT_TIMEOUT}
        from QUIT, and C{quit} fires.
        """
        clock, endpoint = Clock(), stuckEndpoint()
        opening = Deferred.fromCoroutine(openSession(endpoint, sessionRequest(), clock))  # type: ignore[arg-type]
        endpoint.protocol.dataReceived(b"220 mx ESMTP\r\n")
        endpoint.protocol.dataReceived(b"250 mx\r\n")
        session: ClientSession = self.successResultOf(opening)
        closing = Deferred.fromCoroutine(session.quit())
        transport = endpoint.transport
        self.assertTrue(transport.value().endswith(b"QUIT\r\n"))
        clock.advance(QUIT_TIMEOUT / 2)
        endpoint.protocol.dataReceived(b"221 2.0.0 bye\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(closing)
        clock.advance(QUIT_TIMEOUT / 2 - 0.1)
        self.assertFalse(transport.aborted)
        clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.successResultOf(closing)

    def test_neverAnswered(self) -> None:
        """
        QUIT never answered: aborted after L{QUIT_TIMEOUT}, C{quit} fires.
        """
        clock, endpoint = Clock(), stuckEndpoint()
        opening = Deferred.fromCoroutine(openSession(endpoint, sessionRequest(), clock))  # type: ignore[arg-type]
        endpoint.protocol.dataReceived(b"220 mx ESMTP\r\n")
        endpoint.protocol.dataReceived(b"250 mx\r\n")
        session: ClientSession = self.successResultOf(opening)
        closing = Deferred.fromCoroutine(session.quit())
        clock.advance(QUIT_TIMEOUT)
        self.assertTrue(endpoint.transport.aborted)
        self.successResultOf(closing)


def startTLS(certificate: PrivateCertificate) -> Any:
    """
    The next hop's answer to STARTTLS: 220, then the handshake.
    """

    def act(hop: HostileNextHop) -> None:
        hop.transport.write(b"220 2.0.0 Ready\r\n")  # type: ignore[union-attr]
        hop.transport.startTLS(certificate.options())  # type: ignore[union-attr]

    return act


def answerThenDeaf(hop: HostileNextHop) -> None:
    """
    The next hop's answer to QUIT: 221, then nothing more is read (over
    TLS: the client's close alert is never answered), the connection kept.
    """
    hop.transport.write(b"221 2.0.0 Bye\r\n")  # type: ignore[union-attr]
    hop.transport.pauseProducing()  # type: ignore[union-attr]
    hop.factory.deaf.append(hop)  # type: ignore[attr-defined]


class HostileQuitTests(HostileTestsMixin, TestCase):
    """
    The relay and LMTP-delivery handlers, one session per message, in front
    of a next hop on 127.0.0.1 that misbehaves after QUIT: the open file
    descriptors of this process come back to what they were after each
    session's deadline (but for the next hop's own deaf connections).
    """

    def setUp(self) -> None:
        self.patch(clientprotocol, "QUIT_TIMEOUT", SHORT_QUIT)
        if hasattr(clientsession, "QUIT_TIMEOUT"):
            self.patch(clientsession, "QUIT_TIMEOUT", SHORT_QUIT)

    async def start(self, script: dict[str, Any], lmtp: bool = False, **relay: Any) -> int:
        """
        Start the next hop with C{script}, and a front server passing mail
        on to it, one session per message; return the front's port.
        """
        self.hop = HostileFactory(script)
        listening = reactor.listenTCP(0, self.hop, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(listening.stopListening)
        port = listening.getHost().port
        handler: Any
        if lmtp:
            endpoint = f"tcp:127.0.0.1:{port}"
            handler = LMTPDeliveryHandler(endpoint, heloName="relay.example", idleTimeout=0)
        else:
            relay.setdefault("tls", "none")
            handler = RelayHandler(
                "127.0.0.1", port, heloName="relay.example", idleTimeout=0, **relay
            )
        self.handler = closeWith(self, handler)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server, frontPort = await startServer(self, handler, lmtp=self.lmtpFront)
        return int(frontPort)

    async def fdsSettle(self, expected: int) -> int:
        """
        Wait, at most ten deadlines, for the open file descriptors to come
        down to C{expected}; return how many there are.
        """
        count = openFds()
        for _ in range(100):
            if count <= expected:
                break
            await deferLater(reactor, SHORT_QUIT / 10, lambda: None)
            count = openFds()
        return count

    async def sessions(self, port: int, messages: int) -> None:
        """
        Send C{messages} messages through the front server on C{port}, one
        session to the next hop each; after each, the descriptors of that
        session are closed within the deadline.
        """
        client = await self.client(port)
        self.hop.deaf = []
        base = openFds()
        for index in range(messages):
            replies = await self.transaction(client)
            self.assertEqual(code(replies[-1]), b"250 2.0.0", replies)
            for _ in range(100):
                if self.hop.commands.count(b"QUIT") > index:
                    break
                await deferLater(reactor, SHORT_QUIT / 10, lambda: None)
            self.assertEqual(self.hop.commands.count(b"QUIT"), index + 1)
            # The next hop's deaf connections are its own: ours must go.
            expected = base + len(self.hop.deaf)
            count = await self.fdsSettle(expected)
            self.assertEqual(count, expected, f"message {index}: {count - base} descriptors held")
        for hop in self.hop.deaf:
            hop.transport.abortConnection()
        self.assertEqual(await self.fdsSettle(base), base)

    async def test_tlsQuitAnsweredThenDeaf(self) -> None:
        """
        Over TLS, the next hop answers QUIT, then never reads our close
        alert (nor answers it): each session's connection is cut off at
        the deadline, and the pool's close completes.
        """
        ca = CertificateAuthority(self.mktemp())
        issued = ca.server("localhost")
        certificate = PrivateCertificate.loadPEM(issued.certificatePEM + issued.keyPEM)
        script = {
            "ehlo": b"250-nexthop.example\r\n250-8BITMIME\r\n250 STARTTLS\r\n",
            "starttls": startTLS(certificate),
            "quit": answerThenDeaf,
        }
        port = await self.start(script, tls="required", verify=False)
        await self.sessions(port, 5)
        self.assertEqual(len(self.hop.sessions), 5)
        self.assertEqual(len(self.hop.deaf), 5)
        await self.handler.close().addTimeout(SHORT_QUIT * 10, reactor)

    async def test_plainQuitAnsweredThenDeaf(self) -> None:
        """
        The same in plain text, relay and LMTP delivery.
        """
        for lmtp in (False, True):
            self.lmtpFront = lmtp
            port = await self.start({"quit": answerThenDeaf}, lmtp=lmtp)
            await self.sessions(port, 5)

    async def test_quitNeverAnswered(self) -> None:
        """
        A next hop that never answers QUIT (and keeps the connection):
        each session's connection is cut off at the deadline.
        """
        for lmtp in (False, True):
            self.lmtpFront = lmtp
            port = await self.start({"quit": silent}, lmtp=lmtp)
            await self.sessions(port, 5)
