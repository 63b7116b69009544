# -*- test-case-name: tests.test_cipherseparators -*-
"""
Every separator OpenSSL takes in a cipher string (colon, semicolon, comma,
space) separates the TLS 1.3 suites named in C{tlsCiphers} too: a suite
after a semicolon is never left in the TLS 1.2 string, where OpenSSL
would ignore it silently and keep all its TLS 1.3 suites on.  And a cipher
string naming no cipher at all is refused, never taken for Twisted's
defaults.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.test_tap import parse
from tests.test_tls import _TLSTestCase, handshake
from tests.test_tls13suites import _SuiteClient
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving import sni
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd._serving.tls import ServerTLS, tlsInfo
from twisted_smtpd.handlers import SinkHandler


class SemicolonSplitTests(SynchronousTestCase):
    def test_split(self) -> None:
        """
        L{sni.splitCiphers} splits at a semicolon, as OpenSSL's cipher
        string parser does.
        """
        self.assertEqual(
            sni.splitCiphers("ECDHE+AESGCM;TLS_AES_256_GCM_SHA384;ECDHE+CHACHA20"),
            ("ECDHE+AESGCM:ECDHE+CHACHA20", ("TLS_AES_256_GCM_SHA384",)),
        )

    def test_excludedAfterSemicolonRefused(self) -> None:
        """
        A TLS 1.3 suite excluded after a semicolon is refused like one
        after a colon.
        """
        e = self.assertRaises(ValueError, sni._checkSuites, "DEFAULT;!TLS_AES_128_GCM_SHA256", ())
        self.assertIn("'!TLS_AES_128_GCM_SHA256' in the cipher string", str(e))


class SemicolonSuiteTests(_TLSTestCase):
    """
    Real handshakes with the TLS 1.3 suite named after a semicolon.
    """

    def setUp(self) -> None:
        if not sni.SETS_TLS13_SUITES:
            raise SkipTest("this pyOpenSSL (before 25.2) cannot set TLS 1.3 suites")
        super().setUp()

    def test_suiteAfterSemicolonIsTheOnlyOne(self) -> None:
        """
        C{ECDHE+AESGCM;TLS_AES_256_GCM_SHA384} leaves only that TLS 1.3
        suite: a client offering only another is refused, one offering it
        gets it.
        """
        tls = ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            ciphers="ECDHE+AESGCM;TLS_AES_256_GCM_SHA384",
        )
        refused = handshake(tls.contextFactory(), _SuiteClient(b"TLS_AES_128_GCM_SHA256"))
        self.assertHandshakeRefused(refused)
        accepted = handshake(
            tls.contextFactory(), _SuiteClient(b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384")
        )
        self.assertEqual(tlsInfo(accepted.server.transport).cipher, "TLS_AES_256_GCM_SHA384")


class NoCipherTests(SynchronousTestCase):
    def test_refused(self) -> None:
        """
        A cipher string that names no cipher and no TLS 1.3 suite (empty,
        separators only, a command alone: an unset variable in a unit
        file's C{--tls-ciphers "$CIPHERS"}) is refused when the server is
        made, with one line; under C{twistd}, one line naming the flag.
        It is not served with Twisted's default ciphers.
        """
        for ciphers in ("", " ", ":", ";", "@SECLEVEL=3"):
            message = f"tlsCiphers: the cipher string {ciphers!r} selects no cipher"
            options = ServerOptions(tlsCiphers=ciphers)
            e = self.assertRaises(ValueError, SMTPServerFactory, SinkHandler(), options)
            self.assertEqual(str(e), message)
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--tls-ciphers", ciphers)
            self.assertEqual(str(e), "--" + message.replace("tlsCiphers", "tls-ciphers", 1))
