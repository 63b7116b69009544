# -*- test-case-name: tests.test_configvalues -*-
"""
Values of C{twistd smtpd} flags (and of L{ServerOptions}) written in a
form the server would take differently from what its reader sees: reply
text that is not US-ASCII, numbers in other digits or spellings than
ASCII digits, endpoint parameters given twice.  Each is one line naming
the flag.
"""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from tests.test_tap import parse
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._twistd.taphandlers import splitHostPort
from twisted_smtpd.handlers._webhookclient import checkURL


class ReplyTextTests(SynchronousTestCase):
    """
    Text the server writes into its replies is printable US-ASCII (RFC 5321
    section 4.2): C{--banner}, and in the library every reply text setting.
    """

    def test_bannerRefused(self) -> None:
        """
        A C{--banner} with a non-ASCII letter, a tab, an escape character
        or a C1 control is refused in one line naming the flag, the
        character shown escaped.
        """
        for banner, shown, position in [
            ("h\xe9llo", "'\\xe9'", 1),
            ("a\tb", "'\\t'", 1),
            ("ab\x1b[2Jb", "'\\x1b'", 2),
            ("a\x85b", "'\\x85'", 1),
            ("\u202eevil", "'\\u202e'", 0),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--banner", banner)
            self.assertEqual(
                str(e),
                "--banner: banner must be printable US-ASCII (RFC 5321 section 4.2),"
                f" got {shown} at position {position}",
            )
            self.assertTrue(str(e).isascii())

    def test_bannerAccepted(self) -> None:
        """
        Printable US-ASCII, spaces and punctuation included, is kept.
        """
        text = "ESMTP ready; see https://example.com/policy (no UCE) ~"
        self.assertEqual(parse("--sink", "--banner", text)["serverOptions"].banner, text)

    def test_libraryRefuses(self) -> None:
        """
        L{ServerOptions} refuses with C{ValueError}, naming the setting, any
        reply text that is not printable US-ASCII: the banner, the server's
        name, the HELO reply and the AUTH-required reply.
        """
        for name in ["banner", "name", "heloResponse", "authRequiredMessage"]:
            value = "%s caf\xe9 %s"
            e = self.assertRaises(ValueError, ServerOptions, **{name: value})
            self.assertIn(f"{name} must be printable US-ASCII", str(e))
        ServerOptions(banner="plain ASCII", name="mx.example.com")

