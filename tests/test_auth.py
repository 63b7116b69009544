"""
Tests for AUTH (RFC 4954) in a session: L{twisted_smtpd._serving.authcommand} and
L{twisted_smtpd._serving.cred}, over a L{StringTransport}.
"""

from __future__ import annotations

import base64
import hmac
from hashlib import md5
from typing import Any

from twisted.cred.checkers import ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests import replies
from tests.test_protocol import RecordingHandler, connect, take
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import AuthRequest, AuthResult, Session
from twisted_smtpd._serving.protocol import SMTPProtocol

AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
AUTH_FAILED = b"535 5.7.8 Error: authentication credentials invalid\r\n"
AUTH_NOT_AUTHORIZED = b"535 5.7.8 Error: authentication failed: authorization failure\r\n"
AUTH_NEEDS_TLS = b"538 5.7.11 Error: must issue a STARTTLS command first\r\n"
AUTH_NOT_ENABLED = b"503 5.5.1 Error: authentication not enabled\r\n"
ALREADY_AUTHENTICATED = b"503 5.5.1 Error: already authenticated\r\n"
AUTH_IN_TRANSACTION = b"503 5.5.1 Error: MAIL transaction in progress\r\n"
AUTH_REQUIRED = b"530 5.7.0 Error: authentication required\r\n"
AUTH_ABORTED = b"501 5.7.0 Authentication aborted\r\n"
AUTH_BAD_BASE64 = b"501 5.5.2 Error: invalid base64\r\n"
AUTH_UNRECOGNIZED = b"504 5.5.4 Unrecognized authentication type\r\n"
TOO_MANY_AUTH_FAILURES = b"421 4.7.0 Error: too many failed authentication attempts\r\n"
TOO_MANY_UNAUTHENTICATED = b"421 4.7.0 Error: too many unauthenticated commands\r\n"
AUTH_TEMPORARY_FAILURE = b"454 4.7.0 Temporary authentication failure\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class PasswordHandler(RecordingHandler):
    """
    Accepts alice/secret by PLAIN, LOGIN, CRAM-MD5 and the token "tok" by
    XOAUTH2.
    """

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[AuthRequest] = []

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        self.requests.append(auth)
        if auth.method == "XOAUTH2":
            ok = auth.accessToken == "tok"
        elif auth.method == "CRAM-MD5":
            ok = auth.username == "alice" and auth.validatePassword("secret")
        else:
            ok = auth.username == "alice" and auth.validatePassword("secret")
        if not ok:
            raise SMTPError(535, "Error: authentication credentials invalid", "5.7.8")
        return AuthResult(user={"name": auth.username})


def greeted(handler: Any = None, **options: Any) -> tuple[SMTPProtocol, Any, PasswordHandler]:
    handler = handler if handler is not None else PasswordHandler()
    options.setdefault("allowInsecureAuth", True)
    options.setdefault("authMethods", ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"])
    proto, transport, clock, factory = connect(handler, **options)
    proto.dataReceived(b"EHLO c\r\n")
    take(transport)
    return proto, transport, handler


class AnsweringHandler(PasswordHandler):
    """
    Answers every AUTH with C{answer}, whatever the credentials.
    """

    def __init__(self, answer: object) -> None:
        super().__init__()
        self.answer = answer

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        return self.answer


class AdvertiseTests(SynchronousTestCase):
    def test_advertisedWhenInsecureAllowed(self) -> None:
        """
        A handler with its own onAuth gets AUTH advertised with the methods.
        """
        proto, transport, clock, _ = connect(
            PasswordHandler(), allowInsecureAuth=True, authMethods=["PLAIN", "LOGIN"]
        )
        proto.dataReceived(b"EHLO c\r\n")
        self.assertIn(b"250-AUTH PLAIN LOGIN\r\n", transport.value())

    def test_notAdvertisedBeforeTLS(self) -> None:
        """
        Without TLS and without allowInsecureAuth, AUTH is not advertised and
        is refused with 538.
        """
        proto, transport, clock, _ = connect(PasswordHandler())
        proto.dataReceived(b"EHLO c\r\n")
        self.assertNotIn(b"AUTH", transport.value())
        take(transport)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_NEEDS_TLS)

    def test_notEnabledWithoutStartTLS(self) -> None:
        """
        Without TLS, without allowInsecureAuth and with STARTTLS disabled,
        AUTH cannot be used on the session: it is refused as not enabled
        (503, as Postfix refuses it), not with a 538 sending the client to
        a STARTTLS the server answers 502.
        """
        proto, transport, clock, _ = connect(PasswordHandler(), disabledCommands=["STARTTLS"])
        proto.dataReceived(b"EHLO c\r\n")
        self.assertNotIn(b"AUTH", transport.value())
        take(transport)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_NOT_ENABLED)

    def test_disabledWithoutBackend(self) -> None:
        """
        With BaseHandler and no portal, AUTH is neither offered nor required.
        """
        proto, transport, clock, _ = connect(allowInsecureAuth=True)
        proto.dataReceived(b"EHLO c\r\n")
        self.assertNotIn(b"AUTH", transport.value())
        take(transport)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\nMAIL FROM:<a@b.c>\r\n")
        self.assertEqual(take(transport), AUTH_NOT_ENABLED + replies.MAIL_OK)


class MechanismTests(SynchronousTestCase):
    def test_plainInitialResponse(self) -> None:
        """
        PLAIN with an initial response authenticates; both identities reach
        onAuth (an authorization identity equal to the user name is
        accepted); the session records the user and ESMTPA.
        """
        proto, transport, handler = greeted()
        proto.dataReceived(b"AUTH PLAIN " + b64(b"alice\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_OK)
        request = handler.requests[0]
        self.assertEqual(
            (request.method, request.authorizationIdentity, request.username, request.password),
            ("PLAIN", "alice", "alice", "secret"),
        )
        self.assertEqual(proto.session.user, {"name": "alice"})
        self.assertEqual(proto.session.transmissionType, "ESMTPA")

    def test_plainContinuation(self) -> None:
        """
        PLAIN without an initial response sends an empty challenge.
        """
        proto, transport, handler = greeted()
        proto.dataReceived(b"AUTH PLAIN\r\n")
        self.assertEqual(take(transport), b"334 \r\n")
        proto.dataReceived(b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_OK)

    def test_login(self) -> None:
        """
        LOGIN asks with the standard challenges Outlook, Go and curl expect.
        """
        proto, transport, handler = greeted()
        proto.dataReceived(b"AUTH LOGIN\r\n")
        self.assertEqual(take(transport), b"334 VXNlcm5hbWU6\r\n")
        proto.dataReceived(b64(b"alice") + b"\r\n")
        self.assertEqual(take(transport), b"334 UGFzc3dvcmQ6\r\n")
        proto.dataReceived(b64(b"secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_OK)

    def test_cramMD5(self) -> None:
        """
        CRAM-MD5: the digest of the challenge sent is checked in constant time
        by validatePassword.
        """
        proto, transport, handler = greeted()
        proto.dataReceived(b"AUTH CRAM-MD5\r\n")
        line = take(transport)
        self.assertTrue(line.startswith(b"334 "))
        challenge = base64.b64decode(line[4:-2])
        digest = hmac.new(b"secret", challenge, md5).hexdigest().encode()
        proto.dataReceived(b64(b"alice " + digest) + b"\r\n")
        self.assertEqual(take(transport), AUTH_OK)

    def test_cramMD5WrongSecret(self) -> None:
        """
        A CRAM-MD5 digest made with another secret is refused with 535.
        """
        proto, transport, handler = greeted()
        proto.dataReceived(b"AUTH CRAM-MD5\r\n")
        challenge = base64.b64decode(take(transport)[4:-2])
        digest = hmac.new(b"wrong", challenge, md5).hexdigest().encode()
        proto.dataReceived(b64(b"alice " + digest) + b"\r\n")
        self.assertEqual(take(transport), AUTH_FAILED)
        self.assertIsNone(proto.session.user)

    def test_xoauth2(self) -> None:
        """
        XOAUTH2 hands the bearer token to onAuth.
        """
        proto, transport, handler = greeted()
        proto.dataReceived(
            b"AUTH XOAUTH2 " + b64(b"user=alice\x01auth=Bearer tok\x01\x01") + b"\r\n"
        )
        self.assertEqual(take(transport), AUTH_OK)
        self.assertEqual(handler.requests[0].accessToken, "tok")

    def test_xoauth2Failure(self) -> None:
        """
        A refused XOAUTH2 token gets the base64 JSON error challenge; the
        client's empty line then gets 535.
        """
        proto, transport, handler = greeted()
        proto.dataReceived(
            b"AUTH XOAUTH2 " + b64(b"user=alice\x01auth=Bearer bad\x01\x01") + b"\r\n"
        )
        line = take(transport)
        self.assertTrue(line.startswith(b"334 "), line)
        document = base64.b64decode(line[4:-2])
        self.assertIn(b'"status":"400"', document)
        proto.dataReceived(b"\r\n")
        self.assertEqual(take(transport), AUTH_FAILED)

    def test_cancel(self) -> None:
        """
        C{*} cancels the exchange with 501.
        """
        proto, transport, handler = greeted()
        proto.dataReceived(b"AUTH LOGIN\r\n*\r\nNOOP\r\n")
        self.assertEqual(take(transport), b"334 VXNlcm5hbWU6\r\n" + AUTH_ABORTED + replies.OK)

    def test_badBase64(self) -> None:
        """
        Malformed base64 gets 501.
        """
        proto, transport, handler = greeted()
        proto.dataReceived(b"AUTH PLAIN !!!notbase64\r\n")
        self.assertEqual(take(transport), AUTH_BAD_BASE64)

    def test_unknownMechanism(self) -> None:
        """
        A mechanism not offered gets 504.
        """
        proto, transport, handler = greeted(authMethods=["PLAIN"])
        proto.dataReceived(b"AUTH LOGIN\r\nAUTH FOO\r\n")
        self.assertEqual(take(transport), AUTH_UNRECOGNIZED * 2)

    def test_asyncOnAuth(self) -> None:
        """
        A slow onAuth holds the pipelined commands behind it.
        """
        pending: Deferred[AuthResult] = Deferred()

        class Slow(PasswordHandler):
            def onAuth(self, auth: AuthRequest, session: Session) -> object:
                return pending

        proto, transport, handler = greeted(Slow())
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\nMAIL FROM:<a@b.c>\r\n")
        self.assertEqual(take(transport), b"")
        pending.callback(AuthResult(user="alice"))
        self.assertEqual(take(transport), AUTH_OK + replies.MAIL_OK)


class PolicyTests(SynchronousTestCase):
    def test_falseOrNoneRefuses(self) -> None:
        """
        An C{onAuth} answering C{False} (as aiosmtpd's C{auth_callback}
        does for bad credentials) or C{None}, at once or through a
        Deferred, logs nobody in: 535, counted as a failure, and MAIL
        still needs AUTH.
        """
        for answer in (False, None, succeed(False), succeed(None)):
            handler = AnsweringHandler(answer)
            proto, transport, _ = greeted(handler)
            proto.dataReceived(
                b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\nMAIL FROM:<a@b.c>\r\n"
            )
            self.assertEqual(take(transport), AUTH_FAILED + AUTH_REQUIRED)
            self.assertIsNone(proto.session.user)
            self.assertEqual(proto.auth.failures if proto.auth else 0, 1)

    def test_answerNamingNobody(self) -> None:
        """
        An C{onAuth} answer that names no user (C{True}, as aiosmtpd's
        C{auth_callback} says yes, an empty string, C{0}, or an
        L{AuthResult} whose C{user} is one of those or C{None}), at once or
        through a Deferred, is the handler's bug: the client gets RFC 4954's
        C{454 4.7.0} (not told its credentials are wrong), nobody is logged
        in, MAIL still needs AUTH, and a L{TypeError} naming the answer is
        logged.
        """
        answers: list[object] = [
            True,
            "",
            b"",
            0,
            AuthResult(user=None),
            AuthResult(user=True),
            AuthResult(user=""),
            succeed(True),
            succeed(AuthResult(user="")),
        ]
        for answer in answers:
            proto, transport, _ = greeted(AnsweringHandler(answer))
            proto.dataReceived(
                b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\nMAIL FROM:<a@b.c>\r\n"
            )
            self.assertEqual(take(transport), AUTH_TEMPORARY_FAILURE + AUTH_REQUIRED, answer)
            self.assertIsNone(proto.session.user)
            errors = self.flushLoggedErrors(TypeError)
            self.assertEqual(len(errors), 1, answer)
            self.assertIn("names no user", str(errors[0].value))

    def test_handlerFailureIsTemporaryAuthFailure(self) -> None:
        """
        An C{onAuth} that raises, or whose Deferred fails, with anything
        but an L{SMTPError} is answered as RFC 4954 section 6 answers a
        temporary server failure, C{454 4.7.0 Temporary authentication
        failure} (as Postfix does), not with the generic 451: nobody is
        logged in and the failure is logged.  An L{SMTPError} the handler
        raises keeps its own reply.
        """

        class Failing(PasswordHandler):
            def __init__(self, answer: object) -> None:
                super().__init__()
                self.answer = answer

            def onAuth(self, auth: AuthRequest, session: Session) -> object:
                if isinstance(self.answer, Exception):
                    raise self.answer
                return self.answer

        for answer, written in [
            (RuntimeError("database down"), AUTH_TEMPORARY_FAILURE),
            (fail(RuntimeError("database down")), AUTH_TEMPORARY_FAILURE),
            (SMTPError(451, "try later", "4.3.0"), b"451 4.3.0 try later\r\n"),
        ]:
            proto, transport, _ = greeted(Failing(answer))
            proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
            self.assertEqual(take(transport), written, answer)
            self.assertIsNone(proto.session.user)
            self.flushLoggedErrors(RuntimeError)

    def test_answerNamingSomebody(self) -> None:
        """
        Any other answer is the user: a name, a number other than 0, an
        avatar object, directly or as an L{AuthResult}'s C{user}.
        """
        avatar = object()
        for answer, user in [
            ("alice", "alice"),
            (7, 7),
            (avatar, avatar),
            (AuthResult(user=b"alice"), b"alice"),
        ]:
            proto, transport, _ = greeted(AnsweringHandler(answer))
            proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
            self.assertEqual(take(transport), AUTH_OK)
            self.assertIs(proto.session.user, user)

    def test_alreadyAuthenticated(self) -> None:
        """
        A second AUTH gets 503.
        """
        proto, transport, handler = greeted()
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        take(transport)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), ALREADY_AUTHENTICATED)

    def test_inTransaction(self) -> None:
        """
        AUTH inside a mail transaction gets 503.
        """
        proto, transport, handler = greeted(authOptional=True)
        proto.dataReceived(b"MAIL FROM:<a@b.c>\r\n")
        take(transport)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_IN_TRANSACTION)

    def test_mailNeedsAuth(self) -> None:
        """
        MAIL before AUTH gets 530 with authRequiredMessage; after AUTH it is
        accepted, and the AUTH= parameter is exposed.
        """
        proto, transport, handler = greeted(authRequiredMessage="Error: log in first")
        proto.dataReceived(b"MAIL FROM:<a@b.c>\r\n")
        self.assertEqual(take(transport), b"530 5.7.0 Error: log in first\r\n")
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        proto.dataReceived(b"MAIL FROM:<a@b.c> AUTH=alice+40b.c\r\n")
        self.assertEqual(take(transport), AUTH_OK + replies.MAIL_OK)
        mailFrom = proto.session.envelope.mailFrom
        assert mailFrom is not None
        self.assertEqual(mailFrom.args["AUTH"], "alice+40b.c")

    def test_authOptional(self) -> None:
        """
        With authOptional, MAIL needs no AUTH.
        """
        proto, transport, handler = greeted(authOptional=True)
        proto.dataReceived(b"MAIL FROM:<a@b.c>\r\n")
        self.assertEqual(take(transport), replies.MAIL_OK)

    def test_failureLimit(self) -> None:
        """
        After maxAuthFailures failures the session gets 421 and is closed.
        """
        proto, transport, handler = greeted(maxAuthFailures=2)
        bad = b"AUTH PLAIN " + b64(b"\0alice\0nope") + b"\r\n"
        proto.dataReceived(bad + bad + bad)
        self.assertEqual(take(transport), AUTH_FAILED * 2 + TOO_MANY_AUTH_FAILURES)
        self.assertTrue(transport.disconnecting)

    def test_unauthenticatedCommandLimit(self) -> None:
        """
        Past maxAllowedUnauthenticatedCommands commands without AUTH, the
        session gets 421 and is closed.
        """
        proto, transport, clock, _ = connect(
            PasswordHandler(), allowInsecureAuth=True, maxAllowedUnauthenticatedCommands=3
        )
        take(transport)
        proto.dataReceived(b"EHLO c\r\nNOOP\r\nNOOP\r\nNOOP\r\n")
        out = take(transport)
        self.assertTrue(out.endswith(replies.OK * 2 + TOO_MANY_UNAUTHENTICATED), out)
        self.assertTrue(transport.disconnecting)


class PortalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")

    def session(self) -> tuple[SMTPProtocol, Any]:
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from tests.test_protocol import PEER, _ipv4
        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.server import SMTPServerFactory
        from twisted_smtpd.handlers import BaseHandler

        factory = SMTPServerFactory(
            BaseHandler(),
            ServerOptions(
                name="mx.example.com",
                disableReverseLookup=True,
                allowInsecureAuth=True,
                authMethods=["PLAIN", "LOGIN", "CRAM-MD5"],
            ),
            reactor=Clock(),
            checkers=[self.checker],
        )
        proto = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=_ipv4(*PEER))
        proto.makeConnection(transport)
        proto.dataReceived(b"EHLO c\r\n")
        self.assertIn(b"250-AUTH PLAIN LOGIN CRAM-MD5\r\n", take(transport))
        return proto, transport

    def test_plain(self) -> None:
        """
        PLAIN is checked by the credentials checker; the user is the avatar id.
        """
        proto, transport = self.session()
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_OK)
        self.assertEqual(proto.session.user, "alice")

    def test_wrongPassword(self) -> None:
        """
        A wrong password through the portal gets 535.
        """
        proto, transport = self.session()
        proto.dataReceived(b"AUTH LOGIN " + b64(b"alice") + b"\r\n" + b64(b"wrong") + b"\r\n")
        self.assertEqual(take(transport), b"334 UGFzc3dvcmQ6\r\n" + AUTH_FAILED)
        self.assertIsNone(proto.session.user)

    def test_unknownUser(self) -> None:
        """
        An unknown user through the portal gets 535.
        """
        proto, transport = self.session()
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0mallory\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_FAILED)

    def test_cramMD5(self) -> None:
        """
        CRAM-MD5 works through a checker that knows the plain secret.
        """
        proto, transport = self.session()
        proto.dataReceived(b"AUTH CRAM-MD5\r\n")
        challenge = base64.b64decode(take(transport)[4:-2])
        digest = hmac.new(b"secret", challenge, md5).hexdigest().encode()
        proto.dataReceived(b64(b"alice " + digest) + b"\r\n")
        self.assertEqual(take(transport), AUTH_OK)
        self.assertEqual(proto.session.user, "alice")

    def test_plainAuthzidDifferentRefusedByPortal(self) -> None:
        """
        Through twisted.cred, right credentials asking to act as another
        identity get 535 5.7.8; asking for the user's own identity works.
        """
        proto, transport = self.session()
        proto.dataReceived(b"AUTH PLAIN " + b64(b"bob\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_NOT_AUTHORIZED)
        self.assertIsNone(proto.session.user)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"alice\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_OK)
        self.assertEqual(proto.session.user, "alice")


@implementer(ICredentialsChecker)
class PasswordOnlyChecker:
    """
    A checker for L{IUsernamePassword} alone (like C{--auth file:} with
    hashed passwords): it cannot verify a CRAM-MD5 response.
    """

    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes]:
        if credentials.username == b"alice" and credentials.checkPassword(b"secret"):
            return succeed(b"alice")
        return fail(UnauthorizedLogin())


class OfferedMechanismTests(SynchronousTestCase):
    """
    Only mechanisms something can decide are advertised and accepted: a
    portal decides those it has a checker for, the handler's own C{onAuth}
    XOAUTH2; each one left out is named in one warning when the server is
    made.
    """

    def session(
        self, handler: Any, checker: Any, methods: list[str]
    ) -> tuple[SMTPProtocol, Any, list[str]]:
        from twisted.internet.task import Clock
        from twisted.internet.testing import EventLoggingObserver, StringTransport
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher

        from tests.test_protocol import PEER, _ipv4
        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.server import SMTPServerFactory

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        factory = SMTPServerFactory(
            handler,
            ServerOptions(
                name="mx.example.com",
                disableReverseLookup=True,
                allowInsecureAuth=True,
                authMethods=methods,
            ),
            reactor=Clock(),
            checkers=[checker],
        )
        warnings = [formatEvent(e) for e in events if e["log_level"] is LogLevel.warn]
        proto = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=_ipv4(*PEER))
        proto.makeConnection(transport)
        proto.dataReceived(b"EHLO c\r\n")
        return proto, transport, warnings

    def test_cramMD5WithoutHashedPasswordChecker(self) -> None:
        """
        A portal whose only checker takes plain passwords cannot check a
        CRAM-MD5 response: CRAM-MD5 is neither advertised nor accepted
        (504), and one warning names it; PLAIN still works.
        """
        from twisted_smtpd.handlers import BaseHandler

        proto, transport, warnings = self.session(
            BaseHandler(), PasswordOnlyChecker(), ["PLAIN", "CRAM-MD5"]
        )
        self.assertIn(b"250-AUTH PLAIN\r\n", take(transport))
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("CRAM-MD5", warnings[0])
        proto.dataReceived(b"AUTH CRAM-MD5\r\n")
        self.assertEqual(take(transport), AUTH_UNRECOGNIZED)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_OK)

    def test_xoauth2WithPortalAndOnAuth(self) -> None:
        """
        With a portal and a handler deciding AUTH itself, XOAUTH2 is
        offered and goes to C{onAuth}; nothing is left out, nothing warned.
        """
        handler = PasswordHandler()
        proto, transport, warnings = self.session(
            handler, InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret"), ["PLAIN", "XOAUTH2"]
        )
        self.assertIn(b"250-AUTH PLAIN XOAUTH2\r\n", take(transport))
        self.assertEqual(warnings, [])
        proto.dataReceived(
            b"AUTH XOAUTH2 " + b64(b"user=alice\x01auth=Bearer tok\x01\x01") + b"\r\n"
        )
        self.assertEqual(take(transport), AUTH_OK)
        self.assertEqual([r.method for r in handler.requests], ["XOAUTH2"])

    def test_onlyUndecidableMechanisms(self) -> None:
        """
        A server whose checkers can decide none of the configured
        mechanisms (or none at all) is refused when it is made: it would
        offer no AUTH and take mail from anyone.
        """
        from twisted_smtpd.handlers import BaseHandler

        for methods in (["XOAUTH2"], []):
            e = self.assertRaises(
                ValueError, self.session, BaseHandler(), PasswordOnlyChecker(), methods
            )
            self.assertIn("mail would be taken without AUTH", str(e))
            self.assertIn(f"authMethods {','.join(methods) or '()'}:", str(e))

    def test_checkersWithAuthDisabled(self) -> None:
        """
        Checkers with AUTH among the disabled commands are refused too.
        """
        from twisted.internet.task import Clock

        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.server import SMTPServerFactory
        from twisted_smtpd.handlers import BaseHandler

        e = self.assertRaises(
            ValueError,
            SMTPServerFactory,
            BaseHandler(),
            ServerOptions(disabledCommands=("AUTH",)),
            reactor=Clock(),
            checkers=[PasswordOnlyChecker()],
        )
        self.assertIn("exclude each other", str(e))


def plainOfLength(length: int) -> bytes:
    """
    A base64 PLAIN response for alice with a wrong password, C{length}
    octets long (a multiple of 4).
    """
    raw = b"\0alice\0" + b"x" * (length // 4 * 3 - 7)
    encoded = b64(raw)
    assert len(encoded) == length, len(encoded)
    return encoded


class LineLimitTests(SynchronousTestCase):
    """
    RFC 4954 section 4: AUTH lines, the command and every continuation, are
    at most 12288 octets; a longer one is refused with 500, however it
    arrives, and ends the exchange.
    """

    def _continuation(
        self, pieces: list[bytes], proto: SMTPProtocol, transport: Any, limit: int = 12290
    ) -> None:
        proto.dataReceived(b"AUTH PLAIN\r\n")
        self.assertEqual(take(transport), b"334 \r\n")
        for piece in pieces:
            proto.dataReceived(piece)
            # Never buffered past the limit, even while discarding.
            self.assertLessEqual(len(proto._buffer), limit + len(piece))

    def test_longestContinuationAccepted(self) -> None:
        """
        A continuation line of exactly 12288 octets is read and judged (535
        for its wrong password).
        """
        proto, transport, handler = greeted()
        self._continuation([plainOfLength(12288) + b"\r\n"], proto, transport)
        self.assertEqual(take(transport), AUTH_FAILED)
        self.assertEqual(len(handler.requests), 1)

    def test_saslLineOverLimitRefusedEveryArrival(self) -> None:
        """
        A continuation line of 12292 octets gets 500 whether it comes whole
        with its CRLF, split anywhere (in the middle, before the CR, between
        CR and LF) or byte by byte; the handler never sees it, and the NOOP
        pipelined behind it is a command again.
        """
        line = plainOfLength(12292) + b"\r\n"
        data = line + b"NOOP\r\n"
        arrivals = {
            "whole": [data],
            "middle": [data[:6000], data[6000:]],
            "before CR": [data[: len(line) - 2], data[len(line) - 2 :]],
            "between CR and LF": [data[: len(line) - 1], data[len(line) - 1 :]],
            "after limit": [data[:12290], data[12290:]],
            "byte by byte": [data[i : i + 1] for i in range(len(data))],
        }
        for name, pieces in arrivals.items():
            proto, transport, handler = greeted()
            self._continuation(pieces, proto, transport)
            self.assertEqual(take(transport), replies.LINE_TOO_LONG + replies.OK, name)
            self.assertEqual(handler.requests, [], name)
            self.assertIsNone(proto.session.user, name)

    def test_saslLineOverLimitEndsExchange(self) -> None:
        """
        After a too-long continuation line is refused, the exchange is over:
        the rest of that line is dropped up to its CRLF without being
        buffered, then NOOP is a command, not SASL data, and AUTH can start
        again.
        """
        proto, transport, handler = greeted()
        pieces = [b"A" * 1024] * 100 + [b"\r\nNOOP\r\n"]
        self._continuation(pieces, proto, transport)
        self.assertEqual(take(transport), replies.LINE_TOO_LONG + replies.OK)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_OK)

    def test_saslLineOverLimitCountsAsFailure(self) -> None:
        """
        A too-long continuation line is a failed attempt: it counts towards
        maxAuthFailures.
        """
        proto, transport, handler = greeted(maxAuthFailures=1)
        self._continuation([plainOfLength(12292) + b"\r\n"], proto, transport)
        self.assertEqual(take(transport), replies.LINE_TOO_LONG + TOO_MANY_AUTH_FAILURES)
        self.assertTrue(transport.disconnecting)

    def test_authCommandOverLimitRefused(self) -> None:
        """
        An AUTH command line over 12288 octets gets 500 even when its CRLF
        comes in the same read; no exchange starts.
        """
        proto, transport, handler = greeted()
        line = b"AUTH PLAIN " + plainOfLength(12288) + b"\r\n"
        proto.dataReceived(line + b"NOOP\r\n")
        self.assertEqual(take(transport), replies.LINE_TOO_LONG + replies.OK)
        self.assertEqual(handler.requests, [])


class ProxyHandler(PasswordHandler):
    """
    Lets alice act as the identities in C{mayActAs}, by naming the one asked
    for in its L{AuthResult}.
    """

    def __init__(self, mayActAs: tuple[str, ...] = ("bob",), echo: str | None = None) -> None:
        super().__init__()
        self.mayActAs = mayActAs
        self.echo = echo

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        result = super().onAuth(auth, session)
        assert isinstance(result, AuthResult)
        wanted = auth.authorizationIdentity
        if wanted in self.mayActAs:
            return AuthResult(
                user={"name": wanted},
                authorizationIdentity=self.echo if self.echo is not None else wanted,
            )
        return result


class AuthorizationIdentityTests(SynchronousTestCase):
    """
    RFC 4616 section 2: a PLAIN authorization identity other than the user
    name is refused unless the handler allows it.
    """

    def test_plainAuthzidDifferentRefused(self) -> None:
        """
        A handler that checks only the credentials does not let alice act as
        bob: 535 5.7.8, no user, a failed attempt; alice alone still works.
        """
        proto, transport, handler = greeted(maxAuthFailures=2)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"bob\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_NOT_AUTHORIZED)
        self.assertIsNone(proto.session.user)
        self.assertEqual(handler.requests[0].authorizationIdentity, "bob")
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_OK)
        self.assertEqual(proto.session.user, {"name": "alice"})

    def test_plainAuthzidDifferentRefusedCountsAsFailure(self) -> None:
        """
        The refusal counts towards maxAuthFailures.
        """
        proto, transport, handler = greeted(maxAuthFailures=1)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"bob\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_NOT_AUTHORIZED + TOO_MANY_AUTH_FAILURES)
        self.assertTrue(transport.disconnecting)

    def test_plainAuthzidAllowedByHandler(self) -> None:
        """
        A handler naming the identity asked for in its AuthResult lets the
        login act as it; others are still refused.
        """
        proto, transport, handler = greeted(ProxyHandler())
        proto.dataReceived(b"AUTH PLAIN " + b64(b"carol\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_NOT_AUTHORIZED)
        proto.dataReceived(b"AUTH PLAIN " + b64(b"bob\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_OK)
        self.assertEqual(proto.session.user, {"name": "bob"})

    def test_plainAuthzidOtherIdentityInResultRefused(self) -> None:
        """
        An AuthResult naming another identity than the one asked for does not
        allow it.
        """
        proto, transport, handler = greeted(ProxyHandler(echo="dave"))
        proto.dataReceived(b"AUTH PLAIN " + b64(b"bob\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_NOT_AUTHORIZED)
        self.assertIsNone(proto.session.user)

    def test_plainAuthzidContinuation(self) -> None:
        """
        The same after an empty challenge.
        """
        proto, transport, handler = greeted()
        proto.dataReceived(b"AUTH PLAIN\r\n")
        take(transport)
        proto.dataReceived(b64(b"bob\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_NOT_AUTHORIZED)
        self.assertIsNone(proto.session.user)

    def test_plainAuthzidEqualOrEmptyAccepted(self) -> None:
        """
        An empty authorization identity, or one equal to the user name, is
        accepted as before.
        """
        for response in (b"\0alice\0secret", b"alice\0alice\0secret"):
            proto, transport, handler = greeted()
            proto.dataReceived(b"AUTH PLAIN " + b64(response) + b"\r\n")
            self.assertEqual(take(transport), AUTH_OK, response)
