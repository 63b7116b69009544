# -*- test-case-name: tests.test_machinename -*-
"""
The server's default name, this machine's host name, when that name is not
plain ASCII: in A-labels if it is an internationalised domain name, else
one line saying the machine's name cannot be used and which setting to set.
"""

from __future__ import annotations

import socket

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_tap import parse
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd.handlers.relay import defaultHeloName

#: Machine names that no domain can be made of: a character host names
#: never hold, a space, a control character, a label too long once written
#: as an A-label, nothing at all.
UNUSABLE = [
    "b\xfc_cher.example",
    "b\xfc cher.example",
    "b\xfc\x1bcher.example",
    "mx with space",
    "a\x07b",
    "a" * 60 + "\xfc.example",
    "",
]


class MachineNameTests(SynchronousTestCase):
    """
    The default C{name} of L{ServerOptions}, C{twistd smtpd} without
    C{--hostname}, and the relay's default EHLO name.
    """

    def machineNamed(self, name: str) -> None:
        """
        Have C{socket.getfqdn()} say this machine is called C{name}.
        """

        def getfqdn(name_: str = "") -> str:
            return name

        self.patch(socket, "getfqdn", getfqdn)

    def test_uLabelsBecomeALabels(self) -> None:
        """
        A machine named in U-labels gives its name in A-labels (upper case
        folded), in the library, on the command line and in the relay's
        EHLO: a domain in SMTP is ASCII.
        """
        for name in ["b\xfccher.example", "B\xdcCHER.Example"]:
            self.machineNamed(name)
            self.assertEqual(ServerOptions().name, "xn--bcher-kva.example")
            self.assertEqual(parse("--sink")["serverOptions"].name, "xn--bcher-kva.example")
            self.assertEqual(defaultHeloName(), "xn--bcher-kva.example")

    def test_asciiKept(self) -> None:
        """
        An ASCII machine name is used as the system gives it.
        """
        self.machineNamed("mx.example.com")
        self.assertEqual(ServerOptions().name, "mx.example.com")
        self.assertEqual(parse("--sink")["serverOptions"].name, "mx.example.com")

    def test_libraryUnusable(self) -> None:
        """
        In the library, a machine name that cannot be made an ASCII domain
        is a C{ValueError} of one printable ASCII line saying the machine's
        host name is not usable and to set C{name}.
        """
        for name in UNUSABLE:
            self.machineNamed(name)
            e = self.assertRaises(ValueError, ServerOptions)
            message = str(e)
            self.assertTrue(message.startswith("this machine's host name "), message)
            self.assertTrue(message.endswith(": set name"), message)
            self.assertTrue(message.isascii() and message.isprintable(), message)
            self.assertEqual(ServerOptions(name="mx.example.com").name, "mx.example.com")

    def test_commandLineUnusable(self) -> None:
        """
        C{twistd smtpd} without C{--hostname} on such a machine stops with
        one line saying the machine's host name is not usable and to set
        C{--hostname}, not one blaming a C{--hostname} never given; with
        the flag it starts.
        """
        for name in UNUSABLE:
            self.machineNamed(name)
            e = self.assertRaises(usage.UsageError, parse, "--sink")
            message = str(e)
            self.assertTrue(message.startswith("this machine's host name "), message)
            self.assertTrue(message.endswith(": set --hostname"), message)
            self.assertTrue(message.isascii() and message.isprintable(), message)
            options = parse("--sink", "--hostname", "mx.example.com")
            self.assertEqual(options["serverOptions"].name, "mx.example.com")

    def test_relayUnusable(self) -> None:
        """
        The relay's default EHLO name on such a machine is a C{ValueError}
        saying to set C{heloName}.
        """
        self.machineNamed("b\xfc_cher.example")
        e = self.assertRaises(ValueError, defaultHeloName)
        self.assertTrue(str(e).endswith(": set heloName"), str(e))
