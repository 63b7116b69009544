# -*- test-case-name: tests.test_tap -*-
"""
Tests for L{twisted_smtpd._tap} and the C{twistd smtpd} plugin.
"""

from __future__ import annotations

import os

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_smtpd import _tap
from twisted_smtpd._options import HIDEABLE, ServerOptions
from twisted_smtpd._server import SMTPServer
from twisted_smtpd.handlers import DebuggingHandler, MaildirHandler, SinkHandler


def parse(*args: str) -> _tap.Options:
    """
    Parse C{args} as the options following C{twistd smtpd}.
    """
    config = _tap.Options()
    config.parseOptions(list(args))
    return config


class PluginTests(SynchronousTestCase):
    """
    The plugin that C{twistd} finds.
    """

    def test_serviceMaker(self) -> None:
        """
        C{smtpd} provides L{IServiceMaker}, is called C{smtpd} and hands out
        the options and C{makeService} of L{twisted_smtpd._tap}.
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
            "--disable=",
            "--hide=",
            "--bare-newline=",
            "[default: reject]",
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
        C{--maildir}, C{--sink} and C{--debug} exclude each other.
        """
        for args in [
            ("--sink", "--debug"),
            ("--maildir", self.maildir, "--sink"),
            ("--debug", "--maildir", self.maildir),
        ]:
            self.assertIn("mutually exclusive", self.assertUsageError(*args))

    def test_badEndpoint(self) -> None:
        """
        An endpoint string that does not parse is a usage error naming it,
        whatever the parser raised.
        """
        for description in ["bogus:1", "tcp:notaport", "tcp:25:nosuchargument=1"]:
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
            ("max-recipients", "0"),
            ("max-recipients", ""),
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
