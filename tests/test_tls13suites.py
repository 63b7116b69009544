# -*- test-case-name: tests.test_tls13suites -*-
"""
TLS 1.3 suites named in C{tlsCiphers} (C{--tls-ciphers}), and what a
security level of 3 or more does to session tickets: real handshakes in
memory.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.certs import TLSClient
from tests.test_tap import parse
from tests.test_tls import _TLSTestCase, handshake
from tests.test_tlsresume import ResumingClient, _connection, reused
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving import sni
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd._serving.tls import ServerTLS, tlsInfo
from twisted_smtpd.handlers import SinkHandler


class _SuiteClient(TLSClient):
    """
    A TLS 1.3 client offering only the TLS 1.3 suites given.
    """

    def __init__(self, suites: bytes) -> None:
        super().__init__()
        self.suites = suites

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_3_VERSION)
        context.set_tls13_ciphersuites(self.suites)
        return SSL.Connection(context, None)


class TLS13SuiteTests(_TLSTestCase):
    """
    C{tlsCiphers} names TLS 1.3 suites as well as TLS 1.2 ciphers, with a
    pyOpenSSL that can set them (L{OlderPyOpenSSLTests} covers the others).
    """

    def setUp(self) -> None:
        if not sni.SETS_TLS13_SUITES:
            raise SkipTest("this pyOpenSSL (before 25.2) cannot set TLS 1.3 suites")
        super().setUp()

    def tls(self, ciphers: str, minVersion: str = "TLSv1.2") -> ServerTLS:
        return ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            ciphers=ciphers,
            minVersion=minVersion,
        )

    def test_suitesNamedAreTheOnlyOnes(self) -> None:
        """
        The TLS 1.3 suites named in the cipher string are the only ones the
        server accepts: a client offering only another is refused, one
        offering it gets it.  OpenSSL's cipher string alone would silently
        ignore the name and leave every TLS 1.3 suite on.
        """
        tls = self.tls("ECDHE+AESGCM:TLS_AES_256_GCM_SHA384")
        refused = handshake(tls.contextFactory(), _SuiteClient(b"TLS_AES_128_GCM_SHA256"))
        self.assertHandshakeRefused(refused)
        accepted = handshake(
            tls.contextFactory(), _SuiteClient(b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384")
        )
        self.assertEqual(tlsInfo(accepted.server.transport).cipher, "TLS_AES_256_GCM_SHA384")
        tls12 = handshake(tls.contextFactory(), TLSClient(maximumVersion=SSL.TLS1_2_VERSION))
        self.assertEqual(tlsInfo(tls12.server.transport).cipher, "ECDHE-ECDSA-AES256-GCM-SHA384")

    def test_withoutSuitesOpenSSLDefaults(self) -> None:
        """
        A cipher string naming no TLS 1.3 suite leaves OpenSSL's.
        """
        tls = self.tls("ECDHE+AESGCM")
        for suite in ("TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"):
            result = handshake(tls.contextFactory(), _SuiteClient(suite.encode()))
            self.assertEqual(tlsInfo(result.server.transport).cipher, suite)

    def test_onlySuites(self) -> None:
        """
        A string of TLS 1.3 suites only is taken with TLS 1.3 as the
        minimum version, and refused with TLS 1.2 (no TLS 1.2 cipher).
        """
        tls = self.tls("TLS_CHACHA20_POLY1305_SHA256", minVersion="TLSv1.3")
        result = handshake(tls.contextFactory())
        self.assertEqual(tlsInfo(result.server.transport).cipher, "TLS_CHACHA20_POLY1305_SHA256")
        e = self.assertRaises(ValueError, self.tls, "TLS_CHACHA20_POLY1305_SHA256")
        self.assertIn("names only TLS 1.3 suites: add TLS 1.2 ciphers, or raise", str(e))

    def test_badSuitesRefusedAtConstruction(self) -> None:
        """
        An unknown TLS 1.3 suite name (OpenSSL would drop it silently), or
        one excluded with C{!} or C{-} (the TLS 1.3 suites are a plain list
        of those kept), is refused when the server is made, with one line
        naming the setting; under C{twistd}, one line naming the flag.
        """
        for ciphers, message in [
            (
                "ECDHE+AESGCM:TLS_AES_512_GCM_SHA1024",
                "tlsCiphers: the cipher string 'ECDHE+AESGCM:TLS_AES_512_GCM_SHA1024' names an"
                " unknown TLS 1.3 suite 'TLS_AES_512_GCM_SHA1024'",
            ),
            (
                "DEFAULT:!TLS_AES_128_GCM_SHA256",
                "tlsCiphers: '!TLS_AES_128_GCM_SHA256' in the cipher string"
                " 'DEFAULT:!TLS_AES_128_GCM_SHA256' cannot exclude nor move a TLS 1.3 suite:"
                " list the TLS 1.3 suites to keep",
            ),
        ]:
            options = ServerOptions(tlsCiphers=ciphers)
            e = self.assertRaises(ValueError, SMTPServerFactory, SinkHandler(), options)
            self.assertEqual(str(e), message)
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--tls-ciphers", ciphers)
            self.assertEqual(str(e), "--" + message.replace("tlsCiphers", "tls-ciphers", 1))


class OlderPyOpenSSLTests(_TLSTestCase):
    """
    With a pyOpenSSL that cannot set TLS 1.3 suites (before 25.2; the
    declared floor is older), naming one is refused at start with one line,
    and a cipher string without any still works.  Runs with every
    pyOpenSSL: a newer one is told it cannot.
    """

    def setUp(self) -> None:
        super().setUp()
        self.patch(sni, "SETS_TLS13_SUITES", False)
        sni._checkSuites.cache_clear()
        self.addCleanup(sni._checkSuites.cache_clear)

    def test_suiteNamedRefused(self) -> None:
        ciphers = "ECDHE+AESGCM:TLS_AES_256_GCM_SHA384"
        message = (
            f"tlsCiphers: the cipher string {ciphers!r} names TLS 1.3 suites, which this"
            " pyOpenSSL cannot set (25.2 or later can): leave them out to keep OpenSSL's"
        )
        options = ServerOptions(tlsCiphers=ciphers)
        e = self.assertRaises(ValueError, SMTPServerFactory, SinkHandler(), options)
        self.assertEqual(str(e), message)
        e = self.assertRaises(usage.UsageError, parse, "--sink", "--tls-ciphers", ciphers)
        self.assertEqual(str(e), "--" + message.replace("tlsCiphers", "tls-ciphers", 1))

    def test_withoutSuitesServed(self) -> None:
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath, ciphers="ECDHE+AESGCM")
        result = handshake(tls.contextFactory())
        self.assertTrue(result.server.handshakeDone)


class CipherStringTests(SynchronousTestCase):
    """
    How a cipher string is split, whatever pyOpenSSL can set.
    """

    def test_split(self) -> None:
        """
        L{splitCiphers} keeps the TLS 1.2 string, commands included, and
        takes out the TLS 1.3 names, whatever OpenSSL separator is used.
        """
        from twisted_smtpd._serving.sni import splitCiphers

        self.assertEqual(
            splitCiphers(
                "ECDHE+AESGCM:TLS_AES_256_GCM_SHA384, tls_chacha20_poly1305_sha256 @SECLEVEL=2"
            ),
            (
                "ECDHE+AESGCM:@SECLEVEL=2",
                ("TLS_AES_256_GCM_SHA384", "tls_chacha20_poly1305_sha256"),
            ),
        )
        self.assertEqual(splitCiphers("TLSv1.2"), ("TLSv1.2", ()))


class SecurityLevelTicketTests(_TLSTestCase):
    """
    What C{@SECLEVEL=3} or more does to session resumption (OpenSSL's
    security level forbids TLS 1.2 session tickets from level 3).
    """

    def resumed(self, ciphers: str | None, maximumVersion: int | None) -> tuple[str, bool]:
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath, ciphers=ciphers)
        client = ResumingClient(maximumVersion=maximumVersion)
        first = handshake(tls, client)
        self.assertTrue(first.server.handshakeDone)
        client.offerSessionOf(first)
        second = handshake(tls, client)
        self.assertTrue(second.server.handshakeDone)
        server = _connection(second.server)
        return server.get_protocol_version_name(), reused(server)

    def test_level3EndsTLS12Tickets(self) -> None:
        """
        At C{@SECLEVEL=3} a TLS 1.2 client gets no session ticket, so every
        TLS 1.2 handshake is a full one; TLS 1.3 clients still resume.  At
        level 2 both resume.
        """
        self.assertEqual(self.resumed("DEFAULT:@SECLEVEL=2", SSL.TLS1_2_VERSION), ("TLSv1.2", True))
        self.assertEqual(
            self.resumed("DEFAULT:@SECLEVEL=3", SSL.TLS1_2_VERSION), ("TLSv1.2", False)
        )
        self.assertEqual(self.resumed("DEFAULT:@SECLEVEL=3", None), ("TLSv1.3", True))
