"""
The start of a real C{twistd smtpd} with values written in a form the
server would misread (one line, status 1), and with flags that change
nothing (one warning line each, from the parent only under C{--workers}).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import (
    TwistdServer,
    runToEnd,
    startWorkers,
    twistdCommand,
)

#: The warning a STARTTLS-less server with --request-cert logs.
REQUEST_CERT = (
    "[twisted_smtpd.startup#warn] --request-cert has no effect: no listener offers TLS"
    " (STARTTLS is disabled and there is no ssl: listener)"
)


class RefusedValueTests(SynchronousTestCase):
    def test_oneLine(self) -> None:
        """
        A non-ASCII banner, a port given twice, a count in full-width
        digits, a relay CA that cannot be read and an C{--auth memory:}
        password that is not UTF-8 each stop the start with one line on
        standard error, escaped, naming the flag at fault; no traceback.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        missing = os.path.join(directory, "missing.pem")
        for args, line in [
            (
                ["--sink", "--banner", "Gr\xfc\xdfe \x1b[2J"],
                "--banner: banner must be printable US-ASCII (RFC 5321 section 4.2),"
                " got '\\xfc' at position 2",
            ),
            (
                ["--sink", "--listen", "ssl:port=465:port=466"],
                "--listen 'ssl:port=465:port=466': ssl: port given twice",
            ),
            (
                ["--sink", "--max-clients", "\uff13"],
                "--max-clients: expected a whole number, got '\\uff13'",
            ),
            (
                ["--relay", "mx.example", "--relay-ca", missing],
                f"--relay-ca: No such file or directory: {missing}",
            ),
            (
                # A password typed in Latin-1: the byte 0xff, not UTF-8.
                ["--sink", "--auth", "memory:alice:s\udcffcret"],
                "--auth memory:...: not UTF-8 text (a byte of it is not UTF-8)",
            ),
        ]:
            code, out, err = runToEnd(
                twistdCommand("--nodaemon", "--pidfile=", "--logfile=-", "smtpd", *args),
                directory,
            )
            both = f"{args}\n{out}\n{err}"
            self.assertEqual(code, 1, both)
            self.assertEqual(err, f"twistd smtpd: {line}; see --help\n", both)


class EndedStartTests(SynchronousTestCase):
    def test_nothingLeftBehind(self) -> None:
        """
        A start that ends because a listener cannot start (a port in use),
        with or without C{--workers}, or because its configuration file
        gives one option under both its spellings, prints one line, exits
        with status 1 and leaves nothing in its directory: not the UNIX
        sockets and lock files bound before, nor the Maildir it made.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        inUse = f"--listen {busy!r}: address already in use (another program listens on it)"
        for args, files, line in [
            (["--maildir", "md", "--listen", "unix:a.sock", "--listen", busy], {}, inUse),
            (["--sink", "--workers", "2", "--listen", "unix:a.sock", "--listen", busy], {}, inUse),
            (
                ["--config", "smtpd.ini"],
                {"smtpd.ini": "[smtpd]\nsink = yes\nmax-clients = 5\nmax_clients = 6\n"},
                "--config 'smtpd.ini': 'max-clients' and 'max_clients' are the same option",
            ),
        ]:
            # Short: the UNIX sockets' paths must fit.
            directory = tempfile.mkdtemp(prefix="smtpd-")
            self.addCleanup(shutil.rmtree, directory, True)
            for name, text in files.items():
                with open(os.path.join(directory, name), "w") as f:
                    f.write(text)
            code, out, err = runToEnd(
                twistdCommand("--nodaemon", "--pidfile=", "--logfile=-", "smtpd", *args),
                directory,
            )
            both = f"{args}\n{out}\n{err}"
            self.assertEqual(code, 1, both)
            self.assertEqual(err, f"twistd smtpd: {line}; see --help\n", both)
            self.assertEqual(sorted(os.listdir(directory)), sorted(files), both)


class UnusedFlagLineTests(SynchronousTestCase):
    def test_warnedOnce(self) -> None:
        """
        A server with STARTTLS disabled and C{--request-cert} starts, and
        logs the warning once, before it listens.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        server = TwistdServer(
            ["--sink", "--no-reverse-lookup", "--disable", "STARTTLS", "--request-cert"],
            directory,
        )
        self.addCleanup(server.kill)
        server.start()
        server.stop()
        lines = server.output.splitlines()
        warned = [i for i, line in enumerate(lines) if line.endswith(REQUEST_CERT)]
        listening = [i for i, line in enumerate(lines) if "listening: " in line]
        self.assertEqual(len(warned), 1, server.output)
        self.assertLess(warned[0], listening[0], server.output)

    def test_workersWarnOnce(self) -> None:
        """
        Under C{--workers 2}, the parent logs the warning; its workers,
        which parse the same flags, do not log it again.
        """
        server, _ = startWorkers(self, ["--sink", "--disable", "STARTTLS", "--request-cert"])
        server.stop()
        warned = [line for line in server.output.splitlines() if line.endswith(REQUEST_CERT)]
        self.assertEqual(len(warned), 1, server.output)
