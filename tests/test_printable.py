"""
Tests for L{twisted_smtpd._core.printable}: text from the network made safe,
host name syntax, address literals.
"""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core.printable import (
    UNSAFE,
    _escape,
    addressLiteral,
    printable,
    validHostname,
)


class PrintableTests(SynchronousTestCase):
    def test_unchanged(self) -> None:
        """
        Printable text, non-ASCII letters included, is returned as it is.
        """
        for text in (
            "mail.example.com",
            "Jörg <j@example.com>",
            "a\\x0d",
            "",
            "\U0001f600\u200d\U0001f600",  # an emoji sequence with its joiner
            "\U00018d09",  # not yet in Python's Unicode tables
            "\u00a0\ue000",
        ):
            self.assertEqual(printable(text), text)

    def test_escaped(self) -> None:
        """
        Control characters, DEL, C1 controls, line and paragraph separators,
        lone surrogates and bidirectional overrides become escapes.
        """
        self.assertEqual(
            printable("a\r\n250 b\x00\x7f\x85\u2028\u2029\udcff\tc\u202egnp.exe"),
            "a\\x0d\\x0a250 b\\x00\\x7f\\x85\\u2028\\u2029\\udcff\\x09c\\u202egnp.exe",
        )

    @given(st.text())
    def test_alwaysPrintable(self, text: str) -> None:
        """
        Whatever goes in, what comes out has no control character, line
        break or surrogate, is one line and encodes as UTF-8.
        """
        out = printable(text)
        for index, character in enumerate(out):
            category = unicodedata.category(character)
            self.assertNotIn(category, ("Cc", "Cs", "Zl", "Zp"))
            if category == "Cf":
                # Only a joiner between two characters that are not ASCII.
                self.assertIn(character, "\u200c\u200d")
                self.assertTrue(0 < index < len(out) - 1, repr(out))
                self.assertFalse(out[index - 1].isascii() or out[index + 1].isascii(), repr(out))
        out.encode("utf-8")
        self.assertEqual(len(out.splitlines()), 1 if text else 0)
        self.assertIsNone(UNSAFE.search(out))

    def test_invisibleEscaped(self) -> None:
        """
        The invisible format characters (Unicode category Cf: a zero-width
        space, the byte order mark, the word joiner, a soft hyphen, a tag
        character) are escaped, so that a text that only looks like another
        reads as what it holds.
        """
        self.assertEqual(
            printable("ad\u200bmin\ufeff\u2060\u00ad\U000e0041\ufff9x\u180e"),
            "ad\\u200bmin\\ufeff\\u2060\\xad\\U000e0041\\ufff9x\\u180e",
        )

    def test_everyFormatCharacter(self) -> None:
        """
        Every format character this Python's Unicode tables know (category
        Cf) is escaped, the two joiners beside ASCII included.
        """
        for code in range(0x110000):
            character = chr(code)
            if unicodedata.category(character) == "Cf":
                self.assertEqual(printable(f"a{character}b"), f"a{_escape(character)}b")

    def test_joinersBetweenLetters(self) -> None:
        """
        The zero-width non-joiner and joiner stay between two characters
        that are not ASCII (a Persian word, an emoji sequence), as RFC 5892
        appendix A allows them in context; beside ASCII, another joiner or
        at an end they are escaped.
        """
        for text in ("\u0645\u06cc\u200c\u062e", "\U0001f600\u200d\U0001f600"):
            self.assertEqual(printable(text), text)
        for text, escaped in [
            ("ad\u200dmin", "ad\\u200dmin"),
            ("\u200cx", "\\u200cx"),
            ("\u00e9\u200d", "\u00e9\\u200d"),
            ("\u00e9\u200d\u200d\u00e9", "\u00e9\\u200d\\u200d\u00e9"),
            ("\u00e9\u200d\u2028", "\u00e9\\u200d\\u2028"),
        ]:
            self.assertEqual(printable(text), escaped)


class HostnameTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """
        Letters, digits and inner hyphens, up to 63 per label and 253 in
        all.
        """
        for name in (
            "a",
            "mail-1.Example.NET",
            "x" * 63 + ".example",
            ".".join(["a" * 63] * 4)[:253],
        ):
            self.assertTrue(validHostname(name), name)

    def test_invalid(self) -> None:
        """
        Empty labels, bad characters, hyphens at a label's edge, long labels
        or names, non-ASCII and numeric last labels are refused.
        """
        for name in (
            "",
            "a..b",
            "a.",
            ".a",
            "-a.example",
            "a-.example",
            "a_b.example",
            "x" * 64 + ".example",
            ".".join(["a" * 63] * 4),
            "exämple.com",
            "192.0.2.1",
            "host.123",
            "a\r\nb",
            "a b",
        ):
            self.assertFalse(validHostname(name), name)

    def test_underscore(self) -> None:
        """
        Underscores are allowed only when asked for.
        """
        self.assertTrue(validHostname("win_host.example", underscore=True))
        self.assertFalse(validHostname("win_host.example"))


class AddressLiteralTests(SynchronousTestCase):
    def test_literals(self) -> None:
        """
        IPv4 and IPv6 literals as RFC 5321 section 4.1.3 writes them; other
        text is bracketed and made printable.
        """
        self.assertEqual(addressLiteral("192.0.2.7"), "[192.0.2.7]")
        self.assertEqual(addressLiteral("2001:db8::7"), "[IPv6:2001:db8::7]")
        self.assertEqual(addressLiteral("/run/smtp\r\n.sock"), "[/run/smtp\\x0d\\x0a.sock]")

    def test_rememberedBounded(self) -> None:
        """
        Literals are remembered for the addresses seen last, at most 1024 of
        them, so a flood of distinct client addresses cannot grow memory.
        """
        addressLiteral.cache_clear()
        for i in range(3000):
            addressLiteral(f"10.0.{i // 256}.{i % 256}")
        self.assertEqual(addressLiteral.cache_info().currsize, 1024)
        self.assertEqual(addressLiteral("10.0.11.183"), "[10.0.11.183]")
        self.assertEqual(addressLiteral.cache_info().hits, 1)
