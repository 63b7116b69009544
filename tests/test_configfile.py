# -*- test-case-name: tests.test_configfile -*-
"""
C{--config FILE} takes the options as C{docs/operator.md} says: the long
names as keys, an INI C{[smtpd]} section or TOML, and the values the command
line takes with the same meaning; INI's boolean words (yes/no, on/off, 1/0)
only for the flags that take no value.
"""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._twistd.tap import Options
from twisted_smtpd._twistd.tapflags import _MODIFIERS, _NOT_IN_FILE, DELIVERIES

#: Values that INI reads as booleans when a switch is given them.
WORDS = ("0", "1", "yes", "off", "true")


def outcome(arguments: list[str]) -> tuple[object, ...]:
    """
    What C{twistd smtpd ARGUMENTS --sink} makes of its options: the
    L{ServerOptions} and the parsed value of every option but C{--config}
    itself and the handler built, or the usage error.
    """
    config = Options()
    try:
        config.parseOptions([*arguments, "--sink"])
    except usage.UsageError as e:
        return ("error", str(e))
    names = {name.rstrip("=") for name in config.longOpt} - {"config", "handler"}
    values = {name: config.get(name) for name in names}
    return ("parsed", config["serverOptions"], sorted(values.items(), key=repr))


class ValuesTests(SynchronousTestCase):
    def write(self, suffix: str, text: str) -> str:
        path = os.path.abspath(self.mktemp()) + suffix
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_iniNumbers(self) -> None:
        """
        C{max-clients = 0} (no limit), C{size = 0}, C{workers = 1} and
        C{banner = yes} in an INI file mean what they mean on the command
        line: INI's boolean words are not booleans for a value.
        """
        path = self.write(
            ".ini",
            "[smtpd]\nmax-clients = 0\nsize = 0\nworkers = 1\nbanner = yes\n"
            "max-junk-commands = 1\nno-reverse-lookup = on\n",
        )
        self.assertEqual(
            outcome(["--config", path]),
            outcome(
                [
                    *("--max-clients", "0", "--size", "0", "--workers", "1"),
                    *("--banner", "yes", "--max-junk-commands", "1", "--no-reverse-lookup"),
                ]
            ),
        )

    def test_everyValueAsOnTheCommandLine(self) -> None:
        """
        Every option taking a value (deliveries and their settings aside)
        given one of INI's boolean words in an INI file ends as it does on
        the command line: the same settings, or the same error.
        """
        names = sorted(
            name.rstrip("=")
            for name in Options().longOpt
            if name.endswith("=")
            and name.rstrip("=") not in {*DELIVERIES, *_MODIFIERS, *_NOT_IN_FILE}
        )
        self.assertGreater(len(names), 30)
        differing = []
        for name in names:
            for word in WORDS:
                path = self.write(".ini", f"[smtpd]\n{name} = {word}\n")
                fromFile = outcome(["--config", path])
                if fromFile != outcome([f"--{name}", word]):
                    differing.append(f"{name} = {word}: {fromFile[:2]}")
        self.assertEqual(differing, [])

    def test_switchWords(self) -> None:
        """
        A flag taking no value reads INI's boolean words, and refuses any
        other value with one line naming the file and the flag.
        """
        for word, given in [("yes", True), ("1", True), ("on", True), ("0", False), ("no", False)]:
            path = self.write(".ini", f"[smtpd]\nlmtp = {word}\n")
            self.assertIs(outcome(["--config", path])[1].lmtp, given)  # type: ignore[union-attr]
        path = self.write(".ini", "[smtpd]\nlmtp = 2\n")
        self.assertEqual(
            outcome(["--config", path]),
            ("error", f"--config {path!r}: lmtp: expected true or false"),
        )

    def test_tomlNumbers(self) -> None:
        """
        A TOML file gives numbers as numbers, 0 and 1 included.
        """
        path = self.write(".toml", "max-clients = 0\nworkers = 1\nsocket-timeout = 1.5\n")
        self.assertEqual(
            outcome(["--config", path]),
            outcome(["--max-clients", "0", "--workers", "1", "--socket-timeout", "1.5"]),
        )
