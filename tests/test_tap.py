# -*- test-case-name: tests.test_tap -*-
"""
Tests for L{twisted_smtpd._twistd.tap} and the C{twistd smtpd} plugin.
"""

from __future__ import annotations

import errno
import gc
import io
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Application, IServiceCollection, IServiceMaker
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.certs import CertificateAuthority
from tests.integration import recordinghandler
from tests.test_deadlines import LogCatcher
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.optionchecks import HIDEABLE
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.replies import Reply
from twisted_smtpd._core.session import Address, AuthRequest, Envelope, Session
from twisted_smtpd._serving.logging import NAMESPACE, SessionLogger, jsonLogObserver
from twisted_smtpd._serving.logwriter import BufferedLogWriter
from twisted_smtpd._serving.service import SMTPServer
from twisted_smtpd._twistd import daemon as _daemon
from twisted_smtpd._twistd import tap as _tap
from twisted_smtpd.handlers import DebuggingHandler, MaildirHandler, SinkHandler


def parse(*args: str) -> _tap.Options:
    """
    Parse C{args} as the options following C{twistd smtpd}.
    """
    config = _tap.Options()
    config.parseOptions(list(args))
    return config


class _UnprintableHandler(SinkHandler):
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _unprintableHandler() -> SinkHandler:
    """
    A C{--handler} whose C{repr()} raises.
    """
    return _UnprintableHandler()


class DecidingHandler(SinkHandler):
    """
    A C{--handler} (C{tests.test_tap:DecidingHandler}) that decides AUTH
    itself: alice only.
    """

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        return auth.username if auth.username == "alice" else None


class PluginTests(SynchronousTestCase):
    """
    The plugin that C{twistd} finds.
    """

    def test_serviceMaker(self) -> None:
        """
        C{smtpd} provides L{IServiceMaker}, is called C{smtpd} and hands out
        the options and C{makeService} of L{twisted_smtpd._twistd.tap}.
        """
        from twisted.plugins.twisted_smtpd_plugin import smtpd

        self.assertTrue(verifyObject(IServiceMaker, smtpd))
        self.assertEqual(smtpd.tapname, "smtpd")
        self.assertIs(smtpd.options, _tap.Options)
        self.assertIs(smtpd.makeService, _tap.makeService)

    def test_discovered(self) -> None:
        """
        The plugin system lists C{smtpd} among the service makers, as
        C{twistd --help} does.
        """
        names = [maker.tapname for maker in getPlugins(IServiceMaker)]
        self.assertIn("smtpd", names)


class OptionsTests(SynchronousTestCase):
    """
    Parsing the command line of C{twistd smtpd}.
    """

    def setUp(self) -> None:
        self.maildir = self.mktemp()

    def assertUsageError(self, *args: str) -> str:
        """
        Parsing C{args} fails with a L{usage.UsageError} of one line, which
        is returned.
        """
        error = self.assertRaises(usage.UsageError, parse, *args)
        message = str(error)
        self.assertTrue(message)
        self.assertNotIn("\n", message)
        return message

    def test_defaults(self) -> None:
        """
        Without flags the server listens on 127.0.0.1 port 2525 and every
        option keeps the default of L{ServerOptions}.
        """
        config = parse("--maildir", self.maildir)
        self.assertEqual(config["listen"], ["tcp:2525:interface=127.0.0.1"])
        options = config["serverOptions"]
        self.assertEqual(options, ServerOptions(name=options.name))

    def test_sizeDefault(self) -> None:
        """
        C{--size} defaults to L{ServerOptions}' finite 10,240,000 bytes,
        shown in C{--help}; C{--size 0} still means no limit.
        """
        self.assertEqual(parse("--maildir", self.maildir)["serverOptions"].size, 10_240_000)
        self.assertEqual(parse("--maildir", self.maildir, "--size", "0")["serverOptions"].size, 0)
        self.assertIn("[default: 10240000]", " ".join(str(_tap.Options()).split()))

    def test_defaultMaildir(self) -> None:
        """
        Without a delivery flag, messages go to C{./Maildir}, which is
        created.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)
        handler = parse()["handler"]
        self.assertIsInstance(handler, MaildirHandler)
        self.assertEqual(handler.path, os.path.join(directory, "Maildir"))
        self.assertTrue(os.path.isdir(os.path.join(directory, "Maildir", "new")))

    def test_helpShowsDefaults(self) -> None:
        """
        C{--help} names every flag and shows the defaults.
        """
        text = " ".join(str(_tap.Options()).split())
        for expected in [
            "--listen=",
            "[default: tcp:2525:interface=127.0.0.1]",
            "--maildir=",
            "[default: ./Maildir]",
            "--sink",
            "--debug",
            "--hostname=",
            "--banner=",
            "--size=",
            "--lmtp",
            "--max-clients=",
            "--socket-timeout=",
            "[default: 60.0]",
            "--close-timeout=",
            "[default: 30.0]",
            "--max-recipients=",
            "[default: 1000]",
            "--tls-handshake-timeout=",
            "[default: 30.0]",
            "--max-clients-per-ip=",
            "--max-connection-rate=",
            "--min-data-rate=",
            "--limit-exempt=",
            "--disable=",
            "--hide=",
            "--bare-newline=",
            "[default: reject]",
            "--tls-cert=",
            "--tls-key=",
            "--tls-ca=",
            "--sni=",
            "--request-cert",
            "--allow-insecure-auth",
            "--auth-methods=",
            "[default: PLAIN,LOGIN]",
            "--auth-optional",
            "--auth=",
            "--no-reverse-lookup",
            "--proxy-trusted=",
            "--xclient=",
            "--xforward=",
            "--maildir-per-recipient",
            "--maildir-trace",
            "--mbox=",
            "--relay=",
            "--relay-ca=",
            "--relay-insecure",
            "--relay-require-tls",
            "--relay-user=",
            "--relay-password=",
            "--relay-auth=",
            "--relay-sessions=",
            "--relay-idle=",
            "--lmtp-to=",
            "--pipe=",
            "--pipe-spool=",
            "--handler=",
            "--handler-option=",
            "--config=",
            "--log-format=",
            "[default: text]",
        ]:
            self.assertIn(expected, text)

    def test_everyFlag(self) -> None:
        """
        Each flag sets its L{ServerOptions} attribute.
        """
        config = parse(
            "--listen",
            "tcp:0",
            "--hostname",
            "mx.example.com",
            "--banner",
            "Welcome",
            "--sink",
            "--size",
            "10000",
            "--lmtp",
            "--max-clients",
            "5",
            "--socket-timeout",
            "2.5",
            "--close-timeout",
            "0",
            "--max-recipients",
            "3",
            "--disable",
            "vrfy",
            "--disable",
            "HELP",
            "--hide",
            "size",
            "--hide",
            "STARTTLS",
            "--bare-newline",
            "normalize",
        )
        self.assertEqual(config["listen"], ["tcp:0"])
        self.assertEqual(
            config["serverOptions"],
            ServerOptions(
                name="mx.example.com",
                banner="Welcome",
                size=10000,
                lmtp=True,
                maxClients=5,
                socketTimeout=2.5,
                closeTimeout=0,
                maxRecipients=3,
                disabledCommands=("VRFY", "HELP"),
                hideSize=True,
                hideSTARTTLS=True,
                bareNewline="normalize",
            ),
        )

    def test_deadlineAndLimitFlags(self) -> None:
        """
        The TLS handshake and handler timeouts and the per-client limits
        have flags; the
        defaults leave them as L{ServerOptions} has them.
        """
        config = parse(
            "--sink",
            "--tls-handshake-timeout",
            "7.5",
            "--handler-timeout",
            "90",
            "--max-clients-per-ip",
            "4",
            "--max-connection-rate",
            "30/60",
            "--min-data-rate",
            "1000/10",
            "--limit-exempt",
            "10.0.0.0/8,192.0.2.1",
            "--limit-exempt",
            "::1",
            "--max-junk-commands",
            "0",
        )
        options = config["serverOptions"]
        self.assertEqual(options.maxJunkCommands, 0)
        self.assertEqual(options.tlsHandshakeTimeout, 7.5)
        self.assertEqual(options.handlerTimeout, 90.0)
        self.assertEqual(options.maxClientsPerIp, 4)
        self.assertEqual(options.maxConnectionRate, (30, 60.0))
        self.assertEqual(options.minDataRate, (1000, 10.0))
        self.assertEqual(
            [str(n) for n in options.limitExemptions], ["10.0.0.0/8", "192.0.2.1/32", "::1/128"]
        )
        defaults = parse("--sink")["serverOptions"]
        self.assertEqual(
            (
                defaults.tlsHandshakeTimeout,
                defaults.handlerTimeout,
                defaults.maxClientsPerIp,
                defaults.maxConnectionRate,
                defaults.minDataRate,
                defaults.limitExemptions,
                defaults.maxJunkCommands,
            ),
            (30.0, 600.0, 0, None, None, (), 100),
        )

    def test_badRates(self) -> None:
        """
        A COUNT/SECONDS flag given anything else is a usage error naming the
        flag and the value.
        """
        for flag in ("max-connection-rate", "max-auth-rate", "min-data-rate"):
            for value in ("30", "0/60", "30/0", "30/inf", "x/60", "30/-1", "30/nan"):
                message = self.assertUsageError("--sink", f"--{flag}", value)
                self.assertIn(f"--{flag}", message)
                self.assertIn(repr(value), message)
        message = self.assertUsageError("--sink", "--limit-exempt", "nonsense")
        self.assertIn("--limit-exempt", message)

    def test_listenRepeatable(self) -> None:
        """
        C{--listen} may be given several times; the endpoints are kept in
        order and the default is not added.
        """
        config = parse("--sink", "--listen", "tcp:0", "--listen", "unix:/tmp/smtpd.sock")
        self.assertEqual(config["listen"], ["tcp:0", "unix:/tmp/smtpd.sock"])

    def test_hideEach(self) -> None:
        """
        C{--hide EXT} sets exactly the matching C{hideXXX} option, whatever
        the case of EXT.
        """
        hiders = {"hideSize", *("hide" + e for e in HIDEABLE if e != "SIZE")}
        for extension in HIDEABLE:
            options = parse("--sink", "--hide", extension.lower())["serverOptions"]
            hidden = {name for name in hiders if getattr(options, name)}
            expected = "hideSize" if extension == "SIZE" else "hide" + extension
            self.assertEqual(hidden, {expected}, extension)

    def test_sink(self) -> None:
        """
        C{--sink} chooses L{SinkHandler}.
        """
        self.assertIsInstance(parse("--sink")["handler"], SinkHandler)

    def test_debug(self) -> None:
        """
        C{--debug} chooses L{DebuggingHandler}.
        """
        self.assertIsInstance(parse("--debug")["handler"], DebuggingHandler)

    def test_maildir(self) -> None:
        """
        C{--maildir PATH} chooses a L{MaildirHandler} on PATH, created with
        its C{new}, C{cur} and C{tmp} directories.
        """
        handler = parse("--maildir", self.maildir)["handler"]
        self.assertIsInstance(handler, MaildirHandler)
        self.assertEqual(handler.path, os.path.abspath(self.maildir))
        for sub in ["new", "cur", "tmp"]:
            self.assertTrue(os.path.isdir(os.path.join(self.maildir, sub)))

    def test_maildirNotCreatable(self) -> None:
        """
        A Maildir that cannot be created is a usage error naming it.
        """
        blocker = self.mktemp()
        with open(blocker, "w"):
            pass
        path = os.path.join(blocker, "Maildir")
        self.assertIn(repr(path), self.assertUsageError("--maildir", path))

    def test_deliveriesExclusive(self) -> None:
        """
        Any two delivery flags exclude each other, and the error names them.
        """
        for args, named in [
            (("--sink", "--debug"), "--debug, --sink"),
            (("--maildir", self.maildir, "--sink"), "--maildir, --sink"),
            (("--debug", "--maildir", self.maildir), "--maildir, --debug"),
            (("--mbox", "x.mbox", "--relay", "mx.example"), "--mbox, --relay"),
            (("--pipe", "cat", "--lmtp-to", "tcp:127.0.0.1:24"), "--lmtp-to, --pipe"),
            (("--handler", "a:b", "--sink"), "--sink, --handler"),
        ]:
            message = self.assertUsageError(*args)
            self.assertIn("mutually exclusive", message)
            self.assertIn(named, message)

    def test_badEndpoint(self) -> None:
        """
        An endpoint string that does not parse is a usage error naming it,
        whatever the parser raised.
        """
        for description in [
            "bogus:1",
            "tcp:notaport",
            "tcp:25:nosuchargument=1",
            "haproxy:bogus:1",
        ]:
            message = self.assertUsageError("--sink", "--listen", "tcp:0", "--listen", description)
            self.assertIn(repr(description), message)

    def test_badNumbers(self) -> None:
        """
        A numeric flag given something other than a number in range is a
        usage error naming the flag.
        """
        for flag, value in [
            ("size", "big"),
            ("size", "-1"),
            ("size", "1.5"),
            ("max-clients", "-3"),
            ("socket-timeout", "0"),
            ("socket-timeout", "nan"),
            ("socket-timeout", "inf"),
            ("close-timeout", "-1"),
            ("tls-handshake-timeout", "0"),
            ("handler-timeout", "0"),
            ("handler-timeout", "inf"),
            ("max-clients-per-ip", "-1"),
            ("max-recipients", "0"),
            ("max-recipients", ""),
            ("max-junk-commands", "-1"),
            ("max-junk-commands", "2.5"),
        ]:
            message = self.assertUsageError("--sink", f"--{flag}", value)
            self.assertIn(f"--{flag}", message)
            self.assertIn(repr(value), message)

    def test_badChoices(self) -> None:
        """
        An unknown command, extension or bare-newline policy is a usage error
        naming the flag and the value.
        """
        for flag, value in [
            ("disable", "FROB"),
            ("hide", "AUTH"),
            ("bare-newline", "fix"),
        ]:
            message = self.assertUsageError("--sink", f"--{flag}", value)
            self.assertIn(f"--{flag}", message)
            self.assertIn(repr(value), message)

    def test_serverOptionsRefused(self) -> None:
        """
        A value that L{ServerOptions} refuses is a usage error too.
        """
        message = self.assertUsageError("--sink", "--banner", "two\nlines")
        self.assertIn("banner", message)


class MakeServiceTests(SynchronousTestCase):
    """
    L{_tap.makeService} builds the server the options describe.
    """

    def test_server(self) -> None:
        """
        The service is an L{SMTPServer} with the parsed handler and
        options and one endpoint service per C{--listen}, not yet listening.
        """
        config = parse(
            "--sink", "--lmtp", "--listen", "tcp:0", "--listen", "tcp:0:interface=127.0.0.1"
        )
        server = _tap.makeService(config)
        self.assertIsInstance(server, SMTPServer)
        assert isinstance(server, SMTPServer)
        self.assertIs(server.factory.handler, config["handler"])
        self.assertIs(server.factory.options, config["serverOptions"])
        children = list(server)
        self.assertEqual(len(children), 2)
        for child in children:
            self.assertIsInstance(child, StreamServerEndpointService)
            self.assertFalse(child.running)


class ServerFlagTests(SynchronousTestCase):
    """
    The flags that set TLS, AUTH and trust options.
    """

    def setUp(self) -> None:
        self.ca = CertificateAuthority(self.mktemp())
        self.server = self.ca.server("mail.example.com")
        self.other = self.ca.server("other.example.com")

    def assertUsageError(self, *args: str) -> str:
        """
        Parsing C{args} (with C{--sink}) fails with one line, returned.
        """
        error = self.assertRaises(usage.UsageError, parse, "--sink", *args)
        self.assertNotIn("\n", str(error))
        return str(error)

    def test_tlsAuthAndTrust(self) -> None:
        """
        TLS, AUTH, reverse lookup and trusted-network flags set their
        L{ServerOptions} attributes; networks may be repeated or
        comma-separated.
        """
        options = parse(
            "--sink",
            "--hostname",
            "mx.example.com",
            "--tls-cert",
            self.server.certificatePath,
            "--tls-key",
            self.server.keyPath,
            "--tls-ca",
            self.ca.certificatePath,
            "--sni",
            f"Other.Example.com={self.other.certificatePath},{self.other.keyPath}",
            "--sni",
            f"combined.example.com={self.other.combinedPath}",
            "--request-cert",
            "--allow-insecure-auth",
            "--auth-methods",
            "plain,CRAM-MD5",
            "--auth",
            "memory:alice:secret",
            "--auth-optional",
            "--no-reverse-lookup",
            "--proxy-trusted",
            "127.0.0.1",
            "--proxy-trusted",
            "10.0.0.0/8,192.168.0.0/16",
            "--xclient",
            "::1",
            "--xforward",
            "192.0.2.0/24",
        )["serverOptions"]
        self.assertEqual(
            options,
            ServerOptions(
                name="mx.example.com",
                certificate=self.server.certificatePath,
                privateKey=self.server.keyPath,
                caCertificates=self.ca.certificatePath,
                sniOptions={
                    "other.example.com": (self.other.certificatePath, self.other.keyPath),
                    "combined.example.com": (self.other.combinedPath, None),
                },
                requestCert=True,
                allowInsecureAuth=True,
                authMethods=("PLAIN", "CRAM-MD5"),
                authOptional=True,
                disableReverseLookup=True,
                useProxy=["127.0.0.1/32", "10.0.0.0/8", "192.168.0.0/16"],
                useXClient=["::1/128"],
                useXForward=["192.0.2.0/24"],
            ),
        )

    def test_tlsFilesReadAtParse(self) -> None:
        """
        A certificate, key, CA or SNI file that cannot be read or does not
        fit is a usage error naming it; a key without a certificate too.
        """
        missing = os.path.abspath(self.mktemp())
        cert, key = self.server.certificatePath, self.server.keyPath
        for args, named in [
            (("--tls-cert", missing), missing),
            (("--tls-cert", cert, "--tls-key", missing), missing),
            (("--tls-cert", cert, "--tls-key", self.other.keyPath), self.other.keyPath),
            (("--tls-cert", cert, "--tls-key", key, "--tls-ca", missing), missing),
            (("--tls-cert", cert, "--tls-key", key, "--sni", f"a.example={missing}"), missing),
            (("--tls-key", key), "--tls-key needs --tls-cert"),
            (("--tls-ciphers", "BOGUS"), "--tls-ciphers: the cipher string 'BOGUS' selects no"),
            (("--tls-ciphers", "!!!"), "--tls-ciphers: the cipher string '!!!' is not valid"),
            (("--sni", f"a\x01b.example={cert},{key}"), r"--sni: invalid SNI host name: 'a\x01b"),
        ]:
            self.assertIn(named, self.assertUsageError(*args))

    def test_tlsCiphersBelowSecurityLevel(self) -> None:
        """
        A C{--tls-ciphers} string OpenSSL parses but whose ciphers its
        security level does not allow (C{eNULL}) is one line naming the
        flag, not a traceback.
        """
        self.assertTrue(
            self.assertUsageError("--tls-ciphers", "eNULL").startswith(
                "--tls-ciphers: the cipher string 'eNULL' is refused: "
            )
        )

    def test_tlsCiphersWithoutCertificateCipher(self) -> None:
        """
        A C{--tls-ciphers} string leaving no cipher a certificate can be
        used with is one line naming the flag, with or without a
        certificate; with C{--tls-min-version 1.3} it is not used and not
        refused.
        """
        cert, key = self.server.certificatePath, self.server.keyPath
        for ciphers in ("PSK", "aNULL"):
            expected = (
                f"--tls-ciphers: the cipher string {ciphers!r} selects no cipher usable"
                " with a certificate"
            )
            self.assertEqual(self.assertUsageError("--tls-ciphers", ciphers), expected)
            self.assertEqual(
                self.assertUsageError(
                    "--tls-cert", cert, "--tls-key", key, "--tls-ciphers", ciphers
                ),
                expected,
            )
        options = parse("--sink", "--tls-ciphers", "PSK", "--tls-min-version", "1.3")
        self.assertEqual(options["serverOptions"].tlsCiphers, "PSK")

    def test_tlsCiphersSecurityLevel(self) -> None:
        """
        The C{@SECLEVEL=N} of C{--tls-ciphers} is applied: a certificate
        whose key it refuses (EC P-256 at level 4) is one line naming
        C{--tls-cert}, the file and the level; without a certificate, one
        naming C{--tls-ciphers} and the self-signed certificate.  A level
        the key reaches is taken.
        """
        cert, key = self.server.certificatePath, self.server.keyPath
        ciphers = "DEFAULT:@SECLEVEL=4"
        self.assertEqual(
            self.assertUsageError("--tls-cert", cert, "--tls-key", key, "--tls-ciphers", ciphers),
            f"--tls-cert: cannot use certificate {cert} at the security level 4 of the cipher"
            " string: ee key too small",
        )
        self.assertEqual(
            self.assertUsageError("--tls-ciphers", ciphers),
            f"--tls-ciphers: the cipher string {ciphers!r} sets a security level that refuses"
            " the EC P-256 key of the self-signed certificate (no certificate is configured):"
            " ee key too small",
        )
        options = parse(
            "--sink", "--tls-cert", cert, "--tls-key", key, "--tls-ciphers", "DEFAULT:@SECLEVEL=3"
        )
        self.assertEqual(options["serverOptions"].tlsCiphers, "DEFAULT:@SECLEVEL=3")

    def test_tlsCiphersForAnotherKindOfKey(self) -> None:
        """
        A C{--tls-ciphers} string leaving no TLS 1.2 cipher usable with the
        key of the certificate given (C{aECDSA} with an RSA certificate,
        C{aRSA} with an EC one) is one line naming the flag and the
        certificate; a string matching the key is taken.
        """
        rsaServer = self.ca.issue("rsa.example.com", ("rsa.example.com",), rsaKey=True)
        ec = (self.server.certificatePath, self.server.keyPath)
        rsa = (rsaServer.certificatePath, rsaServer.keyPath)
        for ciphers, (cert, key), kind in [("aECDSA", rsa, "RSA"), ("aRSA", ec, "EC")]:
            self.assertEqual(
                self.assertUsageError(
                    "--tls-cert", cert, "--tls-key", key, "--tls-ciphers", ciphers
                ),
                f"--tls-ciphers: the cipher string {ciphers!r} selects no TLS 1.2 cipher"
                f" usable with the {kind} key of certificate {cert}",
            )
        for ciphers, (cert, key) in [("aECDSA", ec), ("aRSA", rsa)]:
            options = parse(
                "--sink", "--tls-cert", cert, "--tls-key", key, "--tls-ciphers", ciphers
            )
            self.assertEqual(options["serverOptions"].tlsCiphers, ciphers)

    def test_tlsErrorNamesItsFlag(self) -> None:
        """
        A TLS file error starts with the flag that named the file: a bad CA
        bundle is C{--tls-ca}'s, an SNI certificate C{--sni}'s even when its
        path contains the C{--tls-cert} path or its key is the C{--tls-key}
        file.
        """
        cert, key = self.server.certificatePath, self.server.keyPath
        withKey = ("--tls-cert", cert, "--tls-key", key)
        for args, flag in [
            (("--tls-cert", cert, "--tls-key", self.other.keyPath), "--tls-key"),
            (("--tls-cert", key, "--tls-key", key), "--tls-cert"),
            ((*withKey, "--request-cert", "--tls-ca", key), "--tls-ca"),
            ((*withKey, "--sni", f"a.example={cert}.old"), "--sni"),
            ((*withKey, "--sni", f"a.example={self.other.certificatePath},{key}"), "--sni"),
        ]:
            self.assertTrue(self.assertUsageError(*args).startswith(f"{flag}: "), args)

    def test_badValues(self) -> None:
        """
        A malformed SNI entry (or one for a host named twice, whose
        certificate would replace the other's), network, AUTH method or log
        format is a usage error naming the value.
        """
        for args, named in [
            (("--sni", "nocert.example"), "nocert.example"),
            (("--sni", "=cert.pem"), "=cert.pem"),
            (("--sni", "a.example=a.pem", "--sni", "A.Example=b.pem"), "'A.Example' given twice"),
            (("--sni", "a.example=a.pem", "--sni", "a.example.=b.pem"), "'a.example.' given twice"),
            (
                ("--sni", "stra\xdfe.example=a.pem", "--sni", "xn--strae-oqa.example=b.pem"),
                "'xn--strae-oqa.example' given twice",
            ),
            (("--proxy-trusted", "not-a-network"), "not-a-network"),
            (("--xclient", "10.0.0.0/33"), "10.0.0.0/33"),
            (("--xforward", ""), "--xforward"),
            (("--auth-methods", "PLAIN,GSSAPI"), "GSSAPI"),
            (("--log-format", "xml"), "xml"),
        ]:
            self.assertIn(named, self.assertUsageError(*args))

    def test_auth(self) -> None:
        """
        C{--auth memory:USER:PASSWORD} adds a checker that the server's
        portal uses: AUTH is offered and required, and the checker knows the
        user.
        """
        from twisted.cred.credentials import UsernamePassword

        config = parse("--sink", "--auth", "memory:alice:secret")
        (checker,) = config["credCheckers"]
        self.assertEqual(
            self.successResultOf(checker.requestAvatarId(UsernamePassword(b"alice", b"secret"))),
            b"alice",
        )
        server = _tap.makeService(config)
        self.assertIsNotNone(server.factory.portal)
        self.assertTrue(server.factory.authEnabled)
        self.assertTrue(server.factory.authRequired)

    def test_authOptional(self) -> None:
        """
        With C{--auth-optional}, AUTH is offered but not required.
        """
        server = _tap.makeService(
            parse("--sink", "--auth", "memory:alice:secret", "--auth-optional")
        )
        self.assertTrue(server.factory.authEnabled)
        self.assertFalse(server.factory.authRequired)

    def test_authOptionalWithoutAuth(self) -> None:
        """
        C{--auth-optional} with nothing to offer AUTH (no C{--auth}, no
        handler deciding it, or C{--disable AUTH}) is a one-line usage
        error: it would change nothing, and C{--auth} was most likely
        forgotten.
        """
        for args in [
            ("--auth-optional",),
            ("--auth-optional", "--disable", "AUTH"),
        ]:
            self.assertEqual(
                self.assertUsageError(*args),
                "--auth-optional needs AUTH to be offered: --auth, or a --handler"
                " whose onAuth decides it",
            )

    def test_authOptionalWithHandlerOnAuth(self) -> None:
        """
        C{--auth-optional} with a C{--handler} whose own C{onAuth} decides
        AUTH (and no C{--auth}) is accepted: AUTH is offered, not required.
        """
        server = _tap.makeService(
            parse("--handler", "tests.test_tap:DecidingHandler", "--auth-optional")
        )
        self.assertTrue(server.factory.authEnabled)
        self.assertFalse(server.factory.authRequired)

    def test_noAuth(self) -> None:
        """
        Without C{--auth}, no checker is configured and AUTH is not offered.
        """
        server = _tap.makeService(parse("--sink"))
        self.assertIsNone(server.factory.portal)
        self.assertFalse(server.factory.authEnabled)

    def test_authUnknownType(self) -> None:
        """
        An unknown C{--auth} type is a one-line usage error naming the flag
        and the type.
        """
        message = self.assertUsageError("--auth", "bogus:x")
        self.assertTrue(message.startswith("--auth"), message)
        self.assertIn("bogus", message)

    def test_authEmptyPasswordRefused(self) -> None:
        """
        A C{--auth memory:} user with an empty password is refused in one
        line naming the user and no password: PLAIN and LOGIN never take
        an empty password (RFC 4616), so the user could not log in, and
        CRAM-MD5 would log in anyone knowing the name (an HMAC keyed with
        nothing).
        """
        for description in ("memory:alice:", "memory:bob:s3cret:alice:"):
            message = self.assertUsageError("--sink", "--auth", description)
            self.assertEqual(
                message,
                "--auth memory:...: user 'alice' has an empty password (PLAIN and LOGIN"
                " take none, and CRAM-MD5 would log in anyone who knows the name)",
            )
            self.assertNotIn("s3cret", message)
        parse("--sink", "--auth", "memory:alice:pw:bob:s3cret")

    def test_authMalformedMemoryHidesPasswords(self) -> None:
        """
        A malformed C{--auth memory:} description is refused in one line
        that repeats none of the passwords in it: the line goes to the
        terminal and the service's log.
        """
        for description in ("memory:alice:s3cret:bob", "memory:alice:s3cret::pw2"):
            message = self.assertUsageError("--auth", description)
            self.assertTrue(message.startswith("--auth memory:"), message)
            self.assertNotIn("s3cret", message)
            self.assertNotIn("pw2", message)


class EndpointFlagTests(SynchronousTestCase):
    """
    C{--listen} strings are checked as the server will use them.
    """

    def test_sslWithoutKeyUsesServerTLS(self) -> None:
        """
        An C{ssl:} endpoint without a key of its own is accepted (the server
        serves it with its TLS configuration); one naming a missing key
        file is refused.
        """
        self.assertEqual(parse("--sink", "--listen", "ssl:0")["listen"], ["ssl:0"])
        description = f"ssl:0:privateKey={os.path.abspath(self.mktemp())}"
        error = self.assertRaises(usage.UsageError, parse, "--sink", "--listen", description)
        self.assertIn(repr(description), str(error))

    def test_sslDHParametersReadAtParse(self) -> None:
        """
        An C{ssl:} endpoint with keys of its own whose C{dhParameters} file
        is missing or holds no parameters is refused at parse, naming the
        file, rather than failing every connection.
        """
        issued = CertificateAuthority(self.mktemp()).server("mx.example.com")
        junk = os.path.abspath(self.mktemp())
        with open(junk, "w") as f:
            f.write("not DH parameters\n")
        for path, verb, why in [
            (os.path.abspath(self.mktemp()), "read", "No such file or directory"),
            (junk, "use", "no start line"),
        ]:
            description = (
                f"ssl:0:privateKey={issued.keyPath}:certKey={issued.certificatePath}"
                f":dhParameters={path}"
            )
            error = self.assertRaises(usage.UsageError, parse, "--sink", "--listen", description)
            self.assertIn(f"{description!r}: cannot {verb} dhParameters {path}: {why}", str(error))

    def test_sslFileTooLarge(self) -> None:
        """
        An C{ssl:} endpoint whose certificate or key file is larger than
        16 MiB (C{certKey=/dev/zero} by mistake) is refused at parse, naming
        the argument, instead of being read whole into memory.
        """
        issued = CertificateAuthority(self.mktemp()).server("mx.example.com")
        big = os.path.abspath(self.mktemp())
        with open(big, "wb") as f:
            f.truncate(16 * 1024 * 1024 + 1)
        description = f"haproxy:ssl:0:privateKey={issued.keyPath}:certKey={big}"
        error = self.assertRaises(usage.UsageError, parse, "--sink", "--listen", description)
        self.assertIn(
            f"{description!r}: cannot read certKey {big}: larger than 16777216 bytes", str(error)
        )

    def test_systemdWithoutSockets(self) -> None:
        """
        A C{systemd:} endpoint in a process that inherited no socket is a
        usage error saying so.
        """
        error = self.assertRaises(
            usage.UsageError, parse, "--sink", "--listen", "systemd:domain=INET:index=0"
        )
        self.assertIn("LISTEN_FDS", str(error))

    def test_otherKinds(self) -> None:
        """
        C{unix:} and C{haproxy:} endpoint strings are accepted as they are,
        C{haproxy:} around an C{ssl:} endpoint served with the server's TLS
        too.
        """
        listen = [
            "unix:/tmp/smtpd.sock:mode=660",
            "haproxy:tcp:2525:interface=127.0.0.1",
            "haproxy:ssl:465",
        ]
        args = [part for endpoint in listen for part in ("--listen", endpoint)]
        self.assertEqual(parse("--sink", *args)["listen"], listen)


class DeliveryFlagTests(SynchronousTestCase):
    """
    The delivery flags build the handler they name, or fail in one line.
    """

    def assertUsageError(self, *args: str) -> str:
        error = self.assertRaises(usage.UsageError, parse, *args)
        self.assertNotIn("\n", str(error))
        return str(error)

    def test_maildirSettings(self) -> None:
        """
        C{--maildir-per-recipient} makes the Maildir refuse unsafe mailbox
        names at RCPT, and C{--maildir-trace} turns trace headers on; both
        apply to the default Maildir too.
        """
        path = self.mktemp()
        handler = parse("--maildir", path, "--maildir-per-recipient")["handler"]
        self.assertRaises(SMTPError, handler.onRcptTo, Address("../x@example.com"), Session("s"))
        plain = parse("--maildir", path)["handler"]
        self.assertIsNone(plain.onRcptTo(Address("../x@example.com"), Session("s")))
        self.addCleanup(os.chdir, os.getcwd())
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        os.chdir(directory)
        traced = parse("--maildir-trace", "--hostname", "mx.example")["handler"]
        self.assertTrue(traced._traceHeaders)
        self.assertFalse(traced._existingOnly)
        known = parse("--maildir-per-recipient", "--maildir-existing-only")["handler"]
        self.assertTrue(known._existingOnly)
        self.assertEqual(traced.path, os.path.join(directory, "Maildir"))

    def test_descriptionWithoutPassword(self) -> None:
        """
        The delivery as the ready line names it never holds a URL's
        password.
        """
        config = parse("--amqp", "amqp://mailer:S3cret@127.0.0.1:5672/%2F")
        self.assertEqual(config["deliveryDescription"], "amqp amqp://mailer:***@127.0.0.1:5672/%2F")
        self.assertEqual(
            _tap.withoutPassword("https://hook:S3cret@[::1]:8443/in"),
            "https://hook:***@[::1]:8443/in",
        )
        error = self.assertUsageError("--webhook", "http://hook:S3cret@[::1/in")
        self.assertNotIn("S3cret", error)
        self.assertIn("hook:***@", error)
        for value in ("amqp://mailer@broker/", "http://127.0.0.1/x", "./Maildir", "host:25"):
            self.assertEqual(_tap.withoutPassword(value), value)

    def test_modifiersNeedTheirDelivery(self) -> None:
        """
        A flag belonging to one delivery is refused with another.
        """
        for args, message in [
            (("--sink", "--maildir-trace"), "--maildir-trace needs --maildir"),
            (("--debug", "--maildir-per-recipient"), "--maildir-per-recipient needs --maildir"),
            (("--sink", "--maildir-existing-only"), "--maildir-existing-only needs --maildir"),
            (
                ("--maildir", self.mktemp(), "--maildir-existing-only"),
                "--maildir-existing-only needs --maildir-per-recipient",
            ),
            (("--relay-ca", "ca.pem"), "--relay-ca needs --relay"),
            (("--sink", "--relay-insecure"), "--relay-insecure needs --relay"),
            (("--sink", "--relay-auth", "u:p"), "--relay-auth needs --relay"),
            (("--handler-option", "a=b"), "--handler-option needs --handler"),
        ]:
            self.assertEqual(self.assertUsageError(*args), message)

    def test_modifiersFalsyValueNeedTheirDelivery(self) -> None:
        """
        A delivery's flag given a value that reads as false (C{0}, an empty
        string) is refused with another delivery too, on the command line
        or in a configuration file: it was given, and does nothing there.
        """
        for args, message in [
            (("--sink", "--relay-idle", "0"), "--relay-idle needs --relay"),
            (("--sink", "--webhook-secret", ""), "--webhook-secret needs --webhook"),
            (("--sink", "--amqp-queue", ""), "--amqp-queue needs --amqp"),
            (("--sink", "--relay-user", ""), "--relay-user needs --relay"),
        ]:
            self.assertEqual(self.assertUsageError(*args), message)
        path = self.mktemp() + ".toml"
        with open(path, "w") as f:
            f.write('sink = true\nrelay-idle = "0"\n')
        self.assertEqual(self.assertUsageError("--config", path), "--relay-idle needs --relay")

    def test_mbox(self) -> None:
        """
        C{--mbox PATH} chooses an L{MboxHandler} on PATH, created (mode
        0600) at once so that an unwritable path fails the start.
        """
        from twisted_smtpd.handlers.mbox import MboxHandler

        path = self.mktemp()
        handler = parse("--mbox", path)["handler"]
        self.assertIsInstance(handler, MboxHandler)
        self.assertEqual(handler.path, os.path.abspath(path))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        bad = os.path.join(self.mktemp(), "missing", "mbox")
        self.assertIn(repr(bad), self.assertUsageError("--mbox", bad))

    def test_mboxSymlink(self) -> None:
        """
        An C{--mbox} path that is a symbolic link root does not own fails
        the start with one line, as each append would fail, and the file
        it names is neither made nor touched.
        """
        target = os.path.abspath(self.mktemp())
        link = os.path.abspath(self.mktemp())
        os.symlink(target, link)
        if os.geteuid() == 0:
            os.lchown(link, 65534, 65534)
        message = self.assertUsageError("--mbox", link)
        self.assertIn(repr(link), message)
        self.assertIn("mailbox is a symbolic link not owned by root", message)
        self.assertFalse(os.path.lexists(target))

    def test_mboxNameLeavesNoRoomForDotLock(self) -> None:
        """
        An C{--mbox} file name so long that its dot lock (the name and
        C{.lock}) cannot be made fails the start with one line naming the
        lock, rather than every message with 451.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        name = "m" * (os.pathconf(directory, "PC_NAME_MAX") - 2)
        message = self.assertUsageError("--mbox", os.path.join(directory, name))
        self.assertIn(os.path.join(directory, name) + ".lock", message)
        self.assertIn(os.strerror(errno.ENAMETOOLONG), message)

    def test_mboxHardLink(self) -> None:
        """
        An C{--mbox} path that is one of several hard links to a file fails
        the start with one line, as each append would fail.
        """
        target = os.path.abspath(self.mktemp())
        open(target, "wb").close()
        link = os.path.abspath(self.mktemp())
        os.link(target, link)
        message = self.assertUsageError("--mbox", link)
        self.assertIn(repr(link), message)
        self.assertIn("mailbox has 2 hard links", message)

    def test_relay(self) -> None:
        """
        C{--relay HOST[:PORT]} chooses a L{RelayHandler} for that smarthost,
        port 25 by default, IPv6 addresses in brackets.
        """
        from twisted_smtpd.handlers.relay import RelayHandler

        for target, expected in [
            ("mx.example.com", ("mx.example.com", 25)),
            ("mx.example.com:2525", ("mx.example.com", 2525)),
            ("[::1]:26", ("::1", 26)),
            ("[::1]", ("::1", 25)),
            ("::1", ("::1", 25)),
        ]:
            handler = parse("--relay", target, "--relay-insecure")["handler"]
            self.assertIsInstance(handler, RelayHandler)
            self.assertEqual((handler.host, handler.port), expected)

    def test_relayMalformedTarget(self) -> None:
        """
        A C{--relay} target with an unclosed bracket, a port not after a
        colon, or colons in a host that is no IPv6 address is refused with
        one line naming it, never taken for some other host or port.
        """
        for target in ["[::1", "[::1]25", "[::1]:", "mx:25:26", "mx:25:"]:
            self.assertIn(f"--relay {target!r}", self.assertUsageError("--relay", target))

    def test_relayTLSAndPool(self) -> None:
        """
        C{--relay-require-tls} refuses a smarthost without STARTTLS;
        C{--relay-sessions} and C{--relay-idle} size the pool of sessions;
        C{--quiet} turns off the line per relayed message.
        """
        handler = parse("--relay", "mx.example.com")["handler"]
        self.assertEqual(handler._tls, "opportunistic")
        self.assertEqual((handler.pool.maxSessions, handler.pool._idleTimeout), (4, 30.0))
        self.assertTrue(handler._logMessages)
        handler = parse(
            "--relay",
            "mx.example.com",
            "--relay-require-tls",
            "--relay-sessions",
            "2",
            "--relay-idle",
            "5",
            "--quiet",
        )["handler"]
        self.assertEqual(handler._tls, "required")
        self.assertEqual((handler.pool.maxSessions, handler.pool._idleTimeout), (2, 5.0))
        self.assertFalse(handler._logMessages)
        self.assertIn(
            "--relay-sessions", self.assertUsageError("--relay", "mx", "--relay-sessions", "0")
        )
        self.assertIn("needs --relay", self.assertUsageError("--sink", "--relay-require-tls"))

    def test_relayCredentials(self) -> None:
        """
        C{--relay-auth USER:PASSWORD} and C{--relay-user} with
        C{--relay-password} give the relay its credentials.
        """
        for args in [
            ("--relay-auth", "user:pass:word"),
            ("--relay-user", "user", "--relay-password", "pass:word"),
        ]:
            handler = parse("--relay", "mx.example.com", *args)["handler"]
            self.assertEqual((handler._username, handler._password), ("user", "pass:word"))

    def test_relayErrors(self) -> None:
        """
        A bad relay port, conflicting or half credentials, an unreadable
        CA file, or C{--relay-insecure} with C{--relay-ca} are usage errors.
        """
        ca = CertificateAuthority(self.mktemp())
        missing = os.path.abspath(self.mktemp())
        for args, named in [
            (("--relay", "mx.example.com:smtp"), "'smtp'"),
            (("--relay", "mx.example.com:0"), "port"),
            (("--relay", "mx", "--relay-auth", "nopassword"), "USER:PASSWORD"),
            (("--relay", "mx", "--relay-auth", "u:p", "--relay-user", "u"), "--relay-auth"),
            (("--relay", "mx", "--relay-user", "u"), "--relay-user needs --relay-password"),
            (("--relay", "mx", "--relay-password", "p"), "--relay-password needs --relay-user"),
            (("--relay", "mx", "--relay-ca", missing), missing),
            (("--relay", "mx", "--relay-insecure", "--relay-ca", ca.certificatePath), "excludes"),
        ]:
            self.assertIn(named, self.assertUsageError(*args))

    def test_lmtpTo(self) -> None:
        """
        C{--lmtp-to ENDPOINT} chooses an L{LMTPDeliveryHandler}; an endpoint
        string that does not parse is a usage error.
        """
        from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler

        handler = parse("--lmtp-to", "tcp:127.0.0.1:24")["handler"]
        self.assertIsInstance(handler, LMTPDeliveryHandler)
        self.assertEqual(handler.endpoint, "tcp:127.0.0.1:24")
        self.assertIn("'bogus:1'", self.assertUsageError("--lmtp-to", "bogus:1"))

    def test_pipe(self) -> None:
        """
        C{--pipe COMMAND} chooses a L{PipeHandler} running the command split
        like a shell would; a program not found is a usage error.
        """
        from twisted_smtpd.handlers.pipe import PipeHandler

        handler = parse("--pipe", "sh -c 'cat > \"$OUT\"'")["handler"]
        self.assertIsInstance(handler, PipeHandler)
        self.assertEqual(handler.argv, ["sh", "-c", 'cat > "$OUT"'])
        self.assertIn("no-such-program", self.assertUsageError("--pipe", "no-such-program -x"))

    def test_pipeSpool(self) -> None:
        """
        C{--pipe-spool DIR} is where the pipe delivery spools messages
        (C{TMPDIR} without it); a directory where no file can be made is a
        usage error, and the flag needs C{--pipe}.
        """
        self.assertIsNone(parse("--pipe", "cat")["handler"].spoolDirectory)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        handler = parse("--pipe", "cat", "--pipe-spool", directory)["handler"]
        self.assertEqual(handler.spoolDirectory, directory)
        missing = os.path.join(directory, "missing")
        self.assertIn("missing", self.assertUsageError("--pipe", "cat", "--pipe-spool", missing))
        self.assertIn("--pipe", self.assertUsageError("--sink", "--pipe-spool", directory))

    def test_pipeSpoolEmpty(self) -> None:
        """
        An empty C{--pipe-spool} is refused: it would spool into the
        directory the server runs in, not C{TMPDIR}.
        """
        for value in ("", " "):
            self.assertEqual(
                self.assertUsageError("--pipe", "cat", "--pipe-spool", value),
                f"--pipe-spool {value!r}: no directory named",
            )

    def test_handler(self) -> None:
        """
        C{--handler MODULE:CALLABLE} calls the callable with the
        C{--handler-option}s as keyword arguments and uses what it returns.
        """
        directory = self.mktemp()
        handler = parse(
            "--handler",
            "tests.integration.recordinghandler:make",
            "--handler-option",
            f"directory={directory}",
            "--handler-option",
            "reply=Thanks = received",
        )["handler"]
        self.assertIsInstance(handler, recordinghandler.RecordingHandler)
        self.assertEqual((handler.directory, handler.reply), (directory, "Thanks = received"))

    def test_handlerOptionGivenTwice(self) -> None:
        """
        A C{--handler-option} key given twice is refused in one line, as
        C{--sni} refuses a name given twice: one value would silently
        replace the other.
        """
        e = self.assertRaises(
            usage.UsageError,
            parse,
            "--handler",
            "tests.integration.recordinghandler:make",
            "--handler-option",
            "directory=/srv/a",
            "--handler-option",
            " directory=/srv/b",
        )
        self.assertEqual(str(e), "--handler-option: 'directory' given twice")

    def test_handlerErrors(self) -> None:
        """
        A handler that cannot be imported, found, called with the options,
        or that is not an L{ISMTPHandler}, is a usage error naming it.
        """
        module = "tests.integration.recordinghandler"
        for args, named in [
            (("--handler", "no_such_module_x:make"), "no_such_module_x"),
            (("--handler", f"{module}:missing"), "missing"),
            (("--handler", f"{module}:notAHandler"), "not an ISMTPHandler"),
            (("--handler", f"{module}:make"), "directory"),
            (("--handler", f"{module}:make", "--handler-option", "bogus=1"), "bogus"),
            (("--handler", module), "MODULE:CALLABLE"),
            (("--handler", f"{module}:make", "--handler-option", "novalue"), "KEY=VALUE"),
        ]:
            self.assertIn(named, self.assertUsageError(*args))

    def test_handlerRaises(self) -> None:
        """
        A handler module or callable that raises something else than the
        usual configuration errors (its own C{RuntimeError}, a
        C{SyntaxError}) is a one-line usage error too, naming what raised
        it, its type and its message (made printable), not a traceback.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "failinghandler.py"), "w") as f:
            f.write("def make():\n    raise RuntimeError('the spool database is gone\\x1b[2J')\n")
        with open(os.path.join(directory, "brokenhandler.py"), "w") as f:
            f.write("def make(:\n")
        sys.path.insert(0, directory)
        self.addCleanup(sys.path.remove, directory)
        error = self.assertUsageError("--handler", "failinghandler:make")
        self.assertIn("make() raised RuntimeError: the spool database is gone", error)
        self.assertNotIn("\x1b", error)
        error = self.assertUsageError("--handler", "brokenhandler:make")
        self.assertIn("importing brokenhandler raised SyntaxError", error)

    def test_handlerDescription(self) -> None:
        """
        The delivery the C{ready} line names is C{--handler}'s
        C{MODULE:CALLABLE}, not the handler object it made (whose
        C{__repr__} may raise or hold a line break); any delivery's value
        is made printable.
        """
        config = parse("--handler", "tests.test_tap:_unprintableHandler")
        self.assertEqual(
            config["deliveryDescription"], "handler tests.test_tap:_unprintableHandler"
        )
        directory = os.path.join(self.mktemp(), "a\nb")
        config = parse("--maildir", directory)
        self.assertEqual(
            config["deliveryDescription"], "maildir " + directory.replace("\n", "\\x0a")
        )

    def test_handlerRaisesAnything(self) -> None:
        """
        A handler callable raising C{SystemExit}, C{KeyboardInterrupt} or a
        C{BaseException} of its own, an exception whose message cannot be
        made, a module attribute lookup that raises, or an object whose
        hooks raise when looked up, is a one-line usage error too: never a
        silent exit or a traceback.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "wildhandler.py"), "w") as f:
            f.write(
                "import sys\n"
                "class Mute(Exception):\n"
                "    def __str__(self): raise RuntimeError('no message')\n"
                "class Own(BaseException): pass\n"
                "class Hooks:\n"
                "    def __getattr__(self, name): raise RuntimeError('no ' + name)\n"
                "def leave(): sys.exit(3)\n"
                "def interrupt(): raise KeyboardInterrupt\n"
                "def own(): raise Own('its own')\n"
                "def mute(): raise Mute()\n"
                "def hooks(): return Hooks()\n"
                "def __getattr__(name): raise RuntimeError('no attribute ' + name)\n"
            )
        sys.path.insert(0, directory)
        self.addCleanup(sys.path.remove, directory)
        self.addCleanup(sys.modules.pop, "wildhandler", None)
        for name, said in [
            ("leave", "leave() raised SystemExit: 3"),
            ("interrupt", "interrupt() raised KeyboardInterrupt"),
            ("own", "own() raised Own: its own"),
            ("mute", "mute() raised Mute"),
            ("hooks", "checking hooks()'s result raised RuntimeError: no onConnect"),
            ("lazy", "looking up lazy raised RuntimeError: no attribute lazy"),
        ]:
            error = self.assertUsageError("--handler", f"wildhandler:{name}")
            self.assertIn(said, error)


class ConfigFileTests(SynchronousTestCase):
    """
    C{--config FILE}: the same options from TOML or INI, the command line
    winning.
    """

    def write(self, suffix: str, text: str) -> str:
        path = self.mktemp() + suffix
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assertUsageError(self, *args: str) -> str:
        error = self.assertRaises(usage.UsageError, parse, *args)
        self.assertNotIn("\n", str(error))
        return str(error)

    def test_toml(self) -> None:
        """
        A TOML file sets options by their long names: lists for repeatable
        ones, booleans for flags, numbers or strings for values, a table
        for C{handler-option}; C{_} may stand for C{-}.
        """
        directory = self.mktemp()
        path = self.write(
            ".toml",
            f"""
            listen = ["tcp:0", "unix:/tmp/x.sock"]
            hostname = "mx.example.com"
            size = 1000
            socket_timeout = 2.5
            lmtp = true
            no-reverse-lookup = false
            hide = ["dsn", "size"]
            handler = "tests.integration.recordinghandler:make"
            [handler-option]
            directory = "{directory}"
            reply = "From TOML"
            """,
        )
        config = parse("--config", path)
        self.assertEqual(config["listen"], ["tcp:0", "unix:/tmp/x.sock"])
        self.assertEqual(
            config["serverOptions"],
            ServerOptions(
                name="mx.example.com",
                size=1000,
                socketTimeout=2.5,
                lmtp=True,
                hideDSN=True,
                hideSize=True,
            ),
        )
        self.assertEqual(config["handler"].reply, "From TOML")

    def test_tomlSection(self) -> None:
        """
        The options may also sit in a C{[smtpd]} table of the TOML file.
        """
        path = self.write(".toml", '[smtpd]\nsink = true\nbanner = "Hello"\n')
        config = parse("--config", path)
        self.assertIsInstance(config["handler"], SinkHandler)
        self.assertEqual(config["serverOptions"].banner, "Hello")

    def test_ini(self) -> None:
        """
        An INI file's C{[smtpd]} section sets options: one value per line
        for repeatable ones, yes/no or true/false for flags.
        """
        path = self.write(
            ".conf",
            "[smtpd]\n"
            "listen =\n    tcp:0\n    tcp:0:interface=127.0.0.1\n"
            "hostname = mx.example.com\n"
            "max-clients = 7\n"
            "auth = memory:alice:secret\n"
            "auth-optional = yes\n"
            "disable = VRFY\n"
            "debug = true\n",
        )
        config = parse("--config", path)
        self.assertEqual(config["listen"], ["tcp:0", "tcp:0:interface=127.0.0.1"])
        options = config["serverOptions"]
        self.assertEqual(
            (options.name, options.maxClients, options.authOptional, options.disabledCommands),
            ("mx.example.com", 7, True, ("VRFY",)),
        )
        self.assertIsInstance(config["handler"], DebuggingHandler)

    def test_commandLineWins(self) -> None:
        """
        An option given on the command line replaces the file's, a
        repeatable one its whole list; the file's other options stay.
        """
        path = self.write(
            ".toml",
            'listen = ["tcp:1", "tcp:2"]\nhostname = "file.example"\nsize = 1\nsink = true\n',
        )
        config = parse("--listen", "tcp:0", "--config", path, "--size", "2")
        self.assertEqual(config["listen"], ["tcp:0"])
        self.assertEqual(config["serverOptions"].size, 2)
        self.assertEqual(config["serverOptions"].name, "file.example")

    def test_deliveryReplaced(self) -> None:
        """
        A delivery on the command line replaces the file's delivery and the
        settings that belong to it.
        """
        maildir = self.mktemp()
        path = self.write(
            ".ini", f"[smtpd]\nmaildir = {maildir}\nmaildir-trace = on\nbanner = hi\n"
        )
        config = parse("--config", path, "--sink")
        self.assertIsInstance(config["handler"], SinkHandler)
        self.assertEqual(config["serverOptions"].banner, "hi")
        self.assertFalse(os.path.exists(maildir))

    def test_errors(self) -> None:
        """
        A missing or malformed file, an unknown or forbidden key, or a
        value of the wrong kind is a one-line usage error naming the file.
        Arrays or tables nested deeper than Python's parser can recurse are
        malformed too.
        """
        missing = os.path.abspath(self.mktemp())
        for path, named in [
            (missing, "No such file"),
            (self.write(".toml", "listen = [\n"), "not valid TOML"),
            (self.write(".toml", "a = " + "[" * 5000 + "]" * 5000 + "\n"), "not valid TOML"),
            (self.write(".toml", "a = " + "{b = " * 3000 + "}" * 3000 + "\n"), "not valid TOML"),
            (self.write(".ini", "listen = tcp:0\n"), "not a valid INI file"),
            (self.write(".ini", "[other]\nlisten = tcp:0\n"), "no [smtpd] section"),
            (self.write(".toml", "colour = 1\n"), "unknown option 'colour'"),
            (self.write(".toml", 'config = "other.toml"\n'), "unknown option 'config'"),
            (self.write(".toml", 'lmtp = "yes"\n'), "lmtp: expected true or false"),
            (self.write(".toml", 'hostname = ["a", "b"]\n'), "hostname: expected one value"),
            (self.write(".toml", "size = {a = 1}\n"), "size: expected a string or a number"),
            (self.write(".toml", "[smtpd]\nsink = true\n[other]\n"), "unknown option 'other'"),
            (self.write(".ini", "[smtpd]\nhostname =\n  a\n  b\n"), "expected one value"),
        ]:
            message = self.assertUsageError("--config", path)
            self.assertIn(named, message)
            self.assertIn(repr(path), message)

    def test_valuesChecked(self) -> None:
        """
        Values from the file are checked like the command line's.
        """
        path = self.write(".toml", "size = -5\nsink = true\n")
        self.assertIn("--size", self.assertUsageError("--config", path))

    def assertRefusedQuickly(self, path: str) -> str:
        """
        C{--config path} is a one-line usage error naming the file, given
        within 10 seconds (an alarm ends a read that would block for ever).
        """

        def expired(signum: int, frame: object) -> None:
            raise AssertionError(f"--config {path!r} still being read after 10 s")

        previous = signal.signal(signal.SIGALRM, expired)
        signal.alarm(10)
        try:
            message = self.assertUsageError("--config", path)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        self.assertIn(repr(path), message)
        return message

    def test_namedPipe(self) -> None:
        """
        A named pipe (FIFO) is refused at once instead of blocking the
        start until something writes into it.
        """
        path = self.mktemp() + ".toml"
        os.mkfifo(path)
        self.assertIn("not a regular file (a named pipe)", self.assertRefusedQuickly(path))

    def test_device(self) -> None:
        """
        A device (C{/dev/zero}, which never ends) is refused, not read.
        """
        for path in ("/dev/zero", "/dev/null"):
            message = self.assertRefusedQuickly(path)
            self.assertIn("not a regular file (a character device)", message)

    def test_directory(self) -> None:
        """
        A directory is refused as not a regular file.
        """
        path = self.mktemp() + ".toml"
        os.mkdir(path)
        self.assertIn("not a regular file (a directory)", self.assertRefusedQuickly(path))

    def test_tooLarge(self) -> None:
        """
        A file larger than 1 MiB is refused without being read whole.
        """
        path = self.write(".toml", "sink = true\n")
        os.truncate(path, 1024 * 1024 + 1)
        self.assertIn("larger than 1048576 bytes", self.assertRefusedQuickly(path))


def session(**kwargs: Any) -> Session:
    """
    A session from 192.0.2.1:4000 to 198.51.100.1:25 with a two-recipient
    envelope.
    """
    values: dict[str, Any] = {
        "id": "sid1",
        "remoteAddress": ("192.0.2.1", 4000),
        "localAddress": ("198.51.100.1", 25),
        "clientHostname": "client.example",
        "envelope": Envelope(
            mailFrom=Address("alice@example.com"),
            rcptTo=[Address("bob@example.org"), Address("carol@example.org")],
        ),
    }
    values.update(kwargs)
    return Session(**values)


class SessionLoggerTests(SynchronousTestCase):
    """
    L{SessionLogger} logs per-session and per-message events only.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.logger = SessionLogger()

    def test_connect(self) -> None:
        """
        A connect event is logged at info level with the session id and
        the client and local addresses.
        """
        self.logger("connect", session(), {})
        (event,) = self.events
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(event["log_namespace"], NAMESPACE)
        self.assertEqual(
            (event["session"], event["client"], event["clientHostname"], event["local"]),
            ("sid1", "192.0.2.1:4000", "client.example", "198.51.100.1:25"),
        )
        self.assertEqual(
            formatEvent(event),
            "sid1 connect from 192.0.2.1:4000 (client.example) to 198.51.100.1:25",
        )

    def test_peers(self) -> None:
        """
        IPv6 peers are bracketed, and a peer without an address (a UNIX
        socket) is C{unix}.
        """
        self.logger("connect", session(remoteAddress=("::1", 5), localAddress=("", 0)), {})
        (event,) = self.events
        self.assertEqual((event["client"], event["local"]), ("[::1]:5", "unix"))

    def test_message(self) -> None:
        """
        A message event carries the size, sender, the recipients (a list),
        every reply code, the first reply's text and each other one's.
        """
        replies = (Reply(250, "2.0.0", ("OK: queued as X",)), Reply(550, "5.1.1", ("no",)))
        self.logger("message", session(), {"size": 1234, "replies": replies})
        (event,) = self.events
        self.assertEqual(
            (event["size"], event["sender"], event["recipients"], event["codes"]),
            (1234, "alice@example.com", ["bob@example.org", "carol@example.org"], [250, 550]),
        )
        self.assertEqual(
            formatEvent(event),
            "sid1 message 1234 bytes from <alice@example.com> to"
            " <bob@example.org>,<carol@example.org>: 250,550 OK: queued as X; 550 no",
        )

    def test_authAndClose(self) -> None:
        """
        Successful AUTH and the end of the session are logged too.
        """
        self.logger("auth", session(), {"method": "PLAIN", "username": "alice"})
        self.logger("close", session(), {})
        self.assertEqual(
            [formatEvent(e) for e in self.events],
            ["sid1 auth PLAIN as 'alice'", "sid1 close"],
        )

    def test_commandEventsIgnored(self) -> None:
        """
        Events of accepted commands (HELO, MAIL, RCPT) log nothing.
        """
        for event in ["helo", "mail", "rcpt"]:
            self.logger(event, session(), {"address": Address("x@example.com")})
        self.assertEqual(len(self.events), 0)

    def test_ignoredHosts(self) -> None:
        """
        Sessions from ignored hosts are not logged.
        """
        logger = SessionLogger(["192.0.2.1"])
        for event in ["connect", "message", "close"]:
            logger(event, session(), {"size": 1, "replies": ()})
        logger("close", session(remoteAddress=("192.0.2.2", 1)), {})
        self.assertEqual([e["session"] for e in self.events], ["sid1"])
        self.assertEqual(len(self.events), 1)


class JSONLogTests(SynchronousTestCase):
    """
    L{jsonLogObserver} writes one JSON object per line.
    """

    def test_lines(self) -> None:
        """
        Each event is one line of JSON, without a record separator, with its
        fields, the formatted text, the namespace and the level name.
        """
        out = io.StringIO()
        observer = jsonLogObserver(out)
        self.assertTrue(ILogObserver.providedBy(observer))
        log = Logger(namespace="test", observer=observer)
        log.info("{session} close", session="abc")
        log.warn("second {n}", n=2)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertNotIn("\x1e", out.getvalue())
        first = json.loads(lines[0])
        self.assertEqual(
            (first["session"], first["text"], first["namespace"], first["level"]),
            ("abc", "abc close", "test", "info"),
        )
        self.assertEqual(json.loads(lines[1])["text"], "second 2")


class FakeReactor:
    """
    Records what is scheduled from a signal handler.
    """

    def __init__(self) -> None:
        self.calls: list[Callable[[], object]] = []
        self.whenRunning: list[Callable[[], object]] = []

    def callFromThread(self, f: Callable[[], object]) -> None:
        self.calls.append(f)

    def callWhenRunning(self, f: Callable[[], object]) -> None:
        self.whenRunning.append(f)


class ClockReactor(Clock):
    """
    A L{Clock} that also takes calls from threads and for when it runs.
    """

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        f(*args)

    def callWhenRunning(self, f: Callable[..., object], *args: object) -> None:
        pass

    def addSystemEventTrigger(self, *args: object) -> None:
        pass


class DaemonTests(SynchronousTestCase):
    """
    The service that C{twistd smtpd} runs.
    """

    def test_sessionLogger(self) -> None:
        """
        The server's factory has a L{SessionLogger} observer.
        """
        server = _tap.makeService(parse("--sink"))
        self.assertEqual([type(o) for o in server.factory.observers].count(SessionLogger), 1)

    def test_quiet(self) -> None:
        """
        With C{--quiet}, the lines of every connection and message are not
        logged: the one observer, a L{SessionLogger}, wants the refusals
        only (which fail2ban reads), so the per-message path does no
        logging work.
        """
        server = _tap.makeService(parse("--sink", "--quiet"))
        (observer,) = server.factory.observers
        self.assertIsInstance(observer, SessionLogger)
        self.assertEqual(server.factory.wanted, frozenset({"reject"}))

    def test_jsonObserverGivenToTwistd(self) -> None:
        """
        Joining C{twistd}'s application sets the buffered writer as its
        L{ILogObserver}, JSON or text as C{--log-format} says, which
        C{twistd} then logs through; with C{twistd --syslog} and text,
        nothing is set (twistd's syslog observer stays).
        """
        for fmt, syslog, expected in [
            ("json", False, True),
            ("text", False, False),
            ("json", True, True),
        ]:
            application = Application("smtpd")
            config = parse("--sink", "--log-format", fmt)
            config.parent = {"syslog": syslog}  # type: ignore[attr-defined]
            server = _tap.makeService(config)
            server.setServiceParent(application)
            observer = application.getComponent(ILogObserver, None)
            self.assertIsInstance(observer, BufferedLogWriter)
            assert isinstance(observer, BufferedLogWriter)
            self.assertEqual(observer.json, expected, fmt)
            self.assertIs(server.parent, IServiceCollection(application))
        config = parse("--sink")
        config.parent = {"syslog": True}  # type: ignore[attr-defined]
        server = _tap.makeService(config)
        server.setServiceParent(Application("smtpd"))
        self.assertIsNone(server.logObserver)

    def test_jsonToTwistdLogFile(self) -> None:
        """
        The JSON observer writes where C{twistd} would: its C{--logfile}.
        """
        path = os.path.abspath(self.mktemp())
        config = parse("--sink", "--log-format", "json")
        config.parent = {"logfile": path, "nodaemon": False}  # type: ignore[attr-defined]
        server = _tap.makeService(config)
        assert server.logObserver is not None
        Logger(observer=server.logObserver).info("to the file {n}", n=1)
        server.logObserver.flush()  # type: ignore[attr-defined]
        with open(path, encoding="utf-8") as f:
            self.assertEqual(json.loads(f.read())["text"], "to the file 1")

    def test_sighup(self) -> None:
        """
        While running, SIGHUP schedules a certificate reload on the reactor;
        stopping restores the previous handler.
        """
        previous = signal.getsignal(signal.SIGHUP)
        reactor = FakeReactor()
        server = _tap.SMTPDaemon(SinkHandler(), ServerOptions(), reactor=reactor)
        reloads: list[None] = []
        server.reload = lambda: reloads.append(None)  # type: ignore[method-assign]
        server.startService()
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)
        self.assertEqual(len(reactor.calls), 1)
        reactor.calls[0]()
        self.assertEqual(reloads, [None])
        self.successResultOf(server.stopService())
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)

    def test_sighupWhileStopping(self) -> None:
        """
        Until the sessions and the handler are closed, SIGHUP still
        schedules a reload: the previous handler (the default one ends
        the process) is put back only then, so that a reload during the
        stop does not cut the transactions it waits for.
        """
        previous = signal.getsignal(signal.SIGHUP)
        closed: Deferred[None] = Deferred()
        clock, calls, stopping = self.stoppingWith(closed)
        self.assertEqual(calls, ["close"])
        self.assertNoResult(stopping)
        handler = signal.getsignal(signal.SIGHUP)
        self.assertNotIn(handler, (previous, signal.SIG_DFL, None))
        closed.callback(None)
        self.successResultOf(stopping)
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)

    def test_sigusr1(self) -> None:
        """
        While running, and until its sessions are closed, SIGUSR1 schedules
        the log file's reopening instead of ending the process; stopping
        restores the previous handler.
        """
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
        reactor = FakeReactor()
        server = _tap.SMTPDaemon(SinkHandler(), ServerOptions(), reactor=reactor)
        server.startService()
        handler = signal.getsignal(signal.SIGUSR1)
        self.assertNotIn(handler, (previous, signal.SIG_DFL, None))
        assert callable(handler)
        handler(signal.SIGUSR1, None)
        self.assertEqual(len(reactor.calls), 1)
        self.successResultOf(server.stopService())
        self.assertEqual(signal.getsignal(signal.SIGUSR1), previous)

    def stoppingWith(self, closed: Deferred[None]) -> tuple[Any, list[str], Deferred[Any]]:
        """
        Start and stop a daemon whose handler's C{close} returns C{closed}.
        """
        self.addCleanup(signal.signal, signal.SIGUSR1, signal.getsignal(signal.SIGUSR1))
        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
        calls: list[str] = []

        class Closing(SinkHandler):
            def close(self) -> Deferred[None]:
                calls.append("close")
                return closed

        clock = ClockReactor()
        server = _tap.SMTPDaemon(Closing(), ServerOptions(), reactor=clock)
        server.startService()
        return clock, calls, server.stopService()

    def test_handlerClosedAtStop(self) -> None:
        """
        Once its sessions are closed, stopping closes the handler's own
        connections (its C{close}), and is done when they are.
        """
        closed: Deferred[None] = Deferred()
        clock, calls, stopping = self.stoppingWith(closed)
        self.assertEqual(calls, ["close"])
        self.assertNoResult(stopping)
        closed.callback(None)
        self.successResultOf(stopping)

    def test_handlerCloseDeadline(self) -> None:
        """
        A handler's C{close} that does not end within
        C{HANDLER_CLOSE_TIMEOUT} seconds does not hold the stop: one warning.
        """
        log = LogCatcher(self)
        clock, calls, stopping = self.stoppingWith(Deferred())
        clock.advance(_daemon.HANDLER_CLOSE_TIMEOUT - 1)
        self.assertNoResult(stopping)
        clock.advance(1)
        self.successResultOf(stopping)
        self.assertEqual(len(log.matching("Closing the delivery's connections failed")), 1)

    def test_settleHeap(self) -> None:
        """
        The server C{twistd smtpd} runs settles its start-up heap once the
        reactor runs; one built otherwise (a test, an embedding program)
        leaves the garbage collector alone.
        """
        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
        self.assertTrue(_tap.makeService(parse("--sink")).settleHeap)
        for settle, expected in ((True, [_daemon.settleStartupHeap]), (False, [])):
            reactor = FakeReactor()
            server = _tap.SMTPDaemon(
                SinkHandler(), ServerOptions(), reactor=reactor, settleHeap=settle
            )
            server.startService()
            self.assertEqual(reactor.whenRunning, expected)
            self.successResultOf(server.stopService())

    def test_dispatchWithoutContext(self) -> None:
        """
        The server C{twistd smtpd} runs has the reactor dispatch I/O events
        without a log context once it starts; one built otherwise keeps
        Twisted's dispatch.
        """
        from twisted.python import log as legacy

        from twisted_smtpd._twistd.eventdispatch import callWithoutContext

        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
        self.patch(legacy, "callWithLogger", legacy.callWithLogger)
        twisted = legacy.callWithLogger
        self.assertTrue(_tap.makeService(parse("--sink")).dispatchWithoutContext)
        for light, expected in ((False, twisted), (True, callWithoutContext)):
            server = _tap.SMTPDaemon(
                SinkHandler(), ServerOptions(), reactor=FakeReactor(), dispatchWithoutContext=light
            )
            server.startService()
            self.assertIs(legacy.callWithLogger, expected)
            self.successResultOf(server.stopService())

    def test_settleStartupHeap(self) -> None:
        """
        L{settleStartupHeap} collects the garbage of the start, then freezes
        what is left.
        """
        calls: list[str] = []
        self.patch(gc, "collect", lambda: calls.append("collect"))
        self.patch(gc, "freeze", lambda: calls.append("freeze"))
        _daemon.settleStartupHeap()
        self.assertEqual(calls, ["collect", "freeze"])

    def test_reloadLogged(self) -> None:
        """
        A reload that reads new certificates is logged at info level, with
        the certificate's subject and expiry; one that fails logs an error
        naming the file, and the old certificates stay, logged as in use.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        ca = CertificateAuthority(self.mktemp())
        issued = ca.server("mail.example.com")
        options = ServerOptions(certificate=issued.certificatePath, privateKey=issued.keyPath)
        server = _tap.SMTPDaemon(SinkHandler(), options, reactor=FakeReactor())
        self.assertFalse(server.factory.tls.selfSigned)
        server.reload()
        self.assertEqual(
            [formatEvent(e) for e in events][:2],
            ["Reloading TLS certificates", "TLS certificates reloaded"],
        )
        self.assertTrue(
            formatEvent(events[2]).startswith("TLS certificate: CN=mail.example.com, expires ")
        )
        with open(issued.certificatePath, "wb") as f:
            f.write(b"not a certificate")
        server.reload()
        failed = events[4]
        self.assertEqual(failed["log_level"], LogLevel.error)
        self.assertIn(issued.certificatePath, formatEvent(failed))
        self.assertTrue(formatEvent(failed).startswith("Reloading TLS certificates failed"))
        self.assertEqual(len(events), 6)
        self.assertEqual(formatEvent(events[5]), formatEvent(events[2]))

    def test_reloadBeforeFirstUse(self) -> None:
        """
        A reload before any TLS handshake still reads the certificate
        files, so that a broken file is reported at once.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        ca = CertificateAuthority(self.mktemp())
        issued = ca.server("mail.example.com")
        options = ServerOptions(certificate=issued.certificatePath, privateKey=issued.keyPath)
        server = _tap.SMTPDaemon(SinkHandler(), options, reactor=FakeReactor())
        with open(issued.keyPath, "wb") as f:
            f.write(b"not a key")
        server.reload()
        self.assertEqual(events[-1]["log_level"], LogLevel.error)
        self.assertIn(issued.keyPath, formatEvent(events[-1]))
