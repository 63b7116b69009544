# -*- test-case-name: tests.test_listenaddresses -*-
"""
C{twistd smtpd} refuses two endpoints that would bind the same address with
one line naming both, rather than failing as if another program held it,
and an interface no listener could bind, before anything listens.
"""

from __future__ import annotations

import errno
import os
import socket
from unittest import SkipTest

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._twistd import taphost
from twisted_smtpd._twistd.tap import Options


class SameAddressTests(SynchronousTestCase):
    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(["--sink", *args])
        return options

    def test_refused(self) -> None:
        """
        The same TCP port on the same interface (a wildcard covering the
        other included), behind C{haproxy:} or C{ssl:} too, the same UNIX
        socket path (relative or not), and C{--metrics} on a C{--listen}
        address, are refused naming both flags.
        """
        here = os.path.abspath("smtpd.sock")
        cases = [
            (
                ["tcp:2525:interface=127.0.0.1", "tcp:2525:interface=127.0.0.1"],
                None,
                "--listen 'tcp:2525:interface=127.0.0.1': the same address as"
                " --listen 'tcp:2525:interface=127.0.0.1'",
            ),
            (
                ["tcp:2525", "haproxy:tcp:2525:interface=127.0.0.1"],
                None,
                "--listen 'haproxy:tcp:2525:interface=127.0.0.1': the same address as"
                " --listen 'tcp:2525'",
            ),
            (
                ["ssl:2525:interface=127.0.0.1", "tcp:2525:interface=0.0.0.0"],
                None,
                "--listen 'tcp:2525:interface=0.0.0.0': the same address as"
                " --listen 'ssl:2525:interface=127.0.0.1'",
            ),
            (
                ["unix:smtpd.sock", f"unix:{here}"],
                None,
                f"--listen 'unix:{here}': the same address as --listen 'unix:smtpd.sock'",
            ),
            (
                ["tcp:2525:interface=127.0.0.1"],
                "tcp:2525:interface=127.0.0.1",
                "--metrics 'tcp:2525:interface=127.0.0.1': the same address as"
                " --listen 'tcp:2525:interface=127.0.0.1'",
            ),
        ]
        for listen, metrics, expected in cases:
            args = [a for d in listen for a in ("--listen", d)]
            if metrics is not None:
                args += ["--metrics", metrics]
            e = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertEqual(str(e), expected)

    def test_accepted(self) -> None:
        """
        Port 0 twice, two interfaces of one port, an IPv4 and an IPv6
        address, and two UNIX paths are distinct.
        """
        for listen in [
            ["tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"],
            ["tcp:2525:interface=127.0.0.1", "tcp:2525:interface=127.0.0.2"],
            ["tcp:2525:interface=127.0.0.1", "tcp6:2525:interface=\\:\\:1"],
            ["unix:a.sock", "unix:b.sock"],
            ["tcp:2525:interface=127.0.0.1", "tcp:2526:interface=127.0.0.1"],
        ]:
            options = self.parse(*[a for d in listen for a in ("--listen", d)])
            self.assertEqual(options["listen"], listen)


def _kernelDualStack() -> bool:
    """
    Whether binding says IPv6 listeners take IPv4 connections here: an IPv6
    socket on C{::} cannot bind the port an IPv4 one listens on (both with
    C{SO_REUSEADDR}, as Twisted binds).
    """
    if not socket.has_ipv6:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as four:
        four.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        four.bind(("127.0.0.1", 0))
        four.listen(1)
        port = four.getsockname()[1]
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as six:
            six.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                six.bind(("::", port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                return True
    return False


class DualStackTests(SynchronousTestCase):
    """
    Where IPv6 listeners take IPv4 connections too (Linux's default), an
    IPv6 listener on C{::} binds the IPv4 addresses of its port as well.
    """

    def parse(self, *listen: str) -> Options:
        options = Options()
        options.parseOptions(["--sink", *[a for d in listen for a in ("--listen", d)]])
        return options

    def test_refusedWhereDualStack(self) -> None:
        """
        On a dual-stack host (as binding tells), C{tcp:25} and C{tcp6:25}
        (or C{::} and one IPv4 address, or an IPv4-mapped address and its
        IPv4 one) are refused naming both, not left to fail at start as if
        another program listened there.
        """
        if not _kernelDualStack():
            raise SkipTest("IPv6 listeners take IPv6 connections only here")
        note = " (IPv6 listeners take IPv4 connections too: net.ipv6.bindv6only is 0)"
        for listen in [
            ["tcp:2525", "tcp6:2525"],
            ["tcp6:2525", "tcp:2525:interface=127.0.0.1"],
            ["tcp:2525:interface=\\:\\:", "tcp:2525:interface=127.0.0.1"],
            ["tcp:2525:interface=127.0.0.1", "tcp6:2525:interface=\\:\\:ffff\\:127.0.0.1"],
            ["tcp6:2525:interface=\\:\\:ffff\\:127.0.0.1", "tcp:2525"],
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *listen)
            self.assertEqual(
                str(e), f"--listen {listen[1]!r}: the same address as --listen {listen[0]!r}{note}"
            )

    def test_acceptedWhereNot(self) -> None:
        """
        Where IPv6 listeners take IPv6 connections only, and for IPv6
        addresses that map no IPv4 one, IPv4 and IPv6 listeners of one
        port are distinct.
        """
        self.patch(taphost, "_dualStack", lambda: False)
        listen = ["tcp:2525", "tcp6:2525"]
        self.assertEqual(self.parse(*listen)["listen"], listen)
        self.patch(taphost, "_dualStack", lambda: True)
        for listen in [
            ["tcp:2525", "tcp6:2525:interface=\\:\\:1"],
            ["tcp:2525:interface=127.0.0.1", "tcp6:2525:interface=\\:\\:ffff\\:127.0.0.2"],
        ]:
            self.assertEqual(self.parse(*listen)["listen"], listen)

    def test_kernelAgrees(self) -> None:
        """
        What L{taphost._dualStack} reads is what binding says.
        """
        self.assertEqual(taphost._dualStack(), _kernelDualStack())


class AbsentInterfaceTests(SynchronousTestCase):
    def test_refused(self) -> None:
        """
        A TCP listener (behind C{haproxy:}, as C{ssl:} too) or C{--metrics}
        on an address this host does not have is refused as the options
        are read, in the words of the listener that would fail to start:
        C{--check-config}, which listens on nothing, would call it OK.
        """
        for flag, description in [
            ("--listen", "tcp:2525:interface=192.0.2.77"),
            ("--listen", "haproxy:ssl:2465:interface=192.0.2.77"),
            ("--listen", "tcp6:2525:interface=2001\\:db8\\:\\:77"),
            ("--metrics", "tcp:9101:interface=192.0.2.77"),
        ]:
            e = self.assertRaises(
                usage.UsageError, Options().parseOptions, ["--sink", flag, description]
            )
            self.assertEqual(
                str(e), f"{flag} {description!r}: no interface of this host has this address"
            )

    def test_invalidName(self) -> None:
        """
        An C{interface=} name with an empty label is refused in one line,
        as the resolver answers it (the name is unknown: Linux's
        C{getaddrinfo} says "Name or service not known"), not with a
        traceback from the IDNA codec; a name that is not ASCII and that
        IDNA cannot encode is refused as not a valid host name.
        """
        description = "tcp:2525:interface=a..b"
        e = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--sink", "--listen", description]
        )
        self.assertTrue(str(e).startswith(f"--listen {description!r}: "), str(e))
        self.assertNotIn("\n", str(e))
        self.assertNotIn("idna", str(e))
        description = "tcp:2525:interface=\u00e4..b"
        e = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--sink", "--listen", description]
        )
        self.assertEqual(str(e), f"--listen {description!r}: not a valid host name")

    def test_portInUse(self) -> None:
        """
        An address of this host is accepted, with the port in use too (a
        server running, beside which C{--check-config} runs): only the
        address is tried, on a port the system picks.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        description = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        options = Options()
        options.parseOptions(["--sink", "--listen", description])
        self.assertEqual(options["listen"], [description])
