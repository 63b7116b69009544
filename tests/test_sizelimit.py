# -*- test-case-name: tests.test_sizelimit -*-
"""
The size limit takes at most the 20 digits of RFC 1870's SIZE keyword: a
larger one would be advertised in EHLO in a form clients may refuse, and no
client could declare a message that large (C{SIZE=} takes 20 digits).
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd import ServerOptions
from twisted_smtpd._twistd.tap import Options

LARGEST = 10**20 - 1


class SizeLimitTests(SynchronousTestCase):
    def test_serverOptions(self) -> None:
        """
        L{ServerOptions} takes 20 digits, and refuses 21 naming the setting.
        """
        self.assertEqual(ServerOptions(size=LARGEST).size, LARGEST)
        for value in [LARGEST + 1, 2**70]:
            e = self.assertRaises(ValueError, ServerOptions, size=value)
            self.assertEqual(
                str(e),
                f"size must be at most {LARGEST} (20 digits, RFC 1870), or 0 for no limit,"
                f" got {value}",
            )

    def test_twistdFlag(self) -> None:
        """
        C{--size} beyond 20 digits is one usage error naming the flag.
        """
        e = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--sink", "--size", str(LARGEST + 1)]
        )
        self.assertTrue(str(e).startswith(f"--size: size must be at most {LARGEST} "), str(e))
