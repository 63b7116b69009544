# -*- test-case-name: tests.integration.test_fail2banunix -*-
"""
Clients of a C{unix:} listener, which name their own socket by the path
they bind it to, can neither forge a log line nor have the filter in
C{docs/fail2ban/} ban an address: run by C{fail2ban-regex} on the log of a
real C{twistd smtpd}, their refusals and failed logins find no address.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import tempfile

from tests.integration import test_logs
from tests.integration.helpers import CLIENT_TIMEOUT, ServerTestCase, requireProgram

#: Addresses the bound paths name; none may be found.
VICTIMS = ("192.0.2.66", "192.0.2.67")

#: The names the clients bind their sockets to, in a directory of their own.
BOUND = (
    f"x][{VICTIMS[0]}",
    f"a\n[twisted_smtpd.session#info] f reject: X from x[{VICTIMS[1]}]: 550 x",
)


class UnixClientTests(ServerTestCase):
    def runClients(self) -> str:
        """
        A client per name of L{BOUND}, its socket bound to it, sends an
        unknown command and fails AUTH PLAIN once, on a C{unix:} listener.

        @return: The server's log.
        """
        # Socket paths are limited to about 100 bytes: keep it short.
        directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "s")
        self.startServer(
            "--sink",
            "--auth",
            "memory:alice:secret",
            "--allow-insecure-auth",
            "--auth-optional",
            listen=[f"unix:{path}"],
            maildir=False,
        )
        response = base64.b64encode(b"\0alice\0wrong")
        for name in BOUND:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(CLIENT_TIMEOUT)
                client.bind(os.path.join(directory, name))
                client.connect(path)
                replies = client.makefile("rb")
                self.assertTrue(replies.readline().startswith(b"220 "))
                client.sendall(b"HELO client.example\r\n")
                self.assertTrue(replies.readline().startswith(b"250 "))
                client.sendall(b"FOO\r\n")
                self.assertTrue(replies.readline().startswith(b"500 "))
                client.sendall(b"AUTH PLAIN " + response + b"\r\n")
                self.assertTrue(replies.readline().startswith(b"535 "))
                client.sendall(b"QUIT\r\n")
                self.assertTrue(replies.readline().startswith(b"221 "))
        self.server.waitForLog(" close", count=len(BOUND))
        self.stopServer()
        return self.server.output

    def fail2ban(self, logfile: str, mode: str, usedns: str) -> str:
        """
        Run C{fail2ban-regex} on C{logfile} with the shipped filter.

        @return: Its output, whose C{Failregex:} line is checked to say 0:
            no address found.
        """
        program = requireProgram(self, "fail2ban-regex", "fail2ban")
        result = subprocess.run(
            [
                program,
                f"--usedns={usedns}",
                "--print-all-matched",
                logfile,
                f"{test_logs.FILTER}[mode={mode}]",
            ],
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
            text=True,
            env=test_logs.systemPythonEnvironment(),
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIsNotNone(re.search("^Failregex: 0 total", result.stdout, re.M), result.stdout)
        return result.stdout

    def test_boundPathNotLogged(self) -> None:
        """
        Every line the filter reads names such a client C{localhost[unix]},
        never the path it bound (which would forge a line, or put an
        address in brackets), and neither mode of the filter finds any
        address, a victim's (L{VICTIMS}) or another.
        """
        output = self.runClients()
        self.assertFalse([line for line in output.splitlines() if line.startswith("[")], output)
        self.assertEqual(output.count(" reject: FOO from localhost[unix]: 500 "), 2, output)
        self.assertEqual(
            output.count(" auth failed: PLAIN from localhost[unix] user=<alice>: 535 "), 2, output
        )
        logfile = test_logs.Fail2banTests.savedLog(self, output)  # type: ignore[arg-type]
        for mode in ("normal", "aggressive"):
            self.fail2ban(logfile, mode, "yes")

    def test_noNameForAddress(self) -> None:
        """
        The filter takes an IP address only for the client's, never a name:
        the C{unix} of C{localhost[unix]}, which fail2ban would otherwise look
        up in DNS (C{usedns = warn}, its default) and ban what it resolves to
        (C{unix.example.com} through a search domain), is no address;
        C{--usedns=raw} shows what the filter took.
        """
        output = self.runClients()
        logfile = test_logs.Fail2banTests.savedLog(self, output)  # type: ignore[arg-type]
        for mode in ("normal", "aggressive"):
            self.fail2ban(logfile, mode, "raw")
