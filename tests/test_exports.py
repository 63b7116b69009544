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
from twisted_smtpd.handlers import _base


class ExportTests(SynchronousTestCase):
    def test_publicNames(self) -> None:
        """
        Each public name is the object defined in its private module.
        """
        expected = {
            "SMTPError": _errors.SMTPError,
            "ServerOptions": _options.ServerOptions,
            "SMTPServer": _server.SMTPServer,
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
