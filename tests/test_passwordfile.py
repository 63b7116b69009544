# -*- test-case-name: tests.test_passwordfile -*-
"""
C{--auth file:PATH} when a login cannot read the file (a temporary
authentication failure, not the client's password refused), and its
lines read strictly.
"""

from __future__ import annotations

import hmac
import os
from hashlib import md5

from twisted.cred.portal import Portal
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python import usage
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


_HASHED = "$6$abcdefgh$" + "x" * 86


class LineTests(SynchronousTestCase):
    """
    The C{USER:PASSWORD} lines of C{--auth file:} are read strictly: a line
    that would let in who should not get in (a password cut at a second
    colon, an empty password, a hash taken as the password) refuses the
    start in one line and, written later, logs nobody in.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def write(self, text: str) -> None:
        with open(self.path, "w") as f:
            f.write(text)

    def start(self) -> Portal:
        config = parse("--sink", "--auth", f"file:{self.path}", "--auth-methods", "PLAIN,CRAM-MD5")
        return portalFromCheckers(config["credCheckers"])

    def refusal(self, text: str) -> str:
        self.write(text)
        return str(self.assertRaises(usage.UsageError, self.start))

    def login(self, portal: Portal, request: AuthRequest) -> object:
        return self.successResultOf(authenticate(portal, request).addErrback(lambda f: f.value))

    def test_startRefusesEmptyPassword(self) -> None:
        """
        A user with an empty password refuses the start, naming the line.
        """
        self.assertEqual(
            self.refusal("# users\n\nalice:secret\nbob:\n"),
            f"--auth 'file:{self.path}': line 4: empty password (CRAM-MD5 would log in"
            " anyone who knows the name)",
        )

    def test_startRefusesSecondColon(self) -> None:
        """
        A password holding a colon (of which only the part before it would
        be checked) refuses the start, the password not repeated.
        """
        message = self.refusal("alice:zq7:k9w\nbob\n")
        self.assertEqual(
            message,
            f"--auth 'file:{self.path}': line 1: more than one colon: a password cannot hold"
            " one (only the part before it would be checked) (and 1 more line(s))",
        )
        self.assertNotIn("zq7", message)

    def test_startRefusesHash(self) -> None:
        """
        A crypt(3), passlib or Dovecot hash in place of the password refuses
        the start: the file holds plain passwords.
        """
        for hashed in (_HASHED, "$2b$12$" + "a" * 53, "{SSHA}abcdefgh", "$argon2id$v=19$x"):
            self.assertIn(
                "line 1: the password looks like a hash", self.refusal(f"alice:{hashed}\n")
            )

    def test_loginIgnoresBadLines(self) -> None:
        """
        Lines with a problem written after the start log nobody in: not
        with CRAM-MD5 keyed with nothing, not with the part of a password
        before a colon, not with the hash as the password.  Each is logged
        once, by number, until the file changes again.
        """
        self.write("alice:secret\n")
        portal = self.start()
        self.write(f"alice:\nbob:zq7:k9w\ncarol:{_HASHED}\ndave:right\n")
        challenge = b"<1.2@mx.example>"
        requests = [
            AuthRequest(
                method="CRAM-MD5",
                username="alice",
                challenge=challenge,
                response=hmac.new(b"", challenge, md5).hexdigest(),
            ),
            AuthRequest(method="PLAIN", username="bob", password="zq7"),
            AuthRequest(method="PLAIN", username="carol", password=_HASHED),
        ]
        for request in requests:
            refused = self.login(portal, request)
            assert isinstance(refused, SMTPError), (request, refused)
            self.assertEqual(refused.code, 535)
        self.assertEqual(
            self.login(portal, AuthRequest(method="PLAIN", username="dave", password="right")),
            AuthResult(user="dave"),
        )
        errors = [e for e in self.events if e.get("log_level") == LogLevel.error]
        self.assertEqual([e.get("line") for e in errors], [1, 2, 3])
        self.assertNotIn("zq7", str(errors))
