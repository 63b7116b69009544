# -*- test-case-name: tests.test_listenaddresses -*-
"""
C{twistd smtpd} refuses two endpoints that would bind the same address with
one line naming both, rather than failing as if another program held it.
"""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from twisted_smtpd._twistd.tap import Options


def _bindV6Only() -> str | None:
    """
    This host's C{net.ipv6.bindv6only}, or C{None} where there is none.
    """
    try:
        with open("/proc/sys/net/ipv6/bindv6only") as f:
            return f.read().strip()
    except OSError:
        return None


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

    def test_dualStackWildcard(self) -> None:
        """
        Where an IPv6 listener on C{::} takes IPv4 connections too (Linux's
        default, C{net.ipv6.bindv6only} at 0, as on this host), it binds the
        IPv4 addresses of its port: an IPv4 listener on that port, on any of
        them, is refused naming both, in either order.
        """
        if _bindV6Only() != "0":
            raise SkipTest("IPv6 sockets take no IPv4 connection here (bindv6only)")
        six = "tcp6:2525:interface=\\:\\:"
        for listen, expected in [
            (["tcp:2525", six], f"--listen {six!r}: the same address as --listen 'tcp:2525'"),
            (
                [six, "tcp:2525:interface=127.0.0.1"],
                f"--listen 'tcp:2525:interface=127.0.0.1': the same address as --listen {six!r}",
            ),
        ]:
            args = [a for d in listen for a in ("--listen", d)]
            e = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertEqual(str(e), expected)
        # ::1 takes no IPv4 connection.
        self.parse("--listen", "tcp:2525", "--listen", "tcp6:2525:interface=\\:\\:1")

    def test_notDualStack(self) -> None:
        """
        Where an IPv6 socket takes no IPv4 connection, an IPv4 listener and
        an IPv6 one on C{::} of the same port are distinct.
        """
        from twisted_smtpd._twistd import tapconfig

        self.patch(tapconfig, "_dualStack", lambda: False)
        options = self.parse("--listen", "tcp:2525", "--listen", "tcp6:2525:interface=\\:\\:")
        self.assertEqual(len(options["listen"]), 2)

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
