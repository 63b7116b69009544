# -*- test-case-name: tests.integration.test_lifecycle -*-
"""
C{twistd smtpd} under signals: SIGHUP reloads the certificates, SIGTERM
closes gracefully, and SIGKILL in the middle of heavy traffic loses no
message that was acknowledged with 250.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import smtplib
import socket
import ssl
import threading
import time

from cryptography import x509

from tests.certs import CertificateAuthority, IssuedCertificate
from tests.integration.helpers import (
    CLIENT_TIMEOUT,
    RECIPIENT,
    SENDER,
    START_TIMEOUT,
    ImplicitTLSSMTP,
    ServerTestCase,
    TwistdServer,
    connect,
    message,
    readReply,
)

_MESSAGE_ID = re.compile(rb"^Message-ID: <([^>]+)>\r$", re.MULTILINE)


class ReloadTests(ServerTestCase):
    """
    SIGHUP makes the server read its certificate files again.
    """

    def install(self, issued: IssuedCertificate, certificate: str, key: str) -> None:
        """
        Copy C{issued}'s files to the paths the server was given.
        """
        shutil.copyfile(issued.keyPath, key)
        shutil.copyfile(issued.certificatePath, certificate)

    def served(self, ca: CertificateAuthority) -> x509.Certificate:
        """
        The certificate a new implicit TLS connection is served, verified
        against C{ca} for C{mail.example.com}.
        """
        context = ssl.create_default_context(cafile=ca.certificatePath)
        client = ImplicitTLSSMTP(
            "mail.example.com",
            "127.0.0.1",
            self.server.port,
            context=context,
            timeout=CLIENT_TIMEOUT,
        )
        try:
            peer = client.sock.getpeercert(binary_form=True)
            assert peer is not None
            client.quit()
        finally:
            client.close()
        return x509.load_der_x509_certificate(peer)

    def test_sighup(self) -> None:
        """
        After SIGHUP new connections get the certificate now in the files;
        if the files are broken, the error is logged and the certificate
        loaded before stays in use.
        """
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        first, second = ca.server("mail.example.com"), ca.server("mail.example.com")
        directory = self.makeDirectory()
        certificate = os.path.join(directory, "cert.pem")
        key = os.path.join(directory, "key.pem")
        self.install(first, certificate, key)
        self.startServer(
            "--tls-cert", certificate, "--tls-key", key, listen=["ssl:0:interface=127.0.0.1"]
        )
        self.assertEqual(self.served(ca), first.certificate)

        self.install(second, certificate, key)
        self.server.signal(signal.SIGHUP)
        self.server.waitForLog("TLS certificates reloaded")
        self.assertEqual(self.served(ca), second.certificate)

        with open(certificate, "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\nbroken\n")
        self.server.signal(signal.SIGHUP)
        self.server.waitForLog("Reloading TLS certificates failed")
        self.assertEqual(self.served(ca), second.certificate)
        self.stopServer()
        self.assertIn(certificate, self.server.output)


class GracefulStopTests(ServerTestCase):
    """
    SIGTERM stops accepting connections and lets transactions finish.
    """

    def test_sigterm(self) -> None:
        """
        After SIGTERM an idle client gets 421 at once, new connections are
        refused, and a client in the middle of a transaction finishes it
        (250, the message stored) and then gets 421; the process exits
        cleanly once it is gone.
        """
        self.startServer()
        busy = self.smtp()
        busy.ehlo()
        self.assertEqual(busy.mail(SENDER)[0], 250)
        self.assertEqual(busy.rcpt(RECIPIENT)[0], 250)
        idle = connect(self.server.port)
        self.addCleanup(idle.close)
        idleReplies = idle.makefile("rb")
        self.addCleanup(idleReplies.close)
        self.assertEqual(readReply(idleReplies)[0], 220)

        self.server.signal(signal.SIGTERM)
        self.server.waitForLog("Received SIGTERM")
        self.assertEqual(readReply(idleReplies)[0], 421)
        self.server.waitForLog(
            f"stopped listening: tcp:0:interface=127.0.0.1 on 127.0.0.1:{self.server.port}"
        )
        self.assertRaises(
            ConnectionRefusedError, socket.create_connection, ("127.0.0.1", self.server.port), 5
        )

        body = message(1)
        self.assertEqual(busy.data(body)[0], 250)
        self.assertEqual(busy.docmd("NOOP")[0], 421)
        self.assertDelivered([body])
        self.stopServer()


class ReloadSignalTimingTests(ServerTestCase):
    """
    SIGHUP and SIGUSR1 never end the process, even when they come before
    the server started or after it stopped (a reload racing a restart).
    """

    def test_beforeStart(self) -> None:
        """
        SIGHUP and SIGUSR1 received while the options are parsed are acted
        upon once the server runs: the certificates are reloaded, the log
        file reopened (here: standard output, so only the line).
        """
        self.startServer(
            "--handler",
            "tests.integration.signallinghandler:make",
            "--handler-option",
            "when=parse",
            maildir=False,
        )
        self.server.waitForLog("Reloading TLS certificates")
        self.server.waitForLog("SIGUSR1: logging to standard output, no log file to reopen")
        self.assertEqual(self.smtp().noop()[0], 250)
        self.stopServer()

    def test_afterStop(self) -> None:
        """
        SIGHUP and SIGUSR1 received once the server stopped (its own
        handlers gone) do not end it: it exits as SIGTERM has it exit.
        """
        self.startServer(
            "--handler",
            "tests.integration.signallinghandler:make",
            "--handler-option",
            "when=exit",
            maildir=False,
        )
        self.assertEqual(self.smtp().noop()[0], 250)
        self.stopServer()


class DurabilityTests(ServerTestCase):
    """
    A 250 means the message is on disk, whatever happens next.
    """

    clients = 20
    perClient = 200
    killAfter = 150

    def body(self, messageId: str, rng: random.Random) -> bytes:
        """
        A message with C{messageId} and a body of random size and lines.
        """
        lines = [
            f"From: {SENDER}",
            f"To: {RECIPIENT}",
            f"Message-ID: <{messageId}>",
            "Subject: durability",
            "",
        ]
        for _ in range(rng.randrange(1, 400)):
            lines.append(("." if rng.random() < 0.1 else "") + "y" * rng.randrange(0, 200))
        return "".join(line + "\r\n" for line in lines).encode("ascii")

    def test_killMidFlight(self) -> None:
        """
        Twenty clients send in a loop; the server is killed with SIGKILL
        while they do.  After a restart, every message that got its 250 is
        in C{new/}, byte for byte, and every file in C{new/} is a whole
        message that was sent (files in C{tmp/} are never delivered).
        """
        self.startServer()
        sent: dict[str, bytes] = {}
        acknowledged: list[str] = []
        changed = threading.Condition()
        stop = threading.Event()

        def client(index: int) -> None:
            rng = random.Random(index)
            try:
                with smtplib.SMTP("127.0.0.1", self.server.port, timeout=CLIENT_TIMEOUT) as smtp:
                    for number in range(self.perClient):
                        if stop.is_set():
                            return
                        messageId = f"{index}.{number}.durability@example.com"
                        body = self.body(messageId, rng)
                        with changed:
                            sent[messageId] = body
                        if smtp.sendmail(SENDER, [RECIPIENT], body) == {}:
                            with changed:
                                acknowledged.append(messageId)
                                changed.notify_all()
            except (OSError, smtplib.SMTPException):
                return

        threads = [threading.Thread(target=client, args=(i,)) for i in range(self.clients)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + START_TIMEOUT
            with changed:
                while len(acknowledged) < self.killAfter and time.monotonic() < deadline:
                    changed.wait(deadline - time.monotonic())
            self.assertGreaterEqual(len(acknowledged), self.killAfter)
            self.server.kill()
        finally:
            stop.set()
            for thread in threads:
                thread.join(2 * CLIENT_TIMEOUT)
        self.assertEqual(self.server.returncode, -signal.SIGKILL)
        safe = list(acknowledged)

        restarted = TwistdServer(["--maildir", self.maildir], self.server.directory)
        self.addCleanup(restarted.kill)
        restarted.start()
        self.stopServer(restarted)

        newDirectory = os.path.join(self.maildir, "new")
        stored: dict[str, bytes] = {}
        for name in os.listdir(newDirectory):
            with open(os.path.join(newDirectory, name), "rb") as f:
                data = f.read()
            match = _MESSAGE_ID.search(data)
            self.assertIsNotNone(match, f"{name} has no Message-ID: {data[:200]!r}")
            assert match is not None
            messageId = match.group(1).decode("ascii")
            self.assertNotIn(messageId, stored, f"{messageId} stored twice")
            self.assertEqual(data, sent[messageId], f"{name} is not whole")
            stored[messageId] = data
        missing = [m for m in safe if m not in stored]
        self.assertEqual(missing, [])
