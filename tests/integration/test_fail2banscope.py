# -*- test-case-name: tests.integration.test_fail2banscope -*-
"""
A client reaching the server by its IPv6 link-local address is logged with
the address's zone (C{fe80::1%eth0}, as the socket gives it); the filter in
C{docs/fail2ban/}, run by C{fail2ban-regex}, finds its refusals all the
same, and bans the address.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import TestCase

from tests.integration import test_logs
from tests.integration.helpers import CLIENT_TIMEOUT, requireProgram
from twisted_smtpd._core.grammar import Verb
from twisted_smtpd._core.replies import AUTH_FAILED, BAD_RECIPIENT_SYNTAX, TOO_MANY_AUTH_FAILURES
from twisted_smtpd._core.session import Session
from twisted_smtpd._serving.logging import NAMESPACE, SessionLogger, refusal
from twisted_smtpd._serving.logwriter import BufferedLogWriter

#: A link-local client as the socket names it: with its zone.
CLIENT = "fe80::1%eth0"


class ZoneTests(TestCase):
    def writeLog(self) -> str:
        """
        The lines of a link-local client the filter's aggressive mode reads:
        a failed login, the lockout, a refused command, a connection rate
        limit, written by the server's own log writer.

        @return: The log file's path.
        """
        path = self.mktemp() + ".log"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as out:
            writer = BufferedLogWriter(out, reactor=Clock())
            logger = SessionLogger(writer=writer)
            session = Session(
                id="s1", remoteAddress=(CLIENT, 51234), clientHostname="[IPv6:fe80::1]"
            )
            auth = {"reply": AUTH_FAILED, "command": "AUTH", "mechanism": "PLAIN"}
            logger("reject", session, {**auth, "username": "alice", "authzid": None})
            lockout = {"reply": TOO_MANY_AUTH_FAILURES, "command": "AUTH", "failures": 3}
            logger("reject", session, {**lockout, "lockout": True})
            rcpt = refusal(BAD_RECIPIENT_SYNTAX, Verb.RCPT, b"TO:<x>", None, False)
            logger("reject", session, rcpt)
            writer(
                {
                    "log_format": "{session} {client} refused: {limit} reached",
                    "log_namespace": NAMESPACE,
                    "log_level": LogLevel.info,
                    "log_time": time.time(),
                    "session": "s2",
                    "client": CLIENT,
                    "limit": "connection rate limit (3)",
                }
            )
            writer.flush()
        return path

    def found(self, logfile: str, mode: str) -> list[str]:
        """
        The addresses C{fail2ban-regex} finds in C{logfile}, one per line
        matched.
        """
        program = requireProgram(self, "fail2ban-regex", "fail2ban")
        result = subprocess.run(
            [program, "-v", logfile, f"{test_logs.FILTER}[mode={mode}]"],
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
            text=True,
            env=test_logs.systemPythonEnvironment(),
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        return re.findall(r"^\|      (\S+)  ", result.stdout, re.M)

    def test_zoneFound(self) -> None:
        """
        The failed login is found by the normal mode; all four lines by the
        aggressive mode; each time the address without its zone.
        """
        logfile = self.writeLog()
        with open(logfile) as f:
            text = f.read()
        self.assertEqual(text.count(f"[{CLIENT}]"), 3, text)
        self.assertEqual(self.found(logfile, "normal"), ["fe80::1"], text)
        self.assertEqual(self.found(logfile, "aggressive"), ["fe80::1"] * 4, text)
