# -*- test-case-name: tests.test_summary -*-
"""
The startup summary of C{twistd smtpd}.
"""

from __future__ import annotations

import datetime

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from twisted_smtpd import ServerOptions, SMTPServer
from twisted_smtpd._core.version import __version__
from twisted_smtpd._serving.summary import formatAddress, logCertificates, logSummary
from twisted_smtpd.handlers import SinkHandler


class SummaryTests(SynchronousTestCase):
    """
    The lines logged once the server started.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def startup(self) -> list[str]:
        return [
            formatEvent(e) for e in self.events if e["log_namespace"] == "twisted_smtpd.startup"
        ]

    def test_addresses(self) -> None:
        """
        IPv4, IPv6 and UNIX socket addresses as an operator reads them.
        """
        self.assertEqual(formatAddress(IPv4Address("TCP", "127.0.0.1", 25)), "127.0.0.1:25")
        self.assertEqual(formatAddress(IPv6Address("TCP", "::1", 25)), "[::1]:25")
        self.assertEqual(formatAddress(UNIXAddress(b"/run/s.sock")), "'/run/s.sock'")

    def test_descriptionEscaped(self) -> None:
        """
        An endpoint string from the command line is written with its control
        characters escaped, in the listening and stopped listening lines.
        """
        from twisted_smtpd._serving.summary import logListener, logStopped

        address = IPv4Address("TCP", "127.0.0.1", 25)
        logListener("unix:/run/a\x1b[2J\u202e.sock", address)
        logStopped("unix:/run/a\x1b[2J\u202e.sock", address)
        self.assertEqual(
            self.startup(),
            [
                "listening: unix:/run/a\\x1b[2J\\u202e.sock on 127.0.0.1:25",
                "stopped listening: unix:/run/a\\x1b[2J\\u202e.sock on 127.0.0.1:25",
            ],
        )

    def test_ready(self) -> None:
        """
        The ready line has the version, protocol, name, delivery, size
        limit, AUTH methods and the client limit.
        """
        server = SMTPServer(
            SinkHandler(),
            ServerOptions(
                name="mx.example.com",
                size=1000,
                maxClients=5,
                disabledCommands=("STARTTLS",),
                authMethods=("PLAIN",),
            ),
            checkers=[InMemoryUsernamePasswordDatabaseDontUse(a=b"b")],
        )
        logSummary(server, "maildir ./Maildir")
        self.assertEqual(
            self.startup(),
            [
                f"ready: twisted-smtpd {__version__}, SMTP as mx.example.com, delivery"
                " maildir ./Maildir, size limit 1000, AUTH PLAIN (required), max clients 5"
            ],
        )

    def test_certificates(self) -> None:
        """
        Each certificate's subject and expiry; one that expires soon is a
        warning.
        """
        ca = CertificateAuthority(self.mktemp())
        now = datetime.datetime.now(datetime.UTC)
        main = ca.server("mx.example.com")
        soon = ca.issue(
            "old.example.com", ("old.example.com",), notAfter=now + datetime.timedelta(days=5)
        )
        server = SMTPServer(
            SinkHandler(),
            ServerOptions(
                certificate=main.certificatePath,
                privateKey=main.keyPath,
                sniOptions={"old.example.com": (soon.certificatePath, soon.keyPath)},
            ),
        )
        logCertificates(server, now)
        events = [e for e in self.events if e["log_namespace"] == "twisted_smtpd.startup"]
        self.assertEqual(
            [(e["log_level"], e["subject"], e["servername"], e["days"]) for e in events],
            [
                (LogLevel.info, "CN=mx.example.com", None, 29),
                (LogLevel.warn, "CN=old.example.com", "old.example.com", 4),
            ],
        )
        self.assertIn(
            "TLS certificate for SNI old.example.com: CN=old.example.com", formatEvent(events[1])
        )
        self.assertTrue(formatEvent(events[1]).endswith("renew it"))

    def test_expired(self) -> None:
        """
        A certificate past its end is logged as expired so many days ago,
        never as expiring in a negative number of days.
        """
        ca = CertificateAuthority(self.mktemp())
        now = datetime.datetime.now(datetime.UTC)
        main = ca.server("mx.example.com")
        server = SMTPServer(
            SinkHandler(),
            ServerOptions(certificate=main.certificatePath, privateKey=main.keyPath),
        )
        logCertificates(server, now + datetime.timedelta(days=41))
        (event,) = [e for e in self.events if e["log_namespace"] == "twisted_smtpd.startup"]
        self.assertEqual((event["log_level"], event["days"]), (LogLevel.warn, -11))
        self.assertRegex(
            formatEvent(event),
            r"^TLS certificate: CN=mx\.example\.com, expired \S+Z \(11 days ago\); renew it$",
        )

    def test_subjectEscaped(self) -> None:
        """
        A subject holding a line break, an escape sequence or a bidi
        override (RFC 4514 escapes none of them) is written escaped, on one
        line.
        """
        ca = CertificateAuthority(self.mktemp())
        hostile = ca.issue("mx.example.com\n2026 fake line\x1b[2K\u202e")
        server = SMTPServer(
            SinkHandler(),
            ServerOptions(certificate=hostile.certificatePath, privateKey=hostile.keyPath),
        )
        logCertificates(server)
        (line,) = self.startup()
        self.assertTrue(
            line.startswith(
                r"TLS certificate: CN=mx.example.com\x0a2026 fake line\x1b[2K\u202e, expires "
            ),
            line,
        )

    def test_weakClientCertificateAuthority(self) -> None:
        """
        With client certificates asked for, a CA whose key the cipher
        string's security level refuses (RSA-1024 at C{@SECLEVEL=2}), so
        that no client chain to it can verify, is one warning line naming
        the file and why, at start and after each reload; none at a level
        that accepts it.
        """
        import os

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        directory = self.mktemp()
        issued = CertificateAuthority(directory).server("mx.example.com")
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak CA")])
        now = datetime.datetime.now(datetime.UTC)
        authority = (
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
        path = os.path.join(directory, "weak-ca.pem")
        with open(path, "wb") as f:
            f.write(authority.public_bytes(serialization.Encoding.PEM))
        warning = (
            f"CA certificates {path}: number 1 (CN=weak CA) can verify no client certificate"
            " at the security level 2 of the cipher string: key too small"
        )
        for level, expected in [(2, [warning]), (1, [])]:
            start = len(self.events)
            server = SMTPServer(
                SinkHandler(),
                ServerOptions(
                    certificate=issued.certificatePath,
                    privateKey=issued.keyPath,
                    caCertificates=path,
                    requestCert=True,
                    tlsCiphers=f"DEFAULT:@SECLEVEL={level}",
                ),
            )
            logSummary(server, "sink")
            server.reloadCertificates()
            logCertificates(server)
            warnings = [
                formatEvent(e)
                for e in list(self.events)[start:]
                if e["log_level"] == LogLevel.warn and formatEvent(e).startswith("CA ")
            ]
            self.assertEqual(warnings, expected * 2)
