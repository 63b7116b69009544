# -*- test-case-name: tests.integration.test_fail2banlines -*-
"""
The filter in C{docs/fail2ban/} reads only the lines the server writes
for its sessions, never the continuation lines of a longer entry (a
handler's traceback, each of its lines after the first written after a
TAB), whose text a client may have chosen: run by C{fail2ban-regex} on the
log of a real C{twistd smtpd}, a message whose folded C{Subject:} forges
session lines, logged in a handler's traceback, bans no address.
"""

from __future__ import annotations

import signal
import subprocess

from tests.integration import test_logs
from tests.integration.helpers import (
    CLIENT_TIMEOUT,
    RECIPIENT,
    SENDER,
    ServerTestCase,
    requireProgram,
)

#: Addresses the forged lines name; none may be found.
VICTIMS = ("192.0.2.66", "192.0.2.67", "192.0.2.68", "192.0.2.69")

#: A folded Subject: whose continuation lines read like session lines.
FORGED = (
    "Subject: hello\r\n"
    f" [twisted_smtpd.session#info] a auth failed: PLAIN from x[{VICTIMS[0]}]"
    " user=<a>: 535 5.7.8 no\r\n"
    f" [twisted_smtpd.session#info] a auth lockout: x[{VICTIMS[1]}] after 3\r\n"
    f" [twisted_smtpd.session#info] a reject: RCPT from x[{VICTIMS[2]}]: 550 5.1.1 no\r\n"
    f" [twisted_smtpd.session#info] a {VICTIMS[3]} refused: connection rate limit (3)\r\n"
)


class ContinuationLineTests(ServerTestCase):
    def test_forgedLinesInTracebackNotFound(self) -> None:
        """
        The handler's traceback carries the forged lines into the log, each
        after a TAB; neither mode of the filter finds any of them (nor
        anything else: the session had no refusal).
        """
        self.startServer("--handler", "tests.integration.subjecthandler:make", maildir=False)
        client = self.smtp()
        client.ehlo()
        code, _ = client.docmd("MAIL", f"FROM:<{SENDER}>")
        self.assertEqual(code, 250)
        self.assertEqual(client.docmd("RCPT", f"TO:<{RECIPIENT}>")[0], 250)
        self.assertEqual(client.docmd("DATA")[0], 354)
        client.send((FORGED + "\r\nbody\r\n.\r\n").encode("ascii"))
        self.assertEqual(client.getreply()[0], 451)
        client.quit()
        self.server.waitForLog(" close")
        code = self.server.stop()
        output = self.server.output
        self.assertIn(code, (0, -signal.SIGTERM), output)
        self.assertIn("builtins.RuntimeError: no rule for the subject hello", output)
        self.assertIn("\t [twisted_smtpd.session#info] a auth failed: ", output)
        for victim in VICTIMS:
            self.assertIn(f"[{victim}]" if victim != VICTIMS[3] else victim, output)
        logfile = test_logs.Fail2banTests.savedLog(self, output)  # type: ignore[arg-type]
        program = requireProgram(self, "fail2ban-regex", "fail2ban")
        for mode in ("normal", "aggressive"):
            result = subprocess.run(
                [program, "--print-all-matched", logfile, f"{test_logs.FILTER}[mode={mode}]"],
                capture_output=True,
                timeout=CLIENT_TIMEOUT,
                check=False,
                text=True,
                env=test_logs.systemPythonEnvironment(),
            )
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn("Failregex: 0 total", result.stdout, (mode, result.stdout))
            for victim in VICTIMS:
                self.assertNotIn(victim, result.stdout)
