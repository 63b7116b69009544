# -*- test-case-name: tests.test_givenname -*-
"""
A server name given in U-labels (C{name}, C{--hostname}, C{hostname} in a
configuration file) is written in A-labels, with the rules of the
machine's name; a non-ASCII name that cannot be is refused in one line
naming the setting.
"""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_machinename import UNUSABLE
from tests.test_tap import parse
from twisted_smtpd._core.options import ServerOptions

#: Names in U-labels and their A-label form, as IDNA 2008 with the UTS 46
#: mapping writes them (upper case folded; a trailing dot kept).
CONVERTED = [
    ("b\xfccher.example", "xn--bcher-kva.example"),
    ("B\xdcCHER.Example", "xn--bcher-kva.example"),
    # The final dot is left out, as of an ASCII name.
    ("mx.b\xfccher.example.", "mx.xn--bcher-kva.example"),
    ("\u4f8b\u3048.\u30c6\u30b9\u30c8", "xn--r8jz45g.xn--zckzah"),
]

#: Non-ASCII names that no A-label form can be made of.
REFUSED = [name for name in UNUSABLE if name and not name.isascii()]


class GivenNameTests(SynchronousTestCase):
    """
    C{name} in the library, C{--hostname} on the command line and in a
    configuration file.
    """

    def test_libraryConverts(self) -> None:
        """
        L{ServerOptions} keeps a name in U-labels in its A-label form; an
        ASCII name as it is.
        """
        for given, expected in CONVERTED:
            options = ServerOptions(name=given)
            self.assertEqual(options.name, expected)
        self.assertEqual(ServerOptions(name="mx.example.com").name, "mx.example.com")

    def test_commandLineConverts(self) -> None:
        """
        C{--hostname} in U-labels starts the server with the A-label name.
        """
        for given, expected in CONVERTED:
            options = parse("--sink", "--hostname", given)
            self.assertEqual(options["serverOptions"].name, expected)

    def test_configFileConverts(self) -> None:
        """
        C{hostname} in U-labels in a configuration file is the same.
        """
        path = self.mktemp() + ".toml"
        with open(path, "w", encoding="utf-8") as f:
            f.write('hostname = "b\xfccher.example"\n')
        self.addCleanup(os.remove, path)
        options = parse("--sink", "--config", path)
        self.assertEqual(options["serverOptions"].name, "xn--bcher-kva.example")

    def test_libraryRefuses(self) -> None:
        """
        A non-ASCII name IDNA cannot write in A-labels (a space, an
        underscore, a control character, a label too long) is a
        C{ValueError} of one printable ASCII line naming C{name}.
        """
        self.assertTrue(REFUSED)
        for given in REFUSED:
            e = self.assertRaises(ValueError, ServerOptions, name=given)
            message = str(e)
            self.assertTrue(message.startswith("name must be "), message)
            self.assertIn("A-labels", message)
            self.assertTrue(message.isascii() and message.isprintable(), message)

    def test_commandLineRefuses(self) -> None:
        """
        C{--hostname} with such a name stops with one printable ASCII line
        naming the flag.
        """
        for given in REFUSED:
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--hostname", given)
            message = str(e)
            self.assertTrue(message.startswith("--hostname "), message)
            self.assertIn("A-labels", message)
            self.assertTrue(message.isascii() and message.isprintable(), message)
