# -*- test-case-name: tests.test_relayalabels -*-
"""
Tests for the all-ASCII form of an address whose domain only is not ASCII,
which the relay and LMTP handlers give a next hop without SMTPUTF8
(L{twisted_smtpd.handlers._proxyparams}).
"""

from __future__ import annotations

import email
from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_client import EHLO_PIPELINING, EHLO_PLAIN, Dialogue, startServer
from tests.test_relay import (
    BODY,
    EnvelopeRecorder,
    bodyStream,
    clientSession,
    closeWith,
    quitAfter,
)
from twisted_smtpd._core.hostname import asciiAddress
from twisted_smtpd._smtpclient.clientsession import ClientSession
from twisted_smtpd._smtpclient.clientwire import DeliveryError
from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler
from twisted_smtpd.handlers.relay import RelayHandler

#: U-labels, with an upper case letter UTS 46 folds.
DOMAIN = "B\u00fccher.example"
#: Their A-label form.
ALABELS = "xn--bcher-kva.example"


class AsciiAddressTests(SynchronousTestCase):
    """
    Tests for L{asciiAddress}.
    """

    def test_domainInALabels(self) -> None:
        """
        An ASCII local part with a domain in U-labels gets the domain in
        A-labels (IDNA 2008, UTS 46 mapping); the local part stays as it
        is, a quoted one holding C{@} too.
        """
        self.assertEqual(asciiAddress(f"Bob@{DOMAIN}"), f"Bob@{ALABELS}")
        self.assertEqual(asciiAddress(f'"a@b c"@mail.{DOMAIN}'), f'"a@b c"@mail.{ALABELS}')
        self.assertEqual(asciiAddress("a@\u00df.example"), "a@xn--zca.example")

    def test_asciiLabelsBesideULabels(self) -> None:
        """
        The domain is converted label by label: an ASCII label beside a
        U-label stays as it is, lower-cased as UTS 46 maps it (and Postfix's
        ICU conversion), an underscore, which IDNA's STD 3 rules refuse,
        and a valid A-label in capitals kept; a non-ASCII label UTS 46 maps
        to ASCII gives that ASCII.
        """
        self.assertEqual(asciiAddress(f"bob@Under_Score.{DOMAIN}"), f"bob@under_score.{ALABELS}")
        self.assertEqual(asciiAddress(f"bob@_dmarc.{DOMAIN}"), f"bob@_dmarc.{ALABELS}")
        self.assertEqual(
            asciiAddress(f"bob@XN--BCHER-KVA.{DOMAIN}"), f"bob@xn--bcher-kva.{ALABELS}"
        )
        self.assertEqual(asciiAddress("bob@a\uff3fb.\u00fc"), "bob@a_b.xn--tda")
        self.assertEqual(asciiAddress("bob@mail.B\u00fccher\u3002Example"), f"bob@mail.{ALABELS}")

    def test_asciiUnchanged(self) -> None:
        """
        An ASCII address, the null sender and C{Postmaster} are given back
        as they are.
        """
        for address in ["bob@example.org", f"bob@{ALABELS}", "", "Postmaster"]:
            self.assertEqual(asciiAddress(address), address)

    def test_none(self) -> None:
        """
        A local part that is not ASCII, or a domain without an A-label
        form (an ASCII label that is no valid A-label, a label IDNA 2008
        refuses, a final dot), has no all-ASCII form.
        """
        for address in [
            f"j\u00f6rg@{DOMAIN}",
            "j\u00f6rg@example.org",
            f"bob@xn--zz.{DOMAIN}",
            f"bob@ab--cd.{DOMAIN}",
            "bob@\u00fc_b.example",
            f"bob@{DOMAIN}.",
        ]:
            self.assertIsNone(asciiAddress(address), address)


class DeliverTests(SynchronousTestCase):
    """
    L{twisted_smtpd._smtpclient.client.deliver} to a server without
    SMTPUTF8.
    """

    def test_aLabels(self) -> None:
        """
        A sender and recipients whose domains only are not ASCII go in
        their all-ASCII form, without SMTPUTF8.
        """
        talk = Dialogue(sender=f"alice@{DOMAIN}", recipients=[f"bob@{DOMAIN}", "carol@example.net"])
        talk.say(b"220 mx ESMTP\r\n")
        self.assertEqual(
            talk.say(EHLO_PIPELINING),
            f"MAIL FROM:<alice@{ALABELS}> BODY=8BITMIME\r\n"
            f"RCPT TO:<bob@{ALABELS}>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n".encode(),
        )

    def test_underscoreBesideULabels(self) -> None:
        """
        A domain with an ASCII label holding an underscore beside a U-label
        goes in its all-ASCII form, the underscore kept.
        """
        talk = Dialogue(sender="alice@example.org", recipients=[f"bob@_Under_Score.{DOMAIN}"])
        talk.say(b"220 mx ESMTP\r\n")
        self.assertEqual(
            talk.say(EHLO_PIPELINING),
            f"MAIL FROM:<alice@example.org> BODY=8BITMIME\r\n"
            f"RCPT TO:<bob@_under_score.{ALABELS}>\r\nDATA\r\n".encode(),
        )

    def test_refused(self) -> None:
        """
        A local part that is not ASCII, or C{smtpUtf8} asked for, still
        fails the delivery with 553 5.6.7 before MAIL.
        """
        for options in [
            {"recipients": [f"bob@{DOMAIN}", f"j\u00f6rg@{DOMAIN}"]},
            {"sender": f"alice@{DOMAIN}", "smtpUtf8": True},
        ]:
            talk = Dialogue(**options)
            talk.say(b"220 mx ESMTP\r\n")
            self.assertEqual(talk.say(EHLO_PLAIN), b"QUIT\r\n")
            talk.close()
            error = self.failureResultOf(talk.result, DeliveryError).value
            self.assertEqual((error.code, error.enhanced), (553, "5.6.7"))


class NextHopWithoutSmtpUtf8Tests(TestCase):
    """
    What a next hop without SMTPUTF8 gets for addresses whose domain only
    is not ASCII.
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

    async def test_addressesInALabels(self) -> None:
        """
        The sender and recipients go in MAIL FROM and RCPT TO with their
        domain in A-labels, without SMTPUTF8, and the message arrives; to
        a next hop offering DSN, a recipient so changed goes with an
        C{ORCPT} naming it as the client gave it (C{utf-8}, RFC 6533
        section 3 escapes), and one given with an C{ORCPT} keeps it.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hideSMTPUTF8=True)
        client = await self.session(port)
        reply = await client.mail(f"alice@{DOMAIN}", " SMTPUTF8")
        self.assertEqual(reply.code, 250)
        self.assertEqual((await client.rcpt(f"bob+x@{DOMAIN}", "")).code, 250)
        reply = await client.rcpt(f"carol@{DOMAIN}", " ORCPT=rfc822;carol@example.net")
        self.assertEqual(reply.code, 250)
        self.assertEqual((await client.rcpt("dave@example.org", "")).code, 250)
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        [envelope] = smarthost.envelopes
        [message] = smarthost.messages
        assert envelope.mailFrom is not None
        self.assertEqual(envelope.mailFrom.address, f"alice@{ALABELS}")
        self.assertFalse(envelope.smtpUtf8)
        self.assertEqual(
            message.recipients, [f"bob+x@{ALABELS}", f"carol@{ALABELS}", "dave@example.org"]
        )
        self.assertEqual(
            [r.args.get("ORCPT") for r in envelope.rcptTo],
            ["utf-8;bob\\x{2B}x@B\\x{FC}cher.example", "rfc822;carol@example.net", None],
        )
        dsn = envelope.rcptTo[0].dsn
        assert dsn is not None
        self.assertEqual(dsn.orcpt, f"utf-8;bob+x@{DOMAIN}")
        # The message follows this server's Received: field, in ASCII.
        self.assertTrue(message.body.endswith(BODY))
        self.assertTrue(message.body.isascii())

    async def test_noOriginalRecipientWithoutDSN(self) -> None:
        """
        A next hop offering neither SMTPUTF8 nor DSN gets the A-label form
        alone, no C{ORCPT}.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hideSMTPUTF8=True, hideDSN=True)
        client = await self.session(port)
        self.assertEqual((await client.mail("alice@example.com", " SMTPUTF8")).code, 250)
        self.assertEqual((await client.rcpt(f"bob@{DOMAIN}", "")).code, 250)
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        [envelope] = smarthost.envelopes
        self.assertEqual(
            [(r.address, dict(r.args)) for r in envelope.rcptTo], [(f"bob@{ALABELS}", {})]
        )

    async def test_nextHopWithSmtpUtf8(self) -> None:
        """
        A next hop offering SMTPUTF8 gets the addresses as the client gave
        them, with SMTPUTF8, and no C{ORCPT} is added.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost)
        client = await self.session(port)
        self.assertEqual((await client.mail(f"alice@{DOMAIN}", " SMTPUTF8")).code, 250)
        self.assertEqual((await client.rcpt(f"bob@{DOMAIN}", "")).code, 250)
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        [envelope] = smarthost.envelopes
        assert envelope.mailFrom is not None
        self.assertEqual(envelope.mailFrom.address, f"alice@{DOMAIN}")
        self.assertTrue(envelope.smtpUtf8)
        self.assertEqual(
            [(r.address, dict(r.args)) for r in envelope.rcptTo], [(f"bob@{DOMAIN}", {})]
        )

    async def test_localPartStillRefused(self) -> None:
        """
        A local part that is not ASCII, or a domain without an A-label
        form (an underscore in a U-label, which IDNA 2008 refuses), still
        gets 553 5.6.7 at MAIL or RCPT for a next hop without SMTPUTF8:
        only SMTPUTF8 can carry them.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hideSMTPUTF8=True)
        client = await self.session(port)
        for sender in [f"j\u00f6rg@{DOMAIN}", "bob@\u00fc_b.example"]:
            reply = await client.mail(sender, " SMTPUTF8")
            self.assertEqual((reply.code, reply.enhanced), (553, "5.6.7"))
        self.assertEqual((await client.mail(f"alice@{DOMAIN}", " SMTPUTF8")).code, 250)
        for recipient in [f"j\u00f6rg@{DOMAIN}", "bob@\u00fc_b.example"]:
            reply = await client.rcpt(recipient, "")
            self.assertEqual((reply.code, reply.enhanced), (553, "5.6.7"))
        self.assertEqual((await client.rcpt(f"bob@{DOMAIN}", "")).code, 250)

    async def test_underscoreBesideULabels(self) -> None:
        """
        A sender and a recipient whose domains have an ASCII label holding
        an underscore beside a U-label are accepted by the next hop without
        SMTPUTF8 in their all-ASCII form, the underscore kept, where they
        got 553 5.6.7.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hideSMTPUTF8=True)
        client = await self.session(port)
        reply = await client.mail(f"alice@Under_Score.{DOMAIN}", " SMTPUTF8")
        self.assertEqual((reply.code, reply.enhanced), (250, "2.1.0"))
        reply = await client.rcpt(f"bob@_dmarc.{DOMAIN}", "")
        self.assertEqual((reply.code, reply.enhanced), (250, "2.1.5"))
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        [message] = smarthost.messages
        self.assertEqual(
            (message.sender, message.recipients),
            (f"alice@under_score.{ALABELS}", [f"bob@_dmarc.{ALABELS}"]),
        )

    async def test_relayedReportInALabels(self) -> None:
        """
        A "relayed" report (the next hop offers no DSN) to a sender passed
        on in its A-label form goes to that form, from <> without SMTPUTF8,
        which the next hop lacks; its C{To:} field is ASCII.
        """
        smarthost = EnvelopeRecorder()
        port = await self.front(smarthost, hideSMTPUTF8=True, hideDSN=True)
        client = await self.session(port)
        self.assertEqual((await client.mail(f"alice@{DOMAIN}", " SMTPUTF8")).code, 250)
        self.assertEqual((await client.rcpt("bob@example.org", " NOTIFY=SUCCESS")).code, 250)
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        await self.handler.reportsSent()
        self.assertEqual(len(smarthost.messages), 2)
        report = smarthost.messages[1]
        self.assertEqual((report.sender, report.recipients), ("", [f"alice@{ALABELS}"]))
        self.assertFalse(smarthost.envelopes[1].smtpUtf8)
        self.assertEqual(email.message_from_bytes(report.body)["To"], f"<alice@{ALABELS}>")

    async def test_lmtp(self) -> None:
        """
        The LMTP handler passes the A-label forms on to an LMTP server
        without SMTPUTF8 too.
        """
        store = EnvelopeRecorder()
        server, lmtpPort = await startServer(self, store, lmtp=True, hideSMTPUTF8=True)
        handler = closeWith(
            self, LMTPDeliveryHandler(f"tcp:127.0.0.1:{lmtpPort}", heloName="front.example")
        )
        front, port = await startServer(self, handler)
        client = await self.session(port)
        self.assertEqual((await client.mail(f"alice@{DOMAIN}", " SMTPUTF8")).code, 250)
        self.assertEqual((await client.rcpt(f"bob@{DOMAIN}", "")).code, 250)
        [final] = await client.data(bodyStream(BODY), 1)
        self.assertEqual(final.code, 250)
        [message] = store.messages
        self.assertEqual(
            (message.sender, message.recipients), (f"alice@{ALABELS}", [f"bob@{ALABELS}"])
        )
