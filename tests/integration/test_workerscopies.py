"""
C{twistd smtpd --workers 2} over real sockets: a worker started again after
the files the server was started with can no longer be read (removed here;
in production, a key only root may read, under C{twistd --uid}) starts from
the copies its parent read at start (C{dhParameters} too), and reads the
files themselves once it runs.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import ssl

from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from tests.integration.helpers import (
    CLIENT_TIMEOUT,
    START_TIMEOUT,
    ImplicitTLSSMTP,
    startWorkers,
)
from tests.test_dhparameters import DHE_CIPHER
from tests.test_tlsresume import FFDHE2048

_WORKER = re.compile(r"worker (\d+) started, pid (\d+)")


class StartCopiesTests(SynchronousTestCase):
    def test_restartedWorkerUsesCopies(self) -> None:
        """
        Both workers killed after the configuration file, the certificate
        and the key were removed: both start again, serve the certificate
        (over STARTTLS) and the configuration (its banner), and a reload
        then reads the files themselves (and fails, naming the key).
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        authority = CertificateAuthority(directory)
        issued = authority.server("mail.example.com")
        config = os.path.join(directory, "smtpd.conf")
        with open(config, "w") as f:
            f.write("[smtpd]\nbanner = copied from the parent\n")
        server, port = startWorkers(
            self,
            [
                "--config",
                config,
                "--sink",
                "--tls-cert",
                issued.certificatePath,
                "--tls-key",
                issued.keyPath,
            ],
            directory,
        )
        for path in (config, issued.certificatePath, issued.keyPath):
            os.rename(path, path + ".gone")
        for _, pid in _WORKER.findall(server.output):
            os.kill(int(pid), signal.SIGKILL)
        server.waitForLog("worker ready", count=4, timeout=START_TIMEOUT)
        self.assertNotIn("cannot read", server.output)
        context = ssl.create_default_context(cafile=authority.certificatePath)
        context.check_hostname = False
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as raw:
                greeting = raw.makefile("rb").readline()
            self.assertTrue(greeting.startswith(b"220 "), greeting)
            self.assertIn(b"copied from the parent", greeting)
            client = smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
            self.addCleanup(client.close)
            client.ehlo("client.example")
            self.assertEqual(client.starttls(context=context)[0], 220)
            certificate = client.sock.getpeercert()
            self.assertIn(("commonName", "mail.example.com"), certificate["subject"][0])
            client.quit()
        server.signal(signal.SIGHUP)
        server.waitForLog("Reloading TLS certificates failed", count=2, timeout=START_TIMEOUT)
        self.assertIn(f"cannot read certificate {issued.certificatePath}", server.output)
        server.stop()

    def test_restartedWorkerUsesParametersCopy(self) -> None:
        """
        Both workers of an C{ssl:} listener with a C{dhParameters} file,
        killed after the file was removed, start again: OpenSSL takes the
        parameters from the copy the parent read, not from the file, and
        a client offering only a C{DHE} cipher is served.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        authority = CertificateAuthority(directory)
        issued = authority.issue("mail.example.com", ("mail.example.com",), rsaKey=True)
        parameters = os.path.join(directory, "dh.pem")
        with open(parameters, "w") as f:
            f.write(FFDHE2048)
        listen = (
            f"ssl:0:interface=127.0.0.1:privateKey={issued.keyPath}"
            f":certKey={issued.certificatePath}:dhParameters={parameters}"
        )
        server, port = startWorkers(self, ["--sink"], directory, listen=[listen])
        os.rename(parameters, parameters + ".gone")
        for _, pid in _WORKER.findall(server.output):
            os.kill(int(pid), signal.SIGKILL)
        server.waitForLog("worker ready", count=4, timeout=START_TIMEOUT)
        self.assertNotIn("cannot use dhParameters", server.output)
        context = ssl.create_default_context(cafile=authority.certificatePath)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(DHE_CIPHER)
        for _ in range(4):
            client = ImplicitTLSSMTP(
                "mail.example.com", "127.0.0.1", port, timeout=CLIENT_TIMEOUT, context=context
            )
            self.addCleanup(client.close)
            self.assertEqual(client.ehlo()[0], 250)
            assert client.sock is not None
            self.assertEqual(client.sock.cipher()[0], DHE_CIPHER)
            client.quit()
        server.stop()
