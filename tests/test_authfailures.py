# -*- test-case-name: tests.test_authfailures -*-
"""
AUTH against a hostile client: every failed attempt is counted and logged
once, however the client ends the exchange (the C{auth failed} lines
fail2ban reads must not depend on the client staying to read its refusal),
and no credential shows where a request is printed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_auth import AUTH_FAILED, TOO_MANY_AUTH_FAILURES, PasswordHandler, b64
from tests.test_protocol import connect, take
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import AuthRequest, AuthResult, Session
from twisted_smtpd._serving.logging import NAMESPACE, SessionLogger
from twisted_smtpd._serving.protocol import SMTPProtocol

CLIENT = "unknown[192.0.2.7]"
XOAUTH2_BAD = b"AUTH XOAUTH2 " + b64(b"user=mallory\x01auth=Bearer guess\x01\x01") + b"\r\n"


class _Logged(SynchronousTestCase):
    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_namespace"] == NAMESPACE]

    def session(self, handler: Any = None, **options: Any) -> tuple[SMTPProtocol, Any]:
        options.setdefault("allowInsecureAuth", True)
        options.setdefault("authMethods", ["PLAIN", "XOAUTH2"])
        proto, transport, clock, factory = connect(
            handler if handler is not None else PasswordHandler(), **options
        )
        factory.addObserver(SessionLogger())
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        return proto, transport

    def failed(self, proto: SMTPProtocol, mechanism: str, user: str) -> str:
        return (
            f"{proto.session.id} auth failed: {mechanism} from {CLIENT} user=<{user}>:"
            " 535 5.7.8 Error: authentication credentials invalid"
        )


class XOAuth2FailureTests(_Logged):
    """
    A refused XOAUTH2 token is a failed attempt when the error challenge is
    sent, not only once the client answers it.
    """

    def test_loggedWhenClientLeaves(self) -> None:
        """
        A client that leaves after the XOAUTH2 error challenge, without the
        empty line that would fetch its 535, still leaves its C{auth failed}
        line.
        """
        proto, transport = self.session()
        proto.dataReceived(XOAUTH2_BAD)
        self.assertTrue(take(transport).startswith(b"334 "))
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            [line for line in self.lines() if " auth " in line],
            [self.failed(proto, "XOAUTH2", "mallory")],
        )

    def test_loggedOnceWhenAnswered(self) -> None:
        """
        A client that answers the error challenge gets its 535, and the
        attempt is still logged once.
        """
        proto, transport = self.session()
        proto.dataReceived(XOAUTH2_BAD)
        take(transport)
        proto.dataReceived(b"\r\n")
        self.assertEqual(take(transport), AUTH_FAILED)
        self.assertEqual(
            [line for line in self.lines() if " auth " in line],
            [self.failed(proto, "XOAUTH2", "mallory")],
        )

    def test_lockoutAfterAnswer(self) -> None:
        """
        The attempt that reaches C{maxAuthFailures} is answered 535 after the
        client's empty line, then the lockout closes the session.
        """
        proto, transport = self.session(maxAuthFailures=2)
        proto.dataReceived(XOAUTH2_BAD + b"\r\n")
        self.assertEqual(take(transport).splitlines()[-1] + b"\r\n", AUTH_FAILED)
        proto.dataReceived(XOAUTH2_BAD)
        take(transport)
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(b"\r\n")
        self.assertEqual(take(transport), AUTH_FAILED + TOO_MANY_AUTH_FAILURES)
        self.assertTrue(transport.disconnecting)
        lines = [line for line in self.lines() if " auth " in line]
        self.assertEqual(lines[:2], [self.failed(proto, "XOAUTH2", "mallory")] * 2)
        self.assertEqual(len(lines), 3)
        self.assertIn(" auth lockout: ", lines[2])

    def test_lineTooLongAfterChallenge(self) -> None:
        """
        A line too long in answer to the error challenge is refused as too
        long and does not count the attempt a second time.
        """
        proto, transport = self.session(maxAuthFailures=2)
        proto.dataReceived(XOAUTH2_BAD)
        take(transport)
        proto.dataReceived(b"x" * 13000 + b"\r\n")
        self.assertEqual(take(transport), b"500 5.5.6 Error: line too long\r\n")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(
            [line for line in self.lines() if " auth " in line],
            [self.failed(proto, "XOAUTH2", "mallory")],
        )


class CancelTests(_Logged):
    """
    A client that cancels the exchange with C{*} gets 501 (RFC 4954 section
    4) with Postfix's enhanced code, and one C{reject} line: no credentials
    were checked, so it is no failed login.
    """

    def test_cancelReplyAndLine(self) -> None:
        """
        C{*} is answered C{501 5.7.0 Authentication aborted} and logged as
        a refused AUTH with that reply, the line fail2ban's aggressive mode
        reads.
        """
        proto, transport = self.session()
        proto.dataReceived(b"AUTH PLAIN\r\n")
        self.assertEqual(take(transport), b"334 \r\n")
        proto.dataReceived(b"*\r\n")
        self.assertEqual(take(transport), b"501 5.7.0 Authentication aborted\r\n")
        self.assertEqual(
            [line for line in self.lines() if " auth " in line or " reject: " in line],
            [f"{proto.session.id} reject: AUTH from {CLIENT}: 501 5.7.0 Authentication aborted"],
        )


class CredentialReprTests(SynchronousTestCase):
    """
    An L{AuthRequest} printed (a handler's log line, a test's failure
    message) shows which credentials it carries, never their values.
    """

    def test_passwordHidden(self) -> None:
        """
        The password of a PLAIN or LOGIN request is not in its C{repr}.
        """
        text = repr(AuthRequest(method="PLAIN", username="alice", password="hunter2-secret"))
        self.assertNotIn("hunter2-secret", text)
        self.assertIn("username='alice'", text)
        self.assertIn("password=<hidden>", text)

    def test_tokenAndDigestHidden(self) -> None:
        """
        Neither an XOAUTH2 bearer token nor a CRAM-MD5 digest is in the
        C{repr}; absent credentials still show as C{None}.
        """
        token = repr(AuthRequest(method="XOAUTH2", username="a", accessToken="ya29.tok-value"))
        self.assertNotIn("ya29.tok-value", token)
        self.assertIn("password=None", token)
        digest = "0123456789abcdef0123456789abcdef"
        cram = repr(
            AuthRequest(method="CRAM-MD5", username="a", challenge=b"<1@x>", response=digest)
        )
        self.assertNotIn(digest, cram)
        self.assertIn("challenge=b'<1@x>'", cram)

    def test_stillCompared(self) -> None:
        """
        Hiding the values in the C{repr} leaves equality as it was.
        """
        self.assertEqual(AuthRequest("PLAIN", "a", "pw"), AuthRequest("PLAIN", "a", "pw"))
        self.assertNotEqual(AuthRequest("PLAIN", "a", "pw"), AuthRequest("PLAIN", "a", "other"))


class LateHandler(PasswordHandler):
    """
    Answers every AUTH later, through the Deferred in C{pending}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deferred[object]] = []

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        self.requests.append(auth)
        d: Deferred[object] = Deferred()
        self.pending.append(d)
        return d


class LateAnswerTests(_Logged):
    """
    A refusal that comes after the session ended is a failed login all the
    same: with a handler slow to refuse (one that delays failures to slow
    guessing), a client that gives up waiting has learnt its guess was
    wrong.
    """

    WRONG = b"AUTH PLAIN " + b64(b"\0mallory\0guess") + b"\r\n"

    def leave(self, proto: SMTPProtocol) -> None:
        proto.connectionLost(Failure(ConnectionDone()))

    def authLines(self) -> list[str]:
        return [line for line in self.lines() if " auth " in line]

    def test_refusedAfterClientLeft(self) -> None:
        """
        C{onAuth} refusing with L{SMTPError} after the client left logs its
        C{auth failed} line.
        """
        handler = LateHandler()
        proto, transport = self.session(handler)
        proto.dataReceived(self.WRONG)
        self.leave(proto)
        handler.pending[0].errback(
            SMTPError(535, "Error: authentication credentials invalid", "5.7.8")
        )
        self.assertEqual(self.authLines(), [self.failed(proto, "PLAIN", "mallory")])

    def test_noneAfterClientLeft(self) -> None:
        """
        C{onAuth} answering C{None} (no login) after the client left logs its
        C{auth failed} line.
        """
        handler = LateHandler()
        proto, transport = self.session(handler)
        proto.dataReceived(self.WRONG)
        self.leave(proto)
        handler.pending[0].callback(None)
        self.assertEqual(self.authLines(), [self.failed(proto, "PLAIN", "mallory")])

    def test_refusedAfterHandlerTimeout(self) -> None:
        """
        A refusal after the session gave up waiting for C{onAuth} (421 at
        C{handlerTimeout}) is still logged as the failed login it is.
        """
        handler = LateHandler()
        proto, transport = self.session(handler, handlerTimeout=30)
        proto.dataReceived(self.WRONG)
        proto.clock.advance(31)
        self.assertTrue(take(transport).startswith(b"421 "))
        handler.pending[0].errback(
            SMTPError(535, "Error: authentication credentials invalid", "5.7.8")
        )
        self.assertEqual(self.authLines(), [self.failed(proto, "PLAIN", "mallory")])

    def test_acceptedAfterClientLeftNotLogged(self) -> None:
        """
        A login accepted after the client left is neither a failed login
        nor a login: nothing is logged for it.
        """
        handler = LateHandler()
        proto, transport = self.session(handler)
        proto.dataReceived(self.WRONG)
        self.leave(proto)
        handler.pending[0].callback(AuthResult(user="mallory"))
        self.assertEqual(self.authLines(), [])

    def test_handlerErrorAfterClientLeftNotAFailedLogin(self) -> None:
        """
        C{onAuth} failing with an unexpected exception after the client left
        is the handler's error, logged as such, not a failed login.
        """
        handler = LateHandler()
        proto, transport = self.session(handler)
        proto.dataReceived(self.WRONG)
        self.leave(proto)
        handler.pending[0].errback(RuntimeError("database down"))
        self.assertEqual(self.authLines(), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_refusedInTimeLoggedOnce(self) -> None:
        """
        A late refusal while the client waits is answered and logged once.
        """
        handler = LateHandler()
        proto, transport = self.session(handler)
        proto.dataReceived(self.WRONG)
        handler.pending[0].errback(
            SMTPError(535, "Error: authentication credentials invalid", "5.7.8")
        )
        self.assertEqual(take(transport), AUTH_FAILED)
        self.assertEqual(self.authLines(), [self.failed(proto, "PLAIN", "mallory")])
