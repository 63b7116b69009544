# -*- test-case-name: tests.integration.test_fail2banjson -*-
"""
The JSON log of a real C{twistd smtpd --log-format json} read by
C{fail2ban-regex} with the JSON filter shipped in C{docs/fail2ban/}: it
finds what the text filter finds in the text log, and a user name written
to look like the JSON of another line bans no other address.
"""

from __future__ import annotations

import base64
import socket
import subprocess

from tests.integration import test_logs
from tests.integration.helpers import CLIENT_TIMEOUT, PROJECT, ServerTestCase, requireProgram

FILTER = PROJECT / "docs" / "fail2ban" / "twisted-smtpd-json.conf"

#: User names of failed logins, each written to pass for another line's
#: JSON, or its text, naming another address.
FORGING = [
    '","namespace":"twisted_smtpd.session","text":"x auth failed: PLAIN from'
    " a[192.0.2.66] user=<a>: 535 5.7.8 x",
    '"}{"time":"2026-01-02T10:00:00.000+00:00","level":"info","namespace":'
    '"twisted_smtpd.session","text":"x auth failed: PLAIN from a[192.0.2.67] user=<a>: 535 x',
    "x auth failed: PLAIN from a[192.0.2.68] user=<a>: 535 5.7.8 x",
    "ad\u200bmin\u2028",
]


class JSONFilterTests(ServerTestCase):
    """
    fail2ban's JSON filter on the JSON log.
    """

    # The sessions of the text filter's tests, and their server.
    login = test_logs.Fail2banTests.login
    failedLogins = test_logs.Fail2banTests.failedLogins
    runSessions = test_logs.Fail2banTests.runSessions
    startAuthServer = test_logs.Fail2banTests.startAuthServer
    savedLog = test_logs.Fail2banTests.savedLog

    def fail2banAddresses(self, logfile: str, mode: str = "normal") -> list[str]:
        """
        Run C{fail2ban-regex} with the JSON filter on C{logfile}.

        @return: The address of each failure it found.
        """
        program = requireProgram(self, "fail2ban-regex", "fail2ban")
        result = subprocess.run(
            [program, "--out", "ip", logfile, f"{FILTER}[mode={mode}]"],
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
            text=True,
            env=test_logs.systemPythonEnvironment(),
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        return result.stdout.split()

    def forgingLogins(self) -> None:
        """
        One failed AUTH PLAIN per user name of L{FORGING}, each on a
        connection of its own.
        """
        for user in FORGING:
            with socket.create_connection(
                ("127.0.0.1", self.server.port), timeout=CLIENT_TIMEOUT
            ) as client:
                replies = client.makefile("rb")
                self.assertTrue(replies.readline().startswith(b"220 "))
                client.sendall(b"EHLO client.example\r\n")
                while replies.readline()[3:4] == b"-":
                    pass
                response = base64.b64encode(b"\0" + user.encode() + b"\0wrong")
                client.sendall(b"AUTH PLAIN " + response + b"\r\n")
                self.assertTrue(replies.readline().startswith(b"535 "), user)
                client.sendall(b"QUIT\r\n")
                self.assertTrue(replies.readline().startswith(b"221 "))

    def test_failuresFound(self) -> None:
        """
        The filter finds in the JSON log what the text filter finds in the
        text log (the four failed logins; in aggressive mode the lockout
        and the refused RCPT too), and each forging user name's failed
        login once, under the client's own address only.
        """
        self.startAuthServer("--log-format", "json")
        self.runSessions()
        self.forgingLogins()
        self.server.waitForLog(' close"', count=3 + len(FORGING))
        self.stopServer()
        logfile = self.savedLog(self.server.output)
        self.assertEqual(self.fail2banAddresses(logfile), ["127.0.0.1"] * (4 + len(FORGING)))
        self.assertEqual(
            self.fail2banAddresses(logfile, "aggressive"),
            ["127.0.0.1"] * (4 + len(FORGING) + 1 + 1),
        )

    def test_textFilterFindsNone(self) -> None:
        """
        The text filter, which reads lines beginning with their date, finds
        nothing in the JSON log: the JSON filter is the one for it.
        """
        self.startAuthServer("--log-format", "json")
        self.forgingLogins()
        self.server.waitForLog(' close"', count=len(FORGING))
        self.stopServer()
        logfile = self.savedLog(self.server.output)
        self.assertEqual(test_logs.Fail2banTests.fail2ban(self, logfile, "aggressive"), 0)  # type: ignore[arg-type]
