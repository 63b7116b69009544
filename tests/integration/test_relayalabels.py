# -*- test-case-name: tests.integration.test_relayalabels -*-
"""
C{twistd smtpd --relay} in front of a real Postfix without SMTPUTF8
(C{smtputf8_enable = no}): an address whose domain only is not ASCII goes
on with its domain in A-labels, and the message arrives for that address.

Postfix passes what it accepts on to a second C{twistd smtpd} (its
relayhost), whose Maildir shows what was delivered.
"""

from __future__ import annotations

from tests.integration.helpers import ServerTestCase
from tests.integration.nexthops import DELIVERY_TIMEOUT, Postfix, waitUntil
from tests.integration.test_relaying import BODY, maildir


class PostfixWithoutSmtpUtf8Tests(ServerTestCase):
    """
    C{--relay} to a Postfix that does not offer SMTPUTF8.
    """

    def setUp(self) -> None:
        Postfix.require(self)
        self.sink = self.spawn("--no-reverse-lookup")
        self.postfix = Postfix(relayhost=self.sink.port, settings={"smtputf8_enable": "no"})
        self.postfix.start(self)
        self.front = self.spawn(
            "--relay", f"127.0.0.1:{self.postfix.port}", "--no-reverse-lookup", maildir=False
        )

    def test_domainInALabels(self) -> None:
        """
        A sender and a recipient whose domains are in U-labels are passed
        on with them in A-labels, and Postfix delivers the message to the
        A-label address; a recipient whose local part is not ASCII is
        still refused, 553 5.6.7, before the body.
        """
        postfix = self.smtp(self.postfix.port)
        postfix.ehlo("probe.example")
        self.assertFalse(postfix.has_extn("smtputf8"))
        client = self.smtp(self.front.port)
        client.ehlo("client.example")
        self.assertEqual(client.mail("alice@B\u00fccher.example", ["SMTPUTF8"])[0], 250)
        self.assertEqual(client.rcpt("bob@B\u00fccher.example")[0], 250)
        code, text = client.rcpt("j\u00f6rg@b\u00fccher.example")
        self.assertEqual((code, text[:5]), (553, b"5.6.7"))
        self.assertEqual(client.data(BODY)[0], 250)
        waitUntil(lambda: len(maildir(self.sink)) >= 1, DELIVERY_TIMEOUT, "the delivery")
        [stored] = maildir(self.sink)
        # Postfix's Received: field names the recipient it was given, and
        # the From: field it adds (the message has none) the sender.
        self.assertIn(b"by postfix.test (Postfix) with ESMTP id ", stored)
        self.assertIn(b"\tfor <bob@xn--bcher-kva.example>; ", stored)
        self.assertIn(b"\r\nFrom: alice@xn--bcher-kva.example\r\n", stored)
        self.assertTrue(stored.endswith(BODY.split(b"\r\n\r\n")[1]), stored)
        log = self.postfix.log
        self.assertIn("from=<alice@xn--bcher-kva.example>", log)
        self.assertEqual(self.postfix.count("to=<bob@xn--bcher-kva.example>"), 1, log)
        self.assertIn("status=sent", log)

    def test_underscoreBesideULabels(self) -> None:
        """
        A sender and a recipient whose domains hold an ASCII label with an
        underscore beside U-labels are passed on with the U-labels in
        A-labels and the ASCII label lower-cased, the underscore kept, which
        Postfix accepts and delivers, as its own conversion (ICU's
        C{uidna_nameToASCII}, without the STD 3 rules) writes them.
        """
        client = self.smtp(self.front.port)
        client.ehlo("client.example")
        sender = "alice@Under_Score.B\u00fccher.example"
        self.assertEqual(client.mail(sender, ["SMTPUTF8"])[0], 250)
        self.assertEqual(client.rcpt("bob@_dmarc.b\u00fccher.example")[0], 250)
        self.assertEqual(client.data(BODY)[0], 250)
        waitUntil(lambda: len(maildir(self.sink)) >= 1, DELIVERY_TIMEOUT, "the delivery")
        [stored] = maildir(self.sink)
        self.assertIn(b"\tfor <bob@_dmarc.xn--bcher-kva.example>; ", stored)
        log = self.postfix.log
        self.assertIn("from=<alice@under_score.xn--bcher-kva.example>", log)
        self.assertEqual(self.postfix.count("to=<bob@_dmarc.xn--bcher-kva.example>"), 1, log)
        self.assertIn("status=sent", log)
