"""
TLS and AUTH with real sockets on 127.0.0.1, real handshakes, certificates
made in the test and real clients: Python's C{smtplib} and C{ssl}, and
C{swaks}.

The server runs in the test's reactor; each blocking client runs in a
thread (C{deferToThread}) with bounded timeouts.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import ssl
import subprocess
from typing import Any

from cryptography import x509
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.certs import CertificateAuthority, IssuedCertificate
from tests.integration.helpers import TwistdServer
from tests.test_auth import PasswordHandler
from tests.test_protocol import RecordingHandler
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Session
from twisted_smtpd._serving.service import SMTPServer

TIMEOUT = 30.0
MESSAGE = b"Subject: tls\r\n\r\nover TLS\r\n"


def peerName(der: bytes) -> list[str]:
    """
    The DNS names of a DER certificate.
    """
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.DNSName)


def clientContext(
    ca: CertificateAuthority, client: IssuedCertificate | None = None
) -> ssl.SSLContext:
    """
    A client context trusting only the test CA; the name is checked by the
    tests that care.
    """
    ctx = ssl.create_default_context(cafile=ca.certificatePath)
    ctx.check_hostname = False
    if client is not None:
        ctx.load_cert_chain(client.certificatePath, client.keyPath)
    return ctx


def readReplies(sock: ssl.SSLSocket | socket.socket) -> bytes:
    """
    Read until the peer closes (bounded by the socket timeout).
    """
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        out += chunk
    return out


class TLSAuthTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.ca = CertificateAuthority(self.mktemp())
        self.cert = self.ca.server("mail.example.com", "localhost")

    @inlineCallbacks
    def serve(
        self, handler: Any = None, listen: str = "tcp:0:interface=127.0.0.1", **options: Any
    ) -> Any:
        options.setdefault("name", "mail.example.com")
        options.setdefault("disableReverseLookup", True)
        options.setdefault("certificate", self.cert.certificatePath)
        options.setdefault("privateKey", self.cert.keyPath)
        server = SMTPServer(
            handler if handler is not None else RecordingHandler(),
            ServerOptions(**options),
            reactor=reactor,
        )
        port = yield server.listen(listen)
        self.addCleanup(server.close)
        self.server = server
        return port.getHost().port

    @inlineCallbacks
    def test_smtplibStartTLSLogin(self) -> Any:
        """
        smtplib: STARTTLS, then AUTH LOGIN, then a message; the client saw the
        configured certificate, and the session was ESMTPSA.
        """
        handler = PasswordHandler()
        port = yield self.serve(handler, authMethods=["LOGIN"])
        ctx = clientContext(self.ca)

        def client() -> bytes:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as s:
                s.ehlo("client.example.com")
                if not s.has_extn("starttls") or s.has_extn("auth"):
                    raise AssertionError("STARTTLS must be offered and AUTH not before TLS")
                s.starttls(context=ctx)
                s.ehlo("client.example.com")
                s.login("alice", "secret")
                s.sendmail("a@example.com", ["b@example.com"], MESSAGE)
                der = s.sock.getpeercert(binary_form=True)
                assert der is not None
                return der

        der = yield deferToThread(client)
        self.assertIn("mail.example.com", peerName(der))
        self.assertEqual(handler.messages[0][2], MESSAGE)
        self.assertEqual(handler.sessions[0].transmissionType, "ESMTPSA")
        self.assertEqual(handler.requests[0].method, "LOGIN")
        tls = handler.sessions[0].tls
        assert tls is not None
        self.assertIn(tls.protocol, ("TLSv1.2", "TLSv1.3"))

    @inlineCallbacks
    def test_pipelinedAfterStartTLSNeverRun(self) -> Any:
        """
        C{STARTTLS\\r\\nNOOP\\r\\n} in one packet: after the handshake, no reply
        to the NOOP ever arrives; the first reply over TLS is the one to our
        own QUIT.
        """
        port = yield self.serve()
        ctx = clientContext(self.ca)

        def client() -> tuple[bytes, bytes]:
            raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            f = raw.makefile("rb")
            f.readline()
            raw.sendall(b"EHLO c\r\n")
            while f.readline()[3:4] == b"-":
                pass
            raw.sendall(b"STARTTLS\r\nNOOP\r\n")
            ready = f.readline()
            with ctx.wrap_socket(raw, server_hostname="mail.example.com") as tls:
                tls.sendall(b"QUIT\r\n")
                return ready, readReplies(tls)

        ready, after = yield deferToThread(client)
        self.assertEqual(ready, b"220 2.0.0 Ready to start TLS\r\n")
        self.assertEqual(after, b"221 2.0.0 mail.example.com Closing connection\r\n")

    @inlineCallbacks
    def test_implicitTLS(self) -> Any:
        """
        An C{ssl:} listener serves implicit TLS (RFC 8314): the session is
        secure from the start, onSecure runs, STARTTLS is not offered.
        """
        secured: list[Session] = []

        class Handler(RecordingHandler):
            def onSecure(self, session: Session) -> object:
                secured.append(session)
                return None

        handler = Handler()
        port = yield self.serve(handler, listen="ssl:0:interface=127.0.0.1")
        ctx = clientContext(self.ca)

        def client() -> bool:
            with smtplib.SMTP_SSL("127.0.0.1", port, timeout=TIMEOUT, context=ctx) as s:
                s.ehlo("c")
                offered = s.has_extn("starttls")
                s.sendmail("a@example.com", ["b@example.com"], MESSAGE)
                return offered

        offered = yield deferToThread(client)
        self.assertFalse(offered)
        self.assertEqual(len(secured), 1)
        self.assertTrue(secured[0].secure)
        self.assertEqual(handler.messages[0][2], MESSAGE)
        self.assertEqual(handler.sessions[0].transmissionType, "ESMTPS")

    @inlineCallbacks
    def test_securityLevelOfCipherString(self) -> Any:
        """
        The C{@SECLEVEL=4} of C{tlsCiphers} holds for STARTTLS and for an
        C{ssl:} listener using the server's certificate: with an EC P-384
        certificate, a TLS 1.2 client offering only a 128-bit cipher fails
        its handshake, one offering a 256-bit cipher gets through.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        from tests.test_tlssettings import _selfSignedFiles

        key = ec.generate_private_key(ec.SECP384R1())
        certificate, keyPath = _selfSignedFiles(self.mktemp(), key, hashes.SHA384())
        options = {
            "certificate": certificate,
            "privateKey": keyPath,
            "tlsCiphers": "DEFAULT:@SECLEVEL=4",
        }
        starttls = yield self.serve(**options)
        implicit = yield self.serve(listen="ssl:0:interface=127.0.0.1", **options)

        def context(cipher: str) -> ssl.SSLContext:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(cipher + ":@SECLEVEL=0")
            return ctx

        def client(cipher: str) -> list[str]:
            outcomes = []
            try:
                with smtplib.SMTP("127.0.0.1", starttls, timeout=TIMEOUT) as s:
                    s.starttls(context=context(cipher))
                    s.ehlo("c")
                    outcomes.append("starttls")
            except (ssl.SSLError, smtplib.SMTPException, OSError):
                outcomes.append("starttls refused")
            try:
                with smtplib.SMTP_SSL(
                    "127.0.0.1", implicit, timeout=TIMEOUT, context=context(cipher)
                ) as s:
                    s.ehlo("c")
                    outcomes.append("implicit")
            except (ssl.SSLError, smtplib.SMTPException, OSError):
                outcomes.append("implicit refused")
            return outcomes

        weak = yield deferToThread(client, "ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertEqual(weak, ["starttls refused", "implicit refused"])
        strong = yield deferToThread(client, "ECDHE-ECDSA-AES256-GCM-SHA384")
        self.assertEqual(strong, ["starttls", "implicit"])

    @inlineCallbacks
    def test_implicitTLSRefusedForLimit(self) -> Any:
        """
        A client of an C{ssl:} listener refused for C{maxClients} that
        finishes the handshake reads its 421 and the connection closes; its
        session never begins (no C{onConnect}, no C{secure} or C{connect}
        event), the refusal is all the observers hear of it.
        """
        connected: list[Session] = []
        events: list[tuple[str, str]] = []

        class Handler(RecordingHandler):
            def onConnect(self, session: Session) -> object:
                connected.append(session)
                return None

        port = yield self.serve(Handler(), listen="ssl:0:interface=127.0.0.1", maxClients=1)
        self.server.addObserver(lambda event, session, data: events.append((event, session.id)))
        ctx = clientContext(self.ca)

        def client() -> bytes:
            first = ctx.wrap_socket(
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT),
                server_hostname="mail.example.com",
            )
            with first:
                first.recv(100)
                second = ctx.wrap_socket(
                    socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT),
                    server_hostname="mail.example.com",
                )
                with second:
                    return readReplies(second)

        refused = yield deferToThread(client)
        self.assertEqual(refused, b"421 4.7.0 Too many connections, try again later\r\n")
        self.assertEqual(len(connected), 1)
        self.assertEqual([event for event, sid in events if sid != connected[0].id], ["reject"])

    @inlineCallbacks
    def test_sni(self) -> Any:
        """
        Each SNI name gets its own certificate, checked with the name verified
        by the client; an unknown name gets the default one.
        """
        one = self.ca.server("one.example.com")
        two = self.ca.server("two.example.com")
        port = yield self.serve(
            sniOptions={
                "one.example.com": (one.certificatePath, one.keyPath),
                "two.example.com": (two.certificatePath, two.keyPath),
            }
        )
        ctx = ssl.create_default_context(cafile=self.ca.certificatePath)

        def names(servername: str) -> list[str]:
            with smtplib.SMTP(timeout=TIMEOUT) as s:
                s._host = servername  # the name smtplib sends as SNI and verifies
                s.connect("127.0.0.1", port)
                s.ehlo("c")
                s.starttls(context=ctx)
                der = s.sock.getpeercert(binary_form=True)
                assert der is not None
                return peerName(der)

        self.assertEqual((yield deferToThread(names, "one.example.com")), ["one.example.com"])
        self.assertEqual((yield deferToThread(names, "two.example.com")), ["two.example.com"])
        self.assertIn("mail.example.com", (yield deferToThread(names, "mail.example.com")))

    @inlineCallbacks
    def test_sniNameInSession(self) -> Any:
        """
        The SNI name the client asked for is in session.tls.servername.
        """
        handler = RecordingHandler()
        port = yield self.serve(handler)
        ctx = ssl.create_default_context(cafile=self.ca.certificatePath)

        def client() -> None:
            with smtplib.SMTP(timeout=TIMEOUT) as s:
                s._host = "localhost"
                s.connect("127.0.0.1", port)
                s.starttls(context=ctx)
                s.sendmail("a@example.com", ["b@example.com"], MESSAGE)

        yield deferToThread(client)
        tls = handler.sessions[0].tls
        assert tls is not None
        self.assertEqual(tls.servername, "localhost")

    @inlineCallbacks
    def test_clientCertificate(self) -> Any:
        """
        With requestCert, a client certificate from the trusted CA is accepted
        and visible to onSecure; one from another CA is refused in the
        handshake.
        """
        seen: list[Any] = []

        class Handler(RecordingHandler):
            def onSecure(self, session: Session) -> object:
                assert session.tls is not None
                seen.append(session.tls.peerCertificate)
                return None

        port = yield self.serve(Handler(), requestCert=True, caCertificates=self.ca.certificatePath)
        good = self.ca.client("alice")
        other = CertificateAuthority(self.mktemp(), commonName="other CA").client("mallory")

        def client(cert: IssuedCertificate) -> bytes:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as s:
                s.ehlo("c")
                s.starttls(context=clientContext(self.ca, cert))
                code, text = s.noop()
                return b"%d" % code

        self.assertEqual((yield deferToThread(client, good)), b"250")
        self.assertEqual(len(seen), 1)
        self.assertIn("alice", str(seen[0].get_subject()))
        failure = yield self.assertFailure(
            deferToThread(client, other), ssl.SSLError, smtplib.SMTPServerDisconnected, OSError
        )
        self.assertIsNotNone(failure)
        self.assertEqual(len(seen), 1)

    @inlineCallbacks
    def test_onSecureRejectsCertificate(self) -> Any:
        """
        onSecure may refuse a session by its certificate: the client gets the
        reply over TLS and the connection closes.
        """

        class Handler(RecordingHandler):
            def onSecure(self, session: Session) -> object:
                raise SMTPError(554, "certificate not allowed here", "5.7.1")

        port = yield self.serve(Handler())
        ctx = clientContext(self.ca)

        def client() -> bytes:
            raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            f = raw.makefile("rb")
            f.readline()
            raw.sendall(b"STARTTLS\r\n")
            f.readline()
            with ctx.wrap_socket(raw, server_hostname="mail.example.com") as tls:
                return readReplies(tls)

        out = yield deferToThread(client)
        self.assertEqual(out, b"554 5.7.1 certificate not allowed here\r\n")

    @inlineCallbacks
    def test_reloadCertificates(self) -> Any:
        """
        After the certificate files change, reloadCertificates() makes new
        clients see the new certificate, without a restart.
        """
        path = os.path.join(self.mktemp())
        os.makedirs(path)
        certPath = os.path.join(path, "cert.pem")
        keyPath = os.path.join(path, "key.pem")
        shutil.copy(self.cert.certificatePath, certPath)
        shutil.copy(self.cert.keyPath, keyPath)
        port = yield self.serve(certificate=certPath, privateKey=keyPath)
        ctx = clientContext(self.ca)

        def seen() -> list[str]:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as s:
                s.starttls(context=ctx)
                der = s.sock.getpeercert(binary_form=True)
                assert der is not None
                return peerName(der)

        self.assertIn("mail.example.com", (yield deferToThread(seen)))
        renewed = self.ca.server("renewed.example.com")
        shutil.copy(renewed.certificatePath, certPath)
        shutil.copy(renewed.keyPath, keyPath)
        self.server.reloadCertificates()
        self.assertEqual((yield deferToThread(seen)), ["renewed.example.com"])

    @inlineCallbacks
    def test_swaksAuth(self) -> Any:
        """
        swaks with --tls and each of PLAIN, LOGIN and CRAM-MD5 delivers a
        message as alice.
        """
        swaks = shutil.which("swaks")
        if swaks is None:
            if os.environ.get("CI"):
                self.fail("swaks is not installed (Debian package swaks)")
            raise SkipTest("swaks is not installed")
        handler = PasswordHandler()
        port = yield self.serve(handler, authMethods=["PLAIN", "LOGIN", "CRAM-MD5"])

        def run(method: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [
                    swaks,
                    "--server",
                    f"127.0.0.1:{port}",
                    "--tls",
                    "--auth",
                    method,
                    "--auth-user",
                    "alice",
                    "--auth-password",
                    "secret",
                    "--from",
                    "a@example.com",
                    "--to",
                    "b@example.com",
                    "--timeout",
                    "30",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )

        for method in ("PLAIN", "LOGIN", "CRAM-MD5"):
            result = yield deferToThread(run, method)
            self.assertEqual(result.returncode, 0, (method, result.stdout[-2000:]))
        self.assertEqual([r.method for r in handler.requests], ["PLAIN", "LOGIN", "CRAM-MD5"])
        self.assertEqual(len(handler.messages), 3)
        self.assertEqual({s.transmissionType for s in handler.sessions}, {"ESMTPSA"})

    @inlineCallbacks
    def test_authBeforeTLSRefused(self) -> Any:
        """
        Over a real connection, AUTH before STARTTLS gets 538.
        """
        port = yield self.serve(PasswordHandler())

        def client() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as s:
                s.ehlo("c")
                return s.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")

        code, text = yield deferToThread(client)
        self.assertEqual(code, 538)


class TwistdAuthTests(SynchronousTestCase):
    """
    C{twistd -n smtpd --auth ...}: AUTH backed by C{twisted.cred} checkers
    from the command line, over real sockets with smtplib.
    """

    def serve(self, *args: str) -> int:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        server = TwistdServer(["--sink", "--allow-insecure-auth", *args], directory)
        self.addCleanup(server.kill)
        port = server.start()
        self.directory = directory
        return port

    def check(self, port: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as s:
            s.ehlo("c")
            self.assertIn("PLAIN", s.esmtp_features.get("auth", ""))
            code, _ = s.docmd("MAIL", "FROM:<a@example.com>")
            self.assertEqual(code, 530)
            with self.assertRaises(smtplib.SMTPAuthenticationError) as e:
                s.login("alice", "wrong")
            self.assertEqual(e.exception.smtp_code, 535)
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as s:
            s.login("alice", "secret")
            self.assertEqual(s.sendmail("a@example.com", ["b@example.com"], MESSAGE), {})

    def test_memoryChecker(self) -> None:
        """
        C{--auth memory:alice:secret}: alice logs in with her password, a
        wrong one gets 535, MAIL before AUTH gets 530.
        """
        self.check(self.serve("--auth", "memory:alice:secret"))

    def test_fileChecker(self) -> None:
        """
        C{--auth file:PATH} reads C{user:password} lines.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("alice:secret\nbob:other\n")
        self.check(self.serve("--auth", f"file:{path}"))
