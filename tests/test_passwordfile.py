# -*- test-case-name: tests.test_passwordfile -*-
"""
C{--auth file:PATH} when a login cannot read the file: a temporary
authentication failure, not the client's password refused.
"""

from __future__ import annotations

import os

from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.test_tap import parse
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import AuthRequest, AuthResult
from twisted_smtpd._serving.cred import authenticate, portalFromCheckers


class UnreadableFileTests(SynchronousTestCase):
    """
    The file of C{--auth file:} is read again at each login; one that
    cannot be read then fails the login with 454 4.7.0 and an error line.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        with open(self.path, "w") as f:
            f.write("alice:secret\n")
        config = parse("--sink", "--auth", f"file:{self.path}")
        self.portal = portalFromCheckers(config["credCheckers"])
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def login(self, password: str) -> object:
        request = AuthRequest(method="PLAIN", username="alice", password=password)
        return self.successResultOf(
            authenticate(self.portal, request).addErrback(lambda f: f.value)
        )

    def test_readable(self) -> None:
        """
        The right password logs in, a wrong one gets 535.
        """
        self.assertEqual(self.login("secret"), AuthResult(user="alice"))
        refused = self.login("wrong")
        assert isinstance(refused, SMTPError)
        self.assertEqual(refused.code, 535)

    def test_removed(self) -> None:
        """
        A file removed since the start: 454 4.7.0, and one error line
        naming it.
        """
        os.unlink(self.path)
        refused = self.login("secret")
        assert isinstance(refused, SMTPError), refused
        self.assertEqual((refused.code, refused.enhanced), (454, "4.7.0"))
        errors = [e for e in self.events if e.get("log_level") == LogLevel.error]
        self.assertEqual(len(errors), 1, errors)
        self.assertEqual(errors[0].get("path"), self.path)

    def test_directory(self) -> None:
        """
        A directory put in its place: 454 4.7.0 too.
        """
        os.unlink(self.path)
        os.mkdir(self.path)
        refused = self.login("secret")
        assert isinstance(refused, SMTPError), refused
        self.assertEqual(refused.code, 454)
