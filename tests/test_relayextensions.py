# -*- test-case-name: tests.test_relayextensions -*-
"""
Tests for the ESMTP extensions the relaying handlers pass on to the next
hop, or refuse before the body when it lacks them: SIZE, BODY (8BITMIME,
BINARYMIME with BDAT), DSN, SMTPUTF8 and REQUIRETLS; and their log lines.
"""

from __future__ import annotations

import email
from typing import Any, cast

from twisted.internet.ssl import Certificate
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.certs import CertificateAuthority
from tests.test_client import startServer
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
from twisted_smtpd._core.address import parseMail
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.replies import CommandError
from twisted_smtpd._core.session import Address
from twisted_smtpd._smtpclient.client import DeliveryError
from twisted_smtpd._smtpclient.clientsession import ClientSession
from twisted_smtpd.handlers._proxyparams import mailParameters
from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler
from twisted_smtpd.handlers.relay import RelayHandler

# Bare CR, bare LF, NUL and a line with only a period: kept byte for byte.
BINARY = b"Subject: bin\r\n\r\n\x00\x01\r\x02\n.\r\n\xff\r\n.\n\r"


class ExtensionTests(TestCase):
    """
    What MAIL and RCPT parameters become on the way to the next hop.
    """

    async def front(self, smarthost: EnvelopeRecorder, **smarthostOptions: Any) -> int:
        server, port = await startServer(self, smarthost, **smarthostOptions)
        self.handler = closeWith(
            self, RelayHandler("127.0.0.1", port, tls="none", heloName="relay.example")
        )
        front, frontPort = await startServer(self, self.handler)
        return frontPort

    async def session(self, port: int, lmtp: bool = False) -> ClientSession:
        client = await clientSession(port, lmtp)
        quitAfter(self, client)
        return client

    async def test_sizePassedOn(self) -> None:
        """
        SIZE goes on to the next hop, which refuses a message too large for
        it at MAIL, before the body; a smaller one arrives with its SIZE.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, size=1000)
        client = await self.session(port)
        refused = await client.mail("alice@example.com", " SIZE=5000")
        self.assertEqual((refused.code, refused.enhanced), (552, "5.3.4"))
        self.assertEqual((await client.rset()).code, 250)
        self.assertEqual((await client.mail("alice@example.com", " SIZE=500")).code, 250)
        self.assertEqual((await client.rcpt("bob@example.org", "")).code, 250)
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        # It grows by the Received: field written before the message, as
        # built at MAIL: without the for clause, which names the one
        # recipient known only after RCPT.
        field = smarthost.messages[0].body[: -len(BODY)]
        self.assertEqual(untraced(self, field), b"")
        forClause = len(b" for <bob@example.org>")
        self.assertEqual(smarthost.envelopes[0].size, 500 + len(field) - forClause)

    async def test_chunkRefused(self) -> None:
        """
        A message the next hop refuses while its chunks arrive (it is over
        the next hop's size limit, no SIZE was declared) is refused with the
        next hop's reply, and the next message goes through.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, size=1000)
        result = await send(port, stream=b"x" * 5000 + b"\r\n")
        self.assertEqual(replies(result), [(552, "5.3.4")])
        self.assertEqual(smarthost.messages, [])
        self.assertEqual(replies(await send(port)), [(250, "2.0.0")])

    async def test_binarymimeByteExact(self) -> None:
        """
        A BODY=BINARYMIME message received by BDAT goes on with BDAT and
        BODY=BINARYMIME to a next hop offering CHUNKING and BINARYMIME (a
        twisted-smtpd in LMTP mode), byte for byte.
        """
        store = EnvelopeRecorder()
        server, lmtpPort = await startServer(self, store, lmtp=True)
        handler = closeWith(
            self, LMTPDeliveryHandler(f"tcp:127.0.0.1:{lmtpPort}", heloName="front.example")
        )
        front, port = await startServer(self, handler)
        client = await self.session(port)
        self.assertEqual((await client.mail("alice@example.com", " BODY=BINARYMIME")).code, 250)
        self.assertEqual((await client.rcpt("bob@example.org", "")).code, 250)
        [final] = await client.bdat(bodyStream(BINARY), 1)
        self.assertEqual(final.code, 250)
        self.assertEqual(untraced(self, store.messages[0].body, by="front.example"), BINARY)
        self.assertEqual(store.envelopes[0].bodyType, "binarymime")

    async def test_binarymimeRelayed(self) -> None:
        """
        The relay passes a binary message on the same way to a smarthost
        offering BINARYMIME.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost)
        client = await self.session(port)
        await client.mail("alice@example.com", " BODY=BINARYMIME")
        await client.rcpt("bob@example.org", "")
        [final] = await client.bdat(bodyStream(BINARY), 1)
        self.assertEqual(final.code, 250)
        self.assertEqual(untraced(self, smarthost.messages[0].body), BINARY)

    async def test_binarymimeRefusedBeforeBody(self) -> None:
        """
        A next hop without CHUNKING/BINARYMIME: BODY=BINARYMIME is refused
        at MAIL with 554 5.6.3 (RFC 3030 section 3), before any body.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hideCHUNKING=True)
        client = await self.session(port)
        reply = await client.mail("alice@example.com", " BODY=BINARYMIME")
        self.assertEqual((reply.code, reply.enhanced), (554, "5.6.3"))
        self.assertEqual(smarthost.messages, [])

    async def test_8bitmimeRefused(self) -> None:
        """
        A next hop without 8BITMIME: BODY=8BITMIME is refused at MAIL.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hide8BITMIME=True)
        client = await self.session(port)
        reply = await client.mail("alice@example.com", " BODY=8BITMIME")
        self.assertEqual((reply.code, reply.enhanced), (554, "5.6.3"))

    async def test_dsnPassedOn(self) -> None:
        """
        RET, ENVID, NOTIFY and ORCPT go on to a next hop offering DSN, and
        this server sends no report of its own.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost)
        client = await self.session(port)
        await client.mail("alice@example.com", " RET=HDRS ENVID=QQ+2Bid")
        reply = await client.rcpt(
            "bob@example.org", " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.org"
        )
        self.assertEqual(reply.code, 250)
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        await self.handler.reportsSent()
        [envelope] = smarthost.envelopes
        self.assertEqual((envelope.dsn.ret, envelope.dsn.envid), ("HDRS", "QQ+id"))
        dsn = envelope.rcptTo[0].dsn
        assert dsn is not None
        self.assertEqual(dsn.notify, ("SUCCESS", "FAILURE"))
        self.assertEqual(dsn.orcpt, "rfc822;bob@example.org")

    async def test_relayedReport(self) -> None:
        """
        A next hop without DSN: a recipient asking NOTIFY=SUCCESS gets a
        "relayed" report from this server (RFC 3461 section 4), sent from
        <> through the next hop, with the ENVID.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hideDSN=True)
        client = await self.session(port)
        await client.mail("alice@example.com", " ENVID=E42")
        await client.rcpt("bob@example.org", " NOTIFY=SUCCESS")
        await client.rcpt("carol@example.net", " NOTIFY=FAILURE")
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        await self.handler.reportsSent()
        self.assertEqual(len(smarthost.messages), 2)
        report = smarthost.messages[1]
        self.assertEqual((report.sender, report.recipients), ("", ["alice@example.com"]))
        parsed = email.message_from_bytes(report.body)
        self.assertEqual(parsed.get_content_type(), "multipart/report")
        blocks = parsed.get_payload()[1].get_payload()
        self.assertEqual(blocks[0]["Original-Envelope-Id"], "E42")
        self.assertEqual(
            [(b["Final-Recipient"], b["Action"]) for b in blocks[1:]],
            [("rfc822; bob@example.org", "relayed")],
        )

    async def test_relayedReportNotAscii(self) -> None:
        """
        An C{ENVID} that decodes to UTF-8 and a sender that is not ASCII do
        not stop the "relayed" report: the message the next hop accepted is
        answered 250 (never 451, which would have it sent again), and the
        report goes from <> with SMTPUTF8, its C{ENVID} escaped.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hideDSN=True)
        client = await self.session(port)
        await client.mail("\u00e4lice@example.com", " SMTPUTF8 ENVID=+C3+A9")
        await client.rcpt("bob@example.org", " NOTIFY=SUCCESS")
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        await self.handler.reportsSent()
        self.assertEqual(len(smarthost.messages), 2)
        report = smarthost.messages[1]
        self.assertEqual((report.sender, report.recipients), ("", ["\u00e4lice@example.com"]))
        self.assertTrue(smarthost.envelopes[1].smtpUtf8)
        parsed = email.message_from_bytes(report.body)
        blocks = parsed.get_payload()[1].get_payload()
        self.assertEqual(blocks[0]["Original-Envelope-Id"], "\\x{E9}")

    async def test_unmadeReportKeepsAcceptance(self) -> None:
        """
        A report that cannot be made is logged; the message the next hop
        accepted is still answered 250.
        """
        from twisted_smtpd.handlers import _proxyreports

        def broken(**kwargs: object) -> bytes:
            raise UnicodeEncodeError("ascii", "\u00e9", 0, 1, "broken")

        self.patch(_proxyreports, "buildReport", broken)
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hideDSN=True)
        client = await self.session(port)
        await client.mail("alice@example.com", "")
        await client.rcpt("bob@example.org", " NOTIFY=SUCCESS")
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        self.assertEqual(len(smarthost.messages), 1)
        self.assertEqual(len(self.flushLoggedErrors(UnicodeEncodeError)), 1)
        self.assertTrue(
            any("report could not be made" in e.get("log_format", "") for e in observer)
        )

    async def test_dsnParametersSevenBit(self) -> None:
        """
        An C{ENVID} or C{ORCPT} in UTF-8 (allowed with SMTPUTF8) goes to a
        next hop offering DSN but not SMTPUTF8 in 7-bit form: xtext
        (RFC 3461 section 4), or C{\\x{HEX}} in a C{utf-8} address
        (RFC 6533 section 3); never as raw UTF-8, which such a next hop
        refuses or misreads.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hideSMTPUTF8=True)
        client = await self.session(port)
        reply = await client.mail("alice@example.com", " SMTPUTF8 ENVID=\u00e9t\u00e9")
        self.assertEqual(reply.code, 250)
        reply = await client.rcpt("bob@example.org", " ORCPT=rfc822;b\u00f8b@example.org")
        self.assertEqual(reply.code, 250)
        reply = await client.rcpt("carol@example.net", " ORCPT=utf-8;c\u00e4rol@example.net")
        self.assertEqual(reply.code, 250)
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        [envelope] = smarthost.envelopes
        assert envelope.mailFrom is not None
        self.assertEqual(envelope.mailFrom.args["ENVID"], "+C3+A9t+C3+A9")
        self.assertEqual(envelope.dsn.envid, "\u00e9t\u00e9")
        self.assertEqual(
            [r.args["ORCPT"] for r in envelope.rcptTo],
            ["rfc822;b+C3+B8b@example.org", "utf-8;c\\x{E4}rol@example.net"],
        )

    async def test_dsnParametersKeptForSmtpUtf8(self) -> None:
        """
        To a next hop offering SMTPUTF8, C{ENVID} and C{ORCPT} go on as the
        client sent them, byte for byte; one whose 7-bit form would pass
        RFC 3461's bound is refused for a next hop without it (553 5.6.7).
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost)
        client = await self.session(port)
        await client.mail("alice@example.com", " SMTPUTF8 ENVID=\u00e9t\u00e9")
        await client.rcpt("bob@example.org", " ORCPT=rfc822;b\u00f8b@example.org")
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        [envelope] = smarthost.envelopes
        assert envelope.mailFrom is not None
        self.assertEqual(envelope.mailFrom.args["ENVID"], "\u00e9t\u00e9")
        self.assertEqual(envelope.rcptTo[0].args["ORCPT"], "rfc822;b\u00f8b@example.org")

        other = EnvelopeRecorder()
        port = await self.front(other, hideSMTPUTF8=True)
        client = await self.session(port)
        reply = await client.mail("alice@example.com", " SMTPUTF8 ENVID=" + "\u00e9" * 20)
        self.assertEqual((reply.code, reply.enhanced), (553, "5.6.7"))

    async def test_smtpUtf8NotNeeded(self) -> None:
        """
        SMTPUTF8 with ASCII addresses is not required of the next hop: the
        message goes on without it.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hideSMTPUTF8=True)
        client = await self.session(port)
        self.assertEqual((await client.mail("alice@example.com", " SMTPUTF8")).code, 250)
        self.assertEqual((await client.rcpt("bob@example.org", "")).code, 250)
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        self.assertFalse(smarthost.envelopes[0].smtpUtf8)

    async def test_smtpUtf8NeededRefusedEarly(self) -> None:
        """
        A non-ASCII address for a next hop without SMTPUTF8 is refused with
        553 5.6.7 at MAIL or RCPT, never after the body.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hideSMTPUTF8=True)
        client = await self.session(port)
        reply = await client.mail("älice@example.com", " SMTPUTF8")
        self.assertEqual((reply.code, reply.enhanced), (553, "5.6.7"))
        self.assertEqual((await client.mail("alice@example.com", " SMTPUTF8")).code, 250)
        reply = await client.rcpt("bøb@example.org", "")
        self.assertEqual((reply.code, reply.enhanced), (553, "5.6.7"))

    async def test_smtpUtf8PassedOn(self) -> None:
        """
        A non-ASCII address goes on with SMTPUTF8 to a next hop offering it.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost)
        result = await send(port, recipients=["bøb@example.org"])
        self.assertEqual(replies(result), [(250, "2.0.0")])
        self.assertTrue(smarthost.envelopes[0].smtpUtf8)
        self.assertEqual(smarthost.messages[0].recipients, ["bøb@example.org"])


class _Offering:
    """
    A next hop's session as L{mailParameters} reads it: the extensions it
    offered.
    """

    verified = False

    def __init__(self, *extensions: str) -> None:
        self.extensions = extensions

    def offers(self, *keywords: str) -> bool:
        return all(keyword in self.extensions for keyword in keywords)


class SizeParameterTests(SynchronousTestCase):
    """
    The C{SIZE} passed on to the next hop, the client's grown by what is
    written before the message.
    """

    def test_grown(self) -> None:
        """
        The C{SIZE} passed on is the client's plus the octets added.
        """
        address = Address("alice@example.com", {"SIZE": "500"})
        client = cast(ClientSession, _Offering("SIZE"))
        self.assertEqual(mailParameters(address, client, 120), " SIZE=620")

    def test_twentyDigits(self) -> None:
        """
        A C{SIZE} near the largest a client may declare (twenty digits, RFC
        1870 section 3's C{size-value ::= 1*20DIGIT}) stays within twenty
        digits when grown: the largest such value, which any next hop
        refuses as too large (552), not a 21-digit one it would refuse as
        bad syntax (501), as this server itself does.
        """
        address = Address("alice@example.com", {"SIZE": "9" * 20})
        client = cast(ClientSession, _Offering("SIZE"))
        self.assertEqual(mailParameters(address, client, 120), " SIZE=" + "9" * 20)
        with self.assertRaises(CommandError) as e:
            parseMail(b"FROM:<a@example.com> SIZE=1" + b"0" * 20)
        self.assertEqual(e.exception.reply.code, 501)


class RequireTLSTests(TestCase):
    """
    REQUIRETLS (RFC 8689) is enforced on the next hop.
    """

    async def frontPort(self, smarthostOptions: dict[str, Any], **relay: Any) -> int:
        self.ca = CertificateAuthority(self.mktemp())
        issued = self.ca.server("localhost")
        self.smarthost = EnvelopeRecorder()
        server, port = await startServer(self, self.smarthost, **smarthostOptions)
        handler = closeWith(
            self, RelayHandler("localhost", port, heloName="relay.example", **relay)
        )
        front, frontPort = await startServer(
            self, handler, certificate=issued.certificatePath, privateKey=issued.keyPath
        )
        return frontPort

    async def sendRequiringTLS(self, port: int) -> Any:
        with open(self.ca.certificatePath, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        return await send(
            port,
            tls="required",
            tlsHostname="localhost",
            trustRoot=trust,
            requireTls=True,
        )

    async def test_nextHopWithoutSTARTTLS(self) -> None:
        """
        A next hop offering no STARTTLS: a REQUIRETLS message is refused at
        MAIL with 550 5.7.10, and nothing is sent to it.
        """
        port = await self.frontPort({"hideSTARTTLS": True}, tls="opportunistic")
        with self.assertRaises(DeliveryError) as caught:
            await self.sendRequiringTLS(port)
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (550, "5.7.10"))
        self.assertEqual(caught.exception.stage, "mail")
        self.assertEqual(self.smarthost.messages, [])

    async def test_verifiedNextHop(self) -> None:
        """
        Over verified TLS to a next hop offering REQUIRETLS, the message
        goes on with REQUIRETLS.
        """
        ca = CertificateAuthority(self.mktemp(), "smarthost CA")
        issued = ca.server("localhost")
        port = await self.frontPort(
            {"certificate": issued.certificatePath, "privateKey": issued.keyPath},
            tls="required",
            caCertificates=ca.certificatePath,
        )
        result = await self.sendRequiringTLS(port)
        self.assertEqual(replies(result), [(250, "2.0.0")])
        self.assertTrue(self.smarthost.envelopes[0].requireTls)


class LogTests(TestCase):
    """
    The relay's log lines per message.
    """

    async def relayOnce(self, **relay: Any) -> list[dict[str, Any]]:
        smarthost = EnvelopeRecorder()
        server, port = await startServer(self, smarthost)
        handler = closeWith(
            self, RelayHandler("127.0.0.1", port, tls="none", heloName="relay.example", **relay)
        )
        front, frontPort = await startServer(self, handler)
        # The first message opens the session to the smarthost.
        await send(frontPort)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        result = await send(frontPort)
        self.assertEqual(replies(result), [(250, "2.0.0")])
        return [e for e in events if e["log_level"] >= LogLevel.info]

    async def test_quiet(self) -> None:
        """
        With C{logMessages=False} (C{--quiet}), a relayed message leaves no
        log line, from the handler or the client connection.
        """
        self.assertEqual(await self.relayOnce(logMessages=False), [])

    async def test_quietNewSessions(self) -> None:
        """
        With C{logMessages=False}, opening a session per message (no reuse)
        logs nothing either: no "Starting factory" lines.
        """
        self.assertEqual(await self.relayOnce(logMessages=False, idleTimeout=0), [])

    async def test_oneLine(self) -> None:
        """
        Otherwise one line per message, with the smarthost's own reply.
        """
        [event] = await self.relayOnce()
        self.assertIn("queued as Q2", event["reply"])

    async def test_addressesEscaped(self) -> None:
        """
        A recipient the next hop refuses is named in the log line with
        every character that could disguise or break the line escaped
        (L{printable <twisted_smtpd._core.printable.printable>}): a UTF-8
        address may hold a bidirectional override or a line separator.
        """
        recipient = '"\u202egpj.exe\u2028x"@example.org'
        smarthost = EnvelopeRecorder()
        smarthost.refuse[recipient] = SMTPError(550, "No such user", "5.1.1")
        server, port = await startServer(self, smarthost)
        handler = closeWith(
            self, RelayHandler("127.0.0.1", port, tls="none", heloName="relay.example")
        )
        front, frontPort = await startServer(self, handler)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        client = await clientSession(frontPort)
        quitAfter(self, client)
        await client.mail("alice@example.com", " SMTPUTF8")
        self.assertEqual((await client.rcpt(recipient, "")).code, 550)
        [line] = [formatEvent(e) for e in events if "refused {address}" in e["log_format"]]
        self.assertIn('"\\u202egpj.exe\\u2028x"@example.org', line)
        self.assertNotIn("\u202e", line)
        self.assertNotIn("\u2028", line)
