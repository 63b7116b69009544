# -*- test-case-name: tests.test_relay -*-
"""
Tests for L{RelayHandler} and L{LMTPDeliveryHandler}: a client sends to a
front server running the handler, which passes the message on to a second
real server on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.certs import CertificateAuthority
from tests.test_client import Recorder, endpointFor, startServer
from twisted_smtpd import SMTPError
from twisted_smtpd._client import DeliveryResult, deliver
from twisted_smtpd._session import Session
from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler
from twisted_smtpd.handlers.relay import RelayHandler, loadTrustRoot
from twisted_smtpd.interfaces import ISMTPHandler

BODY = b"Subject: relayed\r\n\r\n.a line with a dot\r\nend\r\n"


class Refusing(Recorder):
    """
    A recorder that refuses every session at the greeting.
    """

    def onConnect(self, session: Session) -> object:
        raise SMTPError(554, "Go away", "5.7.1")


async def send(port: int, **kwargs: Any) -> DeliveryResult:
    """
    Send a message to the front server on C{port} and return the outcome.
    """
    arguments: dict[str, Any] = {
        "sender": "alice@example.com",
        "recipients": ["bob@example.org"],
        "stream": BODY,
        "heloName": "client.example",
        "tls": "none",
        "reactor": reactor,
    }
    arguments.update(kwargs)
    return await deliver(endpointFor(port), **arguments)


def replies(result: DeliveryResult) -> list[tuple[int, str | None]]:
    return [(r.reply.code, r.reply.enhanced) for r in result.recipients]


class ConstructionTests(SynchronousTestCase):
    """
    Arguments are checked when the handlers are made.
    """

    def test_interface(self) -> None:
        """
        Both handlers provide L{ISMTPHandler}.
        """
        self.assertTrue(verifyObject(ISMTPHandler, RelayHandler("smarthost", heloName="me")))
        self.assertTrue(
            verifyObject(ISMTPHandler, LMTPDeliveryHandler("tcp:127.0.0.1:24", heloName="me"))
        )

    def test_invalid(self) -> None:
        """
        A bad TLS mode, port, half credentials or endpoint string raise
        L{ValueError}.
        """
        self.assertRaises(ValueError, RelayHandler, "h", tls="sometimes")  # type: ignore[arg-type]
        self.assertRaises(ValueError, RelayHandler, "h", 0)
        self.assertRaises(ValueError, RelayHandler, "h", username="u")
        self.assertRaises(ValueError, LMTPDeliveryHandler, "nonsense:x")

    def test_trustRootBundle(self) -> None:
        """
        C{caCertificates} may hold several CAs; a file without any is an
        error.
        """
        first = CertificateAuthority(self.mktemp(), "first")
        second = CertificateAuthority(self.mktemp(), "second")
        bundle = self.mktemp()
        with open(bundle, "wb") as out:
            for path in (first.certificatePath, second.certificatePath):
                with open(path, "rb") as f:
                    out.write(f.read())
        self.assertIsNotNone(loadTrustRoot(bundle))
        empty = self.mktemp()
        with open(empty, "wb") as out:
            out.write(b"nothing here\n")
        self.assertRaises(ValueError, loadTrustRoot, empty)


class RelayTests(TestCase):
    """
    L{RelayHandler} between a client and a smarthost.
    """

    async def front(self, smarthost: Recorder, frontOptions: Any = None, **relay: Any) -> int:
        """
        Start the smarthost and a front server relaying to it; return the
        front server's port.
        """
        server, port = await startServer(self, smarthost, **(relay.pop("smarthostOptions", {})))
        relay.setdefault("tls", "none")
        handler = RelayHandler(
            relay.pop("host", "127.0.0.1"), port, heloName="relay.example", **relay
        )
        front, frontPort = await startServer(self, handler, **(frontOptions or {}))
        return frontPort

    async def test_relayed(self) -> None:
        """
        The smarthost gets the message byte for byte with its envelope; the
        client's 250 comes after the smarthost accepted it.
        """
        smarthost = Recorder()
        port = await self.front(smarthost)
        result = await send(port, recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(250, "2.0.0")] * 2)
        self.assertIn("relayed to 127.0.0.1", result.recipients[0].reply.text)
        [message] = smarthost.messages
        self.assertEqual(message.body, BODY)
        self.assertEqual(message.sender, "alice@example.com")
        self.assertEqual(message.recipients, ["bob@example.org", "carol@example.net"])

    async def test_largeMessage(self) -> None:
        """
        A message much larger than any buffer streams through the relay
        whole, over TLS.
        """
        smarthost = Recorder()
        port = await self.tlsFront(smarthost, tls="required")
        body = b"Subject: big\r\n\r\n" + b".0123456789abcdef\r\n" * 300_000
        result = await send(port, stream=body)
        self.assertEqual(replies(result), [(250, "2.0.0")])
        self.assertEqual(smarthost.messages[0].body, body)

    async def test_permanentRefusal(self) -> None:
        """
        A recipient the smarthost refuses with 5xx is refused with its code
        and text.
        """
        smarthost = Recorder()
        smarthost.refuse["bob@example.org"] = SMTPError(550, "No such user here", "5.1.1")
        port = await self.front(smarthost)
        result = await send(port)
        self.assertEqual(replies(result), [(550, "5.1.1")])
        self.assertEqual(result.recipients[0].reply.text, "No such user here")
        self.assertEqual(smarthost.messages, [])

    async def test_temporaryWins(self) -> None:
        """
        When every recipient is refused, a temporary refusal is the reply if
        there is one.
        """
        smarthost = Recorder()
        smarthost.refuse["bob@example.org"] = SMTPError(550, "No such user", "5.1.1")
        smarthost.refuse["carol@example.net"] = SMTPError(452, "Mailbox full", "4.2.2")
        port = await self.front(smarthost)
        result = await send(port, recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(452, "4.2.2")] * 2)

    async def test_partialRefusal(self) -> None:
        """
        When only some recipients are refused, the message is accepted and
        the reply text names the refused ones.
        """
        smarthost = Recorder()
        smarthost.refuse["bob@example.org"] = SMTPError(550, "No such user", "5.1.1")
        port = await self.front(smarthost)
        result = await send(port, recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(250, "2.0.0")] * 2)
        self.assertIn("bob@example.org: 550 5.1.1 No such user", result.recipients[0].reply.text)
        self.assertEqual(smarthost.messages[0].recipients, ["carol@example.net"])

    async def test_messageRefused(self) -> None:
        """
        A refusal after the body is passed on.
        """
        smarthost = Recorder()

        async def refuse(stream: Any, session: Session) -> object:
            await stream.drain()
            raise SMTPError(554, "Looks like spam", "5.7.1")

        smarthost.onData = refuse  # type: ignore[method-assign]
        port = await self.front(smarthost)
        result = await send(port)
        self.assertEqual(result.recipients[0].reply, result.dataReply)
        self.assertEqual(replies(result), [(554, "5.7.1")])

    async def test_sessionRefusedIsTemporary(self) -> None:
        """
        A smarthost refusing the session with 5xx is a temporary failure for
        the client: the relay's configuration, not the message, is at fault.
        """
        port = await self.front(Refusing())
        result = await send(port)
        self.assertEqual(replies(result), [(451, "4.4.1")])

    async def test_unreachable(self) -> None:
        """
        A smarthost that cannot be reached: 451 4.4.1.
        """
        listening = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        closed = listening.getHost().port
        await listening.stopListening()
        handler = RelayHandler("127.0.0.1", closed, tls="none", heloName="relay.example")
        front, port = await startServer(self, handler)
        result = await send(port)
        self.assertEqual(replies(result), [(451, "4.4.1")])

    async def test_bodyTooLarge(self) -> None:
        """
        A message the front server refuses for its size is not delivered to
        the smarthost: the connection is dropped before the final period.
        """
        smarthost = Recorder()
        port = await self.front(smarthost, frontOptions={"size": 1000})
        result = await send(port, stream=b"x" * 5000 + b"\r\n")
        self.assertEqual(replies(result), [(552, "5.3.4")])
        self.assertEqual(smarthost.messages, [])

    async def test_lmtpFront(self) -> None:
        """
        When the front server speaks LMTP, each recipient gets the
        smarthost's verdict for it.
        """
        smarthost = Recorder()
        smarthost.refuse["bob@example.org"] = SMTPError(550, "No such user", "5.1.1")
        port = await self.front(smarthost, frontOptions={"lmtp": True})
        result = await send(port, lmtp=True, recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(550, "5.1.1"), (250, "2.0.0")])

    async def tlsFront(self, smarthost: Recorder, **relay: Any) -> int:
        ca = CertificateAuthority(self.mktemp())
        issued = ca.server("localhost")
        return await self.front(
            smarthost,
            host="localhost",
            smarthostOptions={
                "certificate": issued.certificatePath,
                "privateKey": issued.keyPath,
            },
            caCertificates=ca.certificatePath,
            **relay,
        )

    async def test_requiredTLS(self) -> None:
        """
        With C{tls="required"} and the smarthost's CA, the message travels
        over a verified TLS session.
        """
        smarthost = Recorder()
        port = await self.tlsFront(smarthost, tls="required")
        result = await send(port)
        self.assertEqual(replies(result), [(250, "2.0.0")])
        self.assertTrue(smarthost.messages[0].session.secure)

    async def test_untrustedCertificate(self) -> None:
        """
        A smarthost certificate that does not verify: 451 4.7.5, nothing
        delivered.
        """
        smarthost = Recorder()
        other = CertificateAuthority(self.mktemp(), "another CA")
        # Trust only a CA that did not sign the smarthost's certificate.
        relay = RelayHandler(
            "localhost",
            await self._smarthostPort(smarthost),
            tls="opportunistic",
            caCertificates=other.certificatePath,
            heloName="relay.example",
        )
        front, port = await startServer(self, relay)
        result = await send(port)
        self.assertEqual(replies(result), [(451, "4.7.5")])
        self.assertEqual(smarthost.messages, [])

    async def _smarthostPort(self, smarthost: Recorder) -> int:
        ca = CertificateAuthority(self.mktemp())
        issued = ca.server("localhost")
        server, port = await startServer(
            self, smarthost, certificate=issued.certificatePath, privateKey=issued.keyPath
        )
        return port


class LMTPDeliveryTests(TestCase):
    """
    L{LMTPDeliveryHandler} in front of a real LMTP server.
    """

    async def front(self, store: Recorder, **frontOptions: Any) -> int:
        server, lmtpPort = await startServer(self, store, lmtp=True)
        handler = LMTPDeliveryHandler(
            f"tcp:127.0.0.1:{lmtpPort}", heloName="front.example", reactor=reactor
        )
        front, port = await startServer(self, handler, **frontOptions)
        return port

    async def test_lmtpToLmtp(self) -> None:
        """
        An LMTP front passes each recipient's reply on.
        """
        store = Recorder()
        store.lmtpRefuse["carol@example.net"] = SMTPError(552, "Quota exceeded", "5.2.2")
        port = await self.front(store, lmtp=True)
        result = await send(port, lmtp=True, recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(250, "2.0.0"), (552, "5.2.2")])
        self.assertEqual(result.recipients[0].reply.text, "stored")
        self.assertEqual(store.messages[0].body, BODY)

    async def test_smtpAllAccepted(self) -> None:
        """
        An SMTP front answers 250 when every recipient was accepted.
        """
        store = Recorder()
        port = await self.front(store)
        result = await send(port, recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(250, "2.0.0")] * 2)
        self.assertEqual(store.messages[0].recipients, ["bob@example.org", "carol@example.net"])

    async def test_smtpTemporaryFirst(self) -> None:
        """
        An SMTP front answers with a temporary refusal when there is one,
        even after a permanent one.
        """
        store = Recorder()
        store.lmtpRefuse["bob@example.org"] = SMTPError(550, "Unknown", "5.1.1")
        store.lmtpRefuse["carol@example.net"] = SMTPError(452, "Full", "4.2.2")
        port = await self.front(store)
        result = await send(port, recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(452, "4.2.2")] * 2)

    async def test_unreachable(self) -> None:
        """
        An LMTP server that is down is a temporary failure.
        """
        listening = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        closed = listening.getHost().port
        await listening.stopListening()
        handler = LMTPDeliveryHandler(f"tcp:127.0.0.1:{closed}", heloName="front.example")
        front, port = await startServer(self, handler)
        result = await send(port)
        self.assertEqual(replies(result), [(451, "4.4.1")])
