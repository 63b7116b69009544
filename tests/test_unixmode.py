"""
The mode of a C{unix:} listener of C{twistd smtpd}, as Twisted reads it:
octal digits, with or without Python's C{0o}.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_tap import parse
from twisted_smtpd._twistd.tapendpoints import checkParameters


class UnixModeTests(SynchronousTestCase):
    """
    C{unix:PATH:mode=MODE}.
    """

    def test_pythonOctalAccepted(self) -> None:
        """
        C{mode=0o660}, which Twisted reads as C{660} (C{int(mode, 8)}), is
        taken as it always was.
        """
        for mode in ("660", "0660", "0o660", "0O600"):
            checkParameters("listen", f"unix:/tmp/smtpd.sock:mode={mode}")
        parse("--sink", "--listen", "unix:/tmp/smtpd.sock:mode=0o660:lockfile=0")

    def test_otherSpellingsRefused(self) -> None:
        """
        Digits past 7, a sign, spaces or another base are still refused in
        the server's words.
        """
        for mode in ("9", "0o9", "+660", "0x1b6", "6_60", " 660", "0o"):
            e = self.assertRaises(
                usage.UsageError, checkParameters, "listen", f"unix:/tmp/s:mode={mode}"
            )
            self.assertIn("unix: mode must be octal digits (0-7)", str(e))
