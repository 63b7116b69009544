# -*- test-case-name: tests.integration.test_fail2banwords -*-
"""
Refused command lines whose first word is not one word to fail2ban (an
empty line, a word with a no-break or em space in it) are found by the
aggressive mode of the filter in C{docs/fail2ban/}, run by C{fail2ban-regex}
on the log of a real C{twistd smtpd}.
"""

from __future__ import annotations

import socket

from tests.integration import test_logs
from tests.integration.helpers import CLIENT_TIMEOUT, ServerTestCase

#: Command lines that do not parse, each refused with 500.
LINES = [
    b"\r\n",
    b"   \r\n",
    b"FOO\xc2\xa0BAR\r\n",  # a no-break space
    b"X\xe2\x80\x83Y\r\n",  # an em space
    b"AUTH\xc2\xa0PLAIN\r\n",
    b"\xe3\x80\x80\r\n",  # an ideographic space alone
    b"FOO\r\n",
]


class UnusualWordTests(ServerTestCase):
    def test_everyRefusalFound(self) -> None:
        """
        Each refused line leaves one C{reject:} line whose command is one
        word or C{(empty line)}, no Unicode white space in it, and the
        aggressive mode finds every one of them; the normal mode none.
        """
        self.startServer("--sink", maildir=False)
        with socket.create_connection(
            ("127.0.0.1", self.server.port), timeout=CLIENT_TIMEOUT
        ) as client:
            replies = client.makefile("rb")
            self.assertTrue(replies.readline().startswith(b"220 "))
            for line in LINES:
                client.sendall(line)
                self.assertTrue(replies.readline().startswith(b"500 "), line)
            client.sendall(b"QUIT\r\n")
            self.assertTrue(replies.readline().startswith(b"221 "))
        self.server.waitForLog(" close")
        self.stopServer()
        output = self.server.output
        rejects = [line for line in output.splitlines() if " reject: " in line]
        self.assertEqual(len(rejects), len(LINES), output)
        logfile = test_logs.Fail2banTests.savedLog(self, output)  # type: ignore[arg-type]
        self.assertEqual(test_logs.Fail2banTests.fail2ban(self, logfile), 0)  # type: ignore[arg-type]
        found = test_logs.Fail2banTests.fail2ban(self, logfile, "aggressive")  # type: ignore[arg-type]
        self.assertEqual(found, len(LINES), output)
        for line in rejects:
            command = line.split(" reject: ", 1)[1].split(" from ", 1)[0]
            oneWord = command == "(empty line)" or not any(c.isspace() for c in command)
            self.assertTrue(oneWord, line)
        self.assertIn(" reject: FOO\\xa0BAR from ", output)
        self.assertIn(" reject: X\\u2003Y from ", output)
