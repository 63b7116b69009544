# -*- test-case-name: tests.test_relay -*-
"""
Tests for L{RelayHandler} and L{LMTPDeliveryHandler}: a client sends to a
front server running the handler, which passes the message on to a second
real server on 127.0.0.1.
"""

from __future__ import annotations

import email
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.certs import CertificateAuthority
from tests.test_client import Recorder, endpointFor, sessionRequest, startServer
from tests.tracing import untraced
from twisted_smtpd import SMTPError
from twisted_smtpd._core.address import Address
from twisted_smtpd._core.session import Envelope, Session
from twisted_smtpd._smtpclient.client import DeliveryError, DeliveryResult, deliver
from twisted_smtpd._smtpclient.clientsession import ClientSession, openSession
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers._proxying import ProxyingHandler
from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler
from twisted_smtpd.handlers.relay import RelayHandler, loadTrustRoot
from twisted_smtpd.interfaces import IMessageStream, ISMTPHandler

BODY = b"Subject: relayed\r\n\r\n.a line with a dot\r\nend\r\n"


class Refusing(Recorder):
    """
    A recorder that refuses every session at the greeting.
    """

    def onConnect(self, session: Session) -> object:
        raise SMTPError(554, "Go away", "5.7.1")


class EnvelopeRecorder(Recorder):
    """
    A recorder that also keeps each message's envelope (with the ESMTP
    parameters it came with).
    """

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    async def onData(self, stream: IMessageStream, session: Session) -> object:
        self.envelopes.append(session.envelope)
        return await super().onData(stream, session)


def closeWith(testCase: TestCase, handler: ProxyingHandler) -> ProxyingHandler:
    """
    Close C{handler}'s sessions to the next hop after the test, before the
    servers started earlier stop.
    """
    testCase.addCleanup(handler.close)
    return handler


def quitAfter(testCase: TestCase, session: ClientSession) -> None:
    """
    Say QUIT on C{session} after the test, and wait for it: through a
    Deferred, since the trial of the oldest Twisted supported (23.10) does
    not wait for a coroutine that a cleanup returns, and never runs it.
    """
    testCase.addCleanup(lambda: Deferred.fromCoroutine(session.quit()))


async def clientSession(port: int, lmtp: bool = False) -> ClientSession:
    """
    A session to the front server on C{port}, for tests that send commands
    one by one (with ESMTP parameters, BDAT).
    """
    return await openSession(endpointFor(port), sessionRequest(lmtp), reactor)


def bodyStream(body: bytes) -> MessageStream:
    """
    A finished stream holding C{body}.
    """
    stream = MessageStream()
    stream._write(body)
    stream._finish()
    return stream


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


async def outcome(port: int, **kwargs: Any) -> list[tuple[int, str | None]]:
    """
    Each recipient's final reply code and enhanced code; when the whole
    delivery failed (at MAIL), that failure for each of them.
    """
    try:
        result = await send(port, **kwargs)
    except DeliveryError as e:
        return [(e.code, e.enhanced)] * len(kwargs.get("recipients", ["bob@example.org"]))
    return replies(result)


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
    L{RelayHandler} between a client and a smarthost: each command is
    passed on and answered with the smarthost's verdict.
    """

    async def front(self, smarthost: Recorder, frontOptions: Any = None, **relay: Any) -> int:
        """
        Start the smarthost and a front server relaying to it; return the
        front server's port.
        """
        server, port = await startServer(self, smarthost, **(relay.pop("smarthostOptions", {})))
        relay.setdefault("tls", "none")
        self.handler = closeWith(
            self,
            RelayHandler(relay.pop("host", "127.0.0.1"), port, heloName="relay.example", **relay),
        )
        self.frontServer, frontPort = await startServer(self, self.handler, **(frontOptions or {}))
        return frontPort

    def firstClose(self) -> Deferred[None]:
        """
        A L{Deferred} firing when the front server's first session closes.
        """
        closed: Deferred[None] = Deferred()

        def observe(event: str, session: Session, data: object) -> None:
            if not closed.called:
                closed.callback(None)

        observe.events = {"close"}  # type: ignore[attr-defined]
        self.frontServer.addObserver(observe)
        return closed

    async def test_relayed(self) -> None:
        """
        The smarthost gets the message byte for byte with its envelope,
        behind the relay's C{Received:} field; the client's 250 comes after
        the smarthost accepted it, with the smarthost's own words.
        """
        smarthost = Recorder()
        port = await self.front(smarthost)
        result = await send(port, recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(250, "2.0.0")] * 2)
        self.assertEqual(result.recipients[0].reply.text, "queued as Q1")
        [message] = smarthost.messages
        # Two recipients: the field names neither (no for clause).
        self.assertEqual(untraced(self, message.body, recipient=None), BODY)
        self.assertEqual(message.sender, "alice@example.com")
        self.assertEqual(message.recipients, ["bob@example.org", "carol@example.net"])

    async def test_noDelay(self) -> None:
        """
        Sessions to the smarthost have TCP_NODELAY set: each command is a
        small write waiting for its reply, which Nagle's algorithm would
        hold back.
        """
        await self.front(Recorder())
        session = await self.handler.openSession()
        quitAfter(self, session)
        handle = session._protocol.transport.getHandle()  # type: ignore[union-attr]
        self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)

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
        self.assertEqual(untraced(self, smarthost.messages[0].body), body)

    async def test_permanentRefusalAtRcpt(self) -> None:
        """
        A recipient the smarthost refuses with 5xx is refused at RCPT with
        its code and text, and the others get the message.
        """
        smarthost = Recorder()
        smarthost.refuse["bob@example.org"] = SMTPError(550, "No such user here", "5.1.1")
        port = await self.front(smarthost)
        client = await clientSession(port)
        quitAfter(self, client)
        self.assertEqual((await client.mail("alice@example.com", "")).code, 250)
        refused = await client.rcpt("bob@example.org", "")
        self.assertEqual((refused.code, refused.enhanced), (550, "5.1.1"))
        self.assertEqual(refused.text, "No such user here")
        self.assertEqual((await client.rcpt("carol@example.net", "")).code, 250)
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        self.assertEqual(smarthost.messages[0].recipients, ["carol@example.net"])

    async def test_closingRefusalAtRcptIsNotOurs(self) -> None:
        """
        A smarthost refusing a recipient with 521 (and closing) refuses it
        to our client with 550 and the smarthost's words: a 521 of our own
        would close our client's session.  The session goes on: the next
        recipient is deferred (the smarthost is gone), and a new
        transaction delivers.
        """
        smarthost = Recorder()
        smarthost.refuse["bob@example.org"] = SMTPError(521, "Not here", "5.3.2")
        port = await self.front(smarthost)
        client = await clientSession(port)
        quitAfter(self, client)
        self.assertEqual((await client.mail("alice@example.com", "")).code, 250)
        refused = await client.rcpt("bob@example.org", "")
        self.assertEqual((refused.code, refused.enhanced, refused.text), (550, "5.3.2", "Not here"))
        self.assertEqual((await client.rcpt("carol@example.net", "")).code, 451)
        self.assertEqual((await client.rset()).code, 250)
        self.assertEqual((await client.mail("alice@example.com", "")).code, 250)
        self.assertEqual((await client.rcpt("carol@example.net", "")).code, 250)
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        self.assertEqual(smarthost.messages[0].recipients, ["carol@example.net"])

    async def test_temporaryRefusalAtRcpt(self) -> None:
        """
        A recipient the smarthost defers with 4xx gets that 4xx at RCPT, so
        the client keeps it and tries again; it is not dropped.
        """
        smarthost = Recorder()
        smarthost.refuse["carol@example.net"] = SMTPError(450, "Greylisted", "4.7.1")
        port = await self.front(smarthost)
        result = await send(port, recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(250, "2.0.0"), (450, "4.7.1")])
        self.assertEqual(result.recipients[1].reply.text, "Greylisted")
        self.assertEqual(smarthost.messages[0].recipients, ["bob@example.org"])

    async def test_allRefused(self) -> None:
        """
        When the smarthost refuses every recipient, no message is sent.
        """
        smarthost = Recorder()
        smarthost.refuse["bob@example.org"] = SMTPError(550, "No such user", "5.1.1")
        smarthost.refuse["carol@example.net"] = SMTPError(452, "Mailbox full", "4.2.2")
        port = await self.front(smarthost)
        result = await send(port, recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(550, "5.1.1"), (452, "4.2.2")])
        self.assertEqual(smarthost.messages, [])

    async def test_mailRefused(self) -> None:
        """
        A sender the smarthost refuses is refused at MAIL with its reply.
        """
        smarthost = Recorder()

        def refuseSender(address: Any, session: Session) -> None:
            raise SMTPError(553, "Sender rejected\r\n221 injected", "5.7.1")

        smarthost.onMailFrom = refuseSender  # type: ignore[method-assign]
        port = await self.front(smarthost)
        client = await clientSession(port)
        quitAfter(self, client)
        reply = await client.mail("alice@example.com", "")
        self.assertEqual((reply.code, reply.enhanced), (553, "5.7.1"))
        self.assertEqual(reply.text, "Sender rejected\n221 injected")

    async def test_closingRefusalAtMailDropsTheSession(self) -> None:
        """
        A smarthost refusing MAIL with 421 (and closing) refuses it to our
        client with 451 and its words, and its session is dropped at once,
        not kept in the pool for the next message.
        """
        smarthost = Recorder()

        def closing(address: Any, session: Session) -> None:
            raise SMTPError(421, "Shutting down", "4.3.2")

        smarthost.onMailFrom = closing  # type: ignore[method-assign]
        port = await self.front(smarthost)
        client = await clientSession(port)
        quitAfter(self, client)
        reply = await client.mail("alice@example.com", "")
        self.assertEqual((reply.code, reply.enhanced, reply.text), (451, "4.3.2", "Shutting down"))
        self.assertEqual((self.handler.pool.busy, self.handler.pool.idle), (0, 0))

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
        the client, at MAIL: the relay's configuration, not the message, is
        at fault.
        """
        port = await self.front(Refusing())
        self.assertEqual(await outcome(port), [(451, "4.4.1")])

    async def test_clientLeavesDuringMail(self) -> None:
        """
        A client that is gone (or timed out) while its MAIL is on its way
        to the smarthost does not keep the session to the smarthost: once
        MAIL is answered there, it serves the next message.
        """
        reached: Deferred[None] = Deferred()
        gate: Deferred[None] = Deferred()

        class SlowMail(Recorder):
            def onMailFrom(self, address: Address, session: Session) -> object:
                if reached.called:
                    return None
                reached.callback(None)
                return gate

        port = await self.front(SlowMail(), maxSessions=1, timeout=5)
        closed = self.firstClose()
        leaving = await endpointFor(port).connect(Factory.forProtocol(Protocol))
        leaving.transport.write(b"EHLO client.example\r\nMAIL FROM:<alice@example.com>\r\n")
        await reached
        # Gone at once (a FIN would be answered first, its MAIL included).
        leaving.transport.abortConnection()
        await closed
        gate.callback(None)
        # Before the fix: the session to the smarthost stayed with the
        # transaction of the session gone, and this message waited 5 s for
        # it, then got 451.
        self.assertEqual(replies(await send(port)), [(250, "2.0.0")])

    async def test_clientLeavesDuringRcpt(self) -> None:
        """
        A client gone while its RCPT is on its way to the smarthost does
        not hand the session to the smarthost to the next message before
        that RCPT is answered: the next message is relayed on a session
        of its own, without waiting behind the reply, and the first
        session goes back to the pool once its RCPT is answered.
        """
        reached: Deferred[None] = Deferred()
        gate: Deferred[None] = Deferred()

        class SlowRcpt(Recorder):
            def onRcptTo(self, address: Address, session: Session) -> object:
                if reached.called:
                    return None
                reached.callback(None)
                return gate

        smarthost = SlowRcpt()
        port = await self.front(smarthost, maxSessions=2, timeout=5)
        closed = self.firstClose()
        leaving = await endpointFor(port).connect(Factory.forProtocol(Protocol))
        leaving.transport.write(
            b"EHLO client.example\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\n"
        )
        await reached
        leaving.transport.abortConnection()
        await closed
        # The close event comes before onClose: let the session end first.
        await deferLater(reactor, 0, lambda: None)
        # Before the fix: the session was idle in the pool with the RCPT's
        # reply still to come, and the next message's RSET waited behind
        # it, 5 s, before a new session was opened.
        self.assertEqual((self.handler.pool.busy, self.handler.pool.idle), (1, 0))
        self.assertEqual(replies(await send(port)), [(250, "2.0.0")])
        self.assertEqual(self.handler.pool.opened, 2)
        gate.callback(None)
        while self.handler.pool.idle < 2:
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.handler.pool.busy, 0)
        self.assertEqual(len(smarthost.messages), 1)

    async def test_unreachable(self) -> None:
        """
        A smarthost that cannot be reached: 451 4.4.1 at MAIL.
        """
        listening = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        closed = listening.getHost().port
        await listening.stopListening()
        handler = closeWith(
            self, RelayHandler("127.0.0.1", closed, tls="none", heloName="relay.example")
        )
        front, port = await startServer(self, handler)
        self.assertEqual(await outcome(port), [(451, "4.4.1")])

    async def test_bodyTooLarge(self) -> None:
        """
        A message the front server refuses for its size is not delivered to
        the smarthost, and the next message still goes through.
        """
        smarthost = Recorder()
        port = await self.front(smarthost, frontOptions={"size": 1000})
        result = await send(port, stream=b"x" * 5000 + b"\r\n")
        self.assertEqual(replies(result), [(552, "5.3.4")])
        self.assertEqual(smarthost.messages, [])
        self.assertEqual(replies(await send(port)), [(250, "2.0.0")])
        self.assertEqual(len(smarthost.messages), 1)

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
        options = relay.pop("smarthostOptions", {})
        return await self.front(
            smarthost,
            host="localhost",
            smarthostOptions={
                "certificate": issued.certificatePath,
                "privateKey": issued.keyPath,
                **options,
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

    async def test_requiredTLSNotOffered(self) -> None:
        """
        With C{tls="required"}, a smarthost that does not offer STARTTLS
        gets nothing: 451 4.7.5 at MAIL.
        """
        smarthost = Recorder()
        port = await self.tlsFront(
            smarthost, tls="required", smarthostOptions={"hideSTARTTLS": True}
        )
        self.assertEqual(await outcome(port), [(451, "4.7.5")])
        self.assertEqual(smarthost.messages, [])

    async def test_untrustedCertificate(self) -> None:
        """
        A smarthost certificate that does not verify: 451 4.7.5, nothing
        delivered; the log line names the reason in words, not a Python
        repr, the client's reply does not.
        """
        smarthost = Recorder()
        other = CertificateAuthority(self.mktemp(), "another CA")
        # Trust only a CA that did not sign the smarthost's certificate.
        relay = closeWith(
            self,
            RelayHandler(
                "localhost",
                await self._smarthostPort(smarthost),
                tls="opportunistic",
                caCertificates=other.certificatePath,
                heloName="relay.example",
            ),
        )
        front, port = await startServer(self, relay)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        with self.assertRaises(DeliveryError) as caught:
            await send(port)
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (451, "4.7.5"))
        self.assertNotIn("certificate", caught.exception.message)
        [line] = [formatEvent(e) for e in events if "next hop" in formatEvent(e)]
        self.assertIn("certificate verify failed", line)
        self.assertNotIn("[(", line)
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

    async def front(self, store: Recorder, storeOptions: Any = None, **frontOptions: Any) -> int:
        server, lmtpPort = await startServer(self, store, lmtp=True, **(storeOptions or {}))
        self.handler = closeWith(
            self,
            LMTPDeliveryHandler(
                f"tcp:127.0.0.1:{lmtpPort}", heloName="front.example", reactor=reactor
            ),
        )
        front, port = await startServer(self, self.handler, **frontOptions)
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
        self.assertEqual(
            untraced(
                self, store.messages[0].body, by="front.example", protocol="LMTP", recipient=None
            ),
            BODY,
        )

    async def test_unknownRecipientAtRcpt(self) -> None:
        """
        A recipient the LMTP server does not know is refused at RCPT with
        its reply; the message is stored once, for the others, and the
        client's reply after the body is 250.
        """
        store = Recorder()
        store.refuse["nobody@example.org"] = SMTPError(550, "User unknown", "5.1.1")
        port = await self.front(store)
        result = await send(port, recipients=["bob@example.org", "nobody@example.org"])
        self.assertEqual(replies(result), [(250, "2.0.0"), (550, "5.1.1")])
        self.assertEqual(len(store.messages), 1)
        self.assertEqual(store.messages[0].recipients, ["bob@example.org"])

    async def test_smtpAllAccepted(self) -> None:
        """
        An SMTP front answers 250 when every recipient was accepted.
        """
        store = Recorder()
        port = await self.front(store)
        result = await send(port, recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(250, "2.0.0")] * 2)
        self.assertEqual(store.messages[0].recipients, ["bob@example.org", "carol@example.net"])

    async def test_smtpAllFailedTemporaryFirst(self) -> None:
        """
        An SMTP front whose LMTP server refused every recipient after the
        body answers with a temporary refusal when there is one, so that
        the client tries again (nobody has the message yet).
        """
        store = Recorder()
        store.lmtpRefuse["bob@example.org"] = SMTPError(550, "Unknown", "5.1.1")
        store.lmtpRefuse["carol@example.net"] = SMTPError(452, "Full", "4.2.2")
        port = await self.front(store)
        result = await send(port, recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(452, "4.2.2")] * 2)

    async def test_smtpMixedNoDuplicate(self) -> None:
        """
        When the LMTP server stores the message for some recipients and
        refuses it (even temporarily) for others after the body, an SMTP
        front answers 250, so that no retry makes a second copy, and the
        sender gets a "failed" delivery status notification for the others
        (RFC 3464), through the LMTP server.
        """
        store = Recorder()
        store.lmtpRefuse["carol@example.net"] = SMTPError(452, "Over quota", "4.2.2")
        store.lmtpRefuse["dan@example.com"] = SMTPError(552, "Too big", "5.2.3")
        port = await self.front(store)
        result = await send(
            port, recipients=["bob@example.org", "carol@example.net", "dan@example.com"]
        )
        self.assertEqual(replies(result), [(250, "2.0.0")] * 3)
        await self.handler.reportsSent()
        self.assertEqual(len(store.messages), 2)
        report = store.messages[1]
        self.assertEqual((report.sender, report.recipients), ("", ["alice@example.com"]))
        parsed = email.message_from_bytes(report.body)
        self.assertEqual(parsed.get_content_type(), "multipart/report")
        self.assertEqual(parsed.get_param("report-type"), "delivery-status")
        status = parsed.get_payload()[1]
        self.assertEqual(status.get_content_type(), "message/delivery-status")
        blocks = status.get_payload()
        self.assertEqual(blocks[0]["Reporting-MTA"], "dns; front.example")
        self.assertEqual(
            [(b["Final-Recipient"], b["Action"], b["Status"]) for b in blocks[1:]],
            [
                ("rfc822; carol@example.net", "failed", "4.2.2"),
                ("rfc822; dan@example.com", "failed", "5.2.3"),
            ],
        )
        self.assertIn("Over quota", blocks[1]["Diagnostic-Code"])

    async def test_noFailedReportWithoutNotifyFailure(self) -> None:
        """
        A recipient refused after the body whose C{NOTIFY} leaves out
        C{FAILURE} (C{SUCCESS}, C{DELAY}) gets no "failed" report (RFC
        3461 section 4.1), as Postfix sends none; one that gave no
        C{NOTIFY}, or C{FAILURE} among others, gets it.
        """
        store = Recorder()
        for name in ("carol", "dan", "erin", "frank"):
            store.lmtpRefuse[f"{name}@example.net"] = SMTPError(552, "Over quota", "5.2.2")
        port = await self.front(store)
        client = await clientSession(port)
        quitAfter(self, client)
        await client.mail("alice@example.com", "")
        await client.rcpt("bob@example.org", "")
        await client.rcpt("carol@example.net", " NOTIFY=SUCCESS")
        await client.rcpt("dan@example.net", " NOTIFY=DELAY")
        await client.rcpt("erin@example.net", " NOTIFY=DELAY,FAILURE")
        await client.rcpt("frank@example.net", "")
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        await self.handler.reportsSent()
        self.assertEqual(len(store.messages), 2)
        blocks = email.message_from_bytes(store.messages[1].body).get_payload()[1].get_payload()
        self.assertEqual(
            [b["Final-Recipient"] for b in blocks[1:]],
            ["rfc822; erin@example.net", "rfc822; frank@example.net"],
        )

    async def test_deliveredReport(self) -> None:
        """
        A recipient asking NOTIFY=SUCCESS of an LMTP server without DSN gets
        a "delivered" report from this server, through the LMTP server.
        """
        store = Recorder()
        port = await self.front(store, storeOptions={"hideDSN": True})
        client = await clientSession(port)
        quitAfter(self, client)
        await client.mail("alice@example.com", "")
        await client.rcpt("bob@example.org", " NOTIFY=SUCCESS")
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        await self.handler.reportsSent()
        self.assertEqual(len(store.messages), 2)
        blocks = email.message_from_bytes(store.messages[1].body).get_payload()[1].get_payload()
        self.assertEqual(blocks[1]["Action"], "delivered")

    async def test_noReportForNullSender(self) -> None:
        """
        A message from the null reverse-path gets no DSN.
        """
        store = Recorder()
        store.lmtpRefuse["carol@example.net"] = SMTPError(552, "Over quota", "5.2.2")
        port = await self.front(store)
        result = await send(port, sender="", recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(replies(result), [(250, "2.0.0")] * 2)
        await self.handler.reportsSent()
        self.assertEqual([m.sender for m in store.messages], [""])

    async def test_unreachable(self) -> None:
        """
        An LMTP server that is down is a temporary failure.
        """
        listening = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        closed = listening.getHost().port
        await listening.stopListening()
        handler = closeWith(
            self, LMTPDeliveryHandler(f"tcp:127.0.0.1:{closed}", heloName="front.example")
        )
        front, port = await startServer(self, handler)
        self.assertEqual(await outcome(port), [(451, "4.4.1")])
