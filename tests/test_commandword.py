# -*- test-case-name: tests.test_commandword -*-
"""
The first word of a command line that did not parse, as the C{reject:} log
line writes it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.logging import commandWord


class CommandWordTests(SynchronousTestCase):
    def test_oneWord(self) -> None:
        """
        White space the line was not split at (no-break, em, ideographic
        spaces; the line is split at ASCII white space only) is escaped,
        so the word has no white space left for a reader or a filter's
        C{\\S+}.
        """
        for word, logged in [
            (b"foo", "FOO"),
            (b"FOO\xc2\xa0BAR", "FOO\\xa0BAR"),
            (b"X\xe2\x80\x83Y", "X\\u2003Y"),
            (b"\xe3\x80\x80", "\\u3000"),
            (b"A\xc2\x85B", "A\\x85B"),
            (b"A\x1cB", "A\\x1cB"),
        ]:
            self.assertEqual(commandWord(word), logged)
            self.assertFalse(any(c.isspace() for c in commandWord(word)), word)

    def test_cut(self) -> None:
        """
        A long word is cut at 16 characters, as before.
        """
        self.assertEqual(commandWord(b"A" * 40), "A" * 16 + "...")
