"""
Address literals in MAIL and RCPT paths, as RFC 5321 section 4.1.3 writes
them: an IPv4 literal is four C{Snum}, each one to three decimal digits, so
leading zeros (C{[192.0.002.1]}) are valid, in IPv4 literals and in the IPv4
tail of an IPv6 one, as Postfix accepts them.
"""

from __future__ import annotations

import ipaddress
import re

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_protocol import RecordingHandler, connect, take
from twisted_smtpd._core.address import literalAddress
from twisted_smtpd.handlers._maildirnames import recipientDirectory

BAD_SENDER = b"501 5.1.7 Error: bad sender address syntax\r\n"
BAD_RECIPIENT = b"501 5.1.3 Error: bad recipient address syntax\r\n"


def exchange(sender: bytes, recipient: bytes) -> tuple[bytes, RecordingHandler]:
    """
    Over a L{StringTransport}, greet, send MAIL with C{sender} and RCPT with
    C{recipient}; return the two replies and the handler.
    """
    handler = RecordingHandler()
    proto, transport, _, _ = connect(handler)
    proto.dataReceived(b"EHLO client.example\r\n")
    take(transport)
    proto.dataReceived(b"MAIL FROM:<" + sender + b">\r\nRCPT TO:<" + recipient + b">\r\n")
    return take(transport), handler


class AddressLiteralTests(SynchronousTestCase):
    """
    MAIL and RCPT with address literals over a L{StringTransport}.
    """

    def test_ipv4LeadingZeros(self) -> None:
        """
        An IPv4 literal whose numbers have leading zeros is a valid domain
        (C{Snum = 1*3DIGIT}), accepted at MAIL and RCPT as written.
        """
        for literal in (b"[192.0.002.1]", b"[192.000.002.001]", b"[010.0.0.1]"):
            written, _ = exchange(b"s@" + literal, b"r@" + literal)
            self.assertEqual(written, replies.MAIL_OK + replies.RCPT_OK, literal)

    def test_ipv6WithIPv4TailLeadingZeros(self) -> None:
        """
        The IPv4 tail of an IPv6 literal (C{IPv6v4-comp}) may have leading
        zeros too.
        """
        literal = b"[IPv6:::ffff:192.0.02.1]"
        written, _ = exchange(b"s@" + literal, b"r@" + literal)
        self.assertEqual(written, replies.MAIL_OK + replies.RCPT_OK)

    def test_invalidLiteralsStillRefused(self) -> None:
        """
        A number over 255, over three digits, or three numbers, is still no
        IPv4 literal.
        """
        for literal in (b"[192.0.2.256]", b"[0192.0.2.1]", b"[192.0.2]", b"[IPv6:::1.2.3.999]"):
            written, _ = exchange(b"s@" + literal, b"r@example.com")
            self.assertEqual(written, BAD_SENDER + replies.NEED_MAIL, literal)
            written, _ = exchange(b"s@example.com", b"r@" + literal)
            self.assertEqual(written, replies.MAIL_OK + BAD_RECIPIENT, literal)

    def test_leadingZerosAreDecimal(self) -> None:
        """
        C{Snum} is decimal: C{[010.0.0.1]} is 10.0.0.1, never the octal
        reading 8.0.0.1.
        """
        self.assertEqual(literalAddress("[010.0.0.1]"), ipaddress.IPv4Address("10.0.0.1"))
        # Compared as addresses: Python 3.13 writes an IPv4-mapped address
        # with its IPv4 tail (::ffff:10.0.0.1), older ones in hex.
        self.assertEqual(
            literalAddress("[IPv6:::ffff:010.0.0.1]"), ipaddress.IPv6Address("::ffff:a00:1")
        )

    def test_ipv4MappedDirectoryStable(self) -> None:
        """
        The per-recipient Maildir of an IPv4-mapped IPv6 literal is named in
        hex whatever the Python: 3.13 writes such an address with its IPv4
        tail, and an upgrade must not move a recipient's mail elsewhere.
        """
        for literal in (
            "[IPv6:::ffff:192.0.2.1]",
            "[IPv6:::FFFF:c000:0201]",
            "[IPv6:::ffff:192.0.002.1]",
        ):
            self.assertEqual(
                recipientDirectory(f"a@{literal}", "mx.example.com")[0], "[ipv6:::ffff:c000:201]"
            )
        self.assertEqual(
            recipientDirectory("a@[IPv6:::ffff:0.0.0.1]", "mx.example.com")[0], "[ipv6:::ffff:0:1]"
        )

    def test_ipv6TailsShareOneDirectory(self) -> None:
        """
        The per-recipient Maildir of an IPv6 literal with a zero-padded IPv4
        tail is that of the same address written without the zeros.
        """
        self.assertEqual(
            recipientDirectory("a@[IPv6:::ffff:192.0.02.1]", "mx.example.com"),
            recipientDirectory("a@[IPv6:::ffff:192.0.2.1]", "mx.example.com"),
        )


class IPv6LiteralFormTests(SynchronousTestCase):
    """
    The forms of an IPv6 address literal RFC 5321 section 4.1.3 allows:
    C{IPv6-full} (eight groups), C{IPv6-comp} (at most six groups beside
    the C{::}, which stands for at least two groups of zeros),
    C{IPv6v4-full} (six groups and an IPv4 tail) and C{IPv6v4-comp} (at
    most four groups beside the C{::} and the IPv4 tail).
    """

    def test_elisionInEveryPlace(self) -> None:
        """
        A C{::} at the start, in the middle or at the end, standing for two
        groups or more, is accepted at MAIL and RCPT.
        """
        for text in (
            "::",
            "::1",
            "1::",
            "1::2",
            "::2:3:4:5:6:7",
            "1:2:3:4:5:6::",
            "1:2:3::6:7:8",
            "1:2:3:4:5:6:7:8",
            "::1.2.3.4",
            "::ffff:1.2.3.4",
            "1:2:3:4::1.2.3.4",
            "::1:2:3:4:1.2.3.4",
            "1:2:3:4:5:6:1.2.3.4",
        ):
            self.assertIsNotNone(literalAddress(f"[IPv6:{text}]"), text)
            literal = f"[IPv6:{text}]".encode()
            written, _ = exchange(b"s@" + literal, b"r@" + literal)
            self.assertEqual(written, replies.MAIL_OK + replies.RCPT_OK, text)

    def test_elisionOfOneGroupRefused(self) -> None:
        """
        A C{::} standing for a single group of zeros (seven groups beside
        it, or five and an IPv4 tail), which RFC 5321's C{IPv6-comp} and
        C{IPv6v4-comp} do not allow, is no address literal: 501 at MAIL and
        RCPT, and L{literalAddress} gives C{None}.
        """
        for text in (
            "1:2:3:4:5:6:7::",
            "::1:2:3:4:5:6:7",
            "1::2:3:4:5:6:7",
            "1:2:3::5:6:7:8",
            "1:2:3:4:5::1.2.3.4",
            "::1:2:3:4:5:1.2.3.4",
        ):
            self.assertIsNone(literalAddress(f"[IPv6:{text}]"), text)
            literal = f"[IPv6:{text}]".encode()
            written, _ = exchange(b"s@" + literal, b"r@example.com")
            self.assertEqual(written, BAD_SENDER + replies.NEED_MAIL, text)
            written, _ = exchange(b"s@example.com", b"r@" + literal)
            self.assertEqual(written, replies.MAIL_OK + BAD_RECIPIENT, text)

    def test_zoneRefused(self) -> None:
        """
        An IPv6 literal with a zone (C{%eth0}), which RFC 5321 does not
        have, is no address for L{literalAddress} (the check of the
        configured host name and of the self-signed certificate's names),
        as it is none in a path.
        """
        for literal in ("[IPv6:fe80::1%eth0]", "[IPv6:fe80::1%25]", "[IPv6:::ffff:1.2.3.4%x]"):
            self.assertIsNone(literalAddress(literal), literal)


# RFC 5321 section 4.1.3 written out, as the oracle of the property test.
_HEX = "[0-9A-Fa-f]{1,4}"
_SNUM = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[0-9]{1,2}|0[0-9]{2})"
_IPV4 = f"{_SNUM}(?:\\.{_SNUM}){{3}}"
_FULL = re.compile(f"{_HEX}(?::{_HEX}){{7}}")
_COMP = re.compile(f"(?:{_HEX}(?::{_HEX}){{0,5}})?::(?:{_HEX}(?::{_HEX}){{0,5}})?")
_V4FULL = re.compile(f"{_HEX}(?::{_HEX}){{5}}:{_IPV4}")
_V4COMP = re.compile(f"(?:{_HEX}(?::{_HEX}){{0,3}})?::(?:{_HEX}(?::{_HEX}){{0,3}}:)?{_IPV4}")


def _rfc5321IPv6(text: str) -> bool:
    """
    Whether C{text} is an C{IPv6-addr} of RFC 5321 section 4.1.3, with its
    prose: at most six groups beside the C{::} of C{IPv6-comp}, four
    beside that of C{IPv6v4-comp}.
    """
    if _FULL.fullmatch(text) or _V4FULL.fullmatch(text):
        return True
    if _COMP.fullmatch(text):
        return len(re.findall(_HEX, text)) <= 6
    if _V4COMP.fullmatch(text):
        return len(re.findall(_HEX, text.rpartition(":")[0])) <= 4
    return False


_ipv6Pieces = st.lists(
    st.sampled_from(["0", "1", "ab", "ffff", "12345", ":", ":", "::", ".", "1.2.3.4", "09", "256"]),
    max_size=16,
).map("".join)
_ipv6Texts = st.one_of(
    _ipv6Pieces,
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
)


class IPv6LiteralOracleTests(SynchronousTestCase):
    """
    L{literalAddress} against RFC 5321's IPv6 grammar written as regular
    expressions.
    """

    @settings(max_examples=500, deadline=None)
    @given(_ipv6Texts)
    @example("::1:2:3:4:1.2.3.4")
    @example("::1:2:3:4:5:1.2.3.4")
    @example("1::3:4:5:6:7:8")
    @example("::2:3:4:5:6:7")
    @example("1:2:3:4:5:6:1.2.3.4")
    @example("1:2:3:4:5:6:7:8")
    def test_sameAsGrammar(self, text: str) -> None:
        """
        An C{IPv6:} literal is an address exactly when its text is one of
        RFC 5321's four forms.
        """
        self.assertEqual(literalAddress(f"[IPv6:{text}]") is not None, _rfc5321IPv6(text), text)
