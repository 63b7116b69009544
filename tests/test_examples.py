# -*- test-case-name: tests.test_examples -*-
"""
The programs in C{examples/}: each is started as a subprocess on an
ephemeral port of 127.0.0.1 and sent mail with C{smtplib}.

Every wait is bounded: a program that does not start, a client that gets no
answer or a webhook that is never called fails the test instead of hanging
it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import smtplib
import ssl
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.certs import CertificateAuthority

PROJECT = Path(__file__).resolve().parents[1]
EXAMPLES = PROJECT / "examples"

# Upper bounds, in seconds, for things that normally take milliseconds.
START_TIMEOUT = 60.0
CLIENT_TIMEOUT = 60.0

_LISTENING = re.compile(rb"listening on (?:port (\d+)|(\S+))")


class ExampleProcess(ProcessProtocol):
    """
    A program of C{examples/} running in this interpreter, its output kept.

    @ivar port: The port it listens on, once L{started} fired.
    @ivar started: Fires when it says it listens; fails if it exits first.
    @ivar ended: Fires with its exit reason once it is gone.
    """

    def __init__(self) -> None:
        self.output = b""
        self.port = 0
        self.started: defer.Deferred[int] = defer.Deferred()
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = _LISTENING.search(self.output)
        if match is not None and not self.started.called:
            self.port = int(match.group(1) or 0)
            self.started.callback(self.port)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if not self.started.called:
            self.started.errback(
                AssertionError(f"example exited before listening:\n{self.output.decode()}")
            )
        self.ended.callback(reason.value)


def startExample(
    testCase: TestCase,
    name: str,
    *args: str,
    cwd: str,
    listen: str = "tcp:0:interface=127.0.0.1",
) -> defer.Deferred[ExampleProcess]:
    """
    Run C{examples/NAME.py ARGS --listen LISTEN} in C{cwd} and wait until it
    listens; stop it (SIGTERM) when the test ends.
    """
    process = ExampleProcess()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, str(EXAMPLES / f"{name}.py"), *args]
    command += ["--listen", listen]
    transport = reactor.spawnProcess(process, sys.executable, command, env=env, path=cwd)

    def stop() -> defer.Deferred[Any]:
        with contextlib.suppress(ProcessExitedAlready):
            transport.signalProcess("TERM")

        def exited(reason: Exception) -> None:
            # SIGTERM stops the reactor and the program exits cleanly.
            if not isinstance(reason, ProcessDone):
                raise AssertionError(f"{name} did not stop cleanly: {reason}\n{process.output!r}")

        return process.ended.addTimeout(START_TIMEOUT, reactor).addCallback(exited)

    testCase.addCleanup(stop)
    started = process.started.addTimeout(START_TIMEOUT, reactor)
    return started.addCallback(lambda _: process)


def inThread(f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    """
    Run a blocking client in a thread, bounded by L{CLIENT_TIMEOUT}.
    """
    return deferToThread(f, *args).addTimeout(CLIENT_TIMEOUT + 5, reactor)


def message(subject: str, size: int = 0) -> bytes:
    """
    A message with a line starting with a dot, padded to about C{size} bytes
    with lines of 76 characters.
    """
    lines = [f"Subject: {subject}", "From: sender@example.com", "", "Hello.", ".dot line"]
    lines += ["x" * 76] * (size // 78)
    return "".join(line + "\r\n" for line in lines).encode("ascii")


def newFiles(directory: Path) -> list[bytes]:
    """
    The contents of the files in C{directory/new}, sorted.
    """
    new = directory / "new"
    return sorted(p.read_bytes() for p in new.iterdir()) if new.exists() else []


class AllowListTests(TestCase):
    @defer.inlineCallbacks
    def test_allowedAndRefused(self) -> Any:
        """
        A recipient on the allow-list gets the message in the Maildir; any
        other is refused at RCPT with 550 5.1.1 and gets nothing.
        """
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        example = yield startExample(
            self, "allowlist", "--allow", "alice@example.com", "--maildir", "md", cwd=cwd
        )
        body = message("allow-list")

        def send() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", example.port, timeout=CLIENT_TIMEOUT) as client:
                refused: dict[str, tuple[int, bytes]] = client.sendmail(
                    "sender@example.com", ["alice@example.com", "mallory@example.com"], body
                )
                return refused

        refused = yield inThread(send)
        self.assertEqual(list(refused), ["mallory@example.com"])
        self.assertEqual(refused["mallory@example.com"][0], 550)
        self.assertIn(b"5.1.1", refused["mallory@example.com"][1])
        self.assertEqual(newFiles(Path(cwd) / "md"), [body])

        def sendOnlyRefused() -> None:
            with smtplib.SMTP("127.0.0.1", example.port, timeout=CLIENT_TIMEOUT) as client:
                client.sendmail("sender@example.com", ["mallory@example.com"], body)

        yield self.assertFailure(inThread(sendOnlyRefused), smtplib.SMTPRecipientsRefused)
        self.assertEqual(len(newFiles(Path(cwd) / "md")), 1)


class SubmissionTests(TestCase):
    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.cwd = os.path.abspath(self.mktemp())
        os.makedirs(self.cwd)
        ca = CertificateAuthority(self.cwd)
        server = ca.server("localhost")
        self.caPath = ca.certificatePath
        passwords = Path(self.cwd) / "passwords.txt"
        passwords.write_text("alice@example.com:wonderland\n")
        self.example = yield startExample(
            self,
            "submission",
            "--tls-cert",
            server.certificatePath,
            "--tls-key",
            server.keyPath,
            "--passwords",
            str(passwords),
            "--maildir",
            "outbox",
            cwd=self.cwd,
        )

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.example.port, timeout=CLIENT_TIMEOUT)

    def tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.caPath)
        context.check_hostname = False  # the certificate names localhost, not 127.0.0.1
        return context

    @defer.inlineCallbacks
    def test_startTLSThenAuth(self) -> Any:
        """
        After STARTTLS (verified against the test CA) and AUTH, the user can
        send as themselves, and the message is stored.
        """
        body = message("submitted")

        def send() -> None:
            with self.client() as client:
                client.starttls(context=self.tls())
                client.login("alice@example.com", "wonderland")
                client.sendmail("alice@example.com", ["bob@example.org"], body)

        yield inThread(send)
        self.assertEqual(newFiles(Path(self.cwd) / "outbox"), [body])

    @defer.inlineCallbacks
    def test_noAuthBeforeTLS(self) -> Any:
        """
        AUTH is not offered on a plaintext session and is refused with 538
        if tried anyway; MAIL without AUTH gets 530.
        """

        def plaintext() -> tuple[bool, int, int]:
            with self.client() as client:
                client.ehlo()
                offered = client.has_extn("auth")
                code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHdvbmRlcmxhbmQ=")
                mail, _ = client.mail("alice@example.com")
                return offered, code, mail

        offered, code, mail = yield inThread(plaintext)
        self.assertEqual((offered, code, mail), (False, 538, 530))

    @defer.inlineCallbacks
    def test_wrongPasswordAndForeignSender(self) -> Any:
        """
        A wrong password gets 535; an authenticated user sending as someone
        else gets 553 5.7.1; nothing is stored.
        """

        def attempts() -> tuple[int, int, bytes]:
            with self.client() as client:
                client.starttls(context=self.tls())
                try:
                    client.login("alice@example.com", "guess")
                except smtplib.SMTPAuthenticationError as e:
                    wrong = e.smtp_code
                client.login("alice@example.com", "wonderland")
                code, text = client.mail("ceo@example.com")
                return wrong, code, text

        wrong, code, text = yield inThread(attempts)
        self.assertEqual((wrong, code), (535, 553))
        self.assertIn(b"5.7.1", text)
        self.assertEqual(newFiles(Path(self.cwd) / "outbox"), [])


class LMTPMailboxTests(TestCase):
    @defer.inlineCallbacks
    def test_perRecipientResults(self) -> Any:
        """
        After the message, each recipient gets its own reply in envelope
        order: a mailbox over its quota 552 5.2.2, the others 250, and only
        those are delivered.  An unknown mailbox is refused at RCPT.
        """
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        root = Path(cwd) / "mail"
        example = yield startExample(
            self,
            "lmtp_mailbox",
            "--root",
            "mail",
            "--mailbox",
            "alice",
            "--mailbox",
            "bob",
            "--quota",
            "20000",
            cwd=cwd,
        )
        (root / "bob" / "new" / "old").write_bytes(b"x" * 19000)  # bob is nearly full
        body = message("lmtp", size=4000)

        def deliver() -> tuple[int, list[tuple[int, bytes]]]:
            with smtplib.LMTP("127.0.0.1", example.port, timeout=CLIENT_TIMEOUT) as client:
                client.ehlo()
                client.mail("sender@example.com")
                unknown, _ = client.rcpt("carol@example.com")
                for rcpt in ("alice@example.com", "bob@example.com"):
                    code, text = client.rcpt(rcpt)
                    assert code == 250, (code, text)
                # smtplib reads the first reply after the message; LMTP sends
                # one per accepted recipient.
                replies = [client.data(body)]
                replies.append(client.getreply())
                return unknown, replies

        unknown, replies = yield inThread(deliver)
        self.assertEqual(unknown, 550)
        self.assertEqual([code for code, _ in replies], [250, 552])
        self.assertIn(b"5.2.2", replies[1][1])
        self.assertEqual(newFiles(root / "alice"), [body])
        self.assertEqual(newFiles(root / "bob"), [b"x" * 19000])

    @defer.inlineCallbacks
    def test_unixListener(self) -> Any:
        """
        The example runs with the C{unix:} listener its docstring shows: it
        says the socket's path where a TCP listener says its port, and
        delivers over that socket.
        """
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        # A path of its own, short: the test's directory may be longer than
        # the 107 octets a UNIX socket's path may have.
        sockets = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, sockets, True)
        socketPath = os.path.join(sockets, "lmtp.sock")
        example = yield startExample(
            self,
            "lmtp_mailbox",
            "--root",
            "mail",
            "--mailbox",
            "alice",
            cwd=cwd,
            listen=f"unix:{socketPath}",
        )
        self.assertIn(f"listening on {socketPath}".encode(), example.output)

        def deliver() -> tuple[int, bytes]:
            with smtplib.LMTP(socketPath, timeout=CLIENT_TIMEOUT) as client:
                client.ehlo()
                client.mail("sender@example.com")
                client.rcpt("alice@example.com")
                return client.data(message("unix"))

        code, _ = yield inThread(deliver)
        self.assertEqual(code, 250)
        self.assertEqual(len(newFiles(Path(cwd) / "mail" / "alice")), 1)


class _Receiver(Resource):
    """
    A webhook endpoint that records what is posted and answers C{code}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.posted: list[dict[str, Any]] = []
        self.code = 200

    def render_POST(self, request: Any) -> bytes:
        self.posted.append(json.loads(request.content.read()))
        request.setResponseCode(self.code)
        return b"ok"


class WebhookTests(TestCase):
    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.receiver = _Receiver()
        port = reactor.listenTCP(0, Site(self.receiver), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/mail"
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        self.example = yield startExample(self, "webhook", "--url", url, "--timeout", "20", cwd=cwd)

    def send(self, body: bytes) -> defer.Deferred[Any]:
        def send() -> None:
            with smtplib.SMTP("127.0.0.1", self.example.port, timeout=CLIENT_TIMEOUT) as client:
                client.sendmail("sender@example.com", ["hook@example.com", "b@example.com"], body)

        return inThread(send)

    @defer.inlineCallbacks
    def test_posted(self) -> Any:
        """
        The envelope and the message (in base64) are posted as JSON, and
        a 2xx answer accepts the message.
        """
        body = message("webhook")
        yield self.send(body)
        self.assertEqual(len(self.receiver.posted), 1)
        posted = self.receiver.posted[0]
        self.assertEqual(posted["mailFrom"], "sender@example.com")
        self.assertEqual(posted["rcptTo"], ["hook@example.com", "b@example.com"])
        self.assertEqual(base64.b64decode(posted["message"]), body)

    @defer.inlineCallbacks
    def test_refusedIsTemporary(self) -> Any:
        """
        When the endpoint answers with an error, the client gets 451 4.3.0,
        so that its mail server tries again later.
        """
        self.receiver.code = 503
        failure = yield self.assertFailure(self.send(message("later")), smtplib.SMTPDataError)
        self.assertEqual(failure.smtp_code, 451)
        self.assertIn(b"4.3.0", failure.smtp_error)
        self.assertEqual(len(self.receiver.posted), 1)


class LargeToDiskTests(TestCase):
    @defer.inlineCallbacks
    def test_streamedToDisk(self) -> Any:
        """
        A 40 MiB message is stored whole in the spool's C{new/}, and the
        server's peak memory grows by much less than the message: the body
        went to the file as it arrived.
        """
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        example = yield startExample(self, "large_to_disk", "--spool", "spool", cwd=cwd)
        pid = example.transport.pid
        before = _peakMemory(pid)
        body = message("large", size=40 * 1024 * 1024)

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", example.port, timeout=CLIENT_TIMEOUT) as client:
                client.sendmail("sender@example.com", ["big@example.com"], body)

        yield inThread(send)
        growth = _peakMemory(pid) - before
        spool = Path(cwd) / "spool"
        self.assertEqual(newFiles(spool), [body])
        self.assertEqual(os.listdir(spool / "tmp"), [])
        self.assertLess(growth, 10 * 1024 * 1024, f"peak memory grew by {growth} bytes")


def _peakMemory(pid: int) -> int:
    """
    The peak resident set size of process C{pid}, in bytes (Linux).
    """
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024
