"""
Tests for L{twisted_smtpd._core.address}: MAIL and RCPT arguments, paths, ESMTP
parameters and xtext.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from unittest import mock

import idna
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from twisted_smtpd._core import address as _address
from twisted_smtpd._core import replies as replies
from twisted_smtpd._core.address import (
    MailRequest,
    decodeXtext,
    encodeXtext,
    parseMail,
    parseRcpt,
)
from twisted_smtpd._core.replies import CommandError, Reply
from twisted_smtpd._core.session import Address, AddressDSN, EnvelopeDSN
from twisted_smtpd._core.xtext import decodeUtf8Address, encodeUtf8Address

PROPERTY = settings(max_examples=200, deadline=None)


class MailTestCase(SynchronousTestCase):
    """
    Assertions shared by the MAIL and RCPT tests.
    """

    def assertMailRefused(self, argument: bytes, reply: Reply, lenient: bool = False) -> None:
        with self.assertRaises(CommandError) as e:
            parseMail(argument, lenient)
        self.assertEqual(e.exception.reply, reply)

    def assertRcptRefused(
        self, argument: bytes, reply: Reply, smtpUtf8: bool = False, lenient: bool = False
    ) -> None:
        with self.assertRaises(CommandError) as e:
            parseRcpt(argument, smtpUtf8, lenient)
        self.assertEqual(e.exception.reply, reply)

    def mailbox(self, argument: bytes, lenient: bool = False) -> str:
        return parseMail(argument, lenient).address.address


class MailPathTests(MailTestCase):
    """
    Tests for the reverse-path of L{parseMail}.
    """

    def test_simple(self) -> None:
        """
        A plain path gives its mailbox, no parameters and the defaults.
        """
        self.assertEqual(
            parseMail(b"FROM:<alice@example.com>"),
            MailRequest(
                address=Address("alice@example.com", {}),
                size=None,
                bodyType="7bit",
                smtpUtf8=False,
                requireTls=False,
                dsn=EnvelopeDSN(),
                auth=None,
            ),
        )

    def test_keywordCase(self) -> None:
        """
        C{FROM:} is case-insensitive.
        """
        self.assertEqual(self.mailbox(b"from:<a@example.com>"), "a@example.com")
        self.assertEqual(self.mailbox(b"FrOm:<a@example.com>"), "a@example.com")

    def test_spacesAfterColon(self) -> None:
        """
        Spaces after the colon are accepted in strict mode.
        """
        self.assertEqual(self.mailbox(b"FROM: <a@example.com>"), "a@example.com")
        self.assertEqual(self.mailbox(b"FROM:   <a@example.com>  SIZE=1"), "a@example.com")

    def test_missingKeyword(self) -> None:
        """
        A missing C{FROM:} gets 501 MAIL_SYNTAX.
        """
        for argument in [
            b"",
            b"<a@example.com>",
            b"FROM <a@example.com>",
            b"FROM :<a@example.com>",
            b"TO:<a@example.com>",
        ]:
            self.assertMailRefused(argument, replies.MAIL_SYNTAX)

    def test_nullPath(self) -> None:
        """
        C{<>} is the null reverse-path, given as C{""}; parameters may follow.
        """
        self.assertEqual(self.mailbox(b"FROM:<>"), "")
        request = parseMail(b"FROM:<> BODY=8BITMIME")
        self.assertEqual(request.address.address, "")
        self.assertEqual(request.bodyType, "8bitmime")

    def test_postmasterRefused(self) -> None:
        """
        C{<Postmaster>} without a domain is for RCPT only.
        """
        self.assertMailRefused(b"FROM:<Postmaster>", replies.BAD_SENDER_SYNTAX)

    def test_sourceRoute(self) -> None:
        """
        A source route is accepted and dropped (RFC 5321 section 4.1.1.3 and
        appendix C).
        """
        self.assertEqual(
            self.mailbox(b"FROM:<@a.example,@b.example:user@c.example>"), "user@c.example"
        )
        self.assertEqual(self.mailbox(b"FROM:<@a.example:user@c.example>"), "user@c.example")

    def test_quotedLocalPart(self) -> None:
        """
        A quoted local part is kept as written, escapes included.
        """
        self.assertEqual(self.mailbox(b'FROM:<"john doe"@example.com>'), '"john doe"@example.com')
        self.assertEqual(
            self.mailbox(b'FROM:<"a\\"b\\\\c>"@example.com>'), '"a\\"b\\\\c>"@example.com'
        )
        self.assertEqual(self.mailbox(b'FROM:<""@example.com>'), '""@example.com')

    def test_dotAtom(self) -> None:
        """
        Dot-atom local parts with every atext character are accepted.
        """
        local = "a!#$%&'*+/=?^_`{|}~-.b"
        self.assertEqual(
            self.mailbox(f"FROM:<{local}@example.com>".encode()), local + "@example.com"
        )

    def test_domainCasePreserved(self) -> None:
        """
        The mailbox is returned as the client wrote it.
        """
        self.assertEqual(self.mailbox(b"FROM:<Bob@Example.COM>"), "Bob@Example.COM")

    def test_domains(self) -> None:
        """
        Domains of letters, digits, inner hyphens and underscores are accepted.
        """
        for domain in [
            "x",
            "a-b.example",
            "my_host.example",
            "123.example",
            "xn--bcher-kva.example",
        ]:
            self.assertEqual(self.mailbox(f"FROM:<u@{domain}>".encode()), "u@" + domain)

    def test_domainsThatCannotBeNames(self) -> None:
        """
        A domain of digits and dots only, which reads as an IP address or a
        number, and a domain with a label over 63 octets (RFC 1035 section
        2.3.4; a non-ASCII label counted as its A-label) get 501
        BAD_SENDER_SYNTAX and BAD_RECIPIENT_SYNTAX, as from Postfix.
        """
        names = ["123", "192.0.2.1", "1.2.3.4.5", "l" * 64 + ".example", "a." + "l" * 64]
        for domain in names:
            self.assertMailRefused(f"FROM:<u@{domain}>".encode(), replies.BAD_SENDER_SYNTAX)
            self.assertMailRefused(f'FROM:<"u v"@{domain}>'.encode(), replies.BAD_SENDER_SYNTAX)
            self.assertRcptRefused(f"TO:<u@{domain}>".encode(), replies.BAD_RECIPIENT_SYNTAX)
        # Sixty non-ASCII letters: 120 octets, an A-label of 66.
        long = "é" * 60 + ".example"
        self.assertRcptRefused(f"TO:<u@{long}>".encode(), replies.BAD_RECIPIENT_SYNTAX, True)
        # A source route's domains are dropped, not checked.
        for domain in ["a.123", "123.example", "l" * 63 + ".example", "x" + "é" * 50 + ".example"]:
            self.assertEqual(
                parseRcpt(f"TO:<@123:u@{domain}>".encode(), True).address, "u@" + domain
            )

    def test_domainsWithSpacesOrFormatCharacters(self) -> None:
        """
        A non-ASCII domain holding a space, a separator or a format
        character (a no-break space, a line separator, a zero-width space, a
        right-to-left override), which no U-label holds (RFC 6531 section
        3.3, RFC 5892), gets 501, as from Postfix but for the characters
        UTS 46 drops (U+200B), which Postfix accepts.  The zero-width
        joiners, which IDNA2008 allows in context, are accepted.
        """
        for domain in ["192.0\u00a0.2.1", "a\u2028b.example", "a\u200bb.example", "x\u202e.com"]:
            argument = f"TO:<u@{domain}>".encode()
            self.assertRcptRefused(argument, replies.BAD_RECIPIENT_SYNTAX, True)
        joined = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.example"
        self.assertEqual(parseRcpt(f"TO:<u@{joined}>".encode(), True).address, "u@" + joined)

    def test_domainsWithNoALabelForm(self) -> None:
        """
        A non-ASCII domain that has no A-label form (RFC 5891 section 5,
        as Postfix's C{smtputf8_enable} converts it) gets 501 5.1.3 at RCPT
        and 501 5.1.7 at MAIL: a noncharacter (U+FDD0, U+FFFE), a code
        point IDNA2008 disallows (U+2024, which would read as a dot), a
        label beginning with a combining mark, and a domain over 253 octets
        once in A-labels though its UTF-8 is under 255.  (A joiner outside
        the context RFC 5892 appendix A allows, or a label breaking the
        Bidi rule of RFC 5893, is accepted, as Postfix, whose ICU checks
        neither, accepts it.)
        """
        # Five labels of 47 UTF-8 octets: 239 octets, 269 as A-labels.
        long = ".".join(["\u00fc" + "a" * 45] * 5)
        self.assertLess(len(long.encode("utf-8")), 255)
        for domain in [
            "x\ufdd0.example",
            "x\ufffe.example",
            "a\u2024b.example",
            "\u0301x.example",
            long,
        ]:
            argument = f"TO:<u@{domain}>".encode()
            self.assertRcptRefused(argument, replies.BAD_RECIPIENT_SYNTAX, True)
            self.assertMailRefused(
                f"FROM:<u@{domain}> SMTPUTF8".encode(), replies.BAD_SENDER_SYNTAX
            )

    def test_domainsInOtherForms(self) -> None:
        """
        A domain written with full-width letters, in upper case, with an
        ideographic, fullwidth or halfwidth full stop (RFC 3490 section
        3.1) or decomposed (NFD) has an A-label form and is accepted, kept
        as the client wrote it.
        """
        for domain in [
            "\uff58.example",
            "B\u00dcCHER.example",
            "b\u00fccher\u3002example",
            "b\u00fccher\uff0eexample",
            "b\u00fccher\uff61example",
            "bu\u0308cher.example",
            "fa\u00df.example",
        ]:
            self.assertEqual(parseRcpt(f"TO:<u@{domain}>".encode(), True).address, "u@" + domain)

    def test_domainsThatAreNoULabels(self) -> None:
        """
        A non-ASCII label that cannot be a U-label gets 501 at MAIL and
        RCPT, as from Postfix (RFC 6531 section 3.3 allows U-labels only):
        one starting with a combining mark (RFC 5891 section 4.2.3.2), one
        with hyphens in its third and fourth places (section 4.2.3.1, so
        C{xn--} too), one holding a private use character, a noncharacter,
        or a Hangul filler (RFC 5892); or an empty label between two full
        stops, the ideographic, fullwidth and halfwidth ones among them.
        """
        for domain in [
            "\u0301a.example",
            "\u00fc.\u0301.example",
            "\u00fcb--c.example",
            "xn--\u00fc.example",
            "\ue000.example",
            "a\uffff.example",
            "\u3164.example",
            "a\u3164b.example",
            "\u00fc\u3002\u3002example",
            "\u3002",
        ]:
            mail = f"FROM:<u@{domain}> SMTPUTF8".encode()
            self.assertMailRefused(mail, replies.BAD_SENDER_SYNTAX)
            rcpt = f"TO:<u@{domain}>".encode()
            self.assertRcptRefused(rcpt, replies.BAD_RECIPIENT_SYNTAX, True)

    def test_noALabelsBesideULabels(self) -> None:
        """
        An ASCII label with hyphens in its third and fourth places beside a
        U-label gets 501 at MAIL and RCPT, as from Postfix, whose ICU
        checks the whole name (RFC 5891 sections 4.2.3.1 and 5.4, UTS 46
        section 4.1): one not starting C{xn--}, and an C{xn--} label, in
        any case, that is no valid A-label: Punycode that does not decode
        (C{xn--zz}, a delimiter with nothing before it), or decodes to a
        label that IDNA would not write as this A-label: one with an upper
        case letter, a character UTS 46 drops (the soft hyphen) or
        disallows (U+E000), a hyphen first, or hyphens in its third and
        fourth places.
        """
        for label in [
            "ab--cd",
            "xn--zz",
            "XN--ZZ",
            "xn---ihl",
            "xn--bcher-2pa",
            "xn--a-vca",
            "xn--a-so7g",
            "xn----eha",
            "xn--b--c-zra",
        ]:
            domain = f"{label}.b\u00fccher.example"
            mail = f"FROM:<u@{domain}> SMTPUTF8".encode()
            self.assertMailRefused(mail, replies.BAD_SENDER_SYNTAX)
            rcpt = f"TO:<u@{domain}>".encode()
            self.assertRcptRefused(rcpt, replies.BAD_RECIPIENT_SYNTAX, True)

    def test_noALabelsInAsciiDomains(self) -> None:
        """
        An all-ASCII domain is not decoded: an C{xn--} label that is no
        valid A-label and hyphens in the third and fourth places are
        accepted there, with or without C{SMTPUTF8}, as Postfix accepts
        them (it checks such a name as a host name only).
        """
        for domain in ["xn--zz.example", "xn--bcher-2pa.example", "ab--cd.example"]:
            for smtpUtf8 in [" SMTPUTF8", ""]:
                mail = f"FROM:<u@{domain}>{smtpUtf8}".encode()
                self.assertEqual(parseMail(mail).address.address, "u@" + domain)
            self.assertEqual(parseRcpt(f"TO:<u@{domain}>".encode(), True).address, "u@" + domain)

    def test_domainsMappedOutOfHostNames(self) -> None:
        """
        A non-ASCII label holding a character that UTS 46 (as Postfix applies
        it, through ICU) maps to ASCII no host name holds gets 501 at MAIL
        and RCPT, as from Postfix: a spacing accent (U+00A8, mapped to a
        space and a combining mark), a parenthesised digit (U+2474, to
        C{(1)}), a fullwidth bracket (U+FF3B), a leader of two dots or a
        digit with a full stop (U+2025, U+2488: dots, which would split the
        label), or a fullwidth hyphen first (U+FF0D).
        """
        for domain in [
            "a\u00a8b.example",
            "a\u2474b.example",
            "a\uff3bb.example",
            "a\u2025b.example",
            "a\u2488b.example",
            "\uff0dab.example",
            "b\u00fccher\uff0d.example",
        ]:
            mail = f"FROM:<u@{domain}> SMTPUTF8".encode()
            self.assertMailRefused(mail, replies.BAD_SENDER_SYNTAX)
            rcpt = f"TO:<u@{domain}>".encode()
            self.assertRcptRefused(rcpt, replies.BAD_RECIPIENT_SYNTAX, True)

    def test_codePointsNewerThanPython(self) -> None:
        """
        A letter newer than Python's Unicode tables (U+31350, a CJK ideograph
        of Unicode 15.0, unassigned to Python 3.11) is accepted when the
        idna package's UTS 46 table knows it, as Postfix's ICU does.
        """
        domain = "a\U00031350b.example"
        try:
            idna.uts46_remap(domain)
        except idna.IDNAError:
            raise SkipTest(f"idna {idna.__version__} does not know U+31350") from None
        self.assertEqual(parseRcpt(f"TO:<u@{domain}>".encode(), True).address, "u@" + domain)

    def test_nameTooLongInALabels(self) -> None:
        """
        A non-ASCII domain short enough in UTF-8 for a path but over 253
        octets once written in A-labels, so that no DNS can hold it (RFC 1035
        section 2.3.4), gets 501 at MAIL and RCPT, as from Postfix; one of
        249 is accepted.
        """

        def name(size: int) -> str:
            # Five labels of distinct ideographs, three UTF-8 octets each.
            labels = (
                "".join(chr(0x4E00 + 997 * j + 131 * i) for j in range(size)) for i in range(5)
            )
            return ".".join(labels)

        long, short = name(16), name(15)
        self.assertEqual((len(long.encode()), len(long.encode("idna"))), (244, 264))
        self.assertEqual(len(short.encode("idna")), 249)
        self.assertMailRefused(f"FROM:<u@{long}> SMTPUTF8".encode(), replies.BAD_SENDER_SYNTAX)
        self.assertRcptRefused(f"TO:<u@{long}>".encode(), replies.BAD_RECIPIENT_SYNTAX, True)
        self.assertEqual(parseRcpt(f"TO:<u@{short}>".encode(), True).address, "u@" + short)

    def test_uLabelsAccepted(self) -> None:
        """
        U-labels with a combining mark after a letter, a joiner in context,
        upper case letters, symbols, an underscore and fullwidth letters or
        low line (which UTS 46 maps to ASCII ones) are accepted as Postfix
        accepts them, and so are an ASCII domain of an A-label, valid A-labels
        beside U-labels, in any case, and ASCII labels with an underscore
        beside them.
        """
        for domain in [
            "a\u0301.example",
            "\u0915\u094d\u200d\u0937.example",
            "B\u00dcCHER.example",
            "\u2665.example",
            "\u00fc_b.example",
            "\uff42\uff55\uff43\uff48\uff45\uff52.example",
            "a\uff3fb.example",
            "xn--bcher-kva.example",
            "xn--bcher-kva.b\u00fccher.example",
            "XN--BCHER-KVA.b\u00fccher.example",
            "xn--ab-m1t.b\u00fccher.example",
            "Under_Score.b\u00fccher.example",
        ]:
            mail = f"FROM:<u@{domain}> SMTPUTF8".encode()
            self.assertEqual(parseMail(mail).address.address, "u@" + domain)
            rcpt = f"TO:<u@{domain}>".encode()
            self.assertEqual(parseRcpt(rcpt, True).address, "u@" + domain)

    def test_addressLiterals(self) -> None:
        """
        IPv4 and IPv6 address literals are accepted.
        """
        for literal in [
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "[ipv6:::1]",
            "[IPv6:::ffff:192.0.2.1]",
            # Snum is one to three digits (RFC 5321 section 4.1.3).
            "[192.0.2.01]",
        ]:
            self.assertEqual(self.mailbox(f"FROM:<u@{literal}>".encode()), "u@" + literal)

    def test_badAddressLiterals(self) -> None:
        """
        Literals that are not IP addresses get 501 BAD_SENDER_SYNTAX.
        """
        for literal in [
            "[192.0.2]",
            "[192.0.2.256]",
            "[192.0.2.0001]",
            "[2001:db8::1]",
            "[IPv6:2001:db8::g]",
            "[IPv6:192.0.2.1]",
            "[IPv6:fe80::1%eth0]",
            "[]",
            "[x]",
        ]:
            self.assertMailRefused(f"FROM:<u@{literal}>".encode(), replies.BAD_SENDER_SYNTAX)

    def test_badSyntax(self) -> None:
        """
        Malformed paths get 501 5.1.7 BAD_SENDER_SYNTAX.
        """
        for argument in [
            b"FROM:",
            b"FROM:a@example.com",
            b"FROM:<a@example.com",
            b"FROM:<a@example.com>>",
            b"FROM:<a@example.com>SIZE=1",
            b"FROM:<a>",
            b"FROM:<@example.com>",
            b"FROM:<a@>",
            b"FROM:<a..b@example.com>",
            b"FROM:<.a@example.com>",
            b"FROM:<a.@example.com>",
            b"FROM:<a b@example.com>",
            b"FROM:<a@b@example.com>",
            b"FROM:<a@-example.com>",
            b"FROM:<a@example-.com>",
            b"FROM:<a@example..com>",
            b"FROM:<a@example.com.>",
            b'FROM:<"a@example.com>',
            b"FROM:<@a.example:>",
            b"FROM:<@a.example,b.example:u@c.example>",
            b"FROM: < a@example.com>",
        ]:
            self.assertMailRefused(argument, replies.BAD_SENDER_SYNTAX)
        self.assertEqual(replies.BAD_SENDER_SYNTAX.code, 501)
        self.assertEqual(replies.BAD_SENDER_SYNTAX.enhanced, "5.1.7")

    def test_controlCharacters(self) -> None:
        """
        Control characters in the path, or where it should end, get 501
        BAD_SENDER_SYNTAX; those in a parameter are L{MailParameterTests}'.
        """
        for argument in [
            b"FROM:<a\x00@example.com>",
            b"FROM:<a@example.com>\x00",
            b"FROM:<a@example.com>\tSIZE=1",
            b'FROM:<"a\x7f"@example.com>',
            "FROM:<a\u0085@example.com> SMTPUTF8".encode(),
            b"FROM\x01:<a@example.com> SIZE=1",
            b"FROM:<a@exa\x1bmple.com> SIZE=1\x1b",
        ]:
            self.assertMailRefused(argument, replies.BAD_SENDER_SYNTAX)
            self.assertMailRefused(argument, replies.BAD_SENDER_SYNTAX, lenient=True)

    def test_lengthLimits(self) -> None:
        """
        A local part over 64 octets, a domain over 255 or a path over 256 get
        501 PATH_TOO_LONG (RFC 5321 section 4.5.3.1).
        """
        label = "a" * 63
        longDomain = ".".join([label] * 4)  # 255 octets
        self.assertEqual(len(longDomain), 255)
        self.assertEqual(
            self.mailbox(b"FROM:<" + b"l" * 64 + b"@example.com>"), "l" * 64 + "@example.com"
        )
        self.assertMailRefused(b"FROM:<" + b"l" * 65 + b"@example.com>", replies.PATH_TOO_LONG)
        self.assertMailRefused(f"FROM:<u@{longDomain}x>".encode(), replies.PATH_TOO_LONG)
        domain = "a" * 63 + "." + "b" * 63 + "." + "c" * 63
        path = "<" + "l" * 64 + "@" + domain + ">"
        self.assertEqual(len(path), 258)
        self.assertMailRefused(f"FROM:{path}".encode(), replies.PATH_TOO_LONG)
        exact = path[:-3] + ">"
        self.assertEqual(len(exact), 256)
        self.assertEqual(self.mailbox(f"FROM:{exact}".encode()), exact[1:-1])

    def test_lengthCountsOctets(self) -> None:
        """
        The local-part limit counts UTF-8 octets, not characters.
        """
        local = "é" * 33  # 66 octets
        self.assertMailRefused(
            f"FROM:<{local}@example.com> SMTPUTF8".encode(), replies.PATH_TOO_LONG
        )

    def test_utf8NeedsSmtpUtf8(self) -> None:
        """
        A non-ASCII path needs SMTPUTF8 in the same command; without it, 553
        5.6.7 UTF8_NOT_ALLOWED.
        """
        self.assertMailRefused("FROM:<jörg@example.com>".encode(), replies.UTF8_NOT_ALLOWED)
        self.assertMailRefused("FROM:<a@bücher.example>".encode(), replies.UTF8_NOT_ALLOWED)
        request = parseMail("FROM:<jörg@bücher.example> SMTPUTF8".encode())
        self.assertEqual(request.address.address, "jörg@bücher.example")
        self.assertTrue(request.smtpUtf8)
        self.assertEqual(
            self.mailbox('FROM:<"jö rg"@example.com> smtputf8'.encode()), '"jö rg"@example.com'
        )

    def test_invalidUtf8(self) -> None:
        """
        Bytes that are not UTF-8 get 501 even with SMTPUTF8.
        """
        self.assertMailRefused(b"FROM:<j\xf6rg@example.com> SMTPUTF8", replies.BAD_SENDER_SYNTAX)
        self.assertMailRefused(b"FROM:<j\xf6rg@example.com>", replies.BAD_SENDER_SYNTAX)


class LenientMailTests(MailTestCase):
    """
    Tests for L{parseMail} and L{parseRcpt} in lenient mode.
    """

    def test_missingBrackets(self) -> None:
        """
        A path without angle brackets is accepted, with its parameters.
        """
        request = parseMail(b"FROM:a@example.com SIZE=5", lenient=True)
        self.assertEqual(request.address.address, "a@example.com")
        self.assertEqual(request.size, 5)
        self.assertEqual(
            parseRcpt(b"TO:b@example.com", False, lenient=True).address, "b@example.com"
        )
        self.assertEqual(parseRcpt(b"TO: postmaster", False, lenient=True).address, "postmaster")

    def test_spacesBeforeColon(self) -> None:
        """
        Spaces before the colon are accepted.
        """
        self.assertEqual(self.mailbox(b"FROM : <a@example.com>", lenient=True), "a@example.com")
        self.assertEqual(
            parseRcpt(b"to :<b@example.com>", False, lenient=True).address, "b@example.com"
        )

    def test_missingClosingBracket(self) -> None:
        """
        A path missing only its closing bracket is accepted when nothing
        follows it.
        """
        self.assertEqual(self.mailbox(b"FROM:<a@example.com", lenient=True), "a@example.com")
        self.assertMailRefused(b"FROM:<a@example.com SIZE=1", replies.BAD_SENDER_SYNTAX, True)

    def test_stillRefused(self) -> None:
        """
        Lenient mode still refuses bad mailboxes, a missing keyword and an
        empty path.
        """
        self.assertMailRefused(b"FROM:a", replies.BAD_SENDER_SYNTAX, True)
        self.assertMailRefused(b"FROM:", replies.BAD_SENDER_SYNTAX, True)
        # A lone bracket is no path missing its end: not the null sender.
        self.assertMailRefused(b"FROM:<", replies.BAD_SENDER_SYNTAX, True)
        self.assertMailRefused(b"FROM:a@example.com>", replies.BAD_SENDER_SYNTAX, True)
        self.assertMailRefused(b"<a@example.com>", replies.MAIL_SYNTAX, True)
        self.assertRcptRefused(b"TO:", replies.BAD_RECIPIENT_SYNTAX, lenient=True)
        self.assertRcptRefused(b"TO:<>", replies.BAD_RECIPIENT_SYNTAX, lenient=True)


class MailParameterTests(MailTestCase):
    """
    Tests for the ESMTP parameters of L{parseMail}.
    """

    def test_all(self) -> None:
        """
        Every MAIL parameter is parsed into its field and kept raw in C{args}.
        """
        request = parseMail(
            b"FROM:<a@example.com> size=1000 Body=BinaryMIME SMTPUTF8 RET=hdrs"
            b" ENVID=QQ+2B1 REQUIRETLS AUTH=e+3Dmc2@example.com"
        )
        self.assertEqual(
            request,
            MailRequest(
                address=Address(
                    "a@example.com",
                    {
                        "SIZE": "1000",
                        "BODY": "BinaryMIME",
                        "SMTPUTF8": True,
                        "RET": "hdrs",
                        "ENVID": "QQ+2B1",
                        "REQUIRETLS": True,
                        "AUTH": "e+3Dmc2@example.com",
                    },
                ),
                size=1000,
                bodyType="binarymime",
                smtpUtf8=True,
                requireTls=True,
                dsn=EnvelopeDSN("HDRS", "QQ+1"),
                auth="e=mc2@example.com",
            ),
        )
        self.assertIsNone(request.address.dsn)

    def test_multipleSpaces(self) -> None:
        """
        Parameters may be separated by several spaces.
        """
        request = parseMail(b"FROM:<a@example.com>  SIZE=1   BODY=7BIT")
        self.assertEqual(request.address.args, {"SIZE": "1", "BODY": "7BIT"})

    def test_size(self) -> None:
        """
        SIZE takes up to twenty digits; anything else gets 501 BAD_SIZE.
        """
        self.assertEqual(parseMail(b"FROM:<> SIZE=0").size, 0)
        self.assertEqual(parseMail(b"FROM:<> SIZE=" + b"9" * 20).size, 10**20 - 1)
        for value in [b"SIZE", b"SIZE=" + b"1" * 21, b"SIZE=-1", b"SIZE=1k", b"SIZE=\xd9\xa1"]:
            self.assertMailRefused(b"FROM:<> SMTPUTF8 " + value, replies.BAD_SIZE)

    def test_body(self) -> None:
        """
        BODY takes 7BIT, 8BITMIME or BINARYMIME in any case.
        """
        self.assertEqual(parseMail(b"FROM:<> BODY=7bit").bodyType, "7bit")
        self.assertEqual(parseMail(b"FROM:<> BODY=8bitMIME").bodyType, "8bitmime")
        self.assertEqual(parseMail(b"FROM:<> BODY=BINARYMIME").bodyType, "binarymime")
        self.assertMailRefused(b"FROM:<> BODY", replies.BAD_BODY)
        self.assertMailRefused(b"FROM:<> BODY=8BIT", replies.BAD_BODY)

    def test_keywordsAsciiOnly(self) -> None:
        """
        The keywords of BODY, RET and NOTIFY match in ASCII case only: a
        non-ASCII letter that Unicode upper-cases to one of theirs (the
        dotless C{U+0131}, the long s C{U+017F}), which SMTPUTF8 lets through
        the parameter check, gets 501 as any other unknown keyword does,
        rather than being taken for C{8BITMIME} or C{SUCCESS} and passed on
        as sent.
        """
        self.assertMailRefused("FROM:<> SMTPUTF8 BODY=8bitm\u0131me".encode(), replies.BAD_BODY)
        self.assertMailRefused("FROM:<> SMTPUTF8 BODY=B\u0131NARYMIME".encode(), replies.BAD_BODY)
        self.assertMailRefused("FROM:<> SMTPUTF8 RET=\ufb00".encode(), replies.BAD_RET)
        self.assertMailRefused("FROM:<> SMTPUTF8 RET=HDR\u017f".encode(), replies.BAD_RET)
        for value in ["\u017fuccess", "failure,\u017fuccess", "nev\u0435r"]:
            self.assertRcptRefused(
                f"TO:<a@example.com> NOTIFY={value}".encode(), replies.BAD_NOTIFY, smtpUtf8=True
            )

    def test_valuelessFlags(self) -> None:
        """
        SMTPUTF8 and REQUIRETLS take no value.
        """
        self.assertMailRefused(b"FROM:<> SMTPUTF8=yes", replies.BAD_SMTPUTF8)
        self.assertMailRefused(b"FROM:<> REQUIRETLS=1", replies.BAD_REQUIRETLS)
        self.assertFalse(parseMail(b"FROM:<>").requireTls)

    def test_ret(self) -> None:
        """
        RET takes FULL or HDRS, returned upper case.
        """
        self.assertEqual(parseMail(b"FROM:<> RET=full").dsn, EnvelopeDSN("FULL", None))
        self.assertMailRefused(b"FROM:<> RET", replies.BAD_RET)
        self.assertMailRefused(b"FROM:<> RET=NONE", replies.BAD_RET)

    def test_envid(self) -> None:
        """
        ENVID is xtext of at most 100 characters, returned decoded.
        """
        self.assertEqual(parseMail(b"FROM:<> ENVID=abc+20d").dsn.envid, "abc d")
        self.assertEqual(parseMail(b"FROM:<> ENVID=" + b"x" * 100).dsn.envid, "x" * 100)
        self.assertMailRefused(b"FROM:<> ENVID=" + b"x" * 101, replies.BAD_ENVID)
        self.assertMailRefused(b"FROM:<> ENVID", replies.BAD_ENVID)
        for bad in [b"a+", b"a+2", b"a+G1", b"a+GG", b"+FF"]:
            self.assertMailRefused(b"FROM:<> ENVID=" + bad, replies.BAD_ENVID)

    def test_controlCharacterInParameter(self) -> None:
        """
        A control character or an octet that is not UTF-8 in a parameter
        is a bad parameter, 501 5.5.4 (RFC 3463: invalid command
        arguments), named when MAIL knows it, not a bad sender address:
        the path before it is fine.
        """
        for octet in [b"\x00", b"\x01", b"\x1b", b"\x7f", "\u0085".encode(), b"\xff", b"\xc3"]:
            for argument, reply in [
                (b"FROM:<a@example.com> ENVID=a" + octet + b"b", replies.BAD_ENVID),
                (b"FROM:<a@example.com> SIZE=1" + octet, replies.BAD_SIZE),
                (b"FROM:<> BODY=7BIT" + octet, replies.BAD_BODY),
                (b"FROM:<a@example.com> RET=FULL" + octet, replies.BAD_RET),
                (b"FROM:<a@example.com> AUTH=" + octet, replies.BAD_AUTH_PARAMETER),
                (b"FROM:<a@example.com> smtputf8=" + octet, replies.BAD_SMTPUTF8),
                (b"FROM:<a@example.com> REQUIRETLS=" + octet, replies.BAD_REQUIRETLS),
                (b"FROM:<a@example.com> SIZE=1 ENVID=" + octet, replies.BAD_ENVID),
                (b"FROM:<a@example.com> X-FOO=" + octet, replies.BAD_PARAMETER_SYNTAX),
                (b"FROM:<a@example.com> NOTIFY=" + octet, replies.BAD_PARAMETER_SYNTAX),
                (b"FROM:<a@example.com> SI" + octet + b"ZE=1", replies.BAD_PARAMETER_SYNTAX),
                (b"FROM:<a@example.com> " + octet, replies.BAD_PARAMETER_SYNTAX),
                (
                    "FROM:<j\u00f6rg@example.com> SMTPUTF8 ENVID=".encode() + octet,
                    replies.BAD_ENVID,
                ),
            ]:
                self.assertMailRefused(argument, reply)
                self.assertMailRefused(argument, reply, lenient=True)
        self.assertMailRefused(b"FROM:a@example.com ENVID=\x01", replies.BAD_ENVID, lenient=True)
        self.assertEqual((replies.BAD_ENVID.code, replies.BAD_ENVID.enhanced), (501, "5.5.4"))
        self.assertEqual(
            (replies.BAD_PARAMETER_SYNTAX.code, replies.BAD_PARAMETER_SYNTAX.enhanced),
            (501, "5.5.4"),
        )

    def test_xtextControlCharacters(self) -> None:
        """
        An ENVID, ORCPT or AUTH whose xtext stands for a control character
        (C0, DEL, C1) gets its 501 (RFC 3461 sections 4.2 and 4.4 want
        printable text before encoding): it would reach handlers, DSNs and
        next hops decoded.  Postfix refuses such an ENVID.  A space, C{+},
        C{=} and a UTF-8 letter (as the relay sends a UTF-8 ENVID to a next
        hop without SMTPUTF8) are accepted.
        """
        for bad in [b"+00", b"a+0D+0Ab", b"+09", b"+1F", b"+7F", b"+C2+85", b"x+2B+0A"]:
            self.assertMailRefused(b"FROM:<> ENVID=" + bad, replies.BAD_ENVID)
            self.assertMailRefused(b"FROM:<> AUTH=a" + bad + b"@b", replies.BAD_AUTH_PARAMETER)
            orcpt = b"TO:<a@b> ORCPT=rfc822;a" + bad + b"@b"
            self.assertRcptRefused(orcpt, replies.BAD_ORCPT)
        envid = parseMail(b"FROM:<> ENVID=+20+2B+3D+7E+C3+A9").dsn.envid
        self.assertEqual(envid, " +=~\u00e9")
        address = parseRcpt(b"TO:<a@b> ORCPT=rfc822;+C3+A9+20@b", False)
        self.assertEqual(address.dsn, AddressDSN((), "rfc822;\u00e9 @b"))

    def test_auth(self) -> None:
        """
        AUTH takes C{<>} or an xtext mailbox, returned decoded (RFC 4954
        section 5).
        """
        self.assertEqual(parseMail(b"FROM:<> AUTH=<>").auth, "<>")
        self.assertEqual(parseMail(b"FROM:<> AUTH=a+2Bb@example.com").auth, "a+b@example.com")
        self.assertMailRefused(b"FROM:<> AUTH", replies.BAD_AUTH_PARAMETER)
        self.assertMailRefused(b"FROM:<> AUTH=a+2", replies.BAD_AUTH_PARAMETER)

    def test_duplicate(self) -> None:
        """
        A parameter given twice, in any case, gets 501 DUPLICATE_PARAMETER.
        """
        self.assertMailRefused(b"FROM:<> SIZE=1 size=2", replies.DUPLICATE_PARAMETER)
        self.assertMailRefused(b"FROM:<> X-A X-A", replies.DUPLICATE_PARAMETER)

    def test_malformed(self) -> None:
        """
        A parameter that is not C{keyword[=value]} gets 501
        BAD_PARAMETER_SYNTAX.
        """
        for param in [b"=1", b"-X", b"SIZE=", b"SIZE==1", b"SIZE=1=2", b"A_B", b"K\xc3\xa9=1"]:
            self.assertMailRefused(b"FROM:<> SMTPUTF8 " + param, replies.BAD_PARAMETER_SYNTAX)

    def test_unknown(self) -> None:
        """
        Unknown parameters, and RCPT parameters on MAIL, get 555 5.5.4.
        """
        for param in [b"X-FOO", b"X-FOO=bar", b"NOTIFY=NEVER", b"ORCPT=rfc822;a@example.com"]:
            self.assertMailRefused(b"FROM:<a@example.com> " + param, replies.UNKNOWN_PARAMETER)
        self.assertEqual(replies.UNKNOWN_PARAMETER.code, 555)

    def test_nonAsciiValue(self) -> None:
        """
        A non-ASCII parameter value needs SMTPUTF8 (RFC 6531 section 3.3).
        """
        self.assertMailRefused(
            "FROM:<> AUTH=jörg@example.com".encode(), replies.NON_ASCII_PARAMETER
        )
        request = parseMail("FROM:<> SMTPUTF8 AUTH=jörg@example.com".encode())
        self.assertEqual(request.auth, "jörg@example.com")


class RcptTests(MailTestCase):
    """
    Tests for L{parseRcpt}.
    """

    def test_simple(self) -> None:
        """
        A plain path gives its mailbox with an empty DSN.
        """
        self.assertEqual(
            parseRcpt(b"TO:<bob@example.com>", False),
            Address("bob@example.com", {}, AddressDSN()),
        )
        self.assertEqual(parseRcpt(b"to: <bob@example.com>", False).address, "bob@example.com")

    def test_missingKeyword(self) -> None:
        """
        A missing C{TO:} gets 501 RCPT_SYNTAX.
        """
        for argument in [b"", b"<a@example.com>", b"FROM:<a@example.com>", b"TO <a@example.com>"]:
            self.assertRcptRefused(argument, replies.RCPT_SYNTAX)

    def test_postmaster(self) -> None:
        """
        C{<Postmaster>} in any case is accepted without a domain and returned
        as written.
        """
        self.assertEqual(parseRcpt(b"TO:<Postmaster>", False).address, "Postmaster")
        self.assertEqual(parseRcpt(b"TO:<POSTMASTER> NOTIFY=NEVER", False).address, "POSTMASTER")
        self.assertEqual(
            parseRcpt(b"TO:<postmaster@example.com>", False).address, "postmaster@example.com"
        )
        self.assertRcptRefused(b"TO:<postmasters>", replies.BAD_RECIPIENT_SYNTAX)
        self.assertRcptRefused(b"TO:<Postmaster>x", replies.BAD_RECIPIENT_SYNTAX)

    def test_nullPathRefused(self) -> None:
        """
        C{<>} is not a forward-path: 501 5.1.3 BAD_RECIPIENT_SYNTAX.
        """
        self.assertRcptRefused(b"TO:<>", replies.BAD_RECIPIENT_SYNTAX)
        self.assertEqual(replies.BAD_RECIPIENT_SYNTAX.enhanced, "5.1.3")

    def test_badSyntax(self) -> None:
        """
        Malformed forward-paths and control characters get 501 5.1.3.
        """
        for argument in [
            b"TO:<a>",
            b"TO:a@example.com",
            b"TO:<a@example.com>x",
            b"TO:<a\x00@b.example>",
            b"TO:<a@b.example>\x1b NOTIFY=NEVER",
            b"TO:<a@b\xff.example> NOTIFY=NEVER\xff",
        ]:
            self.assertRcptRefused(argument, replies.BAD_RECIPIENT_SYNTAX)
        self.assertRcptRefused(b"TO:<" + b"l" * 65 + b"@example.com>", replies.PATH_TOO_LONG)

    def test_controlCharacterInParameter(self) -> None:
        """
        A control character or an octet that is not UTF-8 in a parameter
        of RCPT is a bad parameter, 501 5.5.4, named when RCPT knows it,
        not a bad recipient address.
        """
        for octet in [b"\x01", b"\x1b", "\u009b".encode(), b"\xff"]:
            for argument, reply in [
                (b"TO:<a@b.example> NOTIFY=NEVER" + octet, replies.BAD_NOTIFY),
                (b"TO:<a@b.example> ORCPT=rfc822;a" + octet + b"@b", replies.BAD_ORCPT),
                (b"TO:<Postmaster> ORCPT=" + octet, replies.BAD_ORCPT),
                (b"TO:<a@b.example> ENVID=" + octet, replies.BAD_PARAMETER_SYNTAX),
            ]:
                self.assertRcptRefused(argument, reply)
                self.assertRcptRefused(argument, reply, smtpUtf8=True, lenient=True)

    def test_utf8(self) -> None:
        """
        A non-ASCII forward-path or parameter value is allowed only when the
        transaction has SMTPUTF8.
        """
        argument = "TO:<jörg@bücher.example>".encode()
        self.assertRcptRefused(argument, replies.UTF8_NOT_ALLOWED)
        self.assertEqual(parseRcpt(argument, True).address, "jörg@bücher.example")
        orcpt = "TO:<a@example.com> ORCPT=utf-8;jörg@example.com".encode()
        self.assertRcptRefused(orcpt, replies.NON_ASCII_PARAMETER)
        self.assertEqual(parseRcpt(orcpt, True).dsn, AddressDSN((), "utf-8;jörg@example.com"))
        self.assertRcptRefused(b"TO:<j\xf6rg@example.com>", replies.BAD_RECIPIENT_SYNTAX, True)

    def test_notify(self) -> None:
        """
        NOTIFY takes NEVER alone or a list of SUCCESS, FAILURE and DELAY, in
        any case; repeats are merged.
        """
        cases = {
            b"NEVER": ("NEVER",),
            b"never": ("NEVER",),
            b"SUCCESS": ("SUCCESS",),
            b"failure,Delay,SUCCESS": ("FAILURE", "DELAY", "SUCCESS"),
            b"DELAY,DELAY": ("DELAY",),
        }
        for value, notify in cases.items():
            address = parseRcpt(b"TO:<a@example.com> NOTIFY=" + value, False)
            self.assertEqual(address.dsn, AddressDSN(notify, None))
            self.assertEqual(address.args, {"NOTIFY": value.decode()})
        for bad in [b"NOTIFY", b"NOTIFY=NEVER,SUCCESS", b"NOTIFY=SUCCESS,", b"NOTIFY=ALWAYS"]:
            self.assertRcptRefused(b"TO:<a@example.com> " + bad, replies.BAD_NOTIFY)

    def test_orcpt(self) -> None:
        """
        ORCPT is C{addr-type;xtext}, returned with the address decoded, at most
        500 characters.
        """
        address = parseRcpt(b"TO:<a@example.com> ORCPT=rfc822;b+2Bc@example.com", False)
        self.assertEqual(address.dsn, AddressDSN((), "rfc822;b+c@example.com"))
        self.assertEqual(address.args, {"ORCPT": "rfc822;b+2Bc@example.com"})
        value = b"rfc822;" + b"x" * 493
        self.assertEqual(len(value), 500)
        parseRcpt(b"TO:<a@example.com> ORCPT=" + value, False)
        for bad in [
            b"ORCPT",
            b"ORCPT=rfc822",
            b"ORCPT=rfc822;",
            b"ORCPT=;a@example.com",
            b"ORCPT=rfc(822);a@example.com",
            b"ORCPT=rfc822;a+4",
            b"ORCPT=" + value + b"x",
        ]:
            self.assertRcptRefused(b"TO:<a@example.com> " + bad, replies.BAD_ORCPT)

    def test_unknown(self) -> None:
        """
        Unknown parameters, and MAIL parameters on RCPT, get 555.
        """
        for param in [b"X-FOO", b"SIZE=1", b"BODY=8BITMIME", b"SMTPUTF8", b"RET=FULL"]:
            self.assertRcptRefused(b"TO:<a@example.com> " + param, replies.UNKNOWN_PARAMETER)

    def test_duplicate(self) -> None:
        """
        A parameter given twice gets 501 DUPLICATE_PARAMETER.
        """
        self.assertRcptRefused(
            b"TO:<a@example.com> NOTIFY=NEVER notify=NEVER", replies.DUPLICATE_PARAMETER
        )


class XtextTests(SynchronousTestCase):
    """
    Tests for L{decodeXtext} and L{encodeXtext}.
    """

    def test_encode(self) -> None:
        """
        C{+}, C{=}, spaces, controls and non-ASCII octets are hex-encoded.
        """
        self.assertEqual(encodeXtext("plain@example.com"), "plain@example.com")
        self.assertEqual(encodeXtext("a+b=c d\r"), "a+2Bb+3Dc+20d+0D")
        self.assertEqual(encodeXtext("é"), "+C3+A9")

    def test_decode(self) -> None:
        """
        C{+XX} decodes to octets read as UTF-8; other characters pass through.
        """
        self.assertEqual(decodeXtext("a+2Bb+3Dc"), "a+b=c")
        self.assertEqual(decodeXtext("+C3+A9t+C3+A9"), "été")
        self.assertEqual(decodeXtext("jörg"), "jörg")
        self.assertEqual(decodeXtext(""), "")

    def test_decodeMalformed(self) -> None:
        """
        A C{+} without two hex digits, or octets that are not UTF-8, raise
        L{ValueError}.
        """
        for bad in ["+", "a+2", "+2g", "+ZZ", "+E9", "a+C3"]:
            self.assertRaises(ValueError, decodeXtext, bad)

    @PROPERTY
    @given(st.text())
    def test_roundTrip(self, text: str) -> None:
        """
        Decoding the encoding of any text gives it back, and the encoding is
        printable ASCII without C{=} or spaces.
        """
        encoded = encodeXtext(text)
        self.assertEqual(decodeXtext(encoded), text)
        self.assertTrue(encoded.isascii())
        self.assertTrue(all("!" <= c <= "~" and c != "=" for c in encoded))


class Utf8AddressTests(SynchronousTestCase):
    """
    Tests for L{decodeUtf8Address} and L{encodeUtf8Address} (RFC 6533
    section 3).
    """

    def test_encode(self) -> None:
        """
        Non-ASCII characters, space, C{+}, C{=}, C{\\} and controls become
        C{\\x{HEX}}, two digits at least, no leading zero beyond them.
        """
        self.assertEqual(encodeUtf8Address("a@b"), "a@b")
        self.assertEqual(
            encodeUtf8Address("\u00e9 +=\\\r\u0100\U0001f600"),
            "\\x{E9}\\x{20}\\x{2B}\\x{3D}\\x{5C}\\x{0D}\\x{100}\\x{1F600}",
        )

    @PROPERTY
    @given(st.text(st.characters(blacklist_categories=("Cc", "Cs"))))
    def test_roundTrip(self, text: str) -> None:
        """
        Decoding the encoding of any text without control characters gives
        it back, and the encoding is printable ASCII without C{=}.
        """
        encoded = encodeUtf8Address(text)
        self.assertEqual(decodeUtf8Address(encoded), text)
        self.assertTrue(all("!" <= c <= "~" and c != "=" for c in encoded))


_ATEXT = "abcxyzABCXYZ0129!#$%&'*+/=?^_`{|}~-"
_atoms = st.text(alphabet=_ATEXT, min_size=1, max_size=10)
_dotAtoms = st.lists(_atoms, min_size=1, max_size=4).map(".".join)
_quoted = st.lists(
    st.one_of(
        st.sampled_from([chr(c) for c in range(32, 127) if chr(c) not in '"\\']),
        st.sampled_from([chr(c) for c in range(32, 127)]).map(lambda c: "\\" + c),
    ),
    max_size=20,
).map(lambda parts: '"' + "".join(parts) + '"')
_labels = st.from_regex(r"\A[A-Za-z0-9_]([A-Za-z0-9_-]{0,10}[A-Za-z0-9_])?\Z")
_domains = (
    st.lists(_labels, min_size=1, max_size=5)
    .map(".".join)
    .filter(lambda d: re.fullmatch("[0-9.]+", d) is None)
)
_literals = st.one_of(
    st.ip_addresses(v=4).map(lambda a: f"[{a}]"),
    st.ip_addresses(v=6).map(lambda a: f"[IPv6:{a}]"),
)
_mailboxes = st.tuples(st.one_of(_dotAtoms, _quoted), st.one_of(_domains, _literals)).map("@".join)


def _case(keyword: str, flips: int) -> str:
    return "".join(c.lower() if flips >> i & 1 else c for i, c in enumerate(keyword))


# What xtext parameters may stand for: anything but control characters.
_printable = st.characters(exclude_categories=("Cc", "Cs"))
_mailParameters: dict[str, st.SearchStrategy[str | None]] = {
    "SIZE": st.integers(0, 10**20 - 1).map(str),
    "BODY": st.sampled_from(["7BIT", "8BITMIME", "BINARYMIME", "8bitmime"]),
    "SMTPUTF8": st.none(),
    "REQUIRETLS": st.none(),
    "RET": st.sampled_from(["FULL", "HDRS", "hdrs"]),
    "ENVID": st.text(_printable, min_size=1, max_size=15)
    .map(encodeXtext)
    .filter(lambda v: len(v) <= 100),
    "AUTH": st.one_of(st.just("<>"), st.text(_printable, min_size=1, max_size=15).map(encodeXtext)),
}


@st.composite
def _parameterSets(draw: st.DrawFn) -> list[tuple[str, str | None]]:
    keys = draw(st.lists(st.sampled_from(sorted(_mailParameters)), unique=True))
    return [(_case(k, draw(st.integers(0, 255))), draw(_mailParameters[k])) for k in keys]


class RoundTripTests(SynchronousTestCase):
    """
    Property tests: formatted MAIL and RCPT commands parse back to what was
    formatted, and no input raises anything but L{CommandError}.
    """

    @PROPERTY
    @given(_mailboxes, _parameterSets())
    def test_mail(self, mailbox: str, params: list[tuple[str, str | None]]) -> None:
        """
        C{FROM:<mailbox> K=V ...} parses to the same mailbox and parameters.
        """
        words = [k if v is None else f"{k}={v}" for k, v in params]
        argument = " ".join([f"FROM:<{mailbox}>", *words])
        request = parseMail(argument.encode())
        self.assertEqual(request.address.address, mailbox)
        expected = {k.upper(): True if v is None else v for k, v in params}
        self.assertEqual(request.address.args, expected)
        if "ENVID" in expected:
            self.assertEqual(encodeXtext(request.dsn.envid or ""), expected["ENVID"])
        if "SIZE" in expected:
            self.assertEqual(str(request.size), expected["SIZE"])

    @PROPERTY
    @given(_mailboxes, st.text(_printable, min_size=1, max_size=30))
    def test_rcpt(self, mailbox: str, original: str) -> None:
        """
        C{TO:<mailbox> ORCPT=rfc822;xtext} parses to the same mailbox and the
        decoded original recipient.
        """
        argument = f"TO:<{mailbox}> ORCPT=rfc822;{encodeXtext(original)}"
        address = parseRcpt(argument.encode(), False)
        self.assertEqual(address.address, mailbox)
        self.assertEqual(address.dsn, AddressDSN((), "rfc822;" + original))

    @PROPERTY
    @given(st.binary(max_size=300))
    def test_arbitraryBytes(self, data: bytes) -> None:
        """
        parseMail and parseRcpt raise nothing but L{CommandError} on any
        bytes, bare or after their keyword.
        """
        for argument in (data, b"FROM:" + data, b"TO:" + data, b"FROM:<" + data, b"TO:<" + data):
            self.assertOnlyCommandErrors(argument)

    @PROPERTY
    @given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
    def test_arbitraryText(self, text: str) -> None:
        """
        parseMail and parseRcpt raise nothing but L{CommandError} on any UTF-8
        text shaped like a path.
        """
        for argument in ("FROM:<" + text, "TO:<" + text, "FROM:<a@b> " + text, "TO:" + text):
            self.assertOnlyCommandErrors(argument.encode())

    def assertOnlyCommandErrors(self, argument: bytes) -> None:
        """
        Call every MAIL and RCPT parser variant on C{argument}; only a 501,
        553 or 555 L{CommandError} may come out.
        """
        for lenient in (False, True):
            for call in (
                partial(parseMail, argument, lenient),
                partial(parseRcpt, argument, lenient, lenient),
            ):
                try:
                    call()
                except CommandError as e:
                    self.assertIn(e.reply.code, (501, 553, 555))


#: Matches nothing: with it, every path goes through the full grammar.
_NEVER = re.compile("(?!)")

# Paths near the edges of the shortcut: the characters it takes and those
# it leaves to the full grammar, lengths around the limits.
_edgeLocal = st.one_of(
    _dotAtoms,
    st.text(alphabet='ab.-_!é"', min_size=0, max_size=6),
    st.integers(60, 70).map(lambda n: "l" * n),
)
_edgeDomain = st.one_of(
    _domains,
    _literals,
    st.text(alphabet="ab.-_[]é", min_size=0, max_size=6),
    st.integers(180, 200).map(lambda n: "d" * 63 + "." + "e" * 63 + "." + "f" * (n - 128)),
)
_edgePaths = st.one_of(
    st.builds(
        lambda route, local, domain, end: f"<{route}{local}@{domain}{end}",
        st.sampled_from(["", "@relay.example:", "@a,@b:"]),
        _edgeLocal,
        _edgeDomain,
        st.sampled_from([">", "> SIZE=10", ">x", "> ", "", ">>", "> NOTIFY=NEVER"]),
    ),
    # Plain paths whose local part is 62 to 67 octets, whose whole is 253
    # to 263 and whose last label is 58 to 65.
    st.builds(
        lambda local, domain: f"<{'l' * local}@{'d' * 63}.{'e' * 63}.{'f' * (domain - 64)}>",
        st.integers(62, 67),
        st.integers(122, 129),
    ),
)


class ShortcutTests(SynchronousTestCase):
    """
    The common ASCII path without source route, quoted local part or
    address literal is parsed by a shortcut past the full path grammar; it
    must come to what the full grammar comes to, on every input.
    """

    def outcomes(self, parse: Callable[[], object]) -> list[object]:
        """
        What C{parse} returns or refuses with, with the shortcut and
        without it.
        """
        results: list[object] = []
        for simple in (_address._SIMPLE_PATH, _NEVER):
            with mock.patch.object(_address, "_SIMPLE_PATH", simple):
                try:
                    results.append(parse())
                except CommandError as e:
                    results.append(e.reply)
        return results

    @settings(max_examples=500, deadline=None)
    @given(_edgePaths, st.booleans())
    def test_sameOutcome(self, path: str, lenient: bool) -> None:
        """
        MAIL and RCPT parse a path to the same result, or refuse it with the
        same reply, with the shortcut and without it.
        """
        for argument in (f"FROM:{path}".encode(), f"FROM:{path} SMTPUTF8".encode()):
            first, second = self.outcomes(partial(parseMail, argument, lenient))
            self.assertEqual(first, second)
        first, second = self.outcomes(partial(parseRcpt, f"TO:{path}".encode(), True, lenient))
        self.assertEqual(first, second)

    def test_taken(self) -> None:
        """
        A plain path is parsed by the shortcut alone, parameters or not, up
        to the length limits; beyond them, the full grammar refuses it.
        """
        local, domain = "l" * 64, "d" * 63 + "." + "e" * 63 + "." + "f" * 61
        self.assertEqual(len(f"<{local}@{domain}>"), 256)
        with mock.patch.object(_address, "_PATH", _NEVER):
            self.assertEqual(
                parseMail(b"FROM:<a.b@example.com> SIZE=10").address,
                Address("a.b@example.com", {"SIZE": "10"}),
            )
            self.assertEqual(parseRcpt(b"TO:<x@y>", False).address, "x@y")
            self.assertEqual(
                parseMail(f"FROM:<{local}@{domain}>".encode()).address.address,
                f"{local}@{domain}",
            )
            # Past a limit the shortcut declines; the full grammar (here
            # matching nothing) decides.
            for argument in (f"FROM:<l{local}@a>", f"FROM:<{local}@{domain}e>"):
                with self.assertRaises(CommandError) as e:
                    parseMail(argument.encode())
                self.assertEqual(e.exception.reply, replies.BAD_SENDER_SYNTAX)


class CharacterClassTests(SynchronousTestCase):
    """
    The path grammar's character classes, written as what they leave out,
    are the sets RFC 5321 and RFC 6531 name.
    """

    _EVERY_CODE_POINT = "".join(map(chr, range(0x110000)))
    _UTF8_NON_ASCII = "\u00a0-\U0010ffff"

    def assertSameSet(self, written: str, named: str) -> None:
        """
        Assert that two one-character patterns match the same code points.
        """
        text = self._EVERY_CODE_POINT
        self.assertEqual(
            [m.start() for m in re.finditer(written, text)],
            [m.start() for m in re.finditer(named, text)],
        )

    def test_atext(self) -> None:
        """
        atext (RFC 5322 section 3.2.3) with UTF8-non-ascii.
        """
        named = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~" + self._UTF8_NON_ASCII + "-]"
        self.assertSameSet(_address._ATEXT, named)

    def test_letDig(self) -> None:
        """
        Let-dig with underscores and UTF8-non-ascii.
        """
        self.assertSameSet(_address._LETDIG, "[A-Za-z0-9_" + self._UTF8_NON_ASCII + "]")

    def test_ldh(self) -> None:
        """
        Ldh-str's characters with underscores and UTF8-non-ascii.
        """
        self.assertSameSet(_address._LDH, "[A-Za-z0-9_" + self._UTF8_NON_ASCII + "-]")

    def test_quotedString(self) -> None:
        """
        Quoted-string (RFC 5321 section 4.1.2): qtextSMTP with UTF8-non-ascii,
        or a backslash and any printable ASCII character.
        """
        named = '"(?:[ !#-\\[\\]-~' + self._UTF8_NON_ASCII + ']|\\\\[ -~])*"'
        for text in [f'"{c}"' for c in self._EVERY_CODE_POINT[:0x2000]] + [
            f'"\\{c}"' for c in self._EVERY_CODE_POINT[:0x200]
        ]:
            self.assertEqual(
                bool(re.fullmatch(_address._QUOTED, text)), bool(re.fullmatch(named, text)), text
            )
