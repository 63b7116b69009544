# -*- test-case-name: tests.integration.test_twistd -*-
"""
C{twistd smtpd} as a real process on 127.0.0.1, driven by real clients:
Python's C{smtplib}, C{swaks} and raw sockets.
"""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

from tests.integration.helpers import (
    CLIENT_TIMEOUT,
    RECIPIENT,
    SENDER,
    START_TIMEOUT,
    ServerTestCase,
    connect,
    maildirContents,
    message,
    readReply,
    requireProgram,
    runToEnd,
    twistdCommand,
    twistdEnvironment,
)


class SMTPLibTests(ServerTestCase):
    """
    Python's C{smtplib} against C{twistd smtpd --maildir}.
    """

    def test_manyMessagesOneConnection(self) -> None:
        """
        Twenty messages sent on one connection are each stored byte for
        byte, dot-stuffed lines restored, by the time their 250 arrives.
        """
        self.startServer()
        sent = [message(i) for i in range(20)]
        client = self.smtp()
        for index, body in enumerate(sent):
            self.assertEqual(client.sendmail(SENDER, [RECIPIENT], body), {})
            self.assertDelivered(sent[: index + 1])
        self.assertEqual(client.quit()[0], 221)
        self.stopServer()

    def test_concurrentClients(self) -> None:
        """
        Fifty clients connected at once, two messages each: every message is
        stored once, byte for byte, in a file of its own, and nothing is
        left in C{tmp/}.
        """
        self.startServer()
        clients = 50
        ready = threading.Barrier(clients)

        def send(index: int) -> list[bytes]:
            with smtplib.SMTP("127.0.0.1", self.server.port, timeout=CLIENT_TIMEOUT) as client:
                ready.wait(CLIENT_TIMEOUT)
                bodies = [message(2 * index), message(2 * index + 1)]
                for body in bodies:
                    refused = client.sendmail(SENDER, [RECIPIENT], body)
                    if refused:
                        raise AssertionError(f"refused: {refused!r}")
                return bodies

        with ThreadPoolExecutor(max_workers=clients) as pool:
            futures = [pool.submit(send, i) for i in range(clients)]
            sent = [body for f in futures for body in f.result(timeout=4 * CLIENT_TIMEOUT)]
        self.assertEqual(len(sent), 2 * clients)
        self.assertDelivered(sent)
        self.stopServer()

    def test_size(self) -> None:
        """
        With C{--size 10000} a bigger message is refused with 552 after its
        final dot and a C{MAIL FROM} announcing C{SIZE=20000} with 552 at
        once; neither is stored and the connection still delivers a small
        message (RFC 1870 section 6).
        """
        self.startServer("--size", "10000")
        client = self.smtp()
        client.ehlo()
        self.assertEqual(client.esmtp_features.get("size"), "10000")
        big = b"Subject: big\r\n\r\n" + (b"z" * 98 + b"\r\n") * 200
        self.assertEqual(client.mail(SENDER)[0], 250)
        self.assertEqual(client.rcpt(RECIPIENT)[0], 250)
        self.assertEqual(client.data(big)[0], 552)
        self.assertEqual(client.mail(SENDER, ["SIZE=20000"])[0], 552)
        small = message(1)
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT], small), {})
        self.assertDelivered([small])
        self.assertEqual(client.quit()[0], 221)
        self.stopServer()

    def test_lmtp(self) -> None:
        """
        In LMTP mode a message for three recipients, one of them twice,
        gets one 250 reply per recipient after the final dot (RFC 2033
        section 4.2) and is stored.
        """
        self.startServer("--lmtp")
        client = smtplib.LMTP("127.0.0.1", self.server.port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        self.assertEqual(client.ehlo()[0], 250)
        recipients = ["a@example.com", "b@example.com", "a@example.com"]
        self.assertEqual(client.mail(SENDER)[0], 250)
        for recipient in recipients:
            self.assertEqual(client.rcpt(recipient)[0], 250)
        body = message(1)
        # smtplib reads the first reply after the dot; the others follow.
        codes = [client.data(body)[0]]
        codes += [client.getreply()[0] for _ in recipients[1:]]
        self.assertEqual(codes, [250, 250, 250])
        self.assertEqual(client.quit()[0], 221)
        self.assertDelivered([body])
        self.stopServer()

    def test_lmtpRawReplies(self) -> None:
        """
        Over a raw socket, the replies after an LMTP message's final dot
        are exactly one 250 per accepted recipient, then the 221 to QUIT.
        """
        self.startServer("--lmtp")
        sock = connect(self.server.port)
        self.addCleanup(sock.close)
        replies = sock.makefile("rb")
        self.addCleanup(replies.close)

        def command(line: bytes) -> int:
            sock.sendall(line + b"\r\n")
            return readReply(replies)[0]

        self.assertEqual(readReply(replies)[0], 220)
        self.assertEqual(command(b"LHLO client.example.com"), 250)
        self.assertEqual(command(b"MAIL FROM:<sender@example.com>"), 250)
        for recipient in [b"<a@example.com>", b"<b@example.com>", b"<a@example.com>"]:
            self.assertEqual(command(b"RCPT TO:" + recipient), 250)
        self.assertEqual(command(b"DATA"), 354)
        sock.sendall(b"Subject: lmtp\r\n\r\nHello.\r\n.\r\nQUIT\r\n")
        codes = []
        while not codes or codes[-1] != 221:
            codes.append(readReply(replies)[0])
        self.assertEqual(codes, [250, 250, 250, 221])
        self.assertEqual(replies.read(), b"")
        self.assertDelivered([b"Subject: lmtp\r\n\r\nHello.\r\n"])
        self.stopServer()


class RawSessionTests(ServerTestCase):
    """
    A client that writes a whole session at once.
    """

    def test_wholeSessionInOneWrite(self) -> None:
        """
        A session written in one piece, before even the greeting arrives,
        gets every reply, in order, and the message is stored.
        """
        self.startServer()
        sock = connect(self.server.port)
        self.addCleanup(sock.close)
        replies = sock.makefile("rb")
        self.addCleanup(replies.close)
        sock.sendall(
            b"EHLO client.example.com\r\n"
            b"MAIL FROM:<sender@example.com>\r\n"
            b"RCPT TO:<rcpt@example.com>\r\n"
            b"DATA\r\n"
            b"Subject: raw\r\n\r\n..stuffed\r\nbody\r\n.\r\n"
            b"QUIT\r\n"
        )
        codes = [readReply(replies)[0] for _ in range(7)]
        self.assertEqual(codes, [220, 250, 250, 250, 354, 250, 221])
        self.assertEqual(replies.read(), b"")
        self.assertDelivered([b"Subject: raw\r\n\r\n.stuffed\r\nbody\r\n"])
        self.stopServer()


class SwaksTests(ServerTestCase):
    """
    The C{swaks} SMTP test tool (Debian package C{swaks}) against the
    server.  Required when C{CI} is set.
    """

    def swaks(self, *args: str) -> None:
        """
        Run swaks on the server; it must succeed and its message land.
        """
        swaks = requireProgram(self, "swaks", "swaks")
        self.startServer()
        command = [
            swaks,
            "--server",
            f"127.0.0.1:{self.server.port}",
            "--to",
            "a@example.com",
            "--from",
            "b@example.com",
            "--timeout",
            str(int(CLIENT_TIMEOUT)),
            *args,
        ]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=2 * CLIENT_TIMEOUT,
            check=False,
        )
        transcript = (result.stdout + result.stderr).decode("utf-8", "replace")
        self.assertEqual(result.returncode, 0, transcript)
        contents, _, leftovers = maildirContents(self.maildir)
        self.assertEqual(len(contents), 1, transcript)
        self.assertIn(b"This is a test mailing", contents[0])
        self.assertEqual(leftovers, [])
        self.stopServer()

    def test_swaks(self) -> None:
        """
        C{swaks} delivers a message and exits 0.
        """
        self.swaks()

    def test_swaksPipelining(self) -> None:
        """
        C{swaks --pipeline}, which needs PIPELINING advertised and sends the
        envelope in one write, delivers a message and exits 0.
        """
        self.swaks("--pipeline")


class CommandLineTests(ServerTestCase):
    """
    How C{twistd smtpd} fails on bad settings.
    """

    def runTwistd(self, *args: str) -> tuple[int, str]:
        """
        Run C{twistd -n smtpd} with C{args} to its end.

        @return: Its exit status and output.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        result = subprocess.run(
            twistdCommand("--nodaemon", "--pidfile=", "--logfile=-", "smtpd", *args),
            cwd=directory,
            env=twistdEnvironment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=START_TIMEOUT,
            check=False,
        )
        return result.returncode, result.stdout.decode("utf-8", "replace")

    def test_badEndpoint(self) -> None:
        """
        An endpoint string that does not parse stops C{twistd} before it
        starts, with a non-zero status and one line naming the string as
        its last word, and no traceback.
        """
        code, output = self.runTwistd("--sink", "--listen", "bogus:1")
        self.assertNotEqual(code, 0, output)
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if line.strip()]
        self.assertEqual([line for line in lines if "bogus" in line], lines[-1:], output)
        self.assertIn("--listen 'bogus:1'", lines[-1])

    def assertOneLineError(self, args: list[str], named: str) -> None:
        """
        C{twistd smtpd} with C{args} exits with status 1 before listening,
        with exactly one line on standard error naming C{named} and ending
        in "see --help", and no traceback anywhere.
        """
        code, out, err = runToEnd(
            twistdCommand("--nodaemon", "--pidfile=", "--logfile=-", "smtpd", *args),
            self.makeDirectory(),
        )
        both = f"{args}\nstdout:\n{out}\nstderr:\n{err}"
        self.assertEqual(code, 1, both)
        self.assertNotIn("Traceback", out + err, both)
        self.assertNotIn("listening: ", out, both)
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, both)
        self.assertTrue(lines[0].startswith("twistd smtpd: "), both)
        self.assertIn(named, lines[0], both)
        self.assertTrue(lines[0].endswith("; see --help"), both)
        self.assertNotIn("Usage:", out + err, both)

    def test_portInUse(self) -> None:
        """
        A port already in use: one line naming the endpoint, status 1.
        """
        self.startServer()
        endpoint = f"tcp:{self.server.port}:interface=127.0.0.1"
        self.assertOneLineError(
            ["--sink", "--listen", endpoint], f"--listen '{endpoint}': address already in use"
        )
        self.stopServer()

    def test_unknownInterface(self) -> None:
        """
        An interface address this host does not have: one line.
        """
        self.assertOneLineError(
            ["--sink", "--listen", "tcp:0:interface=192.0.2.123"],
            "--listen 'tcp:0:interface=192.0.2.123': no interface of this host has this address",
        )

    def test_permissionDenied(self) -> None:
        """
        Port 25 without the privilege: one line with the hint about
        authbind, capabilities and systemd socket activation.  (When the
        tests run as root, C{setpriv} takes C{CAP_NET_BIND_SERVICE} away,
        so the user stays root and can read the checkout wherever it is.)
        """
        if os.getuid() != 0:
            command: list[str] = []
        else:
            setpriv = requireProgram(self, "setpriv", "util-linux")
            command = [
                setpriv,
                "--bounding-set=-net_bind_service",
                "--inh-caps=-net_bind_service",
            ]
        directory = self.makeDirectory()
        os.chmod(directory, 0o777)
        line, _ = self.assertFailedStart(
            [
                *command,
                *twistdCommand(
                    "--nodaemon",
                    "--pidfile=",
                    "--logfile=-",
                    "smtpd",
                    "--sink",
                    "--listen",
                    "tcp:25:interface=127.0.0.1",
                ),
            ],
            directory,
        )
        self.assertIn("--listen 'tcp:25:interface=127.0.0.1': permission denied", line)
        for hint in ("authbind", "CAP_NET_BIND_SERVICE", "systemd:"):
            self.assertIn(hint, line)

    def test_configurationErrors(self) -> None:
        """
        Each configuration error stops the start with one line on standard
        error, status 1 and no traceback: unknown and malformed flags, a
        port out of range, missing certificate files, an unknown handler,
        a Maildir that cannot be created, unknown and malformed keys of a
        configuration file, C{--auth memory:} without users, a missing
        C{--auth file:}, an invalid C{--hostname}, a cipher string OpenSSL
        cannot parse, a named pipe as a certificate or password file
        (which would block the start), and C{--auth-optional} without
        C{--auth}.
        """
        directory = self.makeDirectory()
        blocker = os.path.join(directory, "file")
        with open(blocker, "w"):
            pass
        config = os.path.join(directory, "smtpd.toml")
        with open(config, "w") as f:
            f.write("colour = 1\n")
        badValue = os.path.join(directory, "bad.toml")
        with open(badValue, "w") as f:
            f.write('size = "big"\n')
        missing = os.path.join(directory, "missing.pem")
        fifo = os.path.join(directory, "fifo.pem")
        os.mkfifo(fifo)
        for args, named in [
            (["--sink", "--bogus"], "option --bogus not recognized"),
            (["--sink", "--size", "abc"], "--size"),
            (["--sink", "--listen", "bogus:1"], "--listen 'bogus:1'"),
            (["--sink", "--listen", "tcp:99999"], "port 99999 is out of range"),
            (["--sink", "--tls-cert", missing], f"--tls-cert: cannot read certificate {missing}"),
            (["--sink", "--tls-ca", missing], "--tls-ca"),
            (["--sink", "--tls-ciphers", "!!!"], "--tls-ciphers: the cipher string '!!!'"),
            (["--sink", "--tls-cert", fifo], f"--tls-cert: cannot read certificate {fifo}: not a"),
            (["--sink", "--auth", f"file:{fifo}"], "not a regular file (a named pipe)"),
            (["--sink", "--auth-optional"], "--auth-optional needs AUTH to be offered"),
            (["--handler", "no_such_module_x:make"], "no_such_module_x"),
            (["--maildir", os.path.join(blocker, "Maildir")], blocker),
            (["--config", config], "unknown option 'colour'"),
            (["--config", badValue], "size"),
            (["--sink", "--auth", "memory:"], "--auth memory:...: 0 fields"),
            (["--sink", "--auth", "memory:alice"], "--auth memory:...: 1 field,"),
            (["--sink", "--auth", f"file:{missing}"], f"--auth 'file:{missing}'"),
            (
                ["--sink", "--auth", "memory:alice:secret", "--auth-methods", "XOAUTH2"],
                "--auth-methods XOAUTH2",
            ),
            (["--sink", "--hostname", "two words"], "--hostname 'two words'"),
            (["--sink", "--hostname", "[not-an-ip]"], "--hostname '[not-an-ip]'"),
        ]:
            self.assertOneLineError(args, named)

    def test_version(self) -> None:
        """
        C{twistd smtpd --version} prints the project's version from the
        package metadata, and exits 0.
        """
        from importlib.metadata import version

        result = subprocess.run(
            twistdCommand("smtpd", "--version"),
            env=twistdEnvironment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(
            result.stdout.decode().startswith(f"twisted-smtpd {version('twisted-smtpd')} "),
            result.stdout,
        )

    def test_configFile(self) -> None:
        """
        A server started with C{--config} takes its options from the file
        and those of the command line over them.
        """
        directory = self.makeDirectory()
        config = os.path.join(directory, "smtpd.ini")
        with open(config, "w") as f:
            f.write("[smtpd]\nbanner = from the file\nsize = 100\nsink = yes\n")
        self.startServer("--config", config, "--size", "5000", maildir=False)
        sock = connect(self.server.port)
        self.addCleanup(sock.close)
        with sock.makefile("rb") as replies:
            code, lines = readReply(replies)
        self.assertEqual(code, 220)
        self.assertIn(b"from the file", lines[0])
        client = self.smtp()
        client.ehlo()
        self.assertEqual(client.esmtp_features.get("size"), "5000")
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT], message(1)), {})
        self.assertFalse(os.path.exists(os.path.join(self.directory, "Maildir")))
        self.stopServer()


class LoggingTests(ServerTestCase):
    """
    What C{twistd smtpd} logs about sessions.
    """

    def session(self) -> tuple[int, int]:
        """
        Send one message on one connection.

        @return: The client's port and the message size.
        """
        client = self.smtp()
        clientPort = client.sock.getsockname()[1]
        body = message(1)
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT, "b@example.com"], body), {})
        client.quit()
        return clientPort, len(body)

    def test_textLines(self) -> None:
        """
        Each session logs one line at connect (with the client address),
        one per message (size, sender, recipients, reply code) and one at
        close, all with the session id; no line per command.
        """
        self.startServer("--sink", maildir=False)
        clientPort, size = self.session()
        self.server.waitForLog(" close")
        self.stopServer()
        lines = [
            line for line in self.server.output.splitlines() if "twisted_smtpd.session" in line
        ]
        self.assertEqual(len(lines), 3, self.server.output)
        connect, sent, close = (line.split("] ", 1)[1] for line in lines)
        sessionId = connect.split()[0]
        self.assertTrue(connect.startswith(f"{sessionId} connect from 127.0.0.1:{clientPort} "))
        self.assertEqual(
            sent,
            f"{sessionId} message {size} bytes from <{SENDER}> to <{RECIPIENT}>,<b@example.com>:"
            " 250 OK: message queued",
        )
        self.assertEqual(close, f"{sessionId} close")

    def test_json(self) -> None:
        """
        With C{--log-format json} every log line is a JSON object, and the
        session events carry their values as fields.
        """
        self.startServer("--sink", "--log-format", "json", maildir=False)
        clientPort, size = self.session()
        self.server.waitForLog(' close"')
        self.stopServer()
        events = [json.loads(line) for line in self.server.output.splitlines() if line.strip()]
        session = [e for e in events if e.get("namespace") == "twisted_smtpd.session"]
        self.assertEqual(len(session), 3, self.server.output)
        connect, sent, close = session
        self.assertEqual(connect["client"], f"127.0.0.1:{clientPort}")
        self.assertEqual(
            (sent["size"], sent["codes"], sent["recipients"]),
            (size, [250], [RECIPIENT, "b@example.com"]),
        )
        self.assertEqual(
            {key for key in sent if key.startswith("log_")} | {sent["level"]}, {"info"}
        )
        self.assertEqual(len({e["session"] for e in session}), 1)
        self.assertEqual(close["text"], f"{close['session']} close")
        self.assertTrue(any("Received SIGTERM" in e.get("text", "") for e in events))
