# -*- test-case-name: tests.test_clientcertificates -*-
"""
Hostile TLS clients and their certificates, over real sockets, after
STARTTLS and on an C{ssl:} listener of a server asking for client
certificates (C{requestCert}): what the log says of a certificate refused.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.certs import CertificateAuthority, IssuedCertificate
from tests.integration.tlsclients import startTLS
from tests.tlsserving import IMPLICIT, PLAIN, listen, logLines, reactor, sessionsGone
from twisted_smtpd import SMTPServer
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd.handlers import BaseHandler


def _present(port: int, starttls: bool, certificate: IssuedCertificate) -> None:
    """
    Connect, offer C{certificate} in the handshake, and read until the
    server ends the connection.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(certificate.certificatePath, certificate.keyPath)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        if starttls:
            startTLS(s)
        try:
            with context.wrap_socket(s, server_hostname="mx.example.com") as tls:
                while tls.recv(4096):
                    pass
        except OSError:
            pass


class RefusedCertificateTests(TestCase):
    """
    A client certificate that does not verify fails the handshake with one
    line saying why, as Postfix logs the verification error.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        directory = os.path.abspath(self.mktemp())
        self.ca = CertificateAuthority(directory)
        issued = self.ca.server("mx.example.com")
        self.server = SMTPServer(
            BaseHandler(),
            ServerOptions(
                name="mx.example.com",
                disableReverseLookup=True,
                certificate=issued.certificatePath,
                privateKey=issued.keyPath,
                caCertificates=self.ca.certificatePath,
                requestCert=True,
            ),
        )
        self.lines = logLines(self)
        self.implicit, self.plain = yield listen(self, self.server, IMPLICIT, PLAIN)

    @inlineCallbacks
    def failures(self, certificate: IssuedCertificate) -> Any:
        """
        The C{TLS handshake failed} lines of C{certificate} presented after
        STARTTLS and on the C{ssl:} listener.
        """
        yield deferToThread(_present, self.plain, True, certificate)
        yield deferToThread(_present, self.implicit, False, certificate)
        for _ in range(200):
            logged = [line for line in self.lines if "TLS handshake failed" in line]
            if len(logged) >= 2:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        yield sessionsGone(self, self.server)
        self.assertFalse([line for line in self.lines if "Traceback" in line], self.lines)
        return logged

    @inlineCallbacks
    def test_expired(self) -> Any:
        """
        An expired certificate of the trusted CA: the line says it expired.
        """
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
        expired = self.ca.issue(
            "old", client=True, notBefore=past, notAfter=past + datetime.timedelta(days=1)
        )
        logged = yield self.failures(expired)
        self.assertEqual(len(logged), 2, self.lines)
        for line in logged:
            self.assertTrue(
                line.endswith(
                    " 127.0.0.1 TLS handshake failed: certificate verify failed:"
                    " certificate has expired (depth 0)"
                ),
                line,
            )

    @inlineCallbacks
    def test_otherAuthority(self) -> Any:
        """
        A certificate of another CA: the line says its issuer is unknown.
        """
        other = CertificateAuthority(os.path.abspath(self.mktemp()), "Other CA")
        logged = yield self.failures(other.client("mallory"))
        self.assertEqual(len(logged), 2, self.lines)
        for line in logged:
            self.assertTrue(
                line.endswith(
                    " TLS handshake failed: certificate verify failed:"
                    " unable to get local issuer certificate (depth 0)"
                ),
                line,
            )

    @inlineCallbacks
    def test_serverCertificate(self) -> Any:
        """
        A certificate for servers only (extendedKeyUsage serverAuth): the
        line says it is not for this purpose (C{unsuitable certificate
        purpose} from OpenSSL 3.2 on, C{unsupported} before).
        """
        logged = yield self.failures(self.ca.server("client.example.com"))
        self.assertEqual(len(logged), 2, self.lines)
        for line in logged:
            self.assertRegex(
                line,
                r" TLS handshake failed: certificate verify failed:"
                r" (unsuitable|unsupported) certificate purpose \(depth 0\)$",
            )
