"""
The public names are the objects of the private modules.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import twisted_smtpd
from twisted_smtpd import handlers, interfaces
from twisted_smtpd._core import errors as _errors
from twisted_smtpd._core import options as _options
from twisted_smtpd._core import session as _session
from twisted_smtpd._core import version as _version
from twisted_smtpd._serving import server as _server
from twisted_smtpd._serving import service as _service
from twisted_smtpd.handlers import _base


class ExportTests(SynchronousTestCase):
    def test_publicNames(self) -> None:
        """
        Each public name is the object defined in its private module.
        """
        expected = {
            "SMTPError": _errors.SMTPError,
            "ServerOptions": _options.ServerOptions,
            "SMTPServer": _service.SMTPServer,
            "SMTPServerFactory": _server.SMTPServerFactory,
            "Session": _session.Session,
            "Envelope": _session.Envelope,
            "Address": _session.Address,
            "AddressDSN": _session.AddressDSN,
            "EnvelopeDSN": _session.EnvelopeDSN,
            "AuthRequest": _session.AuthRequest,
            "AuthResult": _session.AuthResult,
            "TLSInfo": _session.TLSInfo,
            "__version__": _version.__version__,
        }
        for name, obj in expected.items():
            self.assertIs(getattr(twisted_smtpd, name), obj, name)
        self.assertEqual(sorted(twisted_smtpd.__all__), sorted(expected))

    def test_testing(self) -> None:
        """
        The testing helpers are the objects of their module.
        """
        from twisted_smtpd import testing

        self.assertEqual(
            sorted(testing.__all__),
            sorted(
                [
                    "MemorySession",
                    "MessageRecorder",
                    "ReceivedMessage",
                    "TestServer",
                    "listenForTests",
                    "memorySession",
                ]
            ),
        )
        for name in testing.__all__:
            self.assertEqual(getattr(testing, name).__module__, "twisted_smtpd.testing")

    def test_baseHandler(self) -> None:
        """
        BaseHandler is exported and provides ISMTPHandler.
        """
        self.assertIs(handlers.BaseHandler, _base.BaseHandler)
        self.assertTrue(verifyObject(interfaces.ISMTPHandler, handlers.BaseHandler()))

    def test_handlersOnFirstUse(self) -> None:
        """
        Every name of C{twisted_smtpd.handlers.__all__} is its module's
        class, those loaded on first use included; an unknown name is an
        L{AttributeError}.
        """
        from twisted_smtpd.handlers import (
            chain,
            debugging,
            lmtp,
            maildir,
            mbox,
            pipe,
            relay,
            sink,
        )

        for name in handlers.__all__:
            self.assertEqual(getattr(handlers, name).__name__, name)
        self.assertIs(handlers.ChainHandler, chain.ChainHandler)
        self.assertIs(handlers.DebuggingHandler, debugging.DebuggingHandler)
        self.assertIs(handlers.LMTPDeliveryHandler, lmtp.LMTPDeliveryHandler)
        self.assertIs(handlers.MaildirHandler, maildir.MaildirHandler)
        self.assertIs(handlers.MboxHandler, mbox.MboxHandler)
        self.assertIs(handlers.PipeHandler, pipe.PipeHandler)
        self.assertIs(handlers.RelayHandler, relay.RelayHandler)
        self.assertIs(handlers.SinkHandler, sink.SinkHandler)
        self.assertRaises(AttributeError, getattr, handlers, "NoSuchHandler")


class StartupImportTests(SynchronousTestCase):
    """
    What C{twistd smtpd} loads for its default configuration (idle memory).
    """

    def test_defaultServiceLoadsNoClientNorWeb(self) -> None:
        """
        Building the default service (a Maildir, no --metrics) imports
        neither the SMTP client of the relay and LMTP handlers nor the web
        server of C{--metrics}, nor the parsers of configuration files or
        the suggestions for a misspelt hook.
        """
        import subprocess
        import sys
        import tempfile

        script = (
            "import sys\n"
            "from twisted_smtpd._twistd.tap import Options, makeService\n"
            "config = Options()\n"
            "config.parseOptions(['--maildir', sys.argv[1], '--listen', 'tcp:0'])\n"
            "makeService(config)\n"
            "loaded = [m for m in ('twisted_smtpd._smtpclient', 'twisted_smtpd.handlers.relay',"
            " 'twisted_smtpd.handlers.lmtp', 'twisted_smtpd.handlers.pipe',"
            " 'twisted.web.server', 'twisted_smtpd._serving.metrics',"
            " 'tomllib', 'configparser', 'difflib') if m in sys.modules]\n"
            "print(','.join(loaded))\n"
        )
        with tempfile.TemporaryDirectory() as directory:
            result = subprocess.run(
                [sys.executable, "-c", script, directory],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "")
