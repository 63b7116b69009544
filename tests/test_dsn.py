# -*- test-case-name: tests.test_dsn -*-
"""
Tests for L{twisted_smtpd._core.dsn.buildReport}: RFC 3464 reports parsed back
with Python's C{email} package.
"""

from __future__ import annotations

import email
from email.message import Message

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core.dsn import RecipientStatus, buildReport
from twisted_smtpd._core.xtext import decodeUtf8Address

# Characters that break or disguise a line, which a decoded ORCPT may hold.
_SEPARATORS = "\u2028\u2029\u202a\u202e\u200e\u2066\u2069"


def parse(report: bytes) -> tuple[Message, list[Message]]:
    message = email.message_from_bytes(report)
    status = message.get_payload()[1]
    return message, status.get_payload()


class BuildReportTests(SynchronousTestCase):
    """
    The report's structure, fields and the outside text in it.
    """

    def test_failed(self) -> None:
        """
        A "failed" report is a multipart/report with a text part and a
        message/delivery-status part holding one block per recipient.
        """
        report = buildReport(
            reportingMta="mx.example.com",
            sender="alice@example.com",
            recipients=[
                RecipientStatus(
                    "bob@example.org", "rfc822;bob@example.org", "failed", "5.2.2", "552 5.2.2 Full"
                ),
                RecipientStatus("carol@example.net", None, "failed", "4.2.0", "452 4.2.0 Later"),
            ],
            envid="E1",
        )
        message, blocks = parse(report)
        self.assertEqual(message.get_content_type(), "multipart/report")
        self.assertEqual(message.get_param("report-type"), "delivery-status")
        self.assertEqual(message["To"], "<alice@example.com>")
        self.assertEqual(message["Auto-Submitted"], "auto-replied")
        self.assertEqual(blocks[0]["Reporting-MTA"], "dns; mx.example.com")
        self.assertEqual(blocks[0]["Original-Envelope-Id"], "E1")
        self.assertEqual(
            [(b["Final-Recipient"], b["Action"], b["Status"]) for b in blocks[1:]],
            [
                ("rfc822; bob@example.org", "failed", "5.2.2"),
                ("rfc822; carol@example.net", "failed", "4.2.0"),
            ],
        )
        self.assertEqual(blocks[1]["Original-Recipient"], "rfc822;bob@example.org")
        self.assertIsNone(blocks[2]["Original-Recipient"])
        self.assertIn(b"\r\n", report)
        self.assertNotIn(b"\n", report.replace(b"\r\n", b""))

    def test_outsideTextCannotAddFields(self) -> None:
        """
        A next hop's reply with line breaks cannot add header fields or
        blocks to the report.
        """
        report = buildReport(
            reportingMta="mx.example.com",
            sender="alice@example.com",
            recipients=[
                RecipientStatus(
                    "bob@example.org",
                    None,
                    "failed",
                    "5.0.0",
                    "550 no\r\nAction: delivered\r\n\r\nX: y",
                )
            ],
        )
        message, blocks = parse(report)
        self.assertEqual(len(blocks), 2)
        self.assertEqual(blocks[1]["Action"], "failed")
        self.assertIsNone(blocks[1]["X"])
        self.assertIn("Action: delivered", blocks[1]["Diagnostic-Code"])

    def test_nullSender(self) -> None:
        """
        There is no report to the null reverse-path, nor one without a
        recipient.
        """
        status = RecipientStatus("bob@example.org", None, "relayed", "2.0.0")
        self.assertRaises(
            ValueError, buildReport, reportingMta="mx", sender="", recipients=[status]
        )
        self.assertRaises(
            ValueError, buildReport, reportingMta="mx", sender="a@example.com", recipients=[]
        )

    def test_nonAsciiMadeSevenBit(self) -> None:
        """
        A recipient, an C{ORCPT}, an C{ENVID}, a client name and a reply in
        UTF-8 still make a report: the C{message/delivery-status} part stays
        US-ASCII (RFC 3464), each non-ASCII character an RFC 6533 C{\\x{HEX}}
        escape, an address that is not ASCII of type C{utf-8}.
        """
        report = buildReport(
            reportingMta="mx.example.com",
            sender="alice@example.com",
            recipients=[
                RecipientStatus(
                    "b\u00f8b@example.org",
                    "rfc822;b\u00f8b@example.org",
                    "failed",
                    "5.0.0",
                    "550 n\u00f6",
                ),
                RecipientStatus("carol@example.net", "rfc822;carol@example.net", "failed", "5.0.0"),
            ],
            envid="\u00e9t\u00e9",
            received="h\u00e9lo.example",
        )
        message, blocks = parse(report)
        self.assertEqual(blocks[0]["Original-Envelope-Id"], "\\x{E9}t\\x{E9}")
        self.assertEqual(blocks[0]["Received-From-MTA"], "dns; h\\x{E9}lo.example")
        self.assertEqual(blocks[1]["Final-Recipient"], "utf-8; b\\x{F8}b@example.org")
        self.assertEqual(blocks[1]["Original-Recipient"], "utf-8;b\\x{F8}b@example.org")
        self.assertEqual(blocks[1]["Diagnostic-Code"], "smtp; 550 n\\x{F6}")
        self.assertEqual(blocks[2]["Final-Recipient"], "rfc822; carol@example.net")
        self.assertEqual(blocks[2]["Original-Recipient"], "rfc822;carol@example.net")
        self.assertTrue(report.isascii())

    def test_nonAsciiSender(self) -> None:
        """
        A report to a sender that is not ASCII names it in UTF-8 in its To
        field (RFC 6532); every other field stays ASCII.
        """
        report = buildReport(
            reportingMta="mx.example.com",
            sender="\u00e4lice@example.com",
            recipients=[RecipientStatus("bob@example.org", None, "relayed", "2.0.0")],
        )
        self.assertIn("To: <\u00e4lice@example.com>\r\n".encode(), report)
        self.assertTrue(report.replace("\u00e4".encode(), b"").isascii())

    def test_senderCannotAddFields(self) -> None:
        """
        A sender whose address holds a line or paragraph separator (a
        quoted local part, with SMTPUTF8) cannot add header fields to the
        report, which the C{email} package would otherwise write on lines
        of their own: they are escaped in its To field.
        """
        sender = '"x\u2028Subject: forged\u2029X-Injected: 1"@example.org'
        report = buildReport(
            reportingMta="mx.example.com",
            sender=sender,
            recipients=[RecipientStatus("bob@example.org", None, "relayed", "2.0.0")],
        )
        message, blocks = parse(report)
        self.assertIsNone(message["X-Injected"])
        self.assertEqual(message.get_all("Subject"), ["Successful Mail Delivery Report (relayed)"])
        self.assertEqual(
            message["To"], '<"x\\u2028Subject: forged\\u2029X-Injected: 1"@example.org>'
        )

    def test_longValuesKept(self) -> None:
        """
        A long C{ENVID}, C{ORCPT}, recipient or reply (RFC 3461 allows 100
        characters of C{ENVID} and 500 of C{ORCPT}) is written as it is,
        never as RFC 2047 encoded-words, which no reader of a
        C{message/delivery-status} part decodes; and no line of the report
        is longer than RFC 5322's 998 octets, even for values whose
        C{\\x{HEX}} escapes are many times longer than they are.
        """
        envid = "E" * 100
        local = "o" * 64
        reply = "250 2.0.0 " + "k" * 200
        report = buildReport(
            reportingMta="mx.example.com",
            sender="alice@example.com",
            recipients=[
                RecipientStatus(
                    f"{local}@example.org", f"rfc822;{local}@example.org", "relayed", "2.0.0", reply
                ),
                RecipientStatus(
                    "\U0001f600" * 60 + "@example.org",
                    "utf-8;" + "\U0001f600" * 400 + "@example.org",
                    "failed",
                    "5.0.0",
                    "550 " + "\U0001f600" * 400,
                ),
            ],
            envid=envid,
        )
        self.assertNotIn(b"=?", report)
        self.assertLessEqual(max(len(line) for line in report.split(b"\r\n")), 998)
        message, blocks = parse(report)
        self.assertEqual(blocks[0]["Original-Envelope-Id"], envid)
        self.assertEqual(blocks[1]["Original-Recipient"], f"rfc822;{local}@example.org")
        self.assertEqual(blocks[1]["Final-Recipient"], f"rfc822; {local}@example.org")
        self.assertEqual(blocks[1]["Diagnostic-Code"], f"smtp; {reply}")
        self.assertTrue(blocks[2]["Original-Recipient"].startswith("utf-8;\\x{1F600}"))

    def test_envelopeIdEscapedNotReplaced(self) -> None:
        """
        An C{ENVID} holding characters that would break or disguise a line
        (a line separator, a bidirectional override, a zero-width space,
        all of which a client may give in xtext, C{+E2+80+A8}) is written
        with each as its C{\\x{HEX}} escape, as every other non-ASCII
        character is: not as a space, which would make it the C{ENVID} of
        another message (C{a+20b}), nor as itself.
        """
        report = buildReport(
            reportingMta="mx.example.com",
            sender="alice@example.com",
            recipients=[RecipientStatus("bob@example.org", None, "failed", "5.0.0")],
            envid="a\u2028b\u202ec\u200bd e",
        )
        message, blocks = parse(report)
        self.assertEqual(blocks[0]["Original-Envelope-Id"], "a\\x{2028}b\\x{202E}c\\x{200B}d e")
        self.assertTrue(report.isascii())

    def test_originalRecipientEscapedNotReplaced(self) -> None:
        """
        An C{ORCPT} address holding a line separator or a bidirectional
        override (a C{utf-8} address, C{\\x{2028}}, or an C{rfc822} one in
        xtext, C{+E2+80+AE}) is reported as the C{utf-8} address it is,
        each such character its C{\\x{HEX}} escape (RFC 6533 section 3),
        not a space that makes it another address.
        """
        report = buildReport(
            reportingMta="mx.example.com",
            sender="alice@example.com",
            recipients=[
                RecipientStatus("bob@example.org", "utf-8;a\u2028b@x.example", "failed", "5.0.0"),
                RecipientStatus("bob@example.org", "rfc822;a\u202eb@x.example", "failed", "5.0.0"),
            ],
        )
        message, blocks = parse(report)
        self.assertEqual(blocks[1]["Original-Recipient"], "utf-8;a\\x{2028}b@x.example")
        self.assertEqual(blocks[2]["Original-Recipient"], "utf-8;a\\x{202E}b@x.example")

    def test_longOriginalRecipientWhole(self) -> None:
        """
        An C{ORCPT} of the 500 characters RFC 3461 section 4.2 allows is
        reported whole, not cut to 400.
        """
        orcpt = "rfc822;" + "x" * 480 + "@example.org"
        report = buildReport(
            reportingMta="mx.example.com",
            sender="alice@example.com",
            recipients=[RecipientStatus("bob@example.org", orcpt, "failed", "5.0.0")],
        )
        message, blocks = parse(report)
        self.assertEqual(blocks[1]["Original-Recipient"], orcpt)

    @given(
        st.lists(
            st.sampled_from(_SEPARATORS) | st.characters(blacklist_categories=("Cc", "Cs")),
            min_size=1,
            max_size=80,
        ).map("".join)
    )
    def test_originalRecipientRoundTrip(self, address: str) -> None:
        """
        The C{Original-Recipient} of a C{utf-8} C{ORCPT} is the RFC 6533
        C{utf-8-addr-xtext} form of its address, which decodes back to that
        very address, whatever characters it holds (line and paragraph
        separators and bidirectional controls among them).
        """
        report = buildReport(
            reportingMta="mx.example.com",
            sender="alice@example.com",
            recipients=[RecipientStatus("bob@example.org", f"utf-8;{address}", "failed", "5.0.0")],
        )
        message, blocks = parse(report)
        addressType, _, written = blocks[1]["Original-Recipient"].partition(";")
        self.assertEqual(addressType, "utf-8")
        self.assertEqual(decodeUtf8Address(written), address)
