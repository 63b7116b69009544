# -*- test-case-name: tests.test_handlercheck -*-
"""
L{SMTPServer} checks its handler when it is built: partial handlers work as
in aiosmtpd, broken ones are refused with a L{TypeError}; and the typed
README example passes C{mypy --strict} without the mypy-zope plugin.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from tests.test_protocol import connect, take
from twisted_smtpd import SMTPServer
from twisted_smtpd._core.session import Session
from twisted_smtpd.interfaces import IMessageStream

PROJECT = Path(__file__).resolve().parents[1]

MESSAGE = (
    b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
    b"DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n"
)


class OnlyOnData:
    """
    An aiosmtpd-style handler: a plain class with one hook.
    """

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def onData(self, stream: IMessageStream, session: Session) -> object:
        def got(body: bytes) -> str:
            self.bodies.append(body)
            return "OK: got it"

        return stream.collect().addCallback(got)


class PartialHandlerTests(SynchronousTestCase):
    """
    A handler with only some hooks: the others accept.
    """

    def test_onlyOnData(self) -> None:
        """
        A plain class with only C{onData} receives the message; the
        session is not dropped with an C{AttributeError}.
        """
        handler = OnlyOnData()
        proto, transport, clock, factory = connect(handler)
        proto.dataReceived(MESSAGE)
        replies = take(transport)
        self.assertIn(b"\r\n250 2.0.0 OK: got it\r\n221 ", replies)
        self.assertEqual(handler.bodies, [b"Subject: hi\r\n\r\nbody\r\n"])
        self.flushLoggedErrors()
        transport.loseConnection()
        proto.connectionLost()
        self.assertEqual(self.flushLoggedErrors(AttributeError), [])

    def test_onlyOnAuth(self) -> None:
        """
        A handler with its own C{onAuth} still decides AUTH.
        """

        class Auth:
            def onAuth(self, auth: Any, session: Session) -> object:
                return "user"

        server = SMTPServer(Auth())
        self.assertTrue(server.factory.authEnabled)

    def test_wrappedKept(self) -> None:
        """
        The completed handler keeps the given one as C{wrapped}; a full
        handler is used as it is.
        """
        handler = OnlyOnData()
        self.assertIs(SMTPServer(handler).factory.handler.wrapped, handler)  # type: ignore[attr-defined]
        from twisted_smtpd.handlers import SinkHandler

        sink = SinkHandler()
        self.assertIs(SMTPServer(sink).factory.handler, sink)


class RefusedHandlerTests(SynchronousTestCase):
    """
    Handlers that cannot work are refused when the server is built.
    """

    def test_misspelledHook(self) -> None:
        """
        C{onRcpt} is not a hook: the error names it and the likely hook.
        """

        class Misspelled(OnlyOnData):
            def onRcpt(self, address: object, session: object) -> None:
                pass

        e = self.assertRaises(TypeError, SMTPServer, Misspelled())
        self.assertIn("handler Misspelled: onRcpt is not a hook of ISMTPHandler", str(e))
        self.assertIn("did you mean onRcptTo?", str(e))

    def test_notCallable(self) -> None:
        """
        A hook that is not callable is refused, naming it.
        """

        class Broken(OnlyOnData):
            onMailFrom = "yes"

        e = self.assertRaises(TypeError, SMTPServer, Broken())
        self.assertEqual(str(e), "handler Broken: onMailFrom is not callable (str)")

    def test_classInsteadOfInstance(self) -> None:
        """
        A handler class given instead of an instance of it is refused,
        saying so: its hooks would be called unbound, and every client
        refused with 451 at connect.
        """
        from twisted_smtpd.testing import MessageRecorder

        e = self.assertRaises(TypeError, SMTPServer, MessageRecorder)
        self.assertEqual(
            str(e),
            "handler MessageRecorder is a class, not a handler: pass an instance,"
            " MessageRecorder()",
        )

    def test_noHooks(self) -> None:
        """
        An object with no hook at all is refused.
        """
        e = self.assertRaises(TypeError, SMTPServer, object())
        self.assertIn("handler object has none of the hooks", str(e))


class TypingTests(SynchronousTestCase):
    """
    The README example is typed for users without the mypy-zope plugin.
    """

    def test_readmeExample(self) -> None:
        """
        C{mypy --strict} without plugins passes on the first example of
        the README.
        """
        try:
            import mypy  # noqa: F401
        except ImportError:
            if os.environ.get("CI"):
                self.fail("mypy is not installed; CI installs the dev extra")
            raise SkipTest("mypy is not installed") from None
        match = re.search(r"```python\n(.*?)```", (PROJECT / "README.md").read_text(), re.S)
        assert match is not None
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "example.py").write_text(match.group(1))
        (directory / "mypy.ini").write_text("[mypy]\nstrict = True\n")
        self.assertIn("stream.collect()", match.group(1))
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "example.py"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "PYTHONPATH": str(PROJECT)},
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
