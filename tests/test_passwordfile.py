# -*- test-case-name: tests.test_passwordfile -*-
"""
C{--auth file:PATH} when a login cannot read the file (a temporary
authentication failure, not the client's password refused), and its
lines read strictly.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from hashlib import md5

from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_tap import parse
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import AuthRequest, AuthResult
from twisted_smtpd._serving.cred import authenticate, portalFromCheckers
from twisted_smtpd._twistd.passwordfile import PasswordFile


def _inPlace(function: Callable[[], object]) -> Deferred[object]:
    """
    Run C{function} at once, as a pool thread would, its result in a
    L{Deferred}.
    """
    return maybeDeferred(function)


def synchronousPortal(*args: str) -> Portal:
    """
    The portal of the C{--auth} checkers of C{args}, a C{file:} one reading
    its file at once rather than in a pool thread.
    """
    checkers = parse(*args)["credCheckers"]
    for checker in checkers:
        if isinstance(checker, PasswordFile):
            checker.inThread = _inPlace
    return portalFromCheckers(checkers)


class UnreadableFileTests(SynchronousTestCase):
    """
    The file of C{--auth file:} is read again at each login; one that
    cannot be read then fails the login with 454 4.7.0 and an error line.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        with open(self.path, "w") as f:
            f.write("alice:secret\n")
        self.portal = synchronousPortal("--sink", "--auth", f"file:{self.path}")
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
        return synchronousPortal(
            "--sink", "--auth", f"file:{self.path}", "--auth-methods", "PLAIN,CRAM-MD5"
        )

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


class RepeatedAndTrailingTests(SynchronousTestCase):
    """
    A user name given on two lines, and white space or a CR after a
    password, refuse the start in one line and, written later, log nobody
    in; lines ending in CR LF are read as lines, with one warning.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def write(self, text: bytes) -> None:
        with open(self.path, "wb") as f:
            f.write(text)

    def start(self) -> Portal:
        return synchronousPortal("--sink", "--auth", f"file:{self.path}")

    def refusal(self, text: bytes) -> str:
        self.write(text)
        return str(self.assertRaises(usage.UsageError, self.start))

    def login(self, portal: Portal, user: str, password: str) -> object:
        request = AuthRequest(method="PLAIN", username=user, password=password)
        return self.successResultOf(authenticate(portal, request).addErrback(lambda f: f.value))

    def assertRefused(self, portal: Portal, user: str, *passwords: str) -> None:
        for password in passwords:
            refused = self.login(portal, user, password)
            assert isinstance(refused, SMTPError), (password, refused)
            self.assertEqual(refused.code, 535)

    def logged(self, level: LogLevel) -> list[dict[str, object]]:
        return [e for e in self.events if e.get("log_level") == level]

    def test_startRefusesRepeatedName(self) -> None:
        """
        A user name on two lines refuses the start in one line naming both
        line numbers, neither password repeated.
        """
        message = self.refusal(b"alice:zq7one\nbob:other\nalice:zq7two\n")
        self.assertEqual(
            message,
            f"--auth 'file:{self.path}': line 3: the user name of line 1 again:"
            " neither line logs in",
        )
        self.assertNotIn("zq7", message)

    def test_loginRefusesRepeatedName(self) -> None:
        """
        A user name on two lines written after the start logs nobody in by
        that name, with either password (before, the first line's logged
        in), with one error line naming both lines; the other users still
        log in.
        """
        self.write(b"alice:one\n")
        portal = self.start()
        self.write(b"alice:one\nalice:two\nalice:three\ndave:right\n")
        self.assertRefused(portal, "alice", "one", "two", "three")
        self.assertEqual(self.login(portal, "dave", "right"), AuthResult(user="dave"))
        errors = self.logged(LogLevel.error)
        self.assertEqual(
            [(e.get("line"), e.get("problem")) for e in errors],
            [
                (2, "the user name of line 1 again: neither line logs in"),
                (3, "the user name of line 1 again: neither line logs in"),
            ],
        )

    def test_startRefusesTrailingWhiteSpace(self) -> None:
        """
        A space, a tab or a CR after a password refuses the start: whether
        it belongs to the password is unclear.
        """
        for text in (b"alice:secret \n", b"alice:secret\t\n", b"alice:secret\r\r\n"):
            self.assertEqual(
                self.refusal(text),
                f"--auth 'file:{self.path}': line 1: white space or a CR after the"
                " password: remove it (it is unclear whether it belongs to the password)",
            )

    def test_loginRefusesTrailingWhiteSpace(self) -> None:
        """
        A password followed by white space, written after the start, logs
        nobody in, with or without it (before, the password without it
        did), with one error line.
        """
        self.write(b"alice:secret\n")
        portal = self.start()
        self.write(b"alice:secret \n")
        self.assertRefused(portal, "alice", "secret", "secret ")
        self.assertEqual([e.get("line") for e in self.logged(LogLevel.error)], [1])

    def test_crlfWarnedOnce(self) -> None:
        """
        A file with CR LF line ends (written on Windows) starts, its
        passwords without the CR, with one warning naming its first such
        line at start, none at the logins that follow, and one more when
        the file changes.
        """
        self.write(b"# users\r\nalice:secret\r\n")
        portal = self.start()
        self.assertEqual(self.login(portal, "alice", "secret"), AuthResult(user="alice"))
        self.assertEqual(self.login(portal, "alice", "secret"), AuthResult(user="alice"))
        warnings = self.logged(LogLevel.warn)
        self.assertEqual([e.get("line") for e in warnings], [1])
        self.assertIn("CR LF", str(warnings[0]["log_format"]))
        self.write(b"alice:secret\nbob:other\r\n")
        self.assertEqual(self.login(portal, "bob", "other"), AuthResult(user="bob"))
        self.assertEqual([e.get("line") for e in self.logged(LogLevel.warn)], [1, 2])
        self.assertEqual(self.logged(LogLevel.error), [])


class ReadingTests(SynchronousTestCase):
    """
    The file is read at start, and again, in a pool thread, only once it
    changed: a large file does not hold the reactor at each login.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        with open(self.path, "wb") as f:
            f.write(b"alice:secret\n")
        [self.checker] = parse("--sink", "--auth", f"file:{self.path}")["credCheckers"]
        assert isinstance(self.checker, PasswordFile)
        self.reads: list[Deferred[object]] = []
        self.functions: list[Callable[[], object]] = []

        def inThread(function: Callable[[], object]) -> Deferred[object]:
            self.functions.append(function)
            self.reads.append(Deferred())
            return self.reads[-1]

        self.checker.inThread = inThread
        self.portal = portalFromCheckers([self.checker])

    def login(self, password: str) -> Deferred[AuthResult]:
        request = AuthRequest(method="PLAIN", username="alice", password=password)
        return authenticate(self.portal, request)

    def runReads(self) -> None:
        """
        Run the reads handed to the pool, as its thread would.
        """
        while self.reads:
            self.reads.pop(0).callback(self.functions.pop(0)())

    def test_unchangedNotRead(self) -> None:
        """
        Logins against a file unchanged since the start read nothing.
        """
        for _ in range(3):
            self.assertEqual(self.successResultOf(self.login("secret")), AuthResult(user="alice"))
        self.assertEqual(self.reads, [])

    def test_changedReadInThePool(self) -> None:
        """
        A changed file is read in the pool, not on the calling thread: the
        logins wait for that one read, then are judged against what it
        read.
        """
        with open(self.path, "wb") as f:
            f.write(b"alice:changed-now\n")
        first, second = self.login("changed-now"), self.login("secret")
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.assertEqual(len(self.reads), 1)
        self.runReads()
        self.assertEqual(self.successResultOf(first), AuthResult(user="alice"))
        self.assertEqual(self.failureResultOf(second, SMTPError).value.code, 535)
        self.assertEqual(self.successResultOf(self.login("changed-now")), AuthResult(user="alice"))
        self.assertEqual(self.reads, [])
