"""
Tests for the help text of C{twistd smtpd}'s options against what the
server does.
"""

from __future__ import annotations

import re

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.commands import DISPATCH
from twisted_smtpd._twistd.tap import Options
from twisted_smtpd._twistd.tapdefinitions import PARAMETERS


class JunkCommandsHelpTests(SynchronousTestCase):
    def test_namesTheCountedCommands(self) -> None:
        """
        The help of C{--max-junk-commands} names exactly the commands the
        server counts as junk (besides C{BDAT 0}): XCLIENT and XFORWARD,
        which only trusted front ends send, are not among them.
        """
        (help,) = [row[3] for row in PARAMETERS if row[0] == "max-junk-commands"]
        listed = re.search(r"\(([^)]*)\)", help)
        assert listed is not None
        named = {name.strip() for name in listed.group(1).split(",")} - {"BDAT 0"}
        counted = {
            verb.name for verb, action in DISPATCH.items() if "_junk." in action.__qualname__
        }
        self.assertEqual(named, counted)
        self.assertNotIn("XCLIENT", help)
        self.assertNotIn("XFORWARD", help)


class NonFiniteNumberTests(SynchronousTestCase):
    def test_saysFinite(self) -> None:
        """
        C{inf} or C{nan} given to a numeric flag is refused as not a finite
        number, not as a number below the flag's bound, which it is not.
        """
        for flag in ("socket-timeout", "worker-timeout", "handler-timeout", "close-timeout"):
            for value in ("inf", "nan", "1e999"):
                with self.assertRaises(usage.UsageError) as raised:
                    Options().parseOptions(["--sink", f"--{flag}", value])
                self.assertEqual(
                    str(raised.exception), f"--{flag}: expected a finite number, got {value!r}"
                )
