# -*- test-case-name: tests.test_client -*-
"""
Tests for the SMTP/LMTP client, L{twisted_smtpd._smtpclient.client} and its pure part
L{twisted_smtpd._smtpclient.clientwire}: unit tests against a scripted server on a
L{StringTransport}, then round trips against a real L{SMTPServer} on
127.0.0.1.
"""

from __future__ import annotations

import base64
import itertools
import re
from typing import Any

from attrs import frozen
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IListeningPort, ITLSTransport
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tests.certs import CertificateAuthority
from twisted_smtpd import ServerOptions, SMTPError, SMTPServer
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd._smtpclient.client import DeliveryError, DeliveryResult, deliver
from twisted_smtpd._smtpclient.clientprotocol import Request
from twisted_smtpd._smtpclient.clientsession import CHUNK_SIZE, openSession
from twisted_smtpd._smtpclient.clientwire import (
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    MAX_REPLY_TEXT,
    ClientReply,
    DotStuffer,
    MalformedReply,
    ReplyParser,
    remoteFailure,
    replyError,
)
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

EHLO_PLAIN = b"250-mx.example.com\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
EHLO_PIPELINING = b"250-mx.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


class ReplyParserTests(SynchronousTestCase):
    """
    L{ReplyParser} splits server output into replies.
    """

    def test_multiLineWithEnhancedCodes(self) -> None:
        """
        A multi-line reply becomes one L{ClientReply}; the enhanced code of
        the first line is taken off every line carrying it.
        """
        replies = ReplyParser().feed(b"550-5.1.1 No such user\r\n550 5.1.1 Try again\r\n")
        self.assertEqual(replies, [ClientReply(550, "5.1.1", "No such user\nTry again")])

    def test_everySplit(self) -> None:
        """
        Replies split at any byte boundary parse the same, bare LF line ends
        included.
        """
        data = b"220 mx ready\r\n250-a\n250-b\r\n250 2.0.0 c\r\n"
        expected = ReplyParser().feed(data)
        self.assertEqual(len(expected), 2)
        for cut in range(len(data)):
            parser = ReplyParser()
            self.assertEqual(parser.feed(data[:cut]) + parser.feed(data[cut:]), expected)

    def test_enhancedClassMustMatch(self) -> None:
        """
        Text that looks like an enhanced code of another class is kept.
        """
        self.assertEqual(
            ReplyParser().feed(b"250 4.0.0 odd\r\n"), [ClientReply(250, None, "4.0.0 odd")]
        )

    def test_malformed(self) -> None:
        """
        A line that is not a reply, a code changing inside a reply, or an
        endless line raise L{ValueError}.
        """
        self.assertRaises(ValueError, ReplyParser().feed, b"hello\r\n")
        self.assertRaises(ValueError, ReplyParser().feed, b"250-a\r\n251 b\r\n")
        self.assertRaises(ValueError, ReplyParser().feed, b"250 " + b"x" * 70000)

    def test_textKeptBounded(self) -> None:
        """
        Of the longest reply allowed (C{MAX_REPLY_LINES} lines of
        C{MAX_REPLY_LINE} octets, 400 KB), at most C{MAX_REPLY_TEXT}
        characters of text are kept, the first lines whole with their
        enhanced code; the parser reads on after it.
        """
        longest = b"550-5.1.1 " + b"x" * (MAX_REPLY_LINE - 10) + b"\r\n"
        data = longest * (MAX_REPLY_LINES - 1) + b"550 5.1.1 last\r\n"
        parser = ReplyParser()
        [reply] = parser.feed(data)
        self.assertEqual((reply.code, reply.enhanced), (550, "5.1.1"))
        self.assertLessEqual(len(reply.text), MAX_REPLY_TEXT)
        self.assertTrue(reply.text.startswith("x" * (MAX_REPLY_LINE - 10) + "\n"))
        self.assertFalse(parser.pending)
        self.assertEqual(parser.feed(b"250 ok\r\n"), [ClientReply(250, None, "ok")])

    def test_repliesBeforeTheFault(self) -> None:
        """
        The replies completed before a malformed line come with the error
        (L{MalformedReply.replies}), in order; once malformed, the parser
        refuses everything after.
        """
        parser = ReplyParser()
        with self.assertRaises(MalformedReply) as raised:
            parser.feed(b"250-a\r\n250 b\r\n554 c\r\ngarbage\r\n250 d\r\n")
        self.assertEqual(
            raised.exception.replies,
            [ClientReply(250, None, "a\nb"), ClientReply(554, None, "c")],
        )
        with self.assertRaises(MalformedReply) as again:
            parser.feed(b"250 e\r\n")
        self.assertEqual(again.exception.replies, [])
        with self.assertRaises(MalformedReply) as endless:
            ReplyParser().feed(b"250 ok\r\n" + b"x" * (MAX_REPLY_LINE + 1))
        self.assertEqual(endless.exception.replies, [ClientReply(250, None, "ok")])

    def test_codesOutOfRange(self) -> None:
        """
        Codes whose first digit is not 2 to 5 are not replies (RFC 5321
        section 4.2.1): L{ValueError}, not a reply to pass on.
        """
        for line in [b"999 x\r\n", b"199 x\r\n", b"600 x\r\n", b"000 x\r\n", b"250-a\r\n699 b\r\n"]:
            self.assertRaises(ValueError, ReplyParser().feed, line)

    def test_bounds(self) -> None:
        """
        A line longer than C{MAX_REPLY_LINE} octets raises, whether it came
        whole or in pieces, and so does a reply of more than
        C{MAX_REPLY_LINES} lines.
        """
        line = b"250 " + b"x" * MAX_REPLY_LINE + b"\r\n"
        self.assertRaises(ValueError, ReplyParser().feed, line)
        many = b"250-x\r\n" * MAX_REPLY_LINES + b"250 x\r\n"
        self.assertRaises(ValueError, ReplyParser().feed, many)
        fits = (
            b"250-x\r\n" * (MAX_REPLY_LINES - 1) + b"250 " + b"x" * (MAX_REPLY_LINE - 4) + b"\r\n"
        )
        self.assertEqual(len(ReplyParser().feed(fits)), 1)


class DotStufferTests(SynchronousTestCase):
    """
    L{DotStuffer} applies RFC 5321 section 4.5.2 transparency chunk by chunk.
    """

    def stuff(self, chunks: list[bytes]) -> bytes:
        stuffer = DotStuffer()
        return b"".join(stuffer.encode(c) for c in chunks) + stuffer.end()

    def test_leadingDots(self) -> None:
        """
        A period starting the body or any line gets another one; the end
        indication follows the final CRLF.
        """
        self.assertEqual(
            self.stuff([b".a\r\n..b\r\nc.d\r\n.\r\n"]),
            b"..a\r\n...b\r\nc.d\r\n..\r\n.\r\n",
        )

    def test_everySplit(self) -> None:
        """
        The line-start state carries across chunks: a body cut anywhere, or
        fed byte by byte, is stuffed the same.
        """
        body = b".x\r\n.\r\ny\r\n..\r\n.z"
        whole = self.stuff([body])
        for cut in range(len(body) + 1):
            self.assertEqual(self.stuff([body[:cut], body[cut:]]), whole)
        self.assertEqual(self.stuff([bytes([b]) for b in body]), whole)

    def test_missingFinalCRLF(self) -> None:
        """
        A body not ending with CRLF gets one before the final period; an
        empty body is just the period.
        """
        self.assertEqual(self.stuff([b"abc"]), b"abc\r\n.\r\n")
        self.assertEqual(self.stuff([b"abc\r"]), b"abc\r\r\n.\r\n")
        self.assertEqual(self.stuff([]), b".\r\n")

    def test_bareLineEnds(self) -> None:
        """
        A period after a bare LF or bare CR is doubled as well, so that no
        receiver can see an end of data inside the message.
        """
        self.assertEqual(self.stuff([b"a\n.\nb\r.\r\n"]), b"a\n..\nb\r..\r\n.\r\n")
        self.assertEqual(self.stuff([b"a\n", b".b"]), b"a\n..b\r\n.\r\n")

    def test_noEndInsideUnderAnyLineEnd(self) -> None:
        """
        Whatever a receiver takes for a line end (CRLF only, LF, CR, or
        any of them: the SMTP smuggling readings), no line of what is sent
        is a lone period before the final one, for every body of up to five
        octets made of CR, LF, period and text, cut anywhere into three
        chunks.
        """
        readings = [rb"\r\n", rb"\r?\n", rb"\r\n?", rb"\r\n|\r|\n"]
        for size in range(6):
            for octets in itertools.product(b"\r\n.a", repeat=size):
                body = bytes(octets)
                sent = self.stuff([body])
                self.assertTrue(sent.endswith(b"\r\n.\r\n") or sent == b".\r\n", body)
                inside = sent[: -len(b".\r\n")]
                for reading in readings:
                    self.assertNotIn(b".", re.split(reading, inside), (body, reading))
                for i in range(size + 1):
                    for j in range(i, size + 1):
                        self.assertEqual(self.stuff([body[:i], body[i:j], body[j:]]), sent)


class RemoteFailureTests(SynchronousTestCase):
    """
    L{remoteFailure} maps a next hop's failure to our own reply.
    """

    def test_messageRefusalKeepsCode(self) -> None:
        """
        A refusal of the message keeps the server's code and text.
        """
        reply = ClientReply(554, "5.7.1", "Spam")
        error = remoteFailure(DeliveryError(554, "Spam", "5.7.1", stage="mail", reply=reply))
        self.assertEqual((error.code, error.enhanced, error.message), (554, "5.7.1", "Spam"))

    def test_sessionRefusalIsTemporary(self) -> None:
        """
        A refusal of the session is answered 451, whatever the code, in
        generic words: the next hop's own (a greeting starts with its host
        name) are for the log line.
        """
        reply = ClientReply(535, "5.7.8", "smarthost.internal Bad credentials")
        failure = DeliveryError(535, reply.text, "5.7.8", stage="auth", reply=reply)
        error = remoteFailure(failure)
        self.assertEqual((error.code, error.enhanced), (451, "4.4.1"))
        self.assertIn("refused the session (535)", error.message)
        self.assertNotIn("smarthost", error.message)

    def test_localFailureGeneric(self) -> None:
        """
        A failure without a reply (connection, DNS, TLS, timeout) keeps its
        code and enhanced code; its text says in general terms what failed,
        never the details, which name hosts.
        """
        cases = [
            ("4.4.1", "Error: cannot connect to the server: no results for relay.internal"),
            ("4.7.5", "Error: TLS negotiation failed: DNSMismatch(relay.internal)"),
            ("4.4.2", "Error: connection lost (mail): relay.internal"),
            ("4.5.0", "Error: bad reply from the server: relay.internal"),
            ("4.9.9", "relay.internal"),
        ]
        for enhanced, message in cases:
            error = remoteFailure(DeliveryError(451, message, enhanced, stage="connect"))
            self.assertEqual((error.code, error.enhanced), (451, enhanced))
            self.assertIn("next hop", error.message)
            self.assertNotIn("relay.internal", error.message)

    def test_stageNamedOnce(self) -> None:
        """
        A failure's text names its stage once: a failure of the connection
        names it in its words already, a refusal after them.
        """
        cases = [
            ("Error: timeout waiting for the server (greeting)", "greeting"),
            ("Error: connection lost (reply): Connection was closed cleanly.", "reply"),
            ("Error: no such user", "rcpt"),
        ]
        for message, stage in cases:
            text = str(DeliveryError(451, message, "4.4.2", stage=stage))
            self.assertEqual(text.count(f"({stage})"), 1, text)
            self.assertTrue(text.startswith(f"451 4.4.2 {message}"), text)

    def test_closingBecomes451(self) -> None:
        """
        A 421 from the next hop is not passed on as our own 421.
        """
        reply = ClientReply(421, "4.3.2", "Shutting down")
        error = remoteFailure(DeliveryError(421, "x", stage="data", reply=reply))
        self.assertEqual(error.code, 451)

    def test_closingPermanentBecomes550(self) -> None:
        """
        A 521 from the next hop (RFC 7504) to MAIL, RCPT or the data is not
        passed on as our own 521, which would close our client's session:
        it becomes 550, its enhanced code and words kept.
        """
        reply = ClientReply(521, "5.3.2", "No mail here")
        for stage in ("mail", "rcpt", "data"):
            error = remoteFailure(DeliveryError(521, "x", stage=stage, reply=reply))
            self.assertEqual(
                (error.code, error.enhanced, error.message), (550, "5.3.2", "No mail here")
            )


class UnexpectedReplyTests(SynchronousTestCase):
    """
    L{replyError} passes on refusals only.
    """

    def test_notARefusal(self) -> None:
        """
        A 3xx or 2xx reply where a refusal is looked for (354 to MAIL, or
        after the end of the data) becomes 451 4.5.0 giving its code, not
        its words (as Postfix's before-queue proxy since 2.6).
        """
        for code in (354, 334, 250):
            error = replyError(ClientReply(code, None, "go ahead"))
            self.assertEqual((error.code, error.enhanced), (451, "4.5.0"))
            self.assertIn(f"({code})", error.message)
            self.assertNotIn("go ahead", error.message)
        self.assertEqual(replyError(ClientReply(550, "5.1.1", "no")).code, 550)


@implementer(ITLSTransport)
class TLSStringTransport(StringTransportWithDisconnection):
    """
    A string transport on which STARTTLS only records the creator.
    """

    tlsStarted: Any = None

    def startTLS(self, contextFactory: Any, normal: bool = True) -> None:
        self.tlsStarted = contextFactory


class FakeEndpoint:
    """
    A client endpoint connecting to a L{StringTransportWithDisconnection}.
    """

    def __init__(self) -> None:
        self.transport = TLSStringTransport()
        self.protocol: Any = None

    def connect(self, factory: Factory) -> Deferred[Any]:
        self.protocol = factory.buildProtocol(None)
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)


class Dialogue:
    """
    A scripted server: L{deliver} talks to it over a string transport.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        arguments: dict[str, Any] = {
            "sender": "alice@example.com",
            "recipients": ["bob@example.org"],
            "stream": b"Subject: hi\r\n\r\n.body\r\n",
            "heloName": "client.example",
            "tls": "none",
            "reactor": self.clock,
        }
        arguments.update(kwargs)
        self.result = deliver(self.endpoint, **arguments)  # type: ignore[arg-type]

    @property
    def transport(self) -> StringTransportWithDisconnection:
        return self.endpoint.transport

    def say(self, data: bytes) -> bytes:
        """
        Send C{data} as the server; return what the client wrote since.
        """
        self.transport.clear()
        self.endpoint.protocol.dataReceived(data)
        return self.transport.value()

    def close(self) -> None:
        """
        Answer QUIT; the client closes.
        """
        self.say(b"221 bye\r\n")


class DialogueTests(SynchronousTestCase):
    """
    The client's side of the dialogue, against a scripted server.
    """

    def test_pipelinedTransaction(self) -> None:
        """
        With PIPELINING, MAIL, every RCPT and DATA go out together; the body
        follows 354 stuffed, and the result holds each recipient's reply.
        """
        talk = Dialogue(recipients=["bob@example.org", "carol@example.net"])
        self.assertEqual(talk.say(b"220 mx ESMTP\r\n"), b"EHLO client.example\r\n")
        self.assertEqual(
            talk.say(EHLO_PIPELINING),
            b"MAIL FROM:<alice@example.com> BODY=8BITMIME\r\n"
            b"RCPT TO:<bob@example.org>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n",
        )
        sent = talk.say(b"250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n354 go\r\n")
        self.assertEqual(sent, b"Subject: hi\r\n\r\n..body\r\n.\r\n")
        self.assertEqual(talk.say(b"250 2.0.0 queued as A1\r\n"), b"QUIT\r\n")
        talk.close()
        result = self.successResultOf(talk.result)
        self.assertEqual(
            [(r.address, r.reply.code, r.reply.text) for r in result.recipients],
            [("bob@example.org", 250, "queued as A1"), ("carol@example.net", 550, "no such user")],
        )
        self.assertEqual([r.address for r in result.accepted], ["bob@example.org"])

    def test_oneByOne(self) -> None:
        """
        Without PIPELINING each command waits for the previous reply.
        """
        talk = Dialogue(recipients=["bob@example.org", "carol@example.net"])
        talk.say(b"220 mx ESMTP\r\n")
        self.assertEqual(talk.say(EHLO_PLAIN), b"MAIL FROM:<alice@example.com> BODY=8BITMIME\r\n")
        self.assertEqual(talk.say(b"250 ok\r\n"), b"RCPT TO:<bob@example.org>\r\n")
        self.assertEqual(talk.say(b"250 ok\r\n"), b"RCPT TO:<carol@example.net>\r\n")
        self.assertEqual(talk.say(b"250 ok\r\n"), b"DATA\r\n")

    def test_allRecipientsRefused(self) -> None:
        """
        When every recipient is refused no DATA is sent; the transaction is
        reset and the result says why for each.
        """
        talk = Dialogue()
        talk.say(b"220 mx ESMTP\r\n")
        talk.say(EHLO_PLAIN)
        talk.say(b"250 ok\r\n")
        self.assertEqual(talk.say(b"450 4.2.0 mailbox busy\r\n"), b"RSET\r\n")
        self.assertEqual(talk.say(b"250 ok\r\n"), b"QUIT\r\n")
        talk.close()
        result = self.successResultOf(talk.result)
        self.assertEqual(result.accepted, ())
        self.assertTrue(result.recipients[0].reply.temporary)
        self.assertIsNone(result.dataReply)

    def test_mailRefused(self) -> None:
        """
        A refused sender fails the delivery with the server's reply; the
        client still says QUIT.
        """
        talk = Dialogue()
        talk.say(b"220 mx ESMTP\r\n")
        talk.say(EHLO_PIPELINING)
        sent = talk.say(b"553 5.7.1 sender refused\r\n503 no\r\n554 no valid recipients\r\n")
        self.assertEqual(sent, b"QUIT\r\n")
        talk.close()
        error = self.failureResultOf(talk.result, DeliveryError).value
        self.assertEqual((error.code, error.enhanced, error.stage), (553, "5.7.1", "mail"))
        self.assertFalse(error.temporary)

    def test_dataRefused(self) -> None:
        """
        A refusal of DATA is every accepted recipient's reply.
        """
        talk = Dialogue()
        talk.say(b"220 mx ESMTP\r\n")
        talk.say(EHLO_PIPELINING)
        self.assertEqual(talk.say(b"250 ok\r\n250 ok\r\n451 4.3.0 later\r\n"), b"QUIT\r\n")
        talk.close()
        result = self.successResultOf(talk.result)
        self.assertEqual(result.recipients[0].reply, ClientReply(451, "4.3.0", "later"))

    def test_quotedLocalPart(self) -> None:
        """
        A quoted local part may hold angle brackets (RFC 5321 section
        4.1.2); it is sent as it is.
        """
        talk = Dialogue(recipients=['"a<b>"@example.org'])
        talk.say(b"220 mx ESMTP\r\n")
        talk.say(EHLO_PLAIN)
        self.assertEqual(talk.say(b"250 ok\r\n"), b'RCPT TO:<"a<b>"@example.org>\r\n')

    def test_heloFallback(self) -> None:
        """
        A server refusing EHLO is greeted with HELO (RFC 5321 section 3.2).
        """
        talk = Dialogue()
        talk.say(b"220 mx SMTP\r\n")
        self.assertEqual(talk.say(b"502 no\r\n"), b"HELO client.example\r\n")
        self.assertEqual(talk.say(b"250 hi\r\n"), b"MAIL FROM:<alice@example.com>\r\n")

    def test_authPlain(self) -> None:
        """
        Credentials go as AUTH PLAIN with an initial response.
        """
        talk = Dialogue(username="alice", password="s3cret")
        talk.say(b"220 mx ESMTP\r\n")
        token = base64.b64encode(b"\0alice\0s3cret")
        self.assertEqual(
            talk.say(b"250-mx\r\n250 AUTH LOGIN PLAIN\r\n"), b"AUTH PLAIN " + token + b"\r\n"
        )
        self.assertEqual(talk.say(b"235 2.7.0 ok\r\n"), b"MAIL FROM:<alice@example.com>\r\n")

    def test_authLogin(self) -> None:
        """
        When only LOGIN is offered, user name and password answer its
        challenges.
        """
        talk = Dialogue(username="alice", password="s3cret")
        talk.say(b"220 mx ESMTP\r\n")
        self.assertEqual(talk.say(b"250-mx\r\n250 AUTH LOGIN\r\n"), b"AUTH LOGIN\r\n")
        self.assertEqual(talk.say(b"334 VXNlcm5hbWU6\r\n"), base64.b64encode(b"alice") + b"\r\n")
        self.assertEqual(talk.say(b"334 UGFzc3dvcmQ6\r\n"), base64.b64encode(b"s3cret") + b"\r\n")
        self.assertEqual(talk.say(b"235 ok\r\n"), b"MAIL FROM:<alice@example.com>\r\n")

    def test_authRefused(self) -> None:
        """
        Refused credentials fail the delivery with the server's reply.
        """
        talk = Dialogue(username="alice", password="wrong")
        talk.say(b"220 mx ESMTP\r\n")
        talk.say(b"250-mx\r\n250 AUTH PLAIN\r\n")
        self.assertEqual(talk.say(b"535 5.7.8 bad credentials\r\n"), b"QUIT\r\n")
        talk.close()
        error = self.failureResultOf(talk.result, DeliveryError).value
        self.assertEqual((error.code, error.stage), (535, "auth"))

    def test_noCredentialsInClear(self) -> None:
        """
        With opportunistic TLS and no STARTTLS offered, credentials are not
        sent: the delivery fails temporarily.
        """
        talk = Dialogue(username="alice", password="s3cret", tls="opportunistic", tlsHostname="mx")
        talk.say(b"220 mx ESMTP\r\n")
        self.assertEqual(talk.say(b"250-mx\r\n250 AUTH PLAIN\r\n"), b"QUIT\r\n")
        talk.close()
        error = self.failureResultOf(talk.result, DeliveryError).value
        self.assertEqual((error.code, error.enhanced, error.stage), (451, "4.7.0", "auth"))

    def test_requiredTLSNotOffered(self) -> None:
        """
        With C{tls="required"}, a server not offering STARTTLS fails the
        delivery with 451 4.7.5 before any transaction.
        """
        talk = Dialogue(tls="required", tlsHostname="mx.example.com")
        talk.say(b"220 mx ESMTP\r\n")
        self.assertEqual(talk.say(EHLO_PIPELINING), b"QUIT\r\n")
        talk.close()
        error = self.failureResultOf(talk.result, DeliveryError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.7.5"))

    def test_smtpUtf8NotOffered(self) -> None:
        """
        A non-ASCII address needs SMTPUTF8; without it the delivery fails
        permanently.
        """
        talk = Dialogue(recipients=["j\u00f6rg@example.org"])
        talk.say(b"220 mx ESMTP\r\n")
        self.assertEqual(talk.say(EHLO_PLAIN), b"QUIT\r\n")
        talk.close()
        error = self.failureResultOf(talk.result, DeliveryError).value
        self.assertEqual((error.code, error.enhanced), (553, "5.6.7"))

    def test_smtpUtf8Offered(self) -> None:
        """
        With SMTPUTF8 offered, MAIL asks for it.
        """
        talk = Dialogue(recipients=["j\u00f6rg@example.org"])
        talk.say(b"220 mx ESMTP\r\n")
        sent = talk.say(b"250-mx\r\n250 SMTPUTF8\r\n")
        self.assertEqual(sent, b"MAIL FROM:<alice@example.com> SMTPUTF8\r\n")

    def test_timeout(self) -> None:
        """
        A server that does not answer within C{timeout} loses the connection
        and the delivery fails temporarily.
        """
        talk = Dialogue(timeout=30)
        talk.say(b"220 mx ESMTP\r\n")
        talk.clock.advance(29)
        self.assertNoResult(talk.result)
        talk.clock.advance(1)
        error = self.failureResultOf(talk.result, DeliveryError).value
        self.assertEqual((error.code, error.enhanced, error.stage), (451, "4.4.2", "hello"))
        self.assertTrue(talk.transport.disconnected)

    def test_malformedReply(self) -> None:
        """
        Output that is not SMTP drops the connection: 451 4.5.0.
        """
        talk = Dialogue()
        talk.say(b"HTTP/1.1 400 Bad Request\r\n")
        error = self.failureResultOf(talk.result, DeliveryError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.5.0"))

    def test_dataAnsweredWithoutGoAhead(self) -> None:
        """
        DATA answered with 250 instead of 354 is the server's protocol
        error: no body is sent, the delivery fails with 451 4.5.0 and the
        connection is dropped, never taken for a delivered message.
        """
        for pipelining in (True, False):
            talk = Dialogue()
            talk.say(b"220 mx ESMTP\r\n")
            if pipelining:
                talk.say(EHLO_PIPELINING)
                sent = talk.say(b"250 ok\r\n250 ok\r\n250 2.0.0 ok\r\n")
            else:
                talk.say(EHLO_PLAIN)
                talk.say(b"250 ok\r\n")
                talk.say(b"250 ok\r\n")
                sent = talk.say(b"250 2.0.0 ok\r\n")
            self.assertNotIn(b"body", sent)
            error = self.failureResultOf(talk.result, DeliveryError).value
            self.assertEqual((error.code, error.enhanced), (451, "4.5.0"))
            self.assertIn("DATA answered with 250", error.message)
            self.assertTrue(talk.transport.disconnected)

    def test_replyToNoCommand(self) -> None:
        """
        A reply beyond those due ends the session once the due ones are
        handed on: the message's own reply stands, and the connection is
        dropped rather than said QUIT to (its replies are out of step).
        """
        talk = Dialogue()
        talk.say(b"220 mx ESMTP\r\n")
        talk.say(EHLO_PIPELINING)
        talk.say(b"250 ok\r\n250 ok\r\n354 go\r\n")
        talk.say(b"250 2.0.0 queued\r\n250 2.0.0 stray\r\n")
        self.assertTrue(talk.transport.disconnected)
        result = self.successResultOf(talk.result)
        self.assertEqual(result.recipients[0].reply.text, "queued")

    def test_floodedReplies(self) -> None:
        """
        Replies streamed after the last one due are not kept: the session
        ends at the first.
        """
        talk = Dialogue()
        talk.say(b"220 mx ESMTP\r\n")
        talk.say(EHLO_PIPELINING)
        talk.say(b"250 ok\r\n250 ok\r\n354 go\r\n")
        talk.say(b"250 ok\r\n" * 50)
        self.assertTrue(talk.transport.disconnected)
        self.assertEqual(talk.endpoint.protocol._replies, [])
        self.assertEqual(self.successResultOf(talk.result).recipients[0].reply.code, 250)

    def test_plaintextAfterStartTLS(self) -> None:
        """
        Text behind the 220 to STARTTLS (a reply injected before the
        handshake) is never read as an answer to a command sent over TLS:
        the session ends, whether the text is a whole reply, a part, or
        not a reply at all; the handshake is never begun.
        """
        for injected in (b"250 injected\r\n", b"250-inj", b"garbage\r\n"):
            talk = Dialogue(tls="required", tlsHostname="mx.example.com")
            talk.say(b"220 mx ESMTP\r\n")
            talk.say(b"250-mx\r\n250 STARTTLS\r\n")
            talk.say(b"220 2.0.0 go ahead\r\n" + injected)
            self.assertTrue(talk.transport.disconnected, injected)
            self.assertIsNone(talk.transport.tlsStarted, injected)
            error = self.failureResultOf(talk.result, DeliveryError).value
            self.assertEqual((error.code, error.enhanced), (451, "4.5.0"))

    def test_trickledReply(self) -> None:
        """
        The deadline runs per reply: a server sending a byte now and then,
        never a whole reply, is cut at C{timeout}.
        """
        talk = Dialogue(timeout=30)
        talk.say(b"220 mx ESMTP\r\n")
        for octet in b"250-mx.example.com\r\n250-PIPELINING\r\n250-8BIT"[:30]:
            self.assertNoResult(talk.result)
            talk.say(bytes([octet]))
            talk.clock.advance(1)
        error = self.failureResultOf(talk.result, DeliveryError).value
        self.assertEqual((error.code, error.enhanced, error.stage), (451, "4.4.2", "hello"))

    def streamDialogue(self, stream: MessageStream) -> Dialogue:
        talk = Dialogue(stream=stream)
        talk.say(b"220 mx ESMTP\r\n")
        talk.say(EHLO_PIPELINING)
        talk.say(b"250 ok\r\n250 ok\r\n354 go\r\n")
        return talk

    def test_flowControl(self) -> None:
        """
        During the body the stream is the connection's streaming producer:
        while the connection pauses it, nothing more is written; at the end
        it is unregistered.
        """
        stream = MessageStream()
        talk = self.streamDialogue(stream)
        self.assertIs(talk.transport.producer, stream)
        self.assertTrue(talk.transport.streaming)
        stream._write(b"one\r\n")
        self.assertEqual(talk.transport.value(), b"one\r\n")
        stream.pauseProducing()
        stream._write(b".two\r\n")
        self.assertEqual(talk.transport.value(), b"one\r\n")
        stream.resumeProducing()
        stream._finish()
        self.assertEqual(talk.transport.value(), b"one\r\n..two\r\n.\r\n")
        self.assertIsNone(talk.transport.producer)

    def test_streamFailure(self) -> None:
        """
        When the body does not arrive whole, the connection is dropped
        without the final period and the delivery fails with the stream's
        failure.
        """
        stream = MessageStream()
        talk = self.streamDialogue(stream)
        stream._write(b"partial\r\n")
        stream._fail(SMTPError(552, "too big", "5.3.4"))
        self.assertTrue(talk.transport.disconnected)
        self.assertFalse(talk.transport.value().endswith(b".\r\n"))
        self.assertEqual(self.failureResultOf(talk.result, SMTPError).value.code, 552)

    def test_connectionLostDuringBody(self) -> None:
        """
        A connection lost while the body streams fails the delivery
        temporarily, at once.
        """
        stream = MessageStream()
        talk = self.streamDialogue(stream)
        talk.transport.loseConnection()
        error = self.failureResultOf(talk.result, DeliveryError).value
        self.assertEqual((error.code, error.stage), (451, "body"))

    def test_lmtpConnectionLostAfterSomeReplies(self) -> None:
        """
        In LMTP, once some recipients have their reply after the body, a
        lost connection gives the others a temporary reply instead of
        failing the whole delivery.
        """
        talk = Dialogue(lmtp=True, recipients=["a@example.org", "b@example.org"])
        self.assertEqual(talk.say(b"220 lmtp\r\n"), b"LHLO client.example\r\n")
        talk.say(EHLO_PIPELINING)
        talk.say(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        talk.say(b"250 2.0.0 delivered\r\n")
        talk.transport.loseConnection()
        result = self.successResultOf(talk.result)
        self.assertEqual(
            [(r.reply.code, r.reply.enhanced) for r in result.recipients],
            [(250, "2.0.0"), (451, "4.4.2")],
        )

    def test_invalidArguments(self) -> None:
        """
        Addresses that would break the command line, and verification
        without a name to verify, are refused before connecting.
        """
        endpoint = FakeEndpoint()
        common: dict[str, Any] = {"stream": b"", "heloName": "c", "tls": "none"}
        self.assertRaises(
            ValueError, deliver, endpoint, sender="a>\r\nRSET", recipients=["b"], **common
        )
        self.assertRaises(ValueError, deliver, endpoint, sender="a", recipients=[], **common)
        self.assertRaises(
            ValueError,
            deliver,
            endpoint,
            sender="a",
            recipients=["b"],
            stream=b"",
            heloName="c",
            tls="required",
        )
        self.assertIsNone(endpoint.protocol)


def sessionRequest(lmtp: bool = False) -> Request:
    """
    How a session opened with L{openSession} talks: plain text, no AUTH,
    no transaction of its own.
    """
    return Request(
        sender="",
        recipients=(),
        stream=None,
        lmtp=lmtp,
        heloName="client.example",
        tls="none",
        tlsCreator=None,
        verify=False,
        username=None,
        password=None,
        smtpUtf8=False,
        requireTls=False,
        timeout=30.0,
    )


class SessionTests(SynchronousTestCase):
    """
    A L{ClientSession} (the relay's and LMTP delivery's pooled sessions)
    against a scripted server that breaks the protocol.
    """

    def setUp(self) -> None:
        self.endpoint = FakeEndpoint()
        opening = Deferred.fromCoroutine(openSession(self.endpoint, sessionRequest(), Clock()))
        self.say(b"220 mx ESMTP\r\n")
        self.say(EHLO_PLAIN)
        self.session = self.successResultOf(opening)

    def say(self, data: bytes) -> None:
        self.endpoint.protocol.dataReceived(data)

    def command(self, call: Any, answer: bytes) -> Any:
        d = Deferred.fromCoroutine(call)
        self.say(answer)
        return d

    def body(self) -> MessageStream:
        stream = MessageStream()
        stream._write(b"Subject: x\r\n\r\nbody\r\n")
        stream._finish()
        return stream

    def test_dataAnsweredWithoutGoAhead(self) -> None:
        """
        DATA answered with 250 fails with 451 4.5.0 (never taken for the
        message's reply), and the session is not used again.
        """
        self.command(self.session.mail("a@example.com", ""), b"250 ok\r\n")
        self.command(self.session.rcpt("b@example.org", ""), b"250 ok\r\n")
        d = self.command(self.session.data(self.body(), 1), b"250 2.0.0 ok\r\n")
        error = self.failureResultOf(d, DeliveryError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.5.0"))
        self.assertNotIn(b"body", self.endpoint.transport.value())
        self.assertFalse(self.session.usable)

    def test_finalReplyThenGarbage(self) -> None:
        """
        A 250 after the body followed, in the same read, by a line that is
        no reply: the 250 stands (the next hop has the message), then the
        session ends.
        """
        self.command(self.session.mail("a@example.com", ""), b"250 ok\r\n")
        self.command(self.session.rcpt("b@example.org", ""), b"250 ok\r\n")
        d = self.command(self.session.data(self.body(), 1), b"354 go\r\n")
        self.say(b"250 2.0.0 queued\r\n\x1b[2Jgarbage\r\n")
        self.assertEqual([r.text for r in self.successResultOf(d)], ["queued"])
        self.assertFalse(self.session.usable)
        self.assertTrue(self.endpoint.transport.disconnected)

    def test_strayReplyWithFinal(self) -> None:
        """
        A reply too many in the same read as the reply after the body: the
        message's reply stands, and when it is handed on the session is
        already known to be ending, so that the pool never gives it to the
        next message.
        """
        self.command(self.session.mail("a@example.com", ""), b"250 ok\r\n")
        self.command(self.session.rcpt("b@example.org", ""), b"250 ok\r\n")
        d = self.command(self.session.data(self.body(), 1), b"354 go\r\n")
        usable = []

        def handedOn(replies: object) -> object:
            usable.append(self.session.usable)
            return replies

        d.addCallback(handedOn)
        self.say(b"250 2.0.0 queued\r\n250 2.0.0 stray\r\n")
        self.assertEqual([r.text for r in self.successResultOf(d)], ["queued"])
        self.assertEqual(usable, [False])

    def test_chunkRepliesNotKept(self) -> None:
        """
        The replies to BDAT chunks are read as they arrive: a next hop
        answering every chunk with the longest reply allowed makes the
        client keep none of them while the body streams (memory bounded
        whatever the size of the message); the reply after the last chunk
        is the message's.
        """
        endpoint = FakeEndpoint()
        opening = Deferred.fromCoroutine(openSession(endpoint, sessionRequest(), Clock()))
        endpoint.protocol.dataReceived(b"220 mx ESMTP\r\n")
        endpoint.protocol.dataReceived(b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        session = self.successResultOf(opening)
        for call in (session.mail("a@example.com", ""), session.rcpt("b@example.org", "")):
            d = Deferred.fromCoroutine(call)
            endpoint.protocol.dataReceived(b"250 ok\r\n")
            self.successResultOf(d)
        longest = b"250-" + b"x" * (MAX_REPLY_LINE - 4) + b"\r\n"
        reply = longest * (MAX_REPLY_LINES - 1) + b"250 chunk ok\r\n"
        stream = MessageStream()
        sent = Deferred.fromCoroutine(session.bdat(stream, 1))
        for _ in range(4):
            stream._write(b"y" * CHUNK_SIZE)
            endpoint.protocol.dataReceived(reply)
            self.assertEqual(endpoint.protocol._replies, [])
        stream._finish()
        self.assertNoResult(sent)
        endpoint.protocol.dataReceived(b"250 2.0.0 queued\r\n")
        self.assertEqual([r.text for r in self.successResultOf(sent)], ["queued"])
        self.assertTrue(session.usable)

    def test_idleWithoutReplyDeadline(self) -> None:
        """
        Once every reply has come, the session waits for its next command
        without a deadline of its own: kept idle (by the pool, for
        C{--relay-idle}) longer than the reply timeout, it is neither
        aborted nor spoilt, and a command sent later has its deadline again.
        """
        clock = Clock()
        endpoint = FakeEndpoint()
        request = sessionRequest()
        opening = Deferred.fromCoroutine(openSession(endpoint, request, clock))
        endpoint.protocol.dataReceived(b"220 mx ESMTP\r\n")
        endpoint.protocol.dataReceived(EHLO_PLAIN)
        session = self.successResultOf(opening)
        d = Deferred.fromCoroutine(session.mail("a@example.com", ""))
        endpoint.protocol.dataReceived(b"250 ok\r\n")
        self.successResultOf(d)
        clock.advance(request.timeout * 3)
        self.assertFalse(endpoint.transport.disconnected)
        self.assertTrue(session.usable)
        d = Deferred.fromCoroutine(session.rcpt("b@example.org", ""))
        clock.advance(request.timeout)
        self.assertTrue(endpoint.transport.disconnected)
        error = self.failureResultOf(d, DeliveryError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.4.2"))

    def test_strayReplyWhileIdle(self) -> None:
        """
        A reply arriving while no command waits ends the session: the next
        message is not answered with it.
        """
        self.command(self.session.mail("a@example.com", ""), b"250 ok\r\n")
        self.command(self.session.rcpt("b@example.org", ""), b"250 ok\r\n")
        d = self.command(self.session.data(self.body(), 1), b"354 go\r\n")
        self.say(b"250 2.0.0 queued\r\n")
        self.assertEqual([r.code for r in self.successResultOf(d)], [250])
        self.assertTrue(self.session.usable)
        self.say(b"250 2.0.0 stray\r\n")
        self.assertFalse(self.session.usable)


@frozen
class Message:
    """
    A message as a test handler received it.
    """

    session: Session
    sender: str
    recipients: list[str]
    body: bytes
    requireTls: bool = False


class Recorder(BaseHandler):
    """
    Records every message; refuses recipients listed in C{refuse}; in LMTP
    mode refuses C{lmtpRefuse} after the body.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refuse: dict[str, SMTPError] = {}
        self.lmtpRefuse: dict[str, SMTPError] = {}

    def onRcptTo(self, address: Address, session: Session) -> object:
        if address.address in self.refuse:
            raise self.refuse[address.address]
        return None

    async def onData(self, stream: IMessageStream, session: Session) -> object:
        envelope = session.envelope
        recipients = [a.address for a in envelope.rcptTo]
        sender = envelope.mailFrom.address if envelope.mailFrom is not None else ""
        try:
            body = await stream.collect()  # type: ignore[misc]
        except ConnectionLost:
            # The sender gave up before the end: nothing to record.
            raise SMTPError(451, "Connection lost", "4.4.2") from None
        self.messages.append(
            Message(session, sender, recipients, body, requireTls=envelope.requireTls)
        )
        if self.lmtpRefuse:
            return [self.lmtpRefuse.get(a, "stored") for a in recipients]
        return f"queued as Q{len(self.messages)}"


async def startServer(testCase: TestCase, handler: Any, **options: Any) -> tuple[SMTPServer, int]:
    """
    A real server on an ephemeral port of 127.0.0.1, closed after the test.
    """
    options.setdefault("name", "mx.example.com")
    options.setdefault("disableReverseLookup", True)
    server = SMTPServer(handler, ServerOptions(**options), reactor=reactor)
    port: IListeningPort = await server.listen("tcp:0:interface=127.0.0.1")
    testCase.addCleanup(server.close)
    return server, port.getHost().port  # type: ignore[attr-defined]


def endpointFor(port: int) -> TCP4ClientEndpoint:
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port)


class LoopbackTests(TestCase):
    """
    Deliveries to a real twisted-smtpd server on 127.0.0.1.
    """

    async def send(self, port: int, **kwargs: Any) -> DeliveryResult:
        arguments: dict[str, Any] = {
            "sender": "alice@example.com",
            "recipients": ["bob@example.org"],
            "stream": b"Subject: test\r\n\r\nhello\r\n",
            "heloName": "client.example",
            "tls": "none",
            "reactor": reactor,
        }
        arguments.update(kwargs)
        return await deliver(endpointFor(port), **arguments)

    async def test_leadingDotsRoundTrip(self) -> None:
        """
        A body with periods at line starts, and one without a final CRLF,
        arrive byte for byte (plus the CRLF).
        """
        handler = Recorder()
        server, port = await startServer(self, handler)
        body = b".\r\n..\r\n.x\r\n\r\n.\r\nlast line" * 1000
        result = await self.send(port, stream=body)
        self.assertEqual(result.recipients[0].reply.text, "queued as Q1")
        self.assertEqual(handler.messages[0].body, body + b"\r\n")
        self.assertFalse(result.secure)

    async def test_streamedBody(self) -> None:
        """
        A large body given as a stream, written after the delivery started,
        arrives whole.
        """
        handler = Recorder()
        server, port = await startServer(self, handler)
        stream = MessageStream()
        chunk = b".line with a dot\r\n" * 4096
        d = Deferred.fromCoroutine(self.send(port, stream=stream))
        for _ in range(64):
            stream._write(chunk)
        stream._finish()
        await d
        self.assertEqual(handler.messages[0].body, chunk * 64)

    async def test_refusedRecipient(self) -> None:
        """
        A recipient refused at RCPT has that reply; the others get the
        message.
        """
        handler = Recorder()
        handler.refuse["nobody@example.org"] = SMTPError(550, "No such user", "5.1.1")
        server, port = await startServer(self, handler)
        result = await self.send(port, recipients=["nobody@example.org", "bob@example.org"])
        self.assertEqual(
            [(r.reply.code, r.reply.enhanced) for r in result.recipients],
            [(550, "5.1.1"), (250, "2.0.0")],
        )
        self.assertEqual(handler.messages[0].recipients, ["bob@example.org"])

    async def test_lmtpPerRecipient(self) -> None:
        """
        In LMTP each accepted recipient gets its own reply after the body.
        """
        handler = Recorder()
        handler.lmtpRefuse["carol@example.net"] = SMTPError(452, "Over quota", "4.2.2")
        server, port = await startServer(self, handler, lmtp=True)
        result = await self.send(
            port, lmtp=True, recipients=["bob@example.org", "carol@example.net", "dan@example.com"]
        )
        self.assertEqual(
            [(r.reply.code, r.reply.text) for r in result.recipients],
            [(250, "stored"), (452, "Over quota"), (250, "stored")],
        )
        self.assertIsNone(result.dataReply)

    async def test_unreachable(self) -> None:
        """
        A server that cannot be reached is a temporary failure.
        """
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        with self.assertRaises(DeliveryError) as caught:
            await self.send(number)
        self.assertEqual((caught.exception.code, caught.exception.stage), (451, "connect"))
        self.assertTrue(caught.exception.temporary)

    async def test_requiredTLSHidden(self) -> None:
        """
        With C{tls="required"} and a server not advertising STARTTLS nothing
        is sent: 451 4.7.5.
        """
        handler = Recorder()
        server, port = await startServer(self, handler, hideSTARTTLS=True)
        with self.assertRaises(DeliveryError) as caught:
            await self.send(port, tls="required", tlsHostname="mx.example.com")
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (451, "4.7.5"))
        self.assertEqual(handler.messages, [])


class TLSTests(TestCase):
    """
    STARTTLS against a real server with certificates from a test CA.
    """

    async def startTLSServer(self, handler: Any, **options: Any) -> int:
        self.ca = CertificateAuthority(self.mktemp())
        issued = self.ca.server("mx.example.com")
        server, port = await startServer(
            self, handler, certificate=issued.certificatePath, privateKey=issued.keyPath, **options
        )
        return port

    def trustRoot(self) -> Certificate:
        with open(self.ca.certificatePath, "rb") as f:
            return Certificate.loadPEM(f.read())

    async def send(self, port: int, **kwargs: Any) -> DeliveryResult:
        arguments: dict[str, Any] = {
            "sender": "alice@example.com",
            "recipients": ["bob@example.org"],
            "stream": b"Subject: secret\r\n\r\n.hidden\r\n",
            "heloName": "client.example",
            "tls": "required",
            "tlsHostname": "mx.example.com",
            "trustRoot": self.trustRoot(),
            "reactor": reactor,
        }
        arguments.update(kwargs)
        return await deliver(endpointFor(port), **arguments)

    async def test_verified(self) -> None:
        """
        STARTTLS with a certificate valid for the name: a large message
        streams over TLS and the server's session is secure.
        """
        handler = Recorder()
        port = await self.startTLSServer(handler)
        body = b"Subject: secret\r\n\r\n" + b".hidden line\r\n" * 200_000
        stream = MessageStream()
        d = Deferred.fromCoroutine(self.send(port, stream=stream))
        for start in range(0, len(body), 65536):
            stream._write(body[start : start + 65536])
        stream._finish()
        result = await d
        self.assertTrue(result.secure)
        self.assertTrue(handler.messages[0].session.secure)
        self.assertEqual(handler.messages[0].body, body)

    async def test_wrongName(self) -> None:
        """
        A certificate for another name fails verification: 451 4.7.5, and
        nothing is delivered.
        """
        handler = Recorder()
        port = await self.startTLSServer(handler)
        with self.assertRaises(DeliveryError) as caught:
            await self.send(port, tlsHostname="other.example.com", tls="opportunistic")
        self.assertEqual(
            (caught.exception.code, caught.exception.enhanced, caught.exception.stage),
            (451, "4.7.5", "tls"),
        )
        self.assertEqual(handler.messages, [])

    async def test_untrustedIssuer(self) -> None:
        """
        A certificate from a CA that is not trusted fails verification.
        """
        handler = Recorder()
        port = await self.startTLSServer(handler)
        other = CertificateAuthority(self.mktemp(), "another CA")
        with open(other.certificatePath, "rb") as f:
            root = Certificate.loadPEM(f.read())
        with self.assertRaises(DeliveryError) as caught:
            await self.send(port, trustRoot=root)
        self.assertEqual(caught.exception.stage, "tls")

    async def test_requireTls(self) -> None:
        """
        A REQUIRETLS message goes over verified TLS and carries REQUIRETLS,
        even when C{tls} says opportunistic.
        """
        handler = Recorder()
        port = await self.startTLSServer(handler)
        result = await self.send(port, requireTls=True, tls="opportunistic")
        self.assertTrue(result.secure)
        self.assertTrue(handler.messages[0].requireTls)

    async def test_requireTlsUnverified(self) -> None:
        """
        A REQUIRETLS message is not sent over TLS that was not verified:
        550 5.7.10.
        """
        handler = Recorder()
        port = await self.startTLSServer(handler)
        with self.assertRaises(DeliveryError) as caught:
            await self.send(port, requireTls=True, verify=False)
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (550, "5.7.10"))
        self.assertEqual(handler.messages, [])

    async def test_requireTlsNotOffered(self) -> None:
        """
        A REQUIRETLS message is not sent to a server not offering REQUIRETLS:
        550 5.7.30.
        """
        handler = Recorder()
        port = await self.startTLSServer(handler, hideREQUIRETLS=True)
        with self.assertRaises(DeliveryError) as caught:
            await self.send(port, requireTls=True)
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (550, "5.7.30"))
        self.assertEqual(handler.messages, [])

    async def test_unverified(self) -> None:
        """
        C{verify=False} accepts any certificate (insecure, but encrypted).
        """
        handler = Recorder()
        port = await self.startTLSServer(handler)
        result = await self.send(port, tlsHostname="other.example.com", verify=False)
        self.assertTrue(result.secure)
        self.assertTrue(handler.messages[0].session.secure)
