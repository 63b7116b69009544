# -*- test-case-name: tests.integration.test_ownkeysstart -*-
"""
What C{twistd smtpd} says at start about the server's own certificates when
some listeners are C{ssl:} listeners with keys of their own: the self-signed
certificate is announced (and made, and logged) only when some listener can
serve it, in one process and with C{--workers 2}.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl

from tests.certs import CertificateAuthority
from tests.integration.helpers import (
    CLIENT_TIMEOUT,
    ImplicitTLSSMTP,
    ServerTestCase,
    TwistdServer,
    startWorkers,
)

#: The warning that announces the self-signed certificate.
SELF_SIGNED = "No TLS certificate configured: serving a self-signed certificate"


class OwnKeysStartTests(ServerTestCase):
    """
    Start-ups with an C{ssl:} listener with keys of its own, alone or beside
    listeners that serve the server's own certificates.
    """

    def setUp(self) -> None:
        self.ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        self.issued = self.ca.server("mx.example.com")

    def ownKeys(self) -> str:
        return (
            "ssl:0:interface=127.0.0.1"
            f":certKey={self.issued.certificatePath}:privateKey={self.issued.keyPath}"
        )

    def start(self, listen: list[str], workers: bool) -> TwistdServer:
        if workers:
            server, _ = startWorkers(self, ["--sink"], listen=listen)
            self.server = server
            return server
        return self.startServer("--sink", "--no-reverse-lookup", maildir=False, listen=listen)

    def assertServesOwnKeys(self, port: int) -> None:
        """
        An implicit TLS client of C{port} is served the listener's own
        certificate, which it verifies.
        """
        context = ssl.create_default_context(cafile=self.ca.certificatePath)
        client = ImplicitTLSSMTP(
            "mx.example.com", "127.0.0.1", port, timeout=CLIENT_TIMEOUT, context=context
        )
        self.addCleanup(client.close)
        self.assertEqual(client.ehlo()[0], 250)
        client.quit()

    def checkOwnKeysOnly(self, workers: bool) -> None:
        server = self.start([self.ownKeys()], workers)
        self.assertServesOwnKeys(server.port)
        server.signal(signal.SIGHUP)
        server.waitForLog("TLS certificates of ssl:0", count=2 if workers else 1)
        self.stopServer()
        output = server.output
        self.assertNotIn(SELF_SIGNED, output)
        # Neither made nor logged: no client can be served it.
        self.assertNotIn("CN=localhost", output)
        self.assertNotIn("(self-signed)", output)
        self.assertIn("TLS certificate of ssl:0:", output)

    def test_ownKeysOnly(self) -> None:
        """
        With only an C{ssl:} listener with keys of its own and no
        C{--tls-cert}, no self-signed certificate is announced, made or
        logged, at start or after SIGHUP: STARTTLS is not offered inside
        TLS, so no client could be served it.
        """
        self.checkOwnKeysOnly(workers=False)

    def test_ownKeysOnlyWorkers(self) -> None:
        """
        So too with C{--workers 2}: the parent makes no shared self-signed
        certificate, and its workers none of their own.
        """
        self.checkOwnKeysOnly(workers=True)

    def checkAnnounced(self, listen: list[str], workers: bool) -> None:
        server = self.start(listen, workers)
        self.stopServer()
        self.assertEqual(server.output.count(SELF_SIGNED), 1, server.output)

    def test_beside(self) -> None:
        """
        Beside a plain listener (STARTTLS offered) or an C{ssl:} listener
        without keys of its own, the self-signed certificate is announced,
        once.
        """
        for other in ["tcp:0:interface=127.0.0.1", "ssl:0:interface=127.0.0.1"]:
            self.checkAnnounced([self.ownKeys(), other], workers=False)

    def test_besideWorkers(self) -> None:
        """
        So too with C{--workers 2}: the parent announces the certificate it
        shares with its workers, once.
        """
        for other in ["tcp:0:interface=127.0.0.1", "ssl:0:interface=127.0.0.1"]:
            self.checkAnnounced([self.ownKeys(), other], workers=True)

    def test_startTLSDisabled(self) -> None:
        """
        A plain listener with STARTTLS disabled cannot serve it either.
        """
        self.startServer(
            "--sink",
            "--disable",
            "STARTTLS",
            maildir=False,
            listen=[self.ownKeys(), "tcp:0:interface=127.0.0.1"],
        )
        self.stopServer()
        self.assertNotIn(SELF_SIGNED, self.server.output)

    def test_sniAnnouncedOnce(self) -> None:
        """
        With C{--sni} (or C{--tls-ca}) but no C{--tls-cert}, the
        self-signed default is announced once, by the server that starts,
        not also while the options are checked; with only C{ssl:}
        listeners with keys of their own, not at all.
        """
        sni = f"mx.example.com={self.issued.certificatePath},{self.issued.keyPath}"
        for extra in [["--sni", sni], ["--tls-ca", self.ca.certificatePath, "--request-cert"]]:
            for listen, count in [(["tcp:0:interface=127.0.0.1"], 1), ([self.ownKeys()], 0)]:
                server = self.startServer("--sink", *extra, maildir=False, listen=listen)
                self.stopServer()
                self.assertEqual(server.output.count(SELF_SIGNED), count, server.output)

    def checkEscaped(self, workers: bool) -> None:
        escape = "\x1b[2J"
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        certificate = os.path.join(directory, f"cert{escape}.pem")
        key = os.path.join(directory, f"key{escape}.pem")
        shutil.copy(self.issued.certificatePath, certificate)
        shutil.copy(self.issued.keyPath, key)
        listen = [f"ssl:0:interface=127.0.0.1:certKey={certificate}:privateKey={key}"]
        server = self.start(listen, workers)
        server.signal(signal.SIGHUP)
        server.waitForLog(" reloaded", count=2 if workers else 1)
        self.stopServer()
        output = server.output
        self.assertNotIn("\x1b", output)
        shown = f"certKey={certificate}:privateKey={key}".replace(escape, "\\x1b[2J")
        for line in ["listening: ssl:0", "TLS certificate of ssl:0", "stopped listening: ssl:0"]:
            self.assertIn(f"{line}:interface=127.0.0.1:{shown}", output)
        self.assertIn(f"TLS certificates of ssl:0:interface=127.0.0.1:{shown} reloaded", output)
        if workers:
            self.assertIn(f"{shown} on 127.0.0.1:{server.port} (2 workers)", output)

    def test_controlCharactersEscaped(self) -> None:
        """
        An endpoint string holding control characters (here, in the paths
        of its files) is written escaped in every line naming the listener:
        listening, its certificate, its reload, stopped listening.
        """
        self.checkEscaped(workers=False)

    def test_controlCharactersEscapedWorkers(self) -> None:
        """
        So too with C{--workers 2}, the parent's line included.
        """
        self.checkEscaped(workers=True)

    def test_workersSelfSignedMarked(self) -> None:
        """
        With C{--workers 2} and no C{--tls-cert}, each worker's line for the
        self-signed certificate its parent made says it is self-signed, as
        one process's does.
        """
        server = self.start(["tcp:0:interface=127.0.0.1"], workers=True)
        self.stopServer()
        output = server.output
        self.assertEqual(output.count("TLS certificate (self-signed): CN=localhost, "), 2, output)
        self.assertNotIn("TLS certificate: CN=localhost", output)
