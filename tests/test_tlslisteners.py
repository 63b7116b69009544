# -*- test-case-name: tests.test_tlslisteners -*-
"""
C{ssl:} listeners with keys of their own (C{ssl:465:privateKey=...:certKey=...})
get the server's TLS policy, their own certificate, and reloading, with real
handshakes in memory (L{tests.test_tls.handshake}).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from OpenSSL import SSL
from twisted.python import usage

from tests.certs import CertificateAuthority, IssuedCertificate, TLSClient
from tests.test_tls import _TLSTestCase, handshake
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.listeners import OwnKeys, splitDescription
from twisted_smtpd._serving.service import SMTPServer
from twisted_smtpd._serving.tls import tlsInfo
from twisted_smtpd._twistd.tap import Options
from twisted_smtpd.handlers import SinkHandler


def _own(issued: IssuedCertificate, more: str = "") -> str:
    keys = f"privateKey={issued.keyPath}:certKey={issued.certificatePath}"
    return f"ssl:0:interface=127.0.0.1:{keys}{more}"


def _creator(server: SMTPServer, description: str) -> Any:
    """
    Add the listener of C{description} to C{server}; what it makes its TLS
    connections with (the TLS configuration it was given).
    """
    server.addEndpoint(description)
    return server._listenerTLS[-1]


class SplitTests(_TLSTestCase):
    """
    L{splitDescription} takes an C{ssl:} string with keys of its own apart
    into a TCP listener and the listener's files.
    """

    def test_ownKeysLayer(self) -> None:
        """
        The files become an L{OwnKeys} layer, inside any C{haproxy:} one,
        and the port, interface and backlog a C{tcp:} description (an IPv6
        interface escaped again).
        """
        self.assertEqual(
            splitDescription(
                "haproxy:ssl:465:interface=\\:\\:1:privateKey=k.pem:certKey=c.pem"
                ":backlog=5:extraCertChain=x.pem:dhParameters=d.pem"
            ),
            (
                "tcp:465:interface=\\:\\:1:backlog=5",
                ["haproxy", OwnKeys("k.pem", "c.pem", "x.pem", "d.pem")],
            ),
        )
        self.assertEqual(
            splitDescription("ssl:465:k.pem"), ("tcp:465", [OwnKeys("k.pem", "k.pem")])
        )
        self.assertEqual(
            splitDescription("ssl:465:interface=127.0.0.1"),
            ("tcp:465:interface=127.0.0.1", ["tls"]),
        )

    def test_portNamed(self) -> None:
        """
        The port may be named (C{port=465}), as Twisted's C{ssl:} parser
        takes it, with keys of its own or without; named and given first
        too, it is refused with one line.
        """
        self.assertEqual(
            splitDescription("ssl:port=465:privateKey=k.pem:interface=127.0.0.1"),
            ("tcp:465:interface=127.0.0.1", [OwnKeys("k.pem", "k.pem")]),
        )
        self.assertEqual(
            splitDescription("haproxy:ssl:privateKey=k.pem:port=465"),
            ("tcp:465", ["haproxy", OwnKeys("k.pem", "k.pem")]),
        )
        self.assertEqual(splitDescription("ssl:port=465"), ("tcp:465", ["tls"]))
        e = self.assertRaises(ValueError, splitDescription, "ssl:465:port=587")
        self.assertEqual(str(e), "ssl: port given twice")

    def test_refusedArguments(self) -> None:
        """
        An argument Twisted's C{ssl:} parser does not take, or an
        C{sslmethod} that would pin the protocol version below the server's
        minimum, is refused with one line; C{SSLv23_METHOD} (any version)
        is accepted.
        """
        server = SMTPServer(SinkHandler())
        issued = self.default
        for more, why in [
            (":privatekey=x", "ssl: takes no argument 'privatekey'"),
            (":sslmethod=TLSv1_METHOD", "sslmethod=TLSv1_METHOD is refused"),
        ]:
            e = self.assertRaises(ValueError, server.addEndpoint, _own(issued, more))
            self.assertIn(why, str(e))
        server.addEndpoint(_own(issued, ":sslmethod=SSLv23_METHOD"))

    def test_refusedMethodLine(self) -> None:
        """
        The line refusing an C{sslmethod} of a C{--listen} string names the
        values taken; one that is no TLS server method of OpenSSL's (a
        misspelling, C{DTLS_METHOD}) is refused saying so, not as pinning
        a version.
        """
        from twisted.python import usage

        from tests.test_tap import parse

        allowed = (
            "; it takes SSLv23_METHOD, TLS_METHOD or TLS_SERVER_METHOD (every version),"
            " or may be left out"
        )
        for method, why in [
            (
                "TLSv1_METHOD",
                "the server's minimum TLS version (tlsMinVersion, --tls-min-version)"
                " applies to every listener",
            ),
            ("bogus", "it is not one of OpenSSL's TLS server methods"),
            ("DTLS_METHOD", "it is not one of OpenSSL's TLS server methods"),
        ]:
            description = f"ssl:0:interface=127.0.0.1:sslmethod={method}"
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--listen", description)
            self.assertEqual(
                str(e),
                f"--listen {description!r}: sslmethod={method} is refused: {why}{allowed}",
            )

    def test_serverCertificatesArguments(self) -> None:
        """
        An C{ssl:} string with no key of its own (served with the server's
        certificates) refuses a version-pinning C{sslmethod} as one with
        keys does, drops one allowing every version, and refuses
        C{extraCertChain} and C{dhParameters}, which would belong to a key
        of its own, each in one line naming the argument.
        """
        self.assertEqual(
            splitDescription("ssl:465:interface=\\:\\:1:sslmethod=TLS_METHOD:backlog=5"),
            ("tcp:465:interface=\\:\\:1:backlog=5", ["tls"]),
        )
        for more, why in [
            (":sslmethod=TLSv1_2_METHOD", "sslmethod=TLSv1_2_METHOD is refused"),
            (":extraCertChain=x.pem", "ssl: extraCertChain= needs a key of its own"),
            (":dhParameters=d.pem", "ssl: dhParameters= needs a key of its own"),
        ]:
            e = self.assertRaises(ValueError, splitDescription, "ssl:465" + more)
            self.assertIn(why, str(e))

    def test_tlsEndpointRefused(self) -> None:
        """
        Twisted's C{tls:} server endpoint is refused with one line pointing
        to C{ssl:}, behind C{haproxy:} too, by L{splitDescription},
        L{SMTPServer.addEndpoint} and L{SMTPServer.listen}: C{tls:465} would
        listen on port 443 of every address, its certificates read from a
        directory named C{465}, without the server's TLS settings.
        """
        refused = (
            "tls: is not supported (Twisted's tls: server endpoint reads a directory of"
            " certificates first and listens on port 443 of every address by default);"
            " use ssl:PORT for implicit TLS (RFC 8314) with the server's TLS settings"
        )
        for description in ["tls:465", "haproxy:tls:465", "Tls:465"]:
            e = self.assertRaises(ValueError, splitDescription, description)
            self.assertEqual(str(e), refused)
        server = SMTPServer(SinkHandler())
        e = self.assertRaises(ValueError, server.addEndpoint, "tls:465")
        self.assertEqual(str(e), refused)
        e = self.assertRaises(ValueError, server.listen, "tls:465:port=0:interface=127.0.0.1")
        self.assertEqual(str(e), refused)
        self.assertEqual(list(server), [])


class PolicyTests(_TLSTestCase):
    """
    The server's C{tlsMinVersion} and C{tlsCiphers} hold on a listener with
    keys of its own, which serves its own certificate.
    """

    def setUp(self) -> None:
        super().setUp()
        self.own = self.ca.server("submission.example.com")

    def test_minimumVersion(self) -> None:
        """
        With C{tlsMinVersion="TLSv1.3"}, a TLS 1.2 client is refused; a TLS
        1.3 client gets the listener's certificate, not the server's.
        """
        options = ServerOptions(
            certificate=self.default.certificatePath,
            privateKey=self.default.keyPath,
            tlsMinVersion="TLSv1.3",
        )
        creator = _creator(SMTPServer(SinkHandler(), options), _own(self.own))
        refused = handshake(creator, TLSClient(maximumVersion=SSL.TLS1_2_VERSION))
        self.assertHandshakeRefused(refused)
        accepted = handshake(creator)
        self.assertEqual(tlsInfo(accepted.server.transport).protocol, "TLSv1.3")
        self.assertEqual(accepted.serverCertificate, self.own.certificate)

    def test_ciphers(self) -> None:
        """
        The cipher string chooses the TLS 1.2 cipher of the listener.
        """
        for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
            server = SMTPServer(SinkHandler(), ServerOptions(tlsCiphers=cipher))
            creator = _creator(server, _own(self.own))
            result = handshake(creator, TLSClient(maximumVersion=SSL.TLS1_2_VERSION))
            self.assertEqual(tlsInfo(result.server.transport).cipher, cipher)

    def test_securityLevel(self) -> None:
        """
        The cipher string's C{@SECLEVEL} holds for the listener's key: at
        level 3 its RSA 2048-bit key is refused when the listener is added,
        an EC P-256 one accepted.
        """
        options = ServerOptions(
            certificate=self.default.certificatePath,
            privateKey=self.default.keyPath,
            tlsCiphers="DEFAULT:@SECLEVEL=3",
        )
        server = SMTPServer(SinkHandler(), options)
        server.addEndpoint(_own(self.own))
        weak = self.ca.issue("rsa.example.com", rsaKey=True)
        e = self.assertRaises(ValueError, server.addEndpoint, _own(weak))
        self.assertEqual(
            str(e),
            f"cannot use certificate {weak.certificatePath} at the security level 3 of the"
            " cipher string: ee key too small",
        )

    def test_extraCertChain(self) -> None:
        """
        The certificates of C{extraCertChain} follow the listener's own.
        """
        chainPath = os.path.join(self.directory, "chain.pem")
        shutil.copy(self.ca.certificatePath, chainPath)
        creator = _creator(
            SMTPServer(SinkHandler()), _own(self.own, f":extraCertChain={chainPath}")
        )
        result = handshake(creator)
        assert result.client.transport is not None
        chain = result.client.transport.getHandle().get_peer_cert_chain()
        self.assertEqual(
            [c.to_cryptography() for c in chain], [self.own.certificate, self.ca.certificate]
        )


class ReloadTests(_TLSTestCase):
    """
    L{SMTPServer.reloadCertificates} reads a listener's own files again.
    """

    def test_reload(self) -> None:
        """
        New handshakes get the certificate written since; a file that
        cannot be read keeps the last one, with one line naming the
        listener and the file.
        """
        own = self.ca.server("one.example.com")
        server = SMTPServer(SinkHandler())
        description = _own(own)
        creator = _creator(server, description)
        self.assertEqual(handshake(creator).serverCertificate, own.certificate)
        other = self.ca.server("two.example.com")
        shutil.copy(other.certificatePath, own.certificatePath)
        shutil.copy(other.keyPath, own.keyPath)
        server.reloadCertificates()
        self.assertEqual(handshake(creator).serverCertificate, other.certificate)
        with open(own.keyPath, "w") as f:
            f.write("no key\n")
        e = self.assertRaises(ValueError, server.reloadCertificates)
        self.assertEqual(
            str(e),
            f"{description}: cannot read privateKey {own.keyPath}: no unencrypted PEM private key",
        )
        self.assertEqual(handshake(creator).serverCertificate, other.certificate)

    def test_reloadedWhenServerCertificateUnreadable(self) -> None:
        """
        A SIGHUP reload whose server certificate, not used yet, cannot be
        read still reloads the listeners' own; its one error line names
        the server's file.
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher

        from tests.test_tap import FakeReactor
        from twisted_smtpd._twistd import tap as _tap

        main = self.ca.server("mail.example.com")
        own = self.ca.server("one.example.com")
        server = _tap.SMTPDaemon(
            SinkHandler(),
            ServerOptions(certificate=main.certificatePath, privateKey=main.keyPath),
            reactor=FakeReactor(),
        )
        creator = _creator(server, _own(own))
        other = self.ca.server("two.example.com")
        shutil.copy(other.certificatePath, own.certificatePath)
        shutil.copy(other.keyPath, own.keyPath)
        with open(main.keyPath, "w") as f:
            f.write("no key\n")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server.reload()
        self.assertEqual(handshake(creator).serverCertificate, other.certificate)
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn(main.keyPath, formatEvent(errors[0]))

    def test_failedReloadLogsEachAndCertificatesInUse(self) -> None:
        """
        A SIGHUP reload that fails for the server's own certificate and for
        one listener's logs one error line for each, and then, as a reload
        that succeeds, the certificates in use (the one reloaded, the old
        ones kept) and their expiry metric.
        """
        import datetime

        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher

        from tests.test_tap import FakeReactor
        from twisted_smtpd._twistd import tap as _tap

        main = self.ca.server("mail.example.com")
        one = self.ca.server("one.example.com")
        broken = self.ca.server("broken.example.com")
        server = _tap.SMTPDaemon(
            SinkHandler(),
            ServerOptions(certificate=main.certificatePath, privateKey=main.keyPath),
            reactor=FakeReactor(),
        )
        server.serveMetrics(None)
        server.factory.tls  # noqa: B018 -- in use
        oneDescription, brokenDescription = _own(one), _own(broken)
        creator = _creator(server, oneDescription)
        _creator(server, brokenDescription)
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=60)
        other = self.ca.issue("two.example.com", notAfter=later)
        shutil.copy(other.certificatePath, one.certificatePath)
        shutil.copy(other.keyPath, one.keyPath)
        for path in [main.keyPath, broken.keyPath]:
            with open(path, "w") as f:
                f.write("no key\n")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server.reload()
        self.assertEqual(handshake(creator).serverCertificate, other.certificate)
        errors = [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 2)
        self.assertIn(main.keyPath, errors[0])
        self.assertIn(f"{brokenDescription}: cannot read privateKey {broken.keyPath}", errors[1])
        lines = [formatEvent(e) for e in events if formatEvent(e).startswith("TLS certificate")]
        self.assertEqual(
            [line.split(",")[0] for line in lines],
            [
                "TLS certificates of " + oneDescription + " reloaded",
                "TLS certificate: CN=mail.example.com",
                f"TLS certificate of {oneDescription}: CN=two.example.com",
                f"TLS certificate of {brokenDescription}: CN=broken.example.com",
            ],
        )
        expiry = server.metrics.registry.get_sample_value(
            "smtpd_certificate_expiry_timestamp_seconds",
            {"servername": "", "listener": oneDescription},
        )
        self.assertEqual(expiry, other.certificate.not_valid_after_utc.timestamp())


class OptionsTests(_TLSTestCase):
    """
    C{twistd smtpd} reads a listener's own files with the server's TLS
    policy when it parses its options.
    """

    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(["--sink", *args])
        return options

    def test_cipherCheckIncludesOwnKey(self) -> None:
        """
        A cipher string that leaves no TLS 1.2 cipher for the RSA key of a
        listener's own certificate is refused, naming it.
        """
        own = CertificateAuthority(self.mktemp()).issue("rsa.example.com", rsaKey=True)
        error = self.assertRaises(
            usage.UsageError, self.parse, "--tls-ciphers", "aECDSA", "--listen", _own(own)
        )
        self.assertEqual(
            str(error),
            "--tls-ciphers: the cipher string 'aECDSA' selects no TLS 1.2 cipher usable with"
            f" the RSA key of certificate {own.certificatePath} of an ssl: listener",
        )

    def test_mismatchedKeyOneLine(self) -> None:
        """
        A key that is not the certificate's is one line naming the listener,
        the argument and the paths, as for the server's own certificate.
        """
        other = self.ca.server("other.example.com")
        description = f"ssl:0:privateKey={other.keyPath}:certKey={self.default.certificatePath}"
        error = self.assertRaises(usage.UsageError, self.parse, "--listen", description)
        self.assertEqual(
            str(error),
            f"--listen {description!r}: cannot read certKey {self.default.certificatePath}:"
            f" it does not match {other.keyPath}",
        )
