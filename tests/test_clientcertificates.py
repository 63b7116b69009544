# -*- test-case-name: tests.test_clientcertificates -*-
"""
TLS clients and their certificates, over real sockets, after STARTTLS and
on an C{ssl:} listener of a server asking for client certificates
(C{requestCert}): what the log says of a certificate refused, and a
certificate request naming many CAs.
"""

from __future__ import annotations

import base64
import datetime
import os
import socket
import ssl
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SkipTest, TestCase

from tests.certs import CertificateAuthority, IssuedCertificate
from tests.integration.tlsclients import startTLS
from tests.test_tap import parse
from tests.tlsserving import IMPLICIT, PLAIN, listen, logLines, reactor, sessionsGone
from twisted_smtpd import SMTPServer
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.tls import ServerTLS
from twisted_smtpd.handlers import BaseHandler


def _present(port: int, starttls: bool, certificate: IssuedCertificate) -> bytes:
    """
    Connect, offer C{certificate} in the handshake, and read until the
    server ends the connection.

    @return: What the server sent over TLS, or C{b""} when the handshake
        failed.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(certificate.certificatePath, certificate.keyPath)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        if starttls:
            startTLS(s)
        received = b""
        try:
            with context.wrap_socket(s, server_hostname="mx.example.com") as tls:
                tls.sendall(b"QUIT\r\n")
                while data := tls.recv(4096):
                    received += data
        except OSError:
            pass
        return received


def _server(case: TestCase, authorities: CertificateAuthority, bundle: str) -> SMTPServer:
    """
    A server asking for client certificates signed by a CA of C{bundle},
    with a certificate of C{authorities}.
    """
    issued = authorities.server("mx.example.com")
    return SMTPServer(
        BaseHandler(),
        ServerOptions(
            name="mx.example.com",
            disableReverseLookup=True,
            certificate=issued.certificatePath,
            privateKey=issued.keyPath,
            caCertificates=bundle,
            requestCert=True,
            tlsHandshakeTimeout=5,
        ),
    )


def _bundle(path: str, authority: CertificateAuthority, others: int) -> str:
    """
    Write a CA bundle of C{authority} and C{others} more CAs of long names
    (about 100 octets each) to C{path}.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    pem = authority.certificate.public_bytes(serialization.Encoding.PEM)
    for number in range(others):
        name = x509.Name(
            [
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"Example CA number {number:04} " + "x" * 40
                ),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Organisation"),
            ]
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(number + 1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        pem += certificate.public_bytes(serialization.Encoding.PEM)
    with open(path, "wb") as f:
        f.write(pem)
    return path


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


class ManyAuthoritiesTests(TestCase):
    """
    A bundle of many CAs, whose names the server's certificate request
    carries to the client.
    """

    timeout = 60

    @inlineCallbacks
    def test_largeCertificateRequest(self) -> Any:
        """
        A certificate request of more than 32 KiB (400 CAs named): the
        server's whole first flight reaches the client, whose handshake
        finishes, after STARTTLS and on an C{ssl:} listener (Twisted's TLS
        layer sent the first 32 KiB only and waited for the client, which
        waited for the rest, until the handshake's deadline).
        """
        directory = os.path.abspath(self.mktemp())
        ca = CertificateAuthority(directory)
        bundle = _bundle(os.path.join(directory, "bundle.pem"), ca, 400)
        server = _server(self, ca, bundle)
        lines = logLines(self)
        implicit, plain = yield listen(self, server, IMPLICIT, PLAIN)
        alice = ca.client("alice")
        answer = yield deferToThread(_present, implicit, False, alice)
        self.assertEqual(answer[:4], b"220 ", lines)
        answer = yield deferToThread(_present, plain, True, alice)
        self.assertEqual(answer[:4], b"221 ", lines)
        yield sessionsGone(self, server)

    def test_namesBeyondCertificateRequest(self) -> None:
        """
        A bundle whose CAs' names are more than a certificate request can
        carry (700 CAs, about 75 KiB: OpenSSL failed every handshake with
        an C{internal error}) is refused with client certificates, naming
        it, through the API and under C{twistd}; without them its names are
        never sent, and it is taken.
        """
        directory = os.path.abspath(self.mktemp())
        ca = CertificateAuthority(directory)
        bundle = _bundle(os.path.join(directory, "bundle.pem"), ca, 700)
        issued = ca.server("mx.example.com")
        message = (
            f"cannot use CA certificates {bundle}: the names of its 701 CAs take 76,336"
            " octets, more than a TLS certificate request carries (64 KiB); keep only"
            " the CAs that sign client certificates"
        )
        _assertAuthoritiesRefused(self, issued, bundle, message)
        ServerTLS(issued.certificatePath, issued.keyPath, caCertificates=bundle)


class UnreadableAuthorityTests(TestCase):
    """
    A CA bundle holding a certificate OpenSSL does not read.
    """

    def test_nameNotUTF8(self) -> None:
        """
        A certificate whose name is a UTF8String that is not UTF-8 (which
        C{cryptography} reads until its name is asked for, OpenSSL not at
        all) is refused, naming the file and the certificate, through the
        API and under C{twistd}, rather than a traceback from pyOpenSSL.
        """
        directory = os.path.abspath(self.mktemp())
        ca = CertificateAuthority(directory)
        issued = ca.server("mx.example.com")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "QQQQ")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        der = certificate.public_bytes(serialization.Encoding.DER).replace(b"QQQQ", b"\xff\xfeQQ")
        try:
            crypto.X509.from_cryptography(x509.load_der_x509_certificate(der))
        except crypto.Error:
            pass
        else:
            raise SkipTest("this OpenSSL reads a UTF8String that is not UTF-8")
        bundle = os.path.join(directory, "bundle.pem")
        with open(bundle, "wb") as f:
            f.write(ca.certificate.public_bytes(serialization.Encoding.PEM))
            f.write(b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der))
            f.write(b"-----END CERTIFICATE-----\n")
        message = (
            f"cannot read CA certificates {bundle}: its certificate number 2 (of 2)"
            " cannot be used: invalid utf8string"
        )
        _assertAuthoritiesRefused(self, issued, bundle, message)


def _assertAuthoritiesRefused(testCase: TestCase, issued: Any, bundle: str, message: str) -> None:
    """
    The CA bundle C{bundle}, with client certificates asked for, is refused
    with C{message}: by L{ServerTLS} (C{ValueError}) and under C{twistd}
    (one usage line naming C{--tls-ca}).
    """
    e = testCase.assertRaises(
        ValueError,
        ServerTLS,
        issued.certificatePath,
        issued.keyPath,
        caCertificates=bundle,
        requestCert=True,
    )
    testCase.assertEqual(str(e), message)
    e = testCase.assertRaises(
        usage.UsageError,
        parse,
        "--sink",
        "--tls-cert",
        issued.combinedPath,
        "--request-cert",
        "--tls-ca",
        bundle,
    )
    testCase.assertEqual(str(e), f"--tls-ca: {message}")
