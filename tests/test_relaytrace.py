# -*- test-case-name: tests.test_relaytrace -*-
"""
Tests for the trace of the relay and LMTP-forwarding handlers
(L{twisted_smtpd.handlers._proxytrace}): their C{Received:} field before
every message passed on, and the refusal of a message with too many hops,
which the next hop must never deliver; with real next hops on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_client import Recorder, startServer
from tests.test_relay import (
    BODY,
    EnvelopeRecorder,
    bodyStream,
    clientSession,
    closeWith,
    quitAfter,
    replies,
    send,
)
from tests.tracing import untraced
from twisted_smtpd._core.session import Session
from twisted_smtpd.handlers._proxying import HOP_LIMIT, ProxyingHandler
from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler
from twisted_smtpd.handlers.relay import RelayHandler
from twisted_smtpd.interfaces import IMessageStream


def looping(hops: int, body: bytes = b"Subject: loop\r\n\r\nbody\r\n") -> bytes:
    """
    A message arriving with C{hops} C{Received:} fields.
    """
    return (
        b"Received: from a.example by b.example; Mon, 7 Dec 2026 12:00:00 +0000\r\n" * hops + body
    )


class PartRecorder(EnvelopeRecorder):
    """
    A recorder that also keeps how much of each message that did not
    arrive whole it had received.
    """

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[int] = []
        #: Fires once a message did not arrive whole.
        self.broken: Deferred[None] = Deferred()

    async def onData(self, stream: IMessageStream, session: Session) -> object:
        try:
            return await super().onData(stream, session)
        finally:
            if len(self.messages) < len(self.envelopes):
                self.parts.append(stream.byteLength)
                del self.envelopes[-1]
                if not self.broken.called:
                    self.broken.callback(None)


class Raw(Protocol):
    """
    A client that sends raw bytes and keeps what it gets.
    """

    received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


async def dialogue(testCase: TestCase, port: int, commands: bytes, until: bytes) -> bytes:
    """
    Send C{commands} at once to the server on C{port}; return what came
    back once it holds C{until} (or after five seconds).
    """
    client = Raw()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    testCase.addCleanup(client.transport.loseConnection)  # type: ignore[union-attr]
    client.transport.write(commands)  # type: ignore[union-attr]
    for _ in range(100):
        if until in client.received:
            break
        await deferLater(reactor, 0.05, lambda: None)
    return client.received


class ConstructionTests(SynchronousTestCase):
    """
    C{hopLimit} is checked when the handlers are made.
    """

    def test_badHopLimit(self) -> None:
        """
        A limit that is not a positive integer raises L{ValueError}.
        """
        for limit in (0, -1, True, 1.5):
            with self.assertRaises(ValueError):
                RelayHandler("smarthost", heloName="me", hopLimit=limit)  # type: ignore[arg-type]
            with self.assertRaises(ValueError):
                LMTPDeliveryHandler(
                    "tcp:127.0.0.1:24",
                    heloName="me",
                    hopLimit=limit,  # type: ignore[arg-type]
                )

    def test_default(self) -> None:
        """
        The limit is Postfix's C{hopcount_limit}, 50.
        """
        self.assertEqual(HOP_LIMIT, 50)


class TraceTests(TestCase):
    """
    L{RelayHandler} and L{LMTPDeliveryHandler} write their C{Received:}
    field first and count the message's.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    async def front(self, smarthost: Recorder, smarthostOptions: Any = None, **relay: Any) -> int:
        """
        Start the smarthost and a front server relaying to it; return the
        front server's port.
        """
        _, port = await startServer(self, smarthost, **(smarthostOptions or {}))
        self.handler: ProxyingHandler = closeWith(
            self, RelayHandler("127.0.0.1", port, tls="none", heloName="relay.example", **relay)
        )
        _, frontPort = await startServer(self, self.handler)
        return frontPort

    def loopLines(self) -> list[str]:
        """
        The log lines of messages refused for their hops.
        """
        return [
            formatEvent(event)
            for event in self.events
            if "Received: fields" in event.get("log_format", "")
        ]

    async def test_fieldFirstData(self) -> None:
        """
        Over DATA (a smarthost without CHUNKING), the smarthost gets the
        relay's C{Received:} field, then the message byte for byte.
        """
        smarthost = Recorder()
        port = await self.front(smarthost, {"hideCHUNKING": True})
        self.assertEqual(replies(await send(port)), [(250, "2.0.0")])
        [message] = smarthost.messages
        self.assertEqual(untraced(self, message.body), BODY)

    async def test_dotFirstData(self) -> None:
        """
        Over DATA, a message whose first line begins with a dot, now the
        line after the field, is still dot-stuffed and arrives whole.
        """
        smarthost = Recorder()
        port = await self.front(smarthost, {"hideCHUNKING": True})
        body = b".first\r\n.\r\n..two\r\n"
        self.assertEqual(replies(await send(port, stream=body)), [(250, "2.0.0")])
        self.assertEqual(untraced(self, smarthost.messages[0].body), body)

    async def test_emptyMessage(self) -> None:
        """
        An empty message (C{BDAT 0 LAST}) goes on as the field alone.
        """
        smarthost = Recorder()
        port = await self.front(smarthost)
        client = await clientSession(port)
        quitAfter(self, client)
        await client.mail("alice@example.com", "")
        await client.rcpt("bob@example.org", "")
        [final] = await client.bdat(bodyStream(b""), 1)
        self.assertEqual(final.code, 250)
        self.assertEqual(untraced(self, smarthost.messages[0].body), b"")

    async def test_fieldFirstLMTP(self) -> None:
        """
        The LMTP-forwarding handler writes its field too, naming itself by
        its LHLO name.
        """
        store = Recorder()
        _, lmtpPort = await startServer(self, store, lmtp=True)
        handler = closeWith(
            self, LMTPDeliveryHandler(f"tcp:127.0.0.1:{lmtpPort}", heloName="front.example")
        )
        _, port = await startServer(self, handler)
        self.assertEqual(replies(await send(port)), [(250, "2.0.0")])
        [message] = store.messages
        self.assertEqual(untraced(self, message.body, by="front.example"), BODY)

    async def test_traceHeadersOff(self) -> None:
        """
        With C{traceHeaders=False} the message goes on unchanged, and so
        does its C{SIZE}.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, traceHeaders=False)
        client = await clientSession(port)
        quitAfter(self, client)
        self.assertEqual((await client.mail("alice@example.com", " SIZE=500")).code, 250)
        self.assertEqual((await client.rcpt("bob@example.org", "")).code, 250)
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        self.assertEqual(smarthost.messages[0].body, BODY)
        self.assertEqual(smarthost.envelopes[0].size, 500)

    async def test_leadingWhiteSpace(self) -> None:
        """
        A message whose first line begins with white space, which would
        continue the field, gets an empty line after it, as Postfix's
        C{smtpd} writes one.
        """
        smarthost = Recorder()
        port = await self.front(smarthost)
        body = b" folded start\r\nSubject: x\r\n\r\nbody\r\n"
        self.assertEqual(replies(await send(port, stream=body)), [(250, "2.0.0")])
        self.assertEqual(untraced(self, smarthost.messages[0].body), b"\r\n" + body)

    async def test_hopLimit(self) -> None:
        """
        A message with fifty C{Received:} fields is passed on; one with
        fifty-one is refused with 554 5.4.6, is not delivered, and one log
        line names its session; the next message goes through.
        """
        smarthost = PartRecorder()
        port = await self.front(smarthost)
        self.assertEqual(replies(await send(port, stream=looping(50))), [(250, "2.0.0")])
        self.assertEqual(untraced(self, smarthost.messages[0].body), looping(50))
        self.assertEqual(replies(await send(port, stream=looping(51))), [(554, "5.4.6")])
        self.assertEqual(len(smarthost.messages), 1)
        [line] = self.loopLines()
        self.assertIn("more than 50 Received: fields", line)
        self.assertIn("not passed to 127.0.0.1:", line)
        self.assertRegex(line, r"^[a-z2-7]{8} message refused")
        self.assertEqual(replies(await send(port)), [(250, "2.0.0")])
        self.assertEqual(len(smarthost.messages), 2)

    async def test_hopLimitReplyText(self) -> None:
        """
        The refusal says why, in the server's words.
        """
        port = await self.front(Recorder(), hopLimit=2)
        client = await clientSession(port)
        self.addCleanup(client.abort)
        await client.mail("alice@example.com", "")
        await client.rcpt("bob@example.org", "")
        [final] = await client.data(bodyStream(looping(3)), 1)
        self.assertEqual(
            (final.code, final.enhanced, final.text),
            (554, "5.4.6", "Error: too many hops (more than 2 Received: fields): mail loop"),
        )

    async def test_abandonedMidStream(self) -> None:
        """
        A message whose fifty-first C{Received:} field comes after more
        than a chunk of header, which is already on its way to the
        smarthost, is refused all the same: the session to the smarthost is
        dropped before the body's end, so that it delivers nothing.  Over
        BDAT and over DATA.
        """
        filler = b"X-Filler: " + b"f" * 900 + b"\r\n"
        body = filler * 200 + looping(51)
        for options in ({}, {"hideCHUNKING": True}):
            smarthost = PartRecorder()
            port = await self.front(smarthost, options)
            self.assertEqual(replies(await send(port, stream=body)), [(554, "5.4.6")])
            # The smarthost sees the session dropped, midway.
            await smarthost.broken.addTimeout(10, reactor)
            self.assertEqual(smarthost.messages, [])
            [part] = smarthost.parts
            self.assertGreater(part, 65536)
            self.assertLess(part, len(body))
            self.assertEqual(replies(await send(port)), [(250, "2.0.0")])
            self.assertEqual(len(smarthost.messages), 1)

    async def test_bdatBareLineFeeds(self) -> None:
        """
        A BDAT body whose lines end in bare LF has its fields counted the
        same: fifty-one are refused, whatever the chunks.
        """
        smarthost = PartRecorder()
        port = await self.front(smarthost)
        body = looping(51).replace(b"\r\n", b"\n")
        client = await clientSession(port)
        self.addCleanup(client.abort)
        self.assertEqual((await client.mail("alice@example.com", " BODY=BINARYMIME")).code, 250)
        self.assertEqual((await client.rcpt("bob@example.org", "")).code, 250)
        stream = bodyStream(body)
        [final] = await client.bdat(stream, 1)
        self.assertEqual((final.code, final.enhanced), (554, "5.4.6"))
        self.assertEqual(smarthost.messages, [])

    async def test_bodyFieldsNotCounted(self) -> None:
        """
        C{Received:} lines after the header section (a bounce quoting the
        looping message, say) do not count.
        """
        smarthost = Recorder()
        port = await self.front(smarthost)
        body = looping(1, b"Subject: bounce\r\n\r\n" + looping(60))
        self.assertEqual(replies(await send(port, stream=body)), [(250, "2.0.0")])
        self.assertEqual(untraced(self, smarthost.messages[0].body), body)

    async def test_nonFieldLineEndsHeader(self) -> None:
        """
        A broken header, a line that is not a field and no empty line
        after it, ends there, as Postfix ends it: the sixty C{Received:}
        lines after it are the body's, and the message is passed on.
        """
        smarthost = Recorder()
        port = await self.front(smarthost)
        body = looping(1, b"Subject: broken\r\nnot a field\r\n" + looping(60))
        self.assertEqual(replies(await send(port, stream=body)), [(250, "2.0.0")])
        self.assertEqual(untraced(self, smarthost.messages[0].body), body)

    async def test_oneOctetChunks(self) -> None:
        """
        Fields in odd case, with white space before the colon, folded, and
        sent in BDAT chunks of one octet (with C{BDAT 0} among them) are
        counted all the same: one more than the limit is refused.
        """
        smarthost = PartRecorder()
        port = await self.front(smarthost, hopLimit=2)
        body = (
            b"rEcEiVeD: from a\r\n\tby b\r\n"
            + b"Received"
            + b" " * 20
            + b"\t: from c\r\n"
            + b"X-Other: x\r\n"
            + b"RECEIVED:from d\r\n"
            + b"\r\nbody\r\n"
        )
        chunks = b"".join(b"BDAT 1\r\n" + body[i : i + 1] for i in range(len(body)))
        received = await dialogue(
            self,
            port,
            b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<b@example.org>\r\nBDAT 0\r\n" + chunks + b"BDAT 0 LAST\r\n",
            b"\r\n554 ",
        )
        self.assertIn(b"554 5.4.6 Error: too many hops (more than 2 Received: fields)", received)
        self.assertEqual(smarthost.messages, [])
        [line] = self.loopLines()
        self.assertIn("(3 so far)", line)

    async def test_lmtpFrontEveryRecipient(self) -> None:
        """
        An LMTP front refusing a looping message gives the 554 for every
        recipient, and the LMTP server behind it stores nothing.
        """
        store = PartRecorder()
        _, lmtpPort = await startServer(self, store, lmtp=True)
        handler = closeWith(
            self, LMTPDeliveryHandler(f"tcp:127.0.0.1:{lmtpPort}", heloName="front.example")
        )
        _, port = await startServer(self, handler, lmtp=True)
        result = await send(
            port, lmtp=True, recipients=["bob@example.org", "carol@example.net"], stream=looping(51)
        )
        self.assertEqual(replies(result), [(554, "5.4.6")] * 2)
        self.assertEqual(store.messages, [])

    async def test_eightBitHelo(self) -> None:
        """
        A greeting name in UTF-8 is escaped in the field (C{\\xfc}) of a
        message sent without SMTPUTF8, which the next hop may take as 7-bit
        (RFC 6532 allows non-ASCII header fields only with it), and the
        SIZE passed on grows by the field written; a message with SMTPUTF8
        has it in UTF-8, C{with UTF8SMTP} (RFC 6531 section 4.3), and a
        SIZE grown by that field.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost)
        for parameters in (b"", b" SMTPUTF8"):
            received = await dialogue(
                self,
                port,
                "EHLO bücher.example\r\n".encode()
                + b"MAIL FROM:<a@example.com> SIZE=500"
                + parameters
                + b"\r\nRCPT TO:<b@example.org>\r\nBDAT %d LAST\r\n" % len(BODY)
                + BODY,
                b" queued as ",
            )
            self.assertTrue(
                received.endswith(b"250 2.0.0 queued as Q%d\r\n" % len(smarthost.messages)),
                received,
            )
        plain, utf8 = (message.body for message in smarthost.messages)
        field = {"recipient": "b@example.org"}
        self.assertEqual(
            untraced(self, plain, helo="b\\xfccher.example", client="unknown [127.0.0.1]", **field),
            BODY,
        )
        self.assertEqual(
            untraced(self, utf8, helo="bücher.example", protocol="UTF8SMTP", **field), BODY
        )
        # The SIZE grows by the field as built at MAIL, before its for
        # clause (the recipient comes later).
        forClause = len(b" for <b@example.org>")
        self.assertEqual(
            [envelope.size for envelope in smarthost.envelopes],
            [500 + len(plain) - len(BODY) - forClause, 500 + len(utf8) - len(BODY) - forClause],
        )

    async def test_eightBitHeloNextHopWithoutSmtpUtf8(self) -> None:
        """
        A message sent with SMTPUTF8 and ASCII addresses goes on without it
        to a next hop that does not offer it: the field written before it
        is then ASCII too (the greeting name escaped, C{b\\xfccher.example},
        the session still C{with UTF8SMTP}), so that no header field this
        server adds is in UTF-8 in a transaction without SMTPUTF8 (RFC
        6532 section 3.7, RFC 6531 section 3.2); the SIZE passed on grows
        by that field.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, {"hideSMTPUTF8": True})
        received = await dialogue(
            self,
            port,
            "EHLO bücher.example\r\n".encode()
            + b"MAIL FROM:<a@example.com> SIZE=500 SMTPUTF8"
            + b"\r\nRCPT TO:<b@example.org>\r\nBDAT %d LAST\r\n" % len(BODY)
            + BODY,
            b" queued as ",
        )
        self.assertTrue(received.endswith(b"250 2.0.0 queued as Q1\r\n"), received)
        (stored,) = (message.body for message in smarthost.messages)
        self.assertTrue(stored.isascii(), stored[:400])
        self.assertEqual(
            untraced(
                self,
                stored,
                helo="b\\xfccher.example",
                protocol="UTF8SMTP",
                recipient="b@example.org",
            ),
            BODY,
        )
        forClause = len(b" for <b@example.org>")
        self.assertEqual(
            [envelope.size for envelope in smarthost.envelopes],
            [500 + len(stored) - len(BODY) - forClause],
        )

    async def test_refusalsFreeTheirSessions(self) -> None:
        """
        Each refused message gives its session to the next hop back
        (dropped): with one session allowed, refusals in a row leave the
        next message a session at once.
        """
        smarthost = Recorder()
        port = await self.front(smarthost, maxSessions=1, timeout=5.0)
        for _ in range(3):
            self.assertEqual(replies(await send(port, stream=looping(51))), [(554, "5.4.6")])
        self.assertEqual(replies(await send(port)), [(250, "2.0.0")])
        self.assertEqual(len(smarthost.messages), 1)
