# -*- test-case-name: tests.integration.test_logs -*-
"""
The log of a real C{twistd smtpd} read by fail2ban's own filter engine
(C{fail2ban-regex}) with the filter shipped in C{docs/fail2ban/}.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile

from tests.integration.helpers import (
    CLIENT_TIMEOUT,
    PROJECT,
    RECIPIENT,
    SENDER,
    ServerTestCase,
    requireProgram,
    unverifiedContext,
)
from tests.test_starttlsinjection import _injecting

FILTER = PROJECT / "docs" / "fail2ban" / "twisted-smtpd.conf"


def systemPythonEnvironment() -> dict[str, str]:
    """
    This process's environment without C{PYTHONPATH} and C{PYTHONHOME}, for
    a program of the system's own Python (C{fail2ban-regex}): a path given
    to this interpreter (C{trial -j} gives its workers its whole
    C{sys.path}) would make that one load another version's standard
    library.
    """
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


class Fail2banTests(ServerTestCase):
    """
    fail2ban finds every failed login in the text log.
    """

    def login(self, client: smtplib.SMTP, user: str, password: str) -> None:
        """
        AUTH PLAIN only (C{login} would try other mechanisms after a
        refusal).
        """
        client.user, client.password = user, password
        client.auth("PLAIN", client.auth_plain)

    def failedLogins(self, client: smtplib.SMTP, user: str, count: int) -> None:
        for attempt in range(count):
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                self.login(client, user, f"wrong{attempt}")

    def runSessions(self) -> None:
        """
        Three failed logins and the lockout on one connection; one failed
        and one good login on another; a refused recipient on a third.
        """
        client = self.smtp()
        client.ehlo()
        self.failedLogins(client, "mallory", 2)
        with self.assertRaises(smtplib.SMTPException):
            self.login(client, "mallory", "wrong2")
        client.close()
        client = self.smtp()
        client.ehlo()
        self.failedLogins(client, "bob", 1)
        self.login(client, "alice", "secret")
        client.quit()
        client = self.smtp()
        client.ehlo()
        client.mail(SENDER)
        self.assertEqual(client.rcpt("<bad address>")[0] // 100, 5)
        client.quit()

    def fail2ban(self, logfile: str, mode: str = "normal") -> int:
        """
        Run C{fail2ban-regex} on C{logfile} with the shipped filter.

        @return: How many lines it matched, each with the host 127.0.0.1.
        """
        program = requireProgram(self, "fail2ban-regex", "fail2ban")
        result = subprocess.run(
            [program, "--print-all-matched", logfile, f"{FILTER}[mode={mode}]"],
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
            text=True,
            env=systemPythonEnvironment(),
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        match = re.search(r"^Failregex: (\d+) total", result.stdout, re.M)
        assert match is not None, result.stdout
        total = int(match.group(1))
        if total:
            self.assertIn("127.0.0.1", result.stdout)
        return total

    def startAuthServer(self, *args: str) -> None:
        """
        A sink with AUTH against alice/secret, offered in plain text.
        """
        self.startServer(
            "--sink",
            "--auth",
            "memory:alice:secret",
            "--allow-insecure-auth",
            "--auth-optional",
            *args,
            maildir=False,
        )

    def savedLog(self, output: str) -> str:
        """
        C{output} written to a file for C{fail2ban-regex}; its path.
        """
        logfile = os.path.join(self.server.directory, "smtpd.log")
        with open(logfile, "w") as f:
            f.write(output)
        return logfile

    def test_failedLoginsFound(self) -> None:
        """
        The filter finds the four failed logins and nothing else; in its
        aggressive mode the lockout and every refusal as well.
        """
        self.startAuthServer()
        self.runSessions()
        self.server.waitForLog(" close", count=3)
        self.stopServer()
        output = self.server.output
        self.assertEqual(output.count(" auth failed: "), 4, output)
        self.assertEqual(output.count(" auth lockout: "), 1, output)
        self.assertIn(" reject: RCPT from localhost[127.0.0.1]: 5", output)
        logfile = self.savedLog(output)
        self.assertEqual(self.fail2ban(logfile), 4)
        # Four failed logins, the lockout, the refused RCPT.
        self.assertEqual(self.fail2ban(logfile, "aggressive"), 4 + 1 + 1)

    def test_quietStillFound(self) -> None:
        """
        With C{--quiet}, which drops the lines of every connection and
        message, the failed logins, the lockout and the refused command are
        still logged, one line each, and the filter finds them.
        """
        self.startAuthServer("--quiet")
        self.runSessions()
        # The last session's refused RCPT: its line is written once refused.
        self.server.waitForLog(" reject: RCPT ")
        self.stopServer()
        output = self.server.output
        self.assertEqual(output.count(" auth failed: "), 4, output)
        self.assertEqual(output.count(" auth lockout: "), 1, output)
        self.assertEqual(output.count(" reject: RCPT from localhost[127.0.0.1]: 5"), 1, output)
        self.assertNotIn(" connect from ", output)
        self.assertNotIn(" close\n", output)
        logfile = self.savedLog(output)
        self.assertEqual(self.fail2ban(logfile), 4)
        self.assertEqual(self.fail2ban(logfile, "aggressive"), 4 + 1 + 1)

    def test_controlSeparatorFound(self) -> None:
        """
        A failed login whose mechanism is followed by a TAB (or CR, VT, FF)
        instead of a space, which AUTH accepts, is logged with the mechanism
        alone and no control character, and the filter finds it.
        """
        self.startAuthServer()
        response = base64.b64encode(b"\0alice\0wrong").decode("ascii")
        # Two sessions: a third failure would be the lockout.
        for separators in (("\t", "\r"), ("\x0b", "\x0c")):
            client = self.smtp()
            client.ehlo()
            for separator in separators:
                client.send(f"AUTH PLAIN{separator}{response}\r\n")
                self.assertEqual(client.getreply()[0], 535)
            client.quit()
        self.server.waitForLog(" close", count=2)
        self.stopServer()
        output = self.server.output
        lines = [line for line in output.split("\n") if " auth failed: " in line]
        self.assertEqual(len(lines), 4, output)
        for line in lines:
            self.assertIn(" auth failed: PLAIN from localhost[127.0.0.1] user=<alice>: 535 ", line)
            self.assertIsNone(re.search("[\x00-\x1f\x7f]", line), repr(line))
        logfile = self.savedLog(output)
        self.assertEqual(self.fail2ban(logfile), 4)

    def test_clientLeavingBeforeRefusalFound(self) -> None:
        """
        Over STARTTLS, a client that hangs up on a refusal it has not read
        (after the XOAUTH2 error challenge; while a handler slow to refuse
        still decides) leaves its failed login in the log all the same, and
        the filter finds both.
        """
        self.startServer(
            "--handler",
            "tests.integration.slowauthhandler:make",
            "--handler-option",
            "delay=0.5",
            "--auth-methods",
            "PLAIN,XOAUTH2",
            "--auth-optional",
            maildir=False,
        )
        token = base64.b64encode(b"user=mallory\x01auth=Bearer guess\x01\x01").decode("ascii")
        client = self.smtp()
        client.starttls(context=unverifiedContext())
        client.ehlo()
        client.putcmd("AUTH", f"XOAUTH2 {token}")
        self.assertEqual(client.getreply()[0], 334)
        client.close()
        client = self.smtp()
        client.starttls(context=unverifiedContext())
        client.ehlo()
        client.putcmd("AUTH", "PLAIN " + base64.b64encode(b"\0bob\0guess").decode("ascii"))
        client.close()
        self.server.waitForLog(" auth failed: ", count=2)
        good = self.smtp()
        good.starttls(context=unverifiedContext())
        good.ehlo()
        self.assertEqual(
            good.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0secret").decode())[0], 235
        )
        good.quit()
        self.server.waitForLog(" close", count=3)
        self.stopServer()
        output = self.server.output
        lines = [line for line in output.splitlines() if " auth failed: " in line]
        self.assertEqual(len(lines), 2, output)
        for expected in (
            "XOAUTH2 from localhost[127.0.0.1] user=<mallory>",
            "PLAIN from localhost[127.0.0.1] user=<bob>",
        ):
            self.assertEqual(
                len([line for line in lines if f" auth failed: {expected}: 535 " in line]),
                1,
                output,
            )
        self.assertEqual(self.fail2ban(self.savedLog(output)), 2)

    def assertRefusedAtConnect(self, limit: str) -> None:
        """
        A new connection gets 421 for C{limit}, which the log names.
        """
        with self.assertRaises(smtplib.SMTPConnectError) as refused:
            self.smtp()
        self.assertEqual(refused.exception.smtp_code, 421)
        self.server.waitForLog(f" refused: connection {limit} reached")

    def test_limitRefusalsFound(self) -> None:
        """
        A connection refused for a per-address limit leaves one line, which
        the aggressive mode finds and the normal one leaves alone.
        """
        self.startServer(
            "--sink",
            "--max-clients-per-ip",
            "1",
            "--max-connection-rate",
            "3/60",
            maildir=False,
        )
        held = self.smtp()
        self.assertRefusedAtConnect("limit per client address (1)")
        held.quit()
        self.server.waitForLog(" close")
        self.smtp().quit()
        self.server.waitForLog(" close", count=2)
        self.assertRefusedAtConnect("rate limit (3 per 60 s)")
        self.stopServer()
        output = self.server.output
        lines = [line for line in output.splitlines() if "refused: " in line]
        self.assertEqual(len(lines), 2, output)
        for line in lines:
            session = line.split("] ", 1)[1].split()[0]
            self.assertEqual(output.count(f" {session} "), 1, output)
        logfile = self.savedLog(output)
        self.assertEqual(self.fail2ban(logfile), 0)
        self.assertEqual(self.fail2ban(logfile, "aggressive"), 2)

    def test_authRateFound(self) -> None:
        """
        An AUTH past C{--max-auth-rate}, over two connections, gets 450 and
        leaves one line, which the aggressive mode finds and the normal one
        leaves alone; the session goes on.
        """
        self.startAuthServer("--max-auth-rate", "2/60")
        client = self.smtp()
        client.ehlo()
        self.failedLogins(client, "mallory", 1)
        client.quit()
        client = self.smtp()
        client.ehlo()
        self.failedLogins(client, "mallory", 1)
        with self.assertRaises(smtplib.SMTPAuthenticationError) as refused:
            self.login(client, "alice", "secret")
        self.assertEqual(refused.exception.smtp_code, 450)
        self.assertEqual(client.noop()[0], 250)
        client.quit()
        self.server.waitForLog(" refused: AUTH rate limit (2 per 60 s) reached")
        self.stopServer()
        output = self.server.output
        lines = [line for line in output.splitlines() if "AUTH rate limit" in line]
        self.assertEqual(len(lines), 1, output)
        logfile = self.savedLog(
            "\n".join(line for line in output.splitlines() if "auth failed" not in line)
        )
        self.assertEqual(self.fail2ban(logfile), 0)
        self.assertEqual(self.fail2ban(logfile, "aggressive"), 1)

    def slowTransfer(self, last: str, *flags: str) -> tuple[str, list[str]]:
        """
        Run a server with C{--min-data-rate 1000/1} and C{flags}, and a
        client whose message stalls after its first line: cut with 421.

        @param last: The text of the server's last line, waited for before
            it stops.
        @return: The server's output, and its one C{data rate below} line
            in a list.
        """
        self.startServer("--sink", *flags, "--min-data-rate", "1000/1", maildir=False)
        client = self.smtp()
        client.ehlo()
        client.mail(SENDER)
        client.rcpt(RECIPIENT)
        client.putcmd("DATA")
        self.assertEqual(client.getreply()[0], 354)
        client.send(b"Subject: slow\r\n")
        self.assertEqual(client.getreply()[0], 421)
        self.server.waitForLog(last)
        self.stopServer()
        output = self.server.output
        lines = [line for line in output.splitlines() if "data rate below" in line]
        self.assertEqual(len(lines), 1, output)
        return output, lines

    def test_slowTransferFound(self) -> None:
        """
        A message cut for C{--min-data-rate} leaves one line, which the
        aggressive mode finds and the normal one leaves alone.
        """
        output, lines = self.slowTransfer(" close")
        self.assertNotIn(" reject: ", output)
        logfile = self.savedLog(output)
        self.assertEqual(self.fail2ban(logfile), 0)
        self.assertEqual(self.fail2ban(logfile, "aggressive"), 1)

    def test_slowTransferQuietFound(self) -> None:
        """
        With C{--quiet} the cut is still logged, one line in the sessions'
        namespace (C{twisted_smtpd.session}), which the aggressive mode
        finds.
        """
        output, lines = self.slowTransfer("data rate below", "--quiet")
        self.assertIn(" [twisted_smtpd.session#info] ", lines[0])
        self.assertNotIn(" connect from ", output)
        logfile = self.savedLog(output)
        self.assertEqual(self.fail2ban(logfile), 0)
        self.assertEqual(self.fail2ban(logfile, "aggressive"), 1)

    def test_linesBeforeUpgradeFound(self) -> None:
        """
        A log written before the deadlines moved to the sessions' namespace
        (in the protocol's, C{twisted_smtpd._serving.protocol.SMTPProtocol})
        is still read: its cut transfers are found, with the lines of
        today's log.
        """
        logfile = self.mktemp()
        with open(logfile, "w") as f:
            f.write(
                "2026-01-02T10:00:00+0000 [twisted_smtpd._serving.protocol.SMTPProtocol#info]"
                " k2m4n6p8 127.0.0.1 data rate below 1000 bytes per 1 s (15 bytes):"
                " connection closed\n"
                "2026-01-02T10:00:01+0000 [twisted_smtpd.session#info]"
                " k2m4n6p9 127.0.0.1 data rate below 1000 bytes per 1 s (15 bytes):"
                " connection closed\n"
            )
        self.assertEqual(self.fail2ban(logfile), 0)
        self.assertEqual(self.fail2ban(logfile, "aggressive"), 2)

    def test_pipeliningAfterSTARTTLSFound(self) -> None:
        """
        Plaintext pipelined behind STARTTLS (the command injection of
        CVE-2011-0411) leaves one warning, which the aggressive mode finds,
        as fail2ban's postfix filter finds Postfix's; the normal one leaves
        it alone.
        """
        self.startServer("--sink", maildir=False)
        ready, replies = _injecting(self.server.port, b"")
        self.assertEqual(ready, b"220 2.0.0 Ready to start TLS\r\n")
        self.server.waitForLog(" close")
        self.stopServer()
        output = self.server.output
        lines = [line for line in output.splitlines() if "after STARTTLS" in line]
        self.assertEqual(len(lines), 1, output)
        self.assertIn(" [twisted_smtpd.session#warn] ", lines[0])
        # That line alone: the RCPT refused over TLS (nothing injected ran,
        # so no MAIL) is a refusal the aggressive mode finds as well.
        # And as a log written before it moved to the sessions' namespace
        # has it.
        before = lines[0].replace(
            "[twisted_smtpd.session#warn]", "[twisted_smtpd._serving.protocol.SMTPProtocol#warn]"
        )
        logfile = self.savedLog(lines[0] + "\n" + before + "\n")
        self.assertEqual(self.fail2ban(logfile), 0)
        self.assertEqual(self.fail2ban(logfile, "aggressive"), 2)

    def test_jsonRefusals(self) -> None:
        """
        In JSON the refusals and failed logins are objects with the
        command, the client, the user name or the address, and the code.
        """
        self.startAuthServer("--log-format", "json")
        self.runSessions()
        self.server.waitForLog(' close"', count=3)
        self.stopServer()
        events = [json.loads(line) for line in self.server.output.splitlines() if line.strip()]
        failed = [e for e in events if " auth failed: " in e["text"]]
        self.assertEqual(
            [(e["mechanism"], e["username"], e["code"]) for e in failed],
            [("PLAIN", "mallory", 535)] * 3 + [("PLAIN", "bob", 535)],
        )
        (lockout,) = [e for e in events if " auth lockout: " in e["text"]]
        self.assertEqual(
            (lockout["client"], lockout["failures"], lockout["code"], lockout["level"]),
            ("localhost[127.0.0.1]", 3, 421, "info"),
        )
        (rcpt,) = [e for e in events if e.get("command") == "RCPT"]
        self.assertEqual((rcpt["address"], rcpt["code"]), ("bad address", 501))
        self.assertTrue(all(e["client"] == "localhost[127.0.0.1]" for e in failed))
        self.assertNotIn("wrong", self.server.output)
        self.assertTrue(all(not key.startswith("log_") for e in events for key in e))


class StartupTests(ServerTestCase):
    """
    What C{twistd smtpd} says when it starts, and what it does not.
    """

    def test_summaryWithoutNoise(self) -> None:
        """
        The log has a line per listener with its address, the ready line
        and the self-signed certificate's warning; no "Starting factory" nor
        "starting on" lines.  The certificate's own line (subject and
        expiry) comes when it is made, at the first STARTTLS, not at a
        reload (SIGHUP) before it.
        """
        directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, directory, True)
        socketPath = os.path.join(directory, "s.sock")
        self.startServer(
            "--sink",
            "--size",
            "1000",
            maildir=False,
            listen=["tcp:0:interface=127.0.0.1", f"unix:{socketPath}"],
        )
        client = self.smtp()
        client.ehlo()
        client.quit()
        self.server.waitForLog(" close")
        # A reload does not make the self-signed certificate either.
        self.server.signal(signal.SIGHUP)
        self.server.waitForLog("TLS certificates reloaded")
        beforeTLS = self.server.output
        client = self.smtp()
        client.starttls(context=unverifiedContext())
        client.quit()
        self.server.waitForLog(" close", count=2)
        self.stopServer()
        output = self.server.output
        self.assertIn(
            f"listening: tcp:0:interface=127.0.0.1 on 127.0.0.1:{self.server.port}\n", output
        )
        self.assertIn(f"listening: unix:{socketPath} on '{socketPath}'\n", output)
        self.assertIn(", delivery sink, size limit 1000, AUTH off, max clients unlimited", output)
        self.assertIn("No TLS certificate configured: serving a self-signed certificate", beforeTLS)
        self.assertNotIn("TLS certificate (self-signed)", beforeTLS)
        self.assertEqual(output.count("TLS certificate (self-signed): CN=localhost, expires "), 1)
        for noise in ("Starting factory", "Stopping factory", "starting on", "Port"):
            self.assertNotIn(noise, output)

    def test_ignoredHosts(self) -> None:
        """
        Sessions from C{--ignored-hosts} leave no line, not even their
        refused commands.
        """
        self.startServer("--sink", "--ignored-hosts", "127.0.0.1", maildir=False)
        client = self.smtp()
        client.ehlo()
        self.assertEqual(client.docmd("FOO")[0], 500)
        client.quit()
        self.stopServer()
        self.assertNotIn("twisted_smtpd.session", self.server.output)


class TLSLogTests(ServerTestCase):
    """
    TLS sessions in the log, and the TLS flags.
    """

    def test_minimumVersion(self) -> None:
        """
        With C{--tls-min-version 1.3} a TLS 1.2 client cannot start TLS; a
        TLS 1.3 session logs its protocol and cipher.
        """
        import ssl

        self.startServer("--sink", "--tls-min-version", "1.3", maildir=False)
        old = unverifiedContext()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        client = self.smtp()
        with self.assertRaises(ssl.SSLError):
            client.starttls(context=old)
        client = self.smtp()
        client.starttls(context=unverifiedContext())
        client.ehlo()
        client.quit()
        self.server.waitForLog(" close", count=2)
        self.stopServer()
        self.assertRegex(
            self.server.output,
            r"\] \S+ TLS TLSv1\.3 TLS_\S+ from localhost\[127\.0\.0\.1\] sni=None\n",
        )


class LogFileTests(ServerTestCase):
    """
    C{--logfile}, rotated by logrotate.
    """

    def test_sigusr1Reopens(self) -> None:
        """
        After logrotate moved the log file, SIGUSR1 has the server log into
        a new file at the same path and say so; open sessions go on, and
        the old file ends with the lines logged before.
        """
        directory = self.makeDirectory()
        path = os.path.join(directory, "smtpd.log")
        self.startServer("--sink", maildir=False, logfile=path)
        client = self.smtp()
        client.ehlo()
        self.server.waitForLog(" connect from ")
        os.rename(path, path + ".1")
        self.server.signal(signal.SIGUSR1)
        self.server.waitForLog(f"Log file {path} reopened (SIGUSR1)")
        self.assertEqual(client.noop()[0], 250)
        client.quit()
        self.server.waitForLog(" close")
        self.stopServer()
        with open(path + ".1", encoding="utf-8") as f:
            rotated = f.read()
        with open(path, encoding="utf-8") as f:
            current = f.read()
        self.assertIn(" connect from ", rotated)
        self.assertNotIn(" close", rotated)
        self.assertIn(" close\n", current)
        self.assertEqual(current.count("reopened (SIGUSR1)"), 1, current)
