# -*- test-case-name: tests.test_tls -*-
"""
Tests for L{twisted_smtpd._serving.tls}: real TLS handshakes in memory, through
Twisted's C{TLSMemoryBIOFactory} on both sides of an C{iosim} pump.
"""

from __future__ import annotations

import datetime
import gc
import ipaddress
import os
import shutil

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.certs import CertificateAuthority, IssuedCertificate, TLSClient
from twisted_smtpd._core.session import TLSInfo
from twisted_smtpd._serving.selfsigned import selfSignedCertificate
from twisted_smtpd._serving.tls import ServerTLS, peerCertificateVerified, tlsInfo


@implementer(IHandshakeListener)
class _Recorder(Protocol):
    """
    Remembers whether the handshake finished and why the connection ended.
    """

    handshakeDone = False
    lostReason: Failure | None = None

    def handshakeCompleted(self) -> None:
        self.handshakeDone = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lostReason = reason


@frozen
class _Handshake:
    server: _Recorder
    client: _Recorder
    pump: IOPump

    @property
    def serverCertificate(self) -> x509.Certificate:
        """
        The certificate the client received.
        """
        assert self.client.transport is not None
        peer = self.client.transport.getPeerCertificate()
        assert peer is not None
        certificate: x509.Certificate = peer.to_cryptography()
        return certificate


def handshake(
    creator: object, tlsClient: TLSClient | None = None, steps: int | None = None
) -> _Handshake:
    """
    Connect a client using C{tlsClient} to a server using C{creator}, and
    pump until nothing moves (or only C{steps} times).
    """
    clock = Clock()
    serverFactory = TLSMemoryBIOFactory(creator, False, Factory.forProtocol(_Recorder), clock)
    clientFactory = TLSMemoryBIOFactory(
        tlsClient or TLSClient(), True, Factory.forProtocol(_Recorder), clock
    )
    serverTLS = serverFactory.buildProtocol(None)
    clientTLS = clientFactory.buildProtocol(None)
    # The wrapper forgets its protocol when the connection is lost.
    server, client = serverTLS.wrappedProtocol, clientTLS.wrappedProtocol
    _, _, pump = connectedServerAndClient(
        lambda: serverTLS, lambda: clientTLS, greet=False, clock=clock
    )
    if steps is None:
        pump.flush()
    else:
        for _ in range(steps):
            pump.pump()
    return _Handshake(server, client, pump)


class _TLSTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.ca = CertificateAuthority(self.directory)
        self.default = self.ca.server("default.example.com")

    def assertHandshakeRefused(self, result: _Handshake) -> None:
        """
        The server did not finish the handshake, ended the connection with an
        OpenSSL error, and the client's connection ended too.  (In TLS 1.3
        the client has finished its side before the server checks the
        client's certificate.)
        """
        self.assertFalse(result.server.handshakeDone)
        assert result.server.lostReason is not None
        self.assertIsInstance(result.server.lostReason.value, SSL.Error)
        self.assertIsNotNone(result.client.lostReason)


class CertificateSelectionTests(_TLSTestCase):
    """
    Which certificate a client receives: the default one, or the one for the
    SNI name it sent.
    """

    def setUp(self) -> None:
        super().setUp()
        self.first = self.ca.server("mail.example.com")
        self.second = self.ca.server("smtp.example.net")
        self.wildcard = self.ca.server("*.example.org")
        self.tls = ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            sniOptions={
                "mail.example.com": (self.first.certificatePath, self.first.keyPath),
                "SMTP.Example.NET.": (self.second.certificatePath, self.second.keyPath),
                "*.example.org": (self.wildcard.certificatePath, self.wildcard.keyPath),
            },
        )

    def certificateFor(self, servername: str | None) -> x509.Certificate:
        result = handshake(self.tls.contextFactory(), TLSClient(servername))
        self.assertTrue(result.server.handshakeDone)
        self.assertTrue(result.client.handshakeDone)
        return result.serverCertificate

    def test_noServerName(self) -> None:
        """
        A client that sends no SNI name gets the default certificate.
        """
        self.assertEqual(self.certificateFor(None), self.default.certificate)

    def test_firstName(self) -> None:
        """
        A client asking for the first configured name gets its certificate.
        """
        self.assertEqual(self.certificateFor("mail.example.com"), self.first.certificate)

    def test_secondName(self) -> None:
        """
        A client asking for another configured name gets that certificate;
        configured names are normalised (case, trailing dot).
        """
        self.assertEqual(self.certificateFor("smtp.example.net"), self.second.certificate)

    def test_caseInsensitive(self) -> None:
        """
        SNI names match regardless of case (RFC 6066 section 3, DNS names).
        """
        self.assertEqual(self.certificateFor("MAIL.Example.COM"), self.first.certificate)

    def test_unknownName(self) -> None:
        """
        A name with no entry gets the default certificate.
        """
        self.assertEqual(self.certificateFor("other.example.com"), self.default.certificate)

    def test_wildcard(self) -> None:
        """
        A C{*.domain} entry covers any single first label under the domain.
        """
        self.assertEqual(self.certificateFor("mx.example.org"), self.wildcard.certificate)
        self.assertEqual(self.certificateFor("MX2.EXAMPLE.ORG"), self.wildcard.certificate)

    def test_wildcardOneLabelOnly(self) -> None:
        """
        A C{*.domain} entry covers neither the domain itself nor names two
        labels below it.
        """
        self.assertEqual(self.certificateFor("example.org"), self.default.certificate)
        self.assertEqual(self.certificateFor("a.b.example.org"), self.default.certificate)

    def test_exactBeforeWildcard(self) -> None:
        """
        An exact entry wins over a wildcard covering the same name.
        """
        exact = self.ca.server("mx.example.org")
        tls = ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            sniOptions={
                "*.example.org": (self.wildcard.certificatePath, self.wildcard.keyPath),
                "mx.example.org": (exact.certificatePath, exact.keyPath),
            },
        )
        result = handshake(tls.contextFactory(), TLSClient("mx.example.org"))
        self.assertEqual(result.serverCertificate, exact.certificate)

    def test_tlsInfo(self) -> None:
        """
        L{tlsInfo} on the server's transport reports the SNI name as the
        client sent it, the protocol version and the cipher; no client
        certificate was asked for.
        """
        result = handshake(self.tls.contextFactory(), TLSClient("Mail.Example.com"))
        info = tlsInfo(result.server.transport)
        self.assertEqual(info.servername, "Mail.Example.com")
        self.assertEqual(info.protocol, "TLSv1.3")
        self.assertTrue(info.cipher)
        self.assertIsNone(info.peerCertificate)
        self.assertFalse(peerCertificateVerified(result.server.transport))

    def test_tlsInfoWithoutServerName(self) -> None:
        """
        Without SNI, L{tlsInfo} reports no server name.
        """
        result = handshake(self.tls.contextFactory(), TLSClient())
        self.assertIsNone(tlsInfo(result.server.transport).servername)

    def test_certificateChain(self) -> None:
        """
        Certificates after the first in the certificate file are sent as the
        chain.
        """
        chained = self.ca.issue("chained.example.com", ("chained.example.com",), chain=True)
        tls = ServerTLS(chained.certificatePath, chained.keyPath)
        result = handshake(tls.contextFactory())
        assert result.client.transport is not None
        chain = result.client.transport.getHandle().get_peer_cert_chain(as_cryptography=True)
        self.assertEqual(chain, [chained.certificate, self.ca.certificate])

    def test_keyInCertificateFile(self) -> None:
        """
        Without a key path, the key is read from the certificate file.
        """
        tls = ServerTLS(self.first.combinedPath)
        self.assertEqual(handshake(tls.contextFactory()).serverCertificate, self.first.certificate)


class ProtocolVersionTests(_TLSTestCase):
    """
    TLS 1.2 is the oldest version accepted.
    """

    def test_tls11Refused(self) -> None:
        """
        A client that offers at most TLS 1.1 is refused for its protocol
        version.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        result = handshake(tls.contextFactory(), TLSClient(maximumVersion=SSL.TLS1_1_VERSION))
        self.assertHandshakeRefused(result)
        assert result.server.lostReason is not None
        self.assertIn("unsupported protocol", str(result.server.lostReason.value))

    def test_oldVersionsDisabled(self) -> None:
        """
        The contexts themselves disable TLS 1.0 and 1.1, whatever OpenSSL's
        security level would allow.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        options = tls.getContext().set_options(0)
        old = SSL.OP_NO_TLSv1 | SSL.OP_NO_TLSv1_1
        self.assertEqual(options & old, old)

    def test_tls11ClientWorks(self) -> None:
        """
        The TLS 1.1 client of L{test_tls11Refused} does complete a handshake
        with a server that allows TLS 1.1, so that test shows the version
        floor and not a broken client.
        """
        options = CertificateOptions(insecurelyLowerMinimumTo=TLSVersion.TLSv1_0)
        context = options.getContext()
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        context.use_certificate(self.default.certificate)
        context.use_privatekey(self.default.key)

        @implementer(IOpenSSLServerConnectionCreator)
        class Permissive:
            def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
                return SSL.Connection(context, None)

        result = handshake(Permissive(), TLSClient(maximumVersion=SSL.TLS1_1_VERSION))
        self.assertTrue(result.server.handshakeDone)
        self.assertEqual(tlsInfo(result.server.transport).protocol, "TLSv1.1")

    def test_tls12Accepted(self) -> None:
        """
        A TLS 1.2 client completes the handshake, and L{tlsInfo} says so.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        result = handshake(tls.contextFactory(), TLSClient(maximumVersion=SSL.TLS1_2_VERSION))
        self.assertTrue(result.server.handshakeDone)
        self.assertEqual(tlsInfo(result.server.transport).protocol, "TLSv1.2")


class ClientCertificateTests(_TLSTestCase):
    """
    C{requestCert} with C{caCertificates}, and C{rejectUnauthorized}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.alice = self.ca.client("alice")
        self.otherCA = CertificateAuthority(os.path.join(self.directory, "other"), "Other CA")
        self.mallory = self.otherCA.client("mallory")

    def serverTLS(self, rejectUnauthorized: bool = True, **kwargs: object) -> ServerTLS:
        return ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            caCertificates=self.ca.certificatePath,
            requestCert=True,
            rejectUnauthorized=rejectUnauthorized,
            **kwargs,  # type: ignore[arg-type]
        )

    def test_trustedCertificateAccepted(self) -> None:
        """
        A client certificate signed by the configured CA is accepted, and
        L{tlsInfo} and L{peerCertificateVerified} report it.
        """
        result = handshake(self.serverTLS().contextFactory(), TLSClient(certificate=self.alice))
        self.assertTrue(result.server.handshakeDone)
        info = tlsInfo(result.server.transport)
        self.assertEqual(info.peerCertificate.to_cryptography(), self.alice.certificate)
        self.assertTrue(peerCertificateVerified(result.server.transport))

    def test_untrustedCertificateRefused(self) -> None:
        """
        With C{rejectUnauthorized}, a certificate signed by another CA fails
        the handshake.
        """
        result = handshake(self.serverTLS().contextFactory(), TLSClient(certificate=self.mallory))
        self.assertHandshakeRefused(result)

    def test_missingCertificateRefused(self) -> None:
        """
        With C{rejectUnauthorized}, a client without a certificate fails the
        handshake.
        """
        result = handshake(self.serverTLS().contextFactory(), TLSClient())
        self.assertHandshakeRefused(result)

    def test_untrustedCertificateAcceptedUnverified(self) -> None:
        """
        Without C{rejectUnauthorized}, a certificate signed by another CA is
        accepted and reported as not verified.
        """
        tls = self.serverTLS(rejectUnauthorized=False)
        result = handshake(tls.contextFactory(), TLSClient(certificate=self.mallory))
        self.assertTrue(result.server.handshakeDone)
        info = tlsInfo(result.server.transport)
        self.assertEqual(info.peerCertificate.to_cryptography(), self.mallory.certificate)
        self.assertFalse(peerCertificateVerified(result.server.transport))

    def test_trustedCertificateVerifiedWithoutRejecting(self) -> None:
        """
        Without C{rejectUnauthorized}, a good certificate is still reported
        as verified.
        """
        tls = self.serverTLS(rejectUnauthorized=False)
        result = handshake(tls.contextFactory(), TLSClient(certificate=self.alice))
        self.assertTrue(peerCertificateVerified(result.server.transport))

    def test_expiredCertificateAcceptedUnverified(self) -> None:
        """
        Without C{rejectUnauthorized}, an expired certificate from the right
        CA is accepted and reported as not verified.
        """
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
        expired = self.ca.issue(
            "old", client=True, notBefore=past, notAfter=past + datetime.timedelta(days=1)
        )
        tls = self.serverTLS(rejectUnauthorized=False)
        result = handshake(tls.contextFactory(), TLSClient(certificate=expired))
        self.assertTrue(result.server.handshakeDone)
        self.assertFalse(peerCertificateVerified(result.server.transport))

    def test_verificationInTLSInfo(self) -> None:
        """
        Without C{rejectUnauthorized}, L{tlsInfo} (what a handler gets in
        C{session.tls}) tells a certificate that verified from one accepted
        although it did not: C{peerCertificateVerified}.
        """
        tls = self.serverTLS(rejectUnauthorized=False)
        good = handshake(tls.contextFactory(), TLSClient(certificate=self.alice))
        bad = handshake(tls.contextFactory(), TLSClient(certificate=self.mallory))
        none = handshake(tls.contextFactory(), TLSClient())
        self.assertTrue(tlsInfo(good.server.transport).peerCertificateVerified)
        self.assertFalse(tlsInfo(bad.server.transport).peerCertificateVerified)
        self.assertFalse(tlsInfo(none.server.transport).peerCertificateVerified)
        self.assertFalse(TLSInfo().peerCertificateVerified)

    def test_missingCertificateAllowedWithoutRejecting(self) -> None:
        """
        Without C{rejectUnauthorized}, a client without a certificate is
        accepted; there is nothing to report.
        """
        tls = self.serverTLS(rejectUnauthorized=False)
        result = handshake(tls.contextFactory(), TLSClient())
        self.assertTrue(result.server.handshakeDone)
        self.assertIsNone(tlsInfo(result.server.transport).peerCertificate)
        self.assertFalse(peerCertificateVerified(result.server.transport))

    def test_notRequested(self) -> None:
        """
        Without C{requestCert}, the server does not ask, so a client
        certificate is never sent.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        result = handshake(tls.contextFactory(), TLSClient(certificate=self.alice))
        self.assertTrue(result.server.handshakeDone)
        self.assertIsNone(tlsInfo(result.server.transport).peerCertificate)

    def test_sniContextVerifiesToo(self) -> None:
        """
        A context chosen by SNI asks for and verifies client certificates
        like the default one.
        """
        named = self.ca.server("mail.example.com")
        tls = self.serverTLS(
            sniOptions={"mail.example.com": (named.certificatePath, named.keyPath)}
        )
        good = handshake(
            tls.contextFactory(), TLSClient("mail.example.com", certificate=self.alice)
        )
        self.assertEqual(good.serverCertificate, named.certificate)
        self.assertTrue(peerCertificateVerified(good.server.transport))
        bad = handshake(
            tls.contextFactory(), TLSClient("mail.example.com", certificate=self.mallory)
        )
        self.assertHandshakeRefused(bad)


class ReloadTests(_TLSTestCase):
    """
    L{ServerTLS.reload} re-reads the files for new handshakes.
    """

    def replace(self, target: IssuedCertificate, source: IssuedCertificate) -> None:
        shutil.copyfile(source.certificatePath, target.certificatePath)
        shutil.copyfile(source.keyPath, target.keyPath)

    def test_reloadSwapsCertificate(self) -> None:
        """
        After the files change and L{ServerTLS.reload}, a new client gets
        the new certificate from the same context factory.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        factory = tls.contextFactory()
        self.assertEqual(handshake(factory).serverCertificate, self.default.certificate)
        renewed = self.ca.server("default.example.com")
        self.replace(self.default, renewed)
        self.assertEqual(handshake(factory).serverCertificate, self.default.certificate)
        tls.reload()
        self.assertEqual(handshake(factory).serverCertificate, renewed.certificate)
        self.assertEqual(tls.getContext(), factory.getContext())

    def test_reloadSNI(self) -> None:
        """
        SNI certificate files are re-read as well.
        """
        named = self.ca.server("mail.example.com")
        tls = ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            sniOptions={"mail.example.com": (named.certificatePath, named.keyPath)},
        )
        renewed = self.ca.server("mail.example.com")
        self.replace(named, renewed)
        tls.reload()
        result = handshake(tls.contextFactory(), TLSClient("mail.example.com"))
        self.assertEqual(result.serverCertificate, renewed.certificate)

    def test_reloadErrorKeepsConfiguration(self) -> None:
        """
        When a file cannot be read, L{ServerTLS.reload} raises L{ValueError}
        and the previous certificates stay in use.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        os.remove(self.default.keyPath)
        error = self.assertRaises(ValueError, tls.reload)
        self.assertIn("cannot read private key", str(error))
        self.assertEqual(
            handshake(tls.contextFactory()).serverCertificate, self.default.certificate
        )

    def test_reloadMismatchKeepsConfiguration(self) -> None:
        """
        A certificate replaced without its key is refused by
        L{ServerTLS.reload}, and the old pair stays in use.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        other = self.ca.server("default.example.com")
        shutil.copyfile(other.certificatePath, self.default.certificatePath)
        error = self.assertRaises(ValueError, tls.reload)
        self.assertIn("does not match", str(error))
        self.assertEqual(
            handshake(tls.contextFactory()).serverCertificate, self.default.certificate
        )

    def test_reloadKeyTheCiphersRefuseKeepsConfiguration(self) -> None:
        """
        A certificate replaced by one whose kind of key no TLS 1.2 cipher of
        C{ciphers} can be used with (an RSA key under C{aECDSA}), refused
        at start, is refused by L{ServerTLS.reload} too, with one line
        naming it, and the old certificate stays in use: every TLS 1.2
        handshake would otherwise fail.
        """
        ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256"
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath, ciphers=ciphers)
        rsa = self.ca.issue("default.example.com", ("default.example.com",), rsaKey=True)
        self.replace(self.default, rsa)
        error = self.assertRaises(ValueError, tls.reload)
        self.assertEqual(
            str(error),
            f"the cipher string {ciphers!r} selects no TLS 1.2 cipher usable with the RSA"
            f" key of certificate {self.default.certificatePath}",
        )
        result = handshake(tls.contextFactory(), TLSClient(maximumVersion=SSL.TLS1_2_VERSION))
        self.assertEqual(result.serverCertificate, self.default.certificate)

    def test_handshakeInProgressSurvivesReload(self) -> None:
        """
        A handshake that started before L{ServerTLS.reload} finishes with the
        old configuration, even once nothing else refers to it; its SNI and
        verification callbacks stay alive.
        """
        alice = self.ca.client("alice")
        named = self.ca.server("mail.example.com")
        tls = ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            caCertificates=self.ca.certificatePath,
            sniOptions={"mail.example.com": (named.certificatePath, named.keyPath)},
            requestCert=True,
        )
        result = handshake(
            tls.contextFactory(), TLSClient("mail.example.com", certificate=alice), steps=1
        )
        self.assertFalse(result.server.handshakeDone)
        renewed = self.ca.server("mail.example.com")
        self.replace(named, renewed)
        tls.reload()
        gc.collect()
        result.pump.flush()
        self.assertTrue(result.server.handshakeDone)
        self.assertEqual(result.serverCertificate, named.certificate)
        self.assertTrue(peerCertificateVerified(result.server.transport))


class SelfSignedTests(SynchronousTestCase):
    """
    The self-signed fallback when no certificate is configured.
    """

    def test_certificate(self) -> None:
        """
        L{selfSignedCertificate} makes a certificate for the host name, valid
        for about a year, and its matching key.
        """
        certificatePEM, keyPEM = selfSignedCertificate("mx.example.net")
        certificate = x509.load_pem_x509_certificate(certificatePEM)
        key = serialization.load_pem_private_key(keyPEM, None)
        self.assertEqual(certificate.public_key(), key.public_key())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(names.value.get_values_for_type(x509.DNSName), ["mx.example.net"])
        lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        self.assertTrue(365 <= lifetime.days <= 366)
        self.assertEqual(certificate.issuer, certificate.subject)

    def test_ipAddress(self) -> None:
        """
        An IP address becomes an IP address subject alternative name.
        """
        certificatePEM, _ = selfSignedCertificate("192.0.2.1")
        certificate = x509.load_pem_x509_certificate(certificatePEM)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(
            names.value.get_values_for_type(x509.IPAddress), [ipaddress.ip_address("192.0.2.1")]
        )

    def test_fallback(self) -> None:
        """
        Without a certificate, L{ServerTLS} serves a self-signed one for its
        host name, says so in C{selfSigned}, and logs a warning.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        tls = ServerTLS(None, hostname="mx.example.net")
        self.assertTrue(tls.selfSigned)
        result = handshake(tls.contextFactory())
        self.assertTrue(result.server.handshakeDone)
        names = result.serverCertificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        self.assertEqual(names.value.get_values_for_type(x509.DNSName), ["mx.example.net"])
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["hostname"], "mx.example.net")

    def test_internationalisedName(self) -> None:
        """
        A host name with non-ASCII labels is put in the certificate as
        A-labels (RFC 5280 section 7.2); the common name keeps it as it is.
        """
        certificatePEM, _ = selfSignedCertificate("mx.bücher.example")
        certificate = x509.load_pem_x509_certificate(certificatePEM)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(
            names.value.get_values_for_type(x509.DNSName), ["mx.xn--bcher-kva.example"]
        )
        self.assertEqual(
            certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
            "mx.bücher.example",
        )

    def test_unencodableName(self) -> None:
        """
        Any name gives a certificate: one IDNA cannot encode (a control
        character here) keeps its common name and gets the subject
        alternative name C{twisted-smtpd}; one that is not even UTF-8 gets
        that common name too.
        """
        for hostname, commonName in [
            ("mx.\u0080.example", "mx.\u0080.example"),
            ("a" * 64, "a" * 64),
            ("\udcffmx", "twisted-smtpd"),
        ]:
            certificate = x509.load_pem_x509_certificate(selfSignedCertificate(hostname)[0])
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            self.assertEqual(names.value.get_values_for_type(x509.DNSName), ["twisted-smtpd"])
            self.assertEqual(
                certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
                commonName,
            )

    def test_addressLiteral(self) -> None:
        """
        An address literal (C{--hostname [192.0.2.1]}) becomes an IP address
        subject alternative name, not a DNS name with brackets.
        """
        for hostname, address in [
            ("[192.0.2.1]", "192.0.2.1"),
            ("[IPv6:2001:db8::1]", "2001:db8::1"),
        ]:
            certificate = x509.load_pem_x509_certificate(selfSignedCertificate(hostname)[0])
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            self.assertEqual(
                names.value.get_values_for_type(x509.IPAddress), [ipaddress.ip_address(address)]
            )
            self.assertEqual(names.value.get_values_for_type(x509.DNSName), [])

    def test_failingObserver(self) -> None:
        """
        An observer of L{ServerTLS.whenMade} that fails is logged; the
        handshake that made the contexts goes on.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        tls = ServerTLS(None)
        tls.whenMade(lambda: 1 / 0)
        self.assertTrue(handshake(tls.contextFactory()).server.handshakeDone)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len([e for e in events if "log_failure" in e]), 1)

    def test_madeOnFirstUse(self) -> None:
        """
        With no file to read, the self-signed certificate and the contexts
        are made at their first use, not when L{ServerTLS} is built; the
        warning is logged at once, and L{ServerTLS.whenMade} observers are
        told once.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        made = self.recordSelfSigned()
        tls = ServerTLS(None, hostname="mx.example.net")
        told: list[dict[str, x509.Certificate]] = []
        tls.whenMade(lambda: told.append(tls.certificates()))
        self.assertEqual(made, [])
        self.assertEqual(tls.certificates(), {})
        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.warn]), 1)
        tls.reload()
        self.assertEqual((made, told), ([], []))
        result = handshake(tls.contextFactory())
        self.assertTrue(result.server.handshakeDone)
        self.assertEqual(made, ["mx.example.net"])
        self.assertEqual(told, [{"": result.serverCertificate}])
        self.assertEqual(tls.certificates(), {"": result.serverCertificate})
        handshake(tls.contextFactory())
        self.assertEqual((len(made), len(told)), (1, 1))

    def recordSelfSigned(self) -> list[str]:
        """
        Record the host names L{selfSignedCertificate} is called with.
        """
        from twisted_smtpd._serving import tls as module

        made: list[str] = []

        def recording(hostname: str = "localhost") -> tuple[bytes, bytes]:
            made.append(hostname)
            return selfSignedCertificate(hostname)

        self.patch(module, "selfSignedCertificate", recording)
        return made

    def test_madeAtStartWithFiles(self) -> None:
        """
        With SNI certificates configured beside the self-signed default,
        everything is read and made when L{ServerTLS} is built, so that a
        bad file is reported at start; C{whenMade} observers are never
        told.
        """
        made = self.recordSelfSigned()
        ca = CertificateAuthority(self.mktemp())
        named = ca.server("mail.example.com")
        tls = ServerTLS(
            None,
            hostname="mx.example.net",
            sniOptions={"mail.example.com": (named.certificatePath, named.keyPath)},
        )
        self.assertEqual(made, ["mx.example.net"])
        self.assertEqual(set(tls.certificates()), {"", "mail.example.com"})
        told: list[object] = []
        tls.whenMade(lambda: told.append(None))
        handshake(tls.contextFactory())
        self.assertEqual((made, told), (["mx.example.net"], []))
        self.assertRaises(
            ValueError, ServerTLS, None, sniOptions={"a.example": ("/nonexistent", None)}
        )

    def test_fallbackKeptOnReload(self) -> None:
        """
        L{ServerTLS.reload} keeps serving the same self-signed certificate.
        """
        tls = ServerTLS(None)
        before = handshake(tls.contextFactory()).serverCertificate
        tls.reload()
        self.assertEqual(handshake(tls.contextFactory()).serverCertificate, before)

    def test_configuredNotSelfSigned(self) -> None:
        """
        With a certificate, C{selfSigned} is C{False} and nothing is logged
        as a warning.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        ca = CertificateAuthority(self.mktemp())
        server = ca.server("mx.example.net")
        tls = ServerTLS(server.certificatePath, server.keyPath)
        self.assertFalse(tls.selfSigned)
        self.assertEqual([e for e in events if e["log_level"] == LogLevel.warn], [])


class ConfigurationErrorTests(_TLSTestCase):
    """
    Unusable files raise a L{ValueError} naming the file.
    """

    def assertRefused(self, message: str, *args: object, **kwargs: object) -> None:
        error = self.assertRaises(ValueError, ServerTLS, *args, **kwargs)
        self.assertIn(message, str(error))

    def test_missingCertificate(self) -> None:
        """
        A missing certificate file is named in the error.
        """
        path = os.path.join(self.directory, "missing.pem")
        self.assertRefused(f"cannot read certificate {path}", path, self.default.keyPath)

    def test_notACertificate(self) -> None:
        """
        A file without a PEM certificate is refused.
        """
        self.assertRefused(
            f"cannot read certificate {self.default.keyPath}",
            self.default.keyPath,
            self.default.keyPath,
        )

    def test_missingKey(self) -> None:
        """
        A missing key file is named in the error.
        """
        path = os.path.join(self.directory, "missing.key")
        self.assertRefused(f"cannot read private key {path}", self.default.certificatePath, path)

    def test_noKeyInCertificateFile(self) -> None:
        """
        Without a key path, a certificate file holding no key is refused.
        """
        self.assertRefused(
            f"cannot read private key {self.default.certificatePath}",
            self.default.certificatePath,
        )

    def test_encryptedKey(self) -> None:
        """
        An encrypted key is refused (there is no passphrase to give).
        """
        path = os.path.join(self.directory, "encrypted.key")
        with open(path, "wb") as f:
            f.write(
                self.default.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"secret"),
                )
            )
        self.assertRefused("cannot read private key", self.default.certificatePath, path)

    def test_mismatchedKey(self) -> None:
        """
        A key that does not belong to the certificate is refused.
        """
        other = self.ca.server("other.example.com")
        self.assertRefused("does not match", self.default.certificatePath, other.keyPath)

    def test_chainBeforeLeaf(self) -> None:
        """
        A certificate file with its chain before the leaf certificate is
        refused with one line saying where the key's certificate is and
        that it must come first, not only that the key does not match;
        in the order leaf first, it is served with its chain.
        """
        leaf = self.default.certificate.public_bytes(serialization.Encoding.PEM)
        authority = self.ca.certificate.public_bytes(serialization.Encoding.PEM)
        path = os.path.join(self.directory, "reversed.pem")
        with open(path, "wb") as f:
            f.write(authority + leaf)
        error = self.assertRaises(ValueError, ServerTLS, path, self.default.keyPath)
        self.assertEqual(
            str(error),
            f"cannot read certificate {path}: the certificate of {self.default.keyPath} is"
            " number 2 of 2; the file must start with it, its chain after it",
        )
        with open(path, "wb") as f:
            f.write(leaf + authority)
        result = handshake(ServerTLS(path, self.default.keyPath).contextFactory())
        self.assertEqual(result.serverCertificate, self.default.certificate)

    def test_corruptCertificateInChain(self) -> None:
        """
        A certificate file whose leaf reads but whose next block is corrupt
        or cut short is refused with one line naming that block, not as
        holding no certificate, and not served without its chain; a CA
        bundle likewise.
        """
        leaf = self.default.certificate.public_bytes(serialization.Encoding.PEM)
        authority = self.ca.certificate.public_bytes(serialization.Encoding.PEM)
        corrupt = b"-----BEGIN CERTIFICATE-----\nMII!!!\n-----END CERTIFICATE-----\n"
        path = os.path.join(self.directory, "chain.pem")
        for tail in [corrupt, authority[:-60], corrupt + authority]:
            with open(path, "wb") as f:
                f.write(leaf + tail)
            error = self.assertRaises(ValueError, ServerTLS, path, self.default.keyPath)
            count = 2 + (tail == corrupt + authority)
            self.assertEqual(
                str(error),
                f"cannot read certificate {path}: its certificate number 2 (of {count})"
                " is corrupt or truncated",
            )
        self.assertRefused(
            f"cannot read CA certificates {path}: its certificate number 2 (of 3)"
            " is corrupt or truncated",
            self.default.certificatePath,
            self.default.keyPath,
            caCertificates=path,
            requestCert=True,
        )

    def test_missingCA(self) -> None:
        """
        A missing CA bundle is refused when client certificates are asked
        for.
        """
        path = os.path.join(self.directory, "missing-ca.pem")
        self.assertRefused(
            f"cannot read CA certificates {path}",
            self.default.certificatePath,
            self.default.keyPath,
            caCertificates=path,
            requestCert=True,
        )

    def test_corruptCAWithoutClientCertificates(self) -> None:
        """
        A CA bundle that holds no certificate is refused, naming it, also
        when no client certificate is asked for (with a certificate, or
        the self-signed one made on first use), and at a reload.
        """
        path = os.path.join(self.directory, "corrupt-ca.pem")
        with open(path, "wb") as f:
            f.write(b"not a certificate\n")
        message = f"cannot read CA certificates {path}: no PEM certificate"
        self.assertRefused(
            message, self.default.certificatePath, self.default.keyPath, caCertificates=path
        )
        self.assertRefused(message, None, caCertificates=path)
        for certificate, key in [
            (self.default.certificatePath, self.default.keyPath),
            (None, None),
        ]:
            with open(path, "wb") as f:
                f.write(self.ca.certificate.public_bytes(serialization.Encoding.PEM))
            tls = ServerTLS(certificate, key, caCertificates=path)
            with open(path, "wb") as f:
                f.write(b"not a certificate\n")
            error = self.assertRaises(ValueError, tls.reload)
            self.assertEqual(str(error), message)

    def test_missingSNICertificate(self) -> None:
        """
        A missing SNI certificate is refused.
        """
        path = os.path.join(self.directory, "missing-sni.pem")
        self.assertRefused(
            f"cannot read certificate {path}",
            self.default.certificatePath,
            self.default.keyPath,
            sniOptions={"mail.example.com": (path, None)},
        )

    def test_oversizedFile(self) -> None:
        """
        A certificate, key or CA file larger than 16 MiB (a path naming a
        device or a log file by mistake) is refused without being read
        whole.
        """
        big = os.path.join(self.directory, "big.pem")
        with open(big, "wb") as f:
            f.truncate(16 * 1024 * 1024 + 1)
        cert, key = self.default.certificatePath, self.default.keyPath
        for args, kwargs, what in [
            ((big, key), {}, "certificate"),
            ((cert, big), {}, "private key"),
            ((cert, key), {"caCertificates": big, "requestCert": True}, "CA certificates"),
        ]:
            self.assertRefused(
                f"cannot read {what} {big}: larger than 16777216 bytes", *args, **kwargs
            )

    def test_invalidSNIName(self) -> None:
        """
        An SNI name that is no host name (control characters, white space,
        an empty label, a wildcard not in front) is refused, shown escaped.
        """
        files = (self.default.certificatePath, self.default.keyPath)
        for name, shown in [
            ("\x1b[2Kmx\x01.example.com", r"'\x1b[2kmx\x01.example.com'"),
            ("mail example.com", "'mail example.com'"),
            ("mail..example.com", "'mail..example.com'"),
            ("mail.*.example.com", "'mail.*.example.com'"),
        ]:
            self.assertRefused(f"invalid SNI host name: {shown}", *files, sniOptions={name: files})


class InterfaceTests(_TLSTestCase):
    """
    What Twisted's TLS APIs need from the context factory, and L{tlsInfo} on
    transports without TLS.
    """

    def test_interfaces(self) -> None:
        """
        The context factory is a server connection creator and an old-style
        context factory whose context serves the default certificate.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        factory = tls.contextFactory()
        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, factory))
        self.assertTrue(verifyObject(IOpenSSLContextFactory, factory))
        context = factory.getContext()
        self.assertIsInstance(context, SSL.Context)
        connection = SSL.Connection(context, None)
        self.assertEqual(connection.get_certificate(as_cryptography=True), self.default.certificate)

    def test_tlsInfoWithoutTLS(self) -> None:
        """
        A transport without TLS gives an empty L{TLSInfo} and no verified
        certificate.
        """
        transport = StringTransport()
        self.assertEqual(tlsInfo(transport), TLSInfo())
        self.assertEqual(tlsInfo(object()), TLSInfo())
        self.assertFalse(peerCertificateVerified(transport))
