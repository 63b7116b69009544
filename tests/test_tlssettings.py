# -*- test-case-name: tests.test_tlssettings -*-
"""
TLS ciphers, minimum version and the SNI callback, with real handshakes in
memory (L{tests.test_tls.handshake}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred, succeed
from twisted.internet.ssl import CertificateOptions

from tests.certs import IssuedCertificate, TLSClient
from tests.test_tls import _TLSTestCase, handshake
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.cipherprobe import certificateCipher
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd._serving.service import SMTPServer
from twisted_smtpd._serving.sni import TLSPolicy
from twisted_smtpd._serving.tls import ServerTLS, peerCertificateVerified, tlsInfo
from twisted_smtpd.handlers import SinkHandler


def _options(issued: IssuedCertificate) -> Any:
    from OpenSSL import crypto

    return CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(issued.key),
        certificate=crypto.X509.from_cryptography(issued.certificate),
    )


class PolicyTests(_TLSTestCase):
    """
    C{minVersion} and C{ciphers}.
    """

    def test_minimumTLS13(self) -> None:
        """
        With C{minVersion="TLSv1.3"}, a TLS 1.2 client is refused and a
        TLS 1.3 one accepted.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath, minVersion="1.3")
        refused = handshake(tls.contextFactory(), TLSClient(maximumVersion=SSL.TLS1_2_VERSION))
        self.assertHandshakeRefused(refused)
        accepted = handshake(tls.contextFactory())
        self.assertEqual(tlsInfo(accepted.server.transport).protocol, "TLSv1.3")

    def test_ciphers(self) -> None:
        """
        The cipher string chooses the TLS 1.2 cipher.
        """
        for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
            tls = ServerTLS(self.default.certificatePath, self.default.keyPath, ciphers=cipher)
            result = handshake(tls.contextFactory(), TLSClient(maximumVersion=SSL.TLS1_2_VERSION))
            self.assertEqual(tlsInfo(result.server.transport).cipher, cipher)

    def test_badSettings(self) -> None:
        """
        A cipher string selecting nothing, or an unknown version, is a
        L{ValueError} at once.
        """
        e = self.assertRaises(
            ValueError,
            ServerTLS,
            self.default.certificatePath,
            self.default.keyPath,
            ciphers="NO-SUCH-CIPHER",
        )
        self.assertIn("selects no cipher", str(e))
        self.assertRaises(ValueError, TLSPolicy, None, "1.1")

    def test_settingsRefusedAtConstruction(self) -> None:
        """
        A server whose C{tlsCiphers} or C{tlsMinVersion} no TLS context can
        be made with is refused when it is made, with one line naming the
        setting, even with no certificate configured (when the contexts
        would be made only at the first STARTTLS): a cipher string that
        selects nothing, one OpenSSL cannot parse, or one not in ASCII.
        """
        for settings, message in [
            ({"tlsCiphers": "BOGUS"}, "tlsCiphers: the cipher string 'BOGUS' selects no cipher"),
            (
                {"tlsCiphers": "!!!"},
                "tlsCiphers: the cipher string '!!!' is not valid: invalid command",
            ),
            ({"tlsCiphers": "\xe9"}, "tlsCiphers: the cipher string '\xe9' is not ASCII"),
            (
                {"tlsMinVersion": "1.1"},
                "tlsMinVersion: unknown TLS version '1.1'; expected 1.2 or 1.3",
            ),
        ]:
            options = ServerOptions(**settings)
            for make in (SMTPServerFactory, SMTPServer):
                e = self.assertRaises(ValueError, make, SinkHandler(), options)
                self.assertEqual(str(e), message)
        SMTPServerFactory(SinkHandler(), ServerOptions(tlsCiphers="ECDHE+AESGCM"))

    def test_noCertificateCipherRefusedAtConstruction(self) -> None:
        """
        A cipher string selecting only ciphers that no certificate can be
        used with (PSK, SRP, anonymous) makes a context OpenSSL accepts,
        and then refuses every TLS 1.2 client: it is refused when the
        server is made, with one line naming the setting (and by
        L{ServerTLS} itself, naming the certificate).  With TLS 1.3 as the
        minimum the string is not used, and it is accepted.
        """
        for ciphers in ("PSK", "aPSK", "kPSK", "SRP", "aNULL"):
            e = self.assertRaises(
                ValueError,
                ServerTLS,
                self.default.certificatePath,
                self.default.keyPath,
                ciphers=ciphers,
            )
            self.assertIn("selects no TLS 1.2 cipher usable with the EC key", str(e))
            options = ServerOptions(tlsCiphers=ciphers)
            for make in (SMTPServerFactory, SMTPServer):
                e = self.assertRaises(ValueError, make, SinkHandler(), options)
                self.assertEqual(
                    str(e),
                    f"tlsCiphers: the cipher string {ciphers!r} selects no cipher usable"
                    " with a certificate",
                )
        SMTPServerFactory(SinkHandler(), ServerOptions(tlsCiphers="PSK", tlsMinVersion="TLSv1.3"))

    def test_cipherForTheCertificatesKey(self) -> None:
        """
        A cipher string for the certificates of one kind of key only is
        accepted when the certificate served has a key of that kind, and
        refused, naming the certificate, when it has not: C{aECDSA} with
        an RSA certificate, C{aRSA} with an EC one, or with the self-signed
        certificate (EC) made when none is configured; an SNI certificate
        is checked too.  (C{aDSS} is left out: its ciphers all need
        Diffie-Hellman parameters, which OpenSSL 3.2, the dependency
        floor's, does not choose by itself.)
        """
        rsaCertificate = self.ca.issue("rsa.example.com", ("rsa.example.com",), rsaKey=True)
        ecPath, rsaPath = self.default.certificatePath, rsaCertificate.certificatePath
        for ciphers, certificate in [
            ("aECDSA", ecPath),
            ("ECDHE-ECDSA-AES128-GCM-SHA256:PSK", ecPath),
            ("aRSA", rsaPath),
            ("kRSA", rsaPath),
            ("aECDSA", None),
        ]:
            options = ServerOptions(tlsCiphers=ciphers, certificate=certificate)
            SMTPServerFactory(SinkHandler(), options)
        for ciphers, certificate, kind, what in [
            ("aECDSA", rsaPath, "RSA", f"certificate {rsaPath}"),
            ("aRSA", ecPath, "EC", f"certificate {ecPath}"),
            ("kRSA", ecPath, "EC", f"certificate {ecPath}"),
            ("aRSA", None, "EC", "the self-signed certificate (no certificate is configured)"),
        ]:
            options = ServerOptions(tlsCiphers=ciphers, certificate=certificate)
            for make in (SMTPServerFactory, SMTPServer):
                e = self.assertRaises(ValueError, make, SinkHandler(), options)
                self.assertEqual(
                    str(e),
                    f"tlsCiphers: the cipher string {ciphers!r} selects no TLS 1.2 cipher"
                    f" usable with the {kind} key of {what}",
                )
        sni = {"rsa.example.com": (rsaPath, rsaCertificate.keyPath)}
        options = ServerOptions(tlsCiphers="aECDSA", certificate=ecPath, sniOptions=sni)
        e = self.assertRaises(ValueError, SMTPServerFactory, SinkHandler(), options)
        self.assertEqual(
            str(e),
            "tlsCiphers: the cipher string 'aECDSA' selects no TLS 1.2 cipher usable with"
            f" the RSA key of certificate {rsaPath} (SNI rsa.example.com)",
        )
        SMTPServerFactory(
            SinkHandler(), ServerOptions(tlsCiphers="aRSA", certificate=ecPath, tlsMinVersion="1.3")
        )

    def test_cipherBelowSecurityLevelRefused(self) -> None:
        """
        A cipher string OpenSSL parses but whose ciphers its security level
        does not allow (C{eNULL}) is a L{ValueError} naming the setting, not
        an C{OpenSSL.SSL.Error}.
        """
        for make in (SMTPServerFactory, SMTPServer):
            e = self.assertRaises(
                ValueError, make, SinkHandler(), ServerOptions(tlsCiphers="eNULL")
            )
            self.assertTrue(
                str(e).startswith("tlsCiphers: the cipher string 'eNULL' is refused: "), str(e)
            )

    def test_probeLeavesOutCiphersWithoutCertificate(self) -> None:
        """
        The probe does not count a handshake finished without the
        certificate (an anonymous cipher its server prefers): it tries
        again without that cipher, and finds the certificate's one behind
        it, or none.
        """

        def contexts(ciphers: bytes) -> Callable[[], SSL.Context]:
            def newContext() -> SSL.Context:
                context = SSL.Context(SSL.TLS_METHOD)
                context.set_cipher_list(ciphers)
                return context

            return newContext

        rsaBehind = contexts(b"aNULL:ECDHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0")
        self.assertEqual(certificateCipher(rsaBehind), "ECDHE-RSA-AES128-GCM-SHA256")
        self.assertIsNone(certificateCipher(contexts(b"aNULL:@SECLEVEL=0")))


class SNICallbackTests(_TLSTestCase):
    """
    C{sniCallback} chooses certificates for names not configured.
    """

    def setUp(self) -> None:
        super().setUp()
        self.other = self.ca.server("other.example.com")
        self.calls: list[str] = []

    def test_synchronous(self) -> None:
        """
        A context answered at once is served to that handshake; names it
        answers C{None} for get the default.
        """

        def callback(name: str) -> object:
            self.calls.append(name)
            return _options(self.other) if name == "other.example.com" else None

        tls = ServerTLS(self.default.certificatePath, self.default.keyPath, sniCallback=callback)
        result = handshake(tls.contextFactory(), TLSClient(servername="Other.Example.com."))
        self.assertEqual(result.serverCertificate, self.other.certificate)
        result = handshake(tls.contextFactory(), TLSClient(servername="nobody.example.com"))
        self.assertEqual(result.serverCertificate, self.default.certificate)
        result = handshake(tls.contextFactory(), TLSClient(servername="other.example.com"))
        self.assertEqual(result.serverCertificate, self.other.certificate)
        # The second handshake for the name came from the cache.
        self.assertEqual(self.calls, ["other.example.com", "nobody.example.com"])

    def test_deferred(self) -> None:
        """
        A Deferred answer is not waited for: that handshake gets the
        default certificate, the next ones the context it fired with; the
        callback is not asked again while it is pending.
        """
        pending: Deferred[object] = Deferred()

        def callback(name: str) -> object:
            self.calls.append(name)
            return pending

        tls = ServerTLS(self.default.certificatePath, self.default.keyPath, sniCallback=callback)
        for _ in range(2):
            result = handshake(tls.contextFactory(), TLSClient(servername="other.example.com"))
            self.assertEqual(result.serverCertificate, self.default.certificate)
        pending.callback(_options(self.other).getContext())
        result = handshake(tls.contextFactory(), TLSClient(servername="other.example.com"))
        self.assertEqual(result.serverCertificate, self.other.certificate)
        self.assertEqual(self.calls, ["other.example.com"])

    def test_staticFirstAndReload(self) -> None:
        """
        C{sniOptions} names never reach the callback; a reload empties the
        callback's cache.
        """

        def callback(name: str) -> object:
            self.calls.append(name)
            return _options(self.other)

        tls = ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            sniOptions={"static.example.com": (self.other.certificatePath, self.other.keyPath)},
            sniCallback=callback,
        )
        handshake(tls.contextFactory(), TLSClient(servername="static.example.com"))
        handshake(tls.contextFactory(), TLSClient(servername="dyn.example.com"))
        tls.reload()
        handshake(tls.contextFactory(), TLSClient(servername="dyn.example.com"))
        self.assertEqual(self.calls, ["dyn.example.com", "dyn.example.com"])

    def test_notHostNames(self) -> None:
        """
        An SNI name that is no host name (a path, white space, control
        characters) never reaches the callback: the default certificate is
        served.
        """

        def callback(name: str) -> object:
            self.calls.append(name)
            return _options(self.other)

        tls = ServerTLS(self.default.certificatePath, self.default.keyPath, sniCallback=callback)
        for name in [
            "../../etc/passwd",
            "a b.example.com",
            "\x1b[2kx.example.com",
            "*.example.com",
        ]:
            result = handshake(tls.contextFactory(), TLSClient(servername=name))
            self.assertEqual(result.serverCertificate, self.default.certificate)
        result = handshake(tls.contextFactory(), TLSClient(servername="Dyn.Example.com."))
        self.assertEqual(result.serverCertificate, self.other.certificate)
        self.assertEqual(self.calls, ["dyn.example.com"])

    def test_clientCertificates(self) -> None:
        """
        With C{requestCert}, a client asking for a name the callback
        answers is verified against C{caCertificates} as for every other
        name: a certificate they sign is taken and reported verified, one
        of another CA is refused, after a reload too.
        """
        from tests.certs import CertificateAuthority

        options = _options(self.other)
        tls = ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            caCertificates=self.ca.certificatePath,
            requestCert=True,
            sniCallback=lambda name: options,
        )
        foreign = CertificateAuthority(self.mktemp(), "foreign CA")
        alice = TLSClient(servername="other.example.com", certificate=self.ca.client("alice"))
        mallory = TLSClient(servername="other.example.com", certificate=foreign.client("mallory"))
        result = handshake(tls.contextFactory(), alice)
        self.assertTrue(result.server.handshakeDone)
        self.assertEqual(result.serverCertificate, self.other.certificate)
        self.assertTrue(peerCertificateVerified(result.server.transport))
        self.assertHandshakeRefused(handshake(tls.contextFactory(), mallory))
        tls.reload()
        result = handshake(tls.contextFactory(), alice)
        self.assertTrue(peerCertificateVerified(result.server.transport))
        self.assertEqual(result.serverCertificate, self.other.certificate)
        self.assertHandshakeRefused(handshake(tls.contextFactory(), mallory))

    def test_unusableAnswer(self) -> None:
        """
        An answer whose context cannot be made (a C{CertificateOptions}
        whose key is not the certificate's) is logged as the callback's
        failure, and the default certificate is served, at once and from a
        Deferred alike.
        """
        from OpenSSL import SSL, crypto

        mismatched = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(self.default.key),
            certificate=crypto.X509.from_cryptography(self.other.certificate),
        )
        for answer in [mismatched, succeed(mismatched)]:
            tls = ServerTLS(
                self.default.certificatePath,
                self.default.keyPath,
                sniCallback=lambda name, answer=answer: answer,
            )
            result = handshake(tls.contextFactory(), TLSClient(servername="x.example.com"))
            self.assertTrue(result.server.handshakeDone)
            self.assertEqual(result.serverCertificate, self.default.certificate)
            self.assertEqual(len(self.flushLoggedErrors(SSL.Error)), 1)

    def test_failingCallback(self) -> None:
        """
        A callback that raises is logged; the default certificate is served.
        """

        def callback(name: str) -> object:
            raise RuntimeError("boom")

        tls = ServerTLS(self.default.certificatePath, self.default.keyPath, sniCallback=callback)
        result = handshake(tls.contextFactory(), TLSClient(servername="x.example.com"))
        self.assertEqual(result.serverCertificate, self.default.certificate)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


def _selfSignedFiles(directory: str, key: Any, digest: Any) -> tuple[str, str]:
    """
    Write a self-signed certificate for C{key}, signed with C{digest}, and
    the key; return their paths.
    """
    import os

    from cryptography.hazmat.primitives import serialization

    from twisted_smtpd._serving.selfsigned import selfSignedBuilder

    os.makedirs(directory, exist_ok=True)
    certificate = selfSignedBuilder(key, "level.example.com").sign(key, digest)
    paths = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(paths[0], "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths


class _CipherClient(TLSClient):
    """
    A TLS 1.2 client offering only C{ciphers}, at security level 0.
    """

    def __init__(self, ciphers: bytes) -> None:
        super().__init__(maximumVersion=SSL.TLS1_2_VERSION)
        self.ciphers = ciphers

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
        context.set_cipher_list(self.ciphers + b":@SECLEVEL=0")
        return SSL.Connection(context, None)


class SecurityLevelTests(_TLSTestCase):
    """
    C{@SECLEVEL=N} in the cipher string is OpenSSL's security level of every
    context: keys, groups and ciphers below it are refused.
    """

    def test_keyBelowLevelRefused(self) -> None:
        """
        A certificate whose key is weaker than the security level the
        cipher string sets is refused when the contexts are made, with one
        line naming the file and the level: an EC P-256 key (128 bits) at
        levels 4 and 5, an RSA 2048-bit one (112 bits) at level 3.  At a
        level it reaches, it is served.
        """
        rsaCertificate = self.ca.issue("rsa.example.com", ("rsa.example.com",), rsaKey=True)
        for issued, ciphers, level in [
            (self.default, "DEFAULT:@SECLEVEL=4", 4),
            (self.default, "DEFAULT@SECLEVEL=5", 5),
            (rsaCertificate, "ECDHE+AESGCM:@SECLEVEL=3", 3),
        ]:
            e = self.assertRaises(
                ValueError, ServerTLS, issued.certificatePath, issued.keyPath, ciphers=ciphers
            )
            self.assertEqual(
                str(e),
                f"cannot use certificate {issued.certificatePath} at the security level"
                f" {level} of the cipher string: ee key too small",
            )
        for issued, ciphers in [
            (self.default, "DEFAULT:@SECLEVEL=3"),
            (rsaCertificate, "ECDHE+AESGCM:@SECLEVEL=2"),
        ]:
            tls = ServerTLS(issued.certificatePath, issued.keyPath, ciphers=ciphers)
            result = handshake(tls.contextFactory(), TLSClient(maximumVersion=SSL.TLS1_2_VERSION))
            self.assertTrue(result.server.handshakeDone)

    def test_levelLowered(self) -> None:
        """
        A level below OpenSSL's default is applied too: an RSA 1024-bit key
        (80 bits) is served at level 1, and refused at level 2.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        certificate, keyPath = _selfSignedFiles(self.mktemp(), key, hashes.SHA256())
        tls = ServerTLS(certificate, keyPath, ciphers="DEFAULT:@SECLEVEL=1")
        result = handshake(tls.contextFactory(), TLSClient(maximumVersion=SSL.TLS1_2_VERSION))
        self.assertTrue(result.server.handshakeDone)
        self.assertRaises(
            ValueError, ServerTLS, certificate, keyPath, ciphers="DEFAULT:@SECLEVEL=2"
        )

    def test_ciphersBelowLevelRefusedInHandshake(self) -> None:
        """
        With an EC P-384 certificate at level 4 (192 bits), a TLS 1.2
        client offering only a 128-bit cipher is refused, one offering a
        256-bit one accepted; the last C{@SECLEVEL} of the string counts.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP384R1())
        certificate, keyPath = _selfSignedFiles(self.mktemp(), key, hashes.SHA384())
        tls = ServerTLS(certificate, keyPath, ciphers="DEFAULT:@SECLEVEL=1:@SECLEVEL=4")
        weak = handshake(tls.contextFactory(), _CipherClient(b"ECDHE-ECDSA-AES128-GCM-SHA256"))
        self.assertHandshakeRefused(weak)
        strong = handshake(tls.contextFactory(), _CipherClient(b"ECDHE-ECDSA-AES256-GCM-SHA384"))
        self.assertEqual(tlsInfo(strong.server.transport).cipher, "ECDHE-ECDSA-AES256-GCM-SHA384")

    def test_selfSignedBelowLevelRefusedAtConstruction(self) -> None:
        """
        With no certificate configured, a level the self-signed
        certificate's EC P-256 key does not reach is refused when the
        server is made, with one line naming the setting, rather than at
        the first STARTTLS; a certificate with a key strong enough passes
        the cipher check at that level.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        ciphers = "DEFAULT:@SECLEVEL=4"
        for make in (SMTPServerFactory, SMTPServer):
            e = self.assertRaises(
                ValueError, make, SinkHandler(), ServerOptions(tlsCiphers=ciphers)
            )
            self.assertEqual(
                str(e),
                f"tlsCiphers: the cipher string {ciphers!r} sets a security level that refuses"
                " the EC P-256 key of the self-signed certificate (no certificate is"
                " configured): ee key too small",
            )
        SMTPServerFactory(SinkHandler(), ServerOptions(tlsCiphers="DEFAULT:@SECLEVEL=3"))
        key = ec.generate_private_key(ec.SECP384R1())
        certificate, keyPath = _selfSignedFiles(self.mktemp(), key, hashes.SHA384())
        options = ServerOptions(tlsCiphers=ciphers, certificate=certificate, privateKey=keyPath)
        SMTPServerFactory(SinkHandler(), options)
