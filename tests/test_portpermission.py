# -*- test-case-name: tests.test_portpermission -*-
"""
L{twisted_smtpd._twistd.portpermission}: C{--check-config} refuses a port
the user it runs as may not bind, as the kernel decides, with the line the
start ends with.
"""

from __future__ import annotations

import errno
import io
import os
import socket
import sys
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from tests.test_checkconfig import _check
from tests.test_configerrors import _asNobody
from twisted_smtpd._serving.listeners import PRIVILEGED_PORT_HINT, listenReason
from twisted_smtpd._twistd import portpermission
from twisted_smtpd._twistd.portpermission import mayBind
from twisted_smtpd._twistd.tap import Options


def _needRoot() -> None:
    if os.geteuid() != 0:
        raise SkipTest("needs root, to take the identity of nobody")


class MayBindTests(SynchronousTestCase):
    """
    L{mayBind} reads the first unprivileged port and the thread's effective
    capabilities from C{/proc}.
    """

    def setUp(self) -> None:
        self.start = self.mktemp()
        self.status = self.mktemp()
        self.patch(portpermission, "UNPRIVILEGED_PORT_START", self.start)
        self.patch(portpermission, "THREAD_STATUS", self.status)

    def write(self, start: str | None, capEff: str | None) -> None:
        for path, text in ((self.start, start), (self.status, capEff)):
            if os.path.exists(path):
                os.remove(path)
            if text is not None:
                with open(path, "w") as f:
                    f.write(text)

    def test_capability(self) -> None:
        """
        A port below the first unprivileged one needs C{CAP_NET_BIND_SERVICE}
        (bit 10) in the effective set; other capabilities do not do.
        """
        status = "Name:\tpython\nCapPrm:\t000001ffffffffff\nCapEff:\t{}\n"
        self.write("1024\n", status.format("0000000000000400"))
        self.assertTrue(mayBind(25))
        self.write("1024\n", status.format("000001fffffffbff"))
        self.assertFalse(mayBind(25))
        self.assertFalse(mayBind(1023))
        self.assertTrue(mayBind(1024))
        self.assertTrue(mayBind(0))

    def test_authbind(self) -> None:
        """
        Under authbind (its library preloaded), which lets a user bind a
        port its C{/etc/authbind} files allow as the port is bound, every
        port passes: only the start can tell.
        """
        self.write("1024\n", "CapEff:\t0000000000000000\n")
        library = "/usr/lib/authbind/libauthbind.so.1"
        self.patch(os, "environ", {**os.environ, "LD_PRELOAD": library})
        self.assertTrue(mayBind(25))
        self.patch(os, "environ", {**os.environ, "LD_PRELOAD": ""})
        self.assertFalse(mayBind(25))

    def test_unprivilegedPortStart(self) -> None:
        """
        The first unprivileged port is the kernel's setting: 0 lets anyone
        bind any port, 80 lets anyone bind port 80.
        """
        for start, port, allowed in [("0\n", 25, True), ("80\n", 80, True), ("80\n", 79, False)]:
            self.write(start, "CapEff:\t0000000000000000\n")
            self.assertEqual(mayBind(port), allowed, (start, port))

    def test_unreadable(self) -> None:
        """
        Where C{/proc} cannot be read, ports from 1024 are free and those
        below need root.
        """
        self.write(None, None)
        self.assertTrue(mayBind(1024))
        self.assertEqual(mayBind(1023), os.geteuid() == 0)


class CheckConfigAsUserTests(SynchronousTestCase):
    """
    C{--check-config} run by a user who cannot bind a port below 1024 says
    so, as the start would, rather than calling the configuration OK.
    """

    def setUp(self) -> None:
        # As root first: whatever a parse imports is imported now (nobody
        # may not read the modules).
        _check("--sink", "--listen", "tcp:25", "--metrics", "tcp:99:interface=127.0.0.1")
        start = self.mktemp()
        with open(start, "w") as f:
            f.write("1024\n")
        # The kernel's default, whatever this machine's setting.
        self.patch(portpermission, "UNPRIVILEGED_PORT_START", start)
        # Where the start's one line goes (exitWithError).
        self.stderr = io.StringIO()
        self.patch(sys, "__stderr__", self.stderr)

    def parse(self, *arguments: str) -> Options:
        config = Options()
        config.parent = {"pidfile": None}  # type: ignore[attr-defined]
        config.parseOptions(list(arguments))
        return config

    def test_refusedAsNobody(self) -> None:
        """
        Run as nobody, C{--listen} on port 25 (C{tcp:}, C{ssl:} and behind
        C{haproxy:}) and C{--metrics} on port 99 are refused in one line, in
        the start's words; port 2525 and C{unix:} are not.
        """
        _needRoot()
        for flag, description in [
            ("listen", "tcp:25:interface=127.0.0.1"),
            ("listen", "haproxy:tcp:25:interface=127.0.0.1"),
            ("listen", "tcp6:587:interface=\\:\\:1"),
            ("metrics", "tcp:99:interface=127.0.0.1"),
        ]:
            with _asNobody():
                code, out, err = _check("--sink", f"--{flag}", description)
            self.assertEqual(
                (code, out, self.stderr.getvalue()),
                (
                    1,
                    "",
                    f"twistd smtpd: --{flag} {description!r}: {PRIVILEGED_PORT_HINT}; see --help\n",
                ),
            )
            self.stderr.seek(0)
            self.stderr.truncate()
        with _asNobody():
            code, out, err = _check("--sink", "--listen", "tcp:2525:interface=127.0.0.1")
        self.assertEqual((code, out, err), (0, "twistd smtpd: configuration OK\n", ""))

    def test_startsWords(self) -> None:
        """
        The line is what a start run as nobody ends with: binding port 25
        fails with C{EACCES}, which the start says so.
        """
        _needRoot()
        probe = socket.socket()
        self.addCleanup(probe.close)
        with _asNobody():
            e = self.assertRaises(OSError, probe.bind, ("127.0.0.1", 25))
        self.assertEqual(e.errno, errno.EACCES)
        self.assertEqual(listenReason(e), PRIVILEGED_PORT_HINT)

    def test_agreesWithKernel(self) -> None:
        """
        As nobody and as root, L{mayBind} answers as binding does (on this
        machine's setting): a port refused is refused with C{EACCES}.
        """
        _needRoot()
        self.patch(
            portpermission,
            "UNPRIVILEGED_PORT_START",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
        )
        for asNobody in (True, False):
            for port in (25, 1023, 1024):
                probe = socket.socket()
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    if asNobody:
                        with _asNobody():
                            allowed = mayBind(port)
                            bound = _binds(probe, port)
                    else:
                        allowed = mayBind(port)
                        bound = _binds(probe, port)
                finally:
                    probe.close()
                self.assertEqual(allowed, bound, (asNobody, port))

    def test_startNotChecked(self) -> None:
        """
        Without C{--check-config} nothing is refused while the options are
        read (a worker of C{--workers}, run as C{--uid}'s user, reads the
        same C{--listen}): the start binds, and says why it cannot.
        """
        _needRoot()
        with _asNobody():
            config = self.parse("--sink", "--listen", "tcp:25:interface=127.0.0.1")
        self.assertEqual(config["listen"], ["tcp:25:interface=127.0.0.1"])


def _binds(probe: socket.socket, port: int) -> bool:
    """
    Whether C{probe} may bind C{port} of 127.0.0.1 as far as the kernel's
    rule on privileged ports goes (one in use was allowed).
    """
    try:
        probe.bind(("127.0.0.1", port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return True
        if e.errno == errno.EACCES:
            return False
        raise
    return True
