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


class MistakesTests(SynchronousTestCase):
    """
    What a configuration file holds by mistake is refused with one line,
    never read in a way its writer did not mean.
    """

    def write(self, suffix: str, data: bytes) -> str:
        path = os.path.abspath(self.mktemp()) + suffix
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_sameOptionTwoSpellings(self) -> None:
        """
        One option under both its spellings (C{max-clients} and
        C{max_clients}), in an INI section, at the top level of a TOML file
        or there and in its C{[smtpd]} table, is refused naming both keys:
        one would silently replace the other.
        """
        for suffix, text in [
            (".ini", b"[smtpd]\nmax-clients = 5\nmax_clients = 6\n"),
            (".toml", b"max-clients = 5\nmax_clients = 6\n"),
            (".toml", b"max-clients = 5\n[smtpd]\nmax_clients = 6\n"),
        ]:
            path = self.write(suffix, text)
            self.assertEqual(
                outcome(["--config", path]),
                (
                    "error",
                    f"--config {path!r}: 'max-clients' and 'max_clients' are the same option",
                ),
            )

    def test_configTwice(self) -> None:
        """
        C{--config} given twice is refused: only one file is read, and the
        other's settings would be left out without a word.
        """
        first = self.write(".ini", b"[smtpd]\nmax-clients = 5\n")
        second = self.write(".ini", b"[smtpd]\nsize = 6\n")
        self.assertEqual(
            outcome(["--config", first, "--config", second]),
            ("error", f"--config given twice ({first!r}, {second!r}): one file is read"),
        )

    def test_emptyValue(self) -> None:
        """
        An INI key without a value is the empty text, as on the command
        line: C{listen =} is refused as C{--listen ''} is (not read as no
        listener, which started the default one), C{banner =} is the empty
        banner.  An empty TOML list is refused: leaving the option out
        gives its default.
        """
        for name in ["listen", "banner", "xclient", "disable", "hostname"]:
            path = self.write(".ini", f"[smtpd]\n{name} =\n".encode())
            self.assertEqual(outcome(["--config", path]), outcome([f"--{name}", ""]), name)
        path = self.write(".toml", b"listen = []\n")
        self.assertEqual(
            outcome(["--config", path]),
            (
                "error",
                f"--config {path!r}: listen: an empty list (leave the option out for its default)",
            ),
        )

    def test_handlerOptionTable(self) -> None:
        """
        The values of a C{handler-option} table are strings or numbers, as
        on the command line; a boolean (its text C{False} is true), an
        array, a table or a date is refused naming the key, not handed to
        the handler as Python's text of it.
        """
        directory = os.path.abspath(self.mktemp())
        for value in ["true", "[1, 2]", "{b = 1}", "1979-05-27"]:
            path = self.write(
                ".toml",
                b"handler = 'tests.integration.recordinghandler:make'\n"
                + f"handler-option = {{directory = '{directory}', reply = {value}}}\n".encode(),
            )
            config = Options()
            e = self.assertRaises(usage.UsageError, config.parseOptions, ["--config", path])
            self.assertEqual(
                str(e), f"--config {path!r}: handler-option: reply: expected a string or a number"
            )

    def test_encoding(self) -> None:
        """
        A file starting with a UTF-8 byte order mark (as Windows Notepad
        writes) reads as without it; one that is not UTF-8 is refused
        naming the byte and where it is.
        """
        for suffix, text in [
            (".ini", b"[smtpd]\nmax-clients = 5\n"),
            (".toml", b"max-clients = 5\n"),
        ]:
            plain = self.write(suffix, text)
            marked = self.write(suffix, b"\xef\xbb\xbf" + text)
            self.assertEqual(outcome(["--config", marked]), outcome(["--config", plain]))
            self.assertEqual(outcome(["--config", plain])[0], "parsed")
        for mark in [b"", b"\xef\xbb\xbf"]:
            path = self.write(".ini", mark + b"[smtpd]\nbanner = caf\xe9\n")
            self.assertEqual(
                outcome(["--config", path]),
                (
                    "error",
                    f"--config {path!r}: not UTF-8 text (the byte 0xe9 at offset {20 + len(mark)})",
                ),
            )
