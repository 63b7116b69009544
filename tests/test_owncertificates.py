# -*- test-case-name: tests.test_owncertificates -*-
"""
The server's own certificates (configured, or the self-signed fallback) are
made and announced only when some listener can serve them: not for C{ssl:}
listeners with keys of their own alone, inside which STARTTLS is not
offered.
"""

from __future__ import annotations

from twisted.internet.testing import EventLoggingObserver, MemoryReactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.service import SMTPServer
from twisted_smtpd._serving.summary import servedCertificates
from twisted_smtpd.handlers import SinkHandler

#: The warning that announces the self-signed certificate.
SELF_SIGNED = "No TLS certificate configured: serving a self-signed certificate"


class ServesServerTLSTests(SynchronousTestCase):
    """
    L{servesServerTLS} tells the listeners that can serve the server's own
    certificates.
    """

    def test_listeners(self) -> None:
        """
        A plain listener can when STARTTLS is offered; an C{ssl:} listener
        (behind C{haproxy:} too) always, unless it has keys of its own.
        """
        from twisted_smtpd._serving.listeners import servesServerTLS

        own = "ssl:465:certKey=c.pem:privateKey=k.pem"
        cases = [
            ("tcp:25", True, True),
            ("tcp:25", False, False),
            ("unix:/run/smtpd.sock", True, True),
            ("haproxy:tcp:25", True, True),
            ("ssl:465", True, True),
            ("ssl:465", False, True),
            ("haproxy:ssl:465", False, True),
            (own, True, False),
            ("haproxy:" + own, True, False),
            ("ssl:465:privateKey=k.pem", True, False),
        ]
        for description, startTLS, expected in cases:
            self.assertEqual(
                servesServerTLS(description, startTLS), expected, (description, startTLS)
            )


class SelfSignedTests(SynchronousTestCase):
    """
    An L{SMTPServer} without a configured certificate makes and announces
    the self-signed one only for listeners that can serve it.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        issued = CertificateAuthority(self.mktemp()).server("mx.example.com")
        self.own = (
            f"ssl:0:interface=127.0.0.1:certKey={issued.certificatePath}"
            f":privateKey={issued.keyPath}"
        )
        self.reactor = MemoryReactor()

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.events if SELF_SIGNED in formatEvent(e)]

    def server(self, **options: object) -> SMTPServer:
        return SMTPServer(SinkHandler(), ServerOptions(**options), reactor=self.reactor)

    def test_ownKeysOnly(self) -> None:
        """
        Started with only C{ssl:} listeners with keys of their own, the
        server announces no self-signed certificate, makes none, and lists
        only the listeners' own as served.
        """
        server = self.server()
        server.addEndpoint(self.own)
        server.startService()
        self.addCleanup(server.stopService)
        self.assertEqual(self.warnings(), [])
        self.assertFalse(server.servesOwnCertificates())
        self.assertEqual([s.listener for s in servedCertificates(server)], [self.own])
        self.assertIsNone(server.factory._tls)

    def test_listenOwnKeys(self) -> None:
        """
        So too for L{SMTPServer.listen}.
        """
        server = self.server()
        server.listen(self.own)
        self.assertEqual(self.warnings(), [])
        self.assertIsNone(server.factory._tls)

    def test_served(self) -> None:
        """
        Beside a plain listener offering STARTTLS, or an C{ssl:} listener
        without keys of its own, it is announced once at start.
        """
        for other, options in [
            ("tcp:0:interface=127.0.0.1", {}),
            ("ssl:0:interface=127.0.0.1", {"disabledCommands": ("STARTTLS",)}),
        ]:
            start = len(self.warnings())
            server = self.server(**options)
            server.addEndpoint(self.own)
            server.addEndpoint(other)
            server.startService()
            self.addCleanup(server.stopService)
            self.assertEqual(len(self.warnings()) - start, 1, other)
            self.assertTrue(server.servesOwnCertificates())

    def test_startTLSDisabled(self) -> None:
        """
        A plain listener with STARTTLS disabled cannot serve it.
        """
        server = self.server(disabledCommands=("STARTTLS",))
        server.addEndpoint("tcp:0:interface=127.0.0.1")
        server.addEndpoint(self.own)
        server.startService()
        self.addCleanup(server.stopService)
        self.assertEqual(self.warnings(), [])

    def test_noListenerYet(self) -> None:
        """
        Started before any listener is added (an embedding program calling
        L{SMTPServer.listen} later), the server announces it as before
        when STARTTLS is offered: a later listener may serve it.
        """
        server = self.server()
        server.startService()
        self.addCleanup(server.stopService)
        self.assertEqual(len(self.warnings()), 1)


class ParseTests(SynchronousTestCase):
    """
    C{twistd smtpd} checks the certificate files when it parses its
    options without announcing the self-signed certificate: the server
    does, once, when it starts.
    """

    def test_checkedQuietly(self) -> None:
        """
        With C{--sni} or C{--tls-ca} but no C{--tls-cert}, the files are
        read while parsing, and nothing is logged.
        """
        from twisted_smtpd._twistd.tap import Options

        ca = CertificateAuthority(self.mktemp())
        issued = ca.server("mx.example.com")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for extra in [
            ["--sni", f"mx.example.com={issued.certificatePath},{issued.keyPath}"],
            ["--tls-ca", ca.certificatePath, "--request-cert"],
        ]:
            Options().parseOptions(["--sink", "--listen", "tcp:0:interface=127.0.0.1", *extra])
        self.assertEqual([formatEvent(e) for e in events if SELF_SIGNED in formatEvent(e)], [])
