# -*- test-case-name: tests.test_relaynexthopnames -*-
"""
What the client of a relay or LMTP-delivery front learns when the next hop
fails: the code, the enhanced code and generic words, never the next hop's
name or address (an internal host) nor the words of a failure that name
hosts (a DNS, certificate or greeting text); the one log line says all of
it, escaped.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.certs import CertificateAuthority
from tests.test_client import Recorder, startServer
from tests.test_relay import closeWith
from tests.test_relayhostile import HostileTestsMixin, RawClient, code, thenClose
from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler
from twisted_smtpd.handlers.relay import RelayHandler

#: A host name the next hop gives in its greeting and EHLO reply.
INTERNAL = b"smarthost.internal.example"


def closedPort() -> int:
    """
    A port of 127.0.0.1 nothing listens on.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NextHopNamesTests(HostileTestsMixin, TestCase):
    """
    L{RelayHandler} and L{LMTPDeliveryHandler} do not tell their client who
    the next hop is.
    """

    def assertNoNames(self, reply: bytes, *names: bytes) -> None:
        """
        C{reply} names none of C{names} (the next hop's name, address,
        port).
        """
        for name in names:
            self.assertNotIn(name, reply)

    def hopLines(self) -> list[str]:
        return [line for line in self.logLines() if "next hop" in line]

    async def test_unreachable(self) -> None:
        """
        A smarthost that cannot be reached (nothing listens): 451 4.4.1 at
        MAIL saying the next hop cannot be reached, without its name, its
        port or the system's words; the log line names it and gives them.
        """
        port = closedPort()
        for handler in (
            RelayHandler("localhost", port, tls="none", heloName="relay.example", timeout=10),
            LMTPDeliveryHandler(f"tcp:localhost:{port}", heloName="relay.example", timeout=10),
        ):
            self.handler = closeWith(self, handler)
            front, frontPort = await self.frontFor(handler)
            client = await self.client(frontPort)
            [reply] = await self.transaction(client)
            self.assertEqual(code(reply), b"451 4.4.1", reply)
            self.assertIn(b"next hop cannot be reached", reply)
            self.assertNoNames(reply, b"localhost", b"%d" % port, b"refused")
            [line] = self.hopLines()[-1:]
            self.assertIn(f"localhost:{port}", line)
            self.assertIn("refused", line)

    async def frontFor(self, handler: Any) -> tuple[Any, int]:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        return await startServer(self, handler)

    async def test_refusedGreetingNamesNoHost(self) -> None:
        """
        A next hop refusing its greeting or EHLO with its host name in the
        text (as greetings are written): the client gets 451 giving the
        code only; neither the next hop's words nor its address reach it.
        The log line quotes both.
        """
        cases = {
            "greeting": b"554 " + INTERNAL + b" ESMTP not accepting mail\r\n",
            "ehlo": b"421 4.3.2 " + INTERNAL + b" busy\r\n",
        }
        for step, answer in cases.items():
            port = await self.start({step: answer})
            client = await self.client(port)
            [reply] = await self.transaction(client)
            self.assertEqual(code(reply)[:3], b"451", reply)
            self.assertIn(b"next hop refused the session", reply)
            self.assertNoNames(reply, INTERNAL, b"127.0.0.1")
            line = self.hopLines()[-1]
            self.assertIn(INTERNAL.decode(), line)
            self.assertIn("127.0.0.1:", line)

    async def test_lostNamesNoHost(self) -> None:
        """
        A next hop that closes instead of answering MAIL: 451 4.4.2 saying
        the connection to the next hop failed, without its address.
        """
        port = await self.start({"mail": thenClose(b"")})
        client = await self.client(port)
        [reply] = await self.transaction(client)
        self.assertEqual(code(reply), b"451 4.4.2", reply)
        self.assertIn(b"connection to the next hop failed", reply)
        self.assertNoNames(reply, b"127.0.0.1", b"%d" % port)


class CertificateForAnotherNameTests(TestCase):
    """
    A smarthost offering STARTTLS with a certificate for another name,
    behind the default (verifying, opportunistic) relay.
    """

    async def test_wrongName(self) -> None:
        """
        The certificate, from a trusted CA, names another host: nothing is
        sent in plain text instead (the smarthost got no message, and no
        second connection); the client gets 451 4.7.5 without the names
        the certificate error gives; one log line gives them, in words.
        """
        ca = CertificateAuthority(self.mktemp())
        issued = ca.server(INTERNAL.decode())
        smarthost = Recorder()
        server, smarthostPort = await startServer(
            self, smarthost, certificate=issued.certificatePath, privateKey=issued.keyPath
        )
        relay = closeWith(
            self,
            RelayHandler(
                "localhost",
                smarthostPort,
                caCertificates=ca.certificatePath,
                heloName="relay.example",
                timeout=10,
            ),
        )
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        front, port = await startServer(self, relay)
        client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawClient())
        self.addCleanup(client.transport.loseConnection)
        await client.replies.get()
        await client.send(b"EHLO client.example\r\n")
        reply = await client.send(b"MAIL FROM:<alice@example.com>\r\n")
        self.assertEqual(code(reply), b"451 4.7.5", reply)
        self.assertIn(b"no secure session with the next hop", reply)
        self.assertNotIn(INTERNAL, reply)
        self.assertNotIn(b"localhost", reply)
        self.assertEqual(smarthost.messages, [])
        self.assertEqual(relay.pool.opened, 0)
        lines = [formatEvent(e) for e in events]
        self.assertEqual([line for line in lines if "plain text" in line], [])
        [line] = [line for line in lines if "next hop" in line]
        self.assertIn(f"localhost:{smarthostPort}", line)
        self.assertIn("4.7.5", line)
        self.assertIn("the certificate is not valid for localhost", line)
        self.assertNotIn("DNS_ID", line)
