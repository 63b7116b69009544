"""
Tests for hooks raising an exception that is not an L{Exception}: a
C{KeyboardInterrupt}, C{SystemExit}, C{asyncio.CancelledError} or one of the
handler's own L{BaseException} subclasses.
"""

from __future__ import annotations

import asyncio
from base64 import b64encode

from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_deadlines import LogCatcher
from tests.test_protocol import connect, take
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.session import Address, AuthRequest, AuthResult, Session
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream


class Interrupted(BaseException):
    """
    A handler's own exception outside L{Exception}.
    """


class Raising(BaseHandler):
    """
    Raise C{error} from the hook named C{hook}, at once (not through a
    Deferred); accept AUTH otherwise.
    """

    def __init__(self, hook: str, error: type[BaseException]) -> None:
        self.hook = hook
        self.error = error

    def _maybeRaise(self, name: str) -> None:
        if name == self.hook:
            raise self.error(name)

    def onConnect(self, session: Session) -> object:
        self._maybeRaise("onConnect")
        return None

    def onHelo(self, hostname: str, session: Session) -> object:
        self._maybeRaise("onHelo")
        return None

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        self._maybeRaise("onAuth")
        return AuthResult(auth.username)

    def onMailFrom(self, address: Address, session: Session) -> object:
        self._maybeRaise("onMailFrom")
        return None

    def onRcptTo(self, address: Address, session: Session) -> object:
        self._maybeRaise("onRcptTo")
        return None

    def onData(self, stream: IMessageStream, session: Session) -> object:
        self._maybeRaise("onData")
        return stream.drain()


PLAIN = b"AUTH PLAIN " + b64encode(b"\0alice\0secret") + b"\r\n"
ERRORS: tuple[type[BaseException], ...] = (Interrupted, asyncio.CancelledError, SystemExit)


class SynchronousBaseExceptionTests(SynchronousTestCase):
    """
    A hook raising a L{BaseException} that is not an L{Exception} at once is
    answered as any other failing hook: 451, logged, and the session goes
    on, as when the same exception fails its Deferred.
    """

    def answers(self, hook: str, commands: bytes, expected: bytes) -> None:
        """
        Run C{commands} after EHLO (unless C{hook} is C{onHelo}) with each
        of L{ERRORS} raised by C{hook}, and check the replies: C{expected},
        the session still open, the exception logged once, no session left
        once the client goes.
        """
        for error in ERRORS:
            proto, transport, clock, factory = connect(
                Raising(hook, error), allowInsecureAuth=True, authOptional=True
            )
            if hook != "onHelo":
                proto.dataReceived(b"EHLO c\r\n")
            take(transport)
            proto.dataReceived(commands)
            self.assertEqual(take(transport), expected, error)
            self.assertFalse(transport.disconnecting)
            self.assertEqual(len(self.flushLoggedErrors(error)), 1)
            proto.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(factory.connections, set())

    def test_onConnect(self) -> None:
        """
        C{onConnect} refuses the connection with 451, as when it raises any
        other unexpected exception: the client is not left without a
        greeting.
        """
        for error in ERRORS:
            proto, transport, clock, factory = connect(Raising("onConnect", error))
            self.assertEqual(take(transport), replies.LOCAL_ERROR)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(len(self.flushLoggedErrors(error)), 1)

    def test_onHelo(self) -> None:
        """
        C{onHelo}'s exception answers EHLO 451.
        """
        self.answers("onHelo", b"EHLO c\r\nNOOP\r\n", replies.LOCAL_ERROR + replies.OK)

    def test_onAuth(self) -> None:
        """
        C{onAuth}'s exception is a temporary authentication failure.
        """
        self.answers(
            "onAuth",
            PLAIN + b"NOOP\r\n",
            b"454 4.7.0 Temporary authentication failure\r\n" + replies.OK,
        )

    def test_onMailFrom(self) -> None:
        """
        C{onMailFrom}'s exception answers MAIL 451.
        """
        self.answers(
            "onMailFrom", b"MAIL FROM:<a@e.com>\r\nNOOP\r\n", replies.LOCAL_ERROR + replies.OK
        )

    def test_onRcptTo(self) -> None:
        """
        C{onRcptTo}'s exception answers RCPT 451.
        """
        self.answers(
            "onRcptTo",
            b"MAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\nNOOP\r\n",
            replies.MAIL_OK + replies.LOCAL_ERROR + replies.OK,
        )

    def test_onData(self) -> None:
        """
        C{onData}'s exception refuses the message with 451 once the body is
        in.
        """
        self.answers(
            "onData",
            b"MAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n",
            replies.MAIL_OK
            + replies.RCPT_OK
            + replies.START_DATA
            + replies.LOCAL_ERROR
            + replies.OK,
        )


class RaisingClose(BaseHandler):
    """
    An C{onClose} raising C{error} at once.
    """

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def onClose(self, session: Session) -> object:
        raise self.error("onClose")


class CloseHookTests(SynchronousTestCase):
    def test_onCloseBaseException(self) -> None:
        """
        An C{onClose} raising a L{BaseException} that is not an
        L{Exception} is logged, and the session still ends: the server's
        C{close} fires once it is gone.
        """
        for error in ERRORS:
            proto, transport, clock, factory = connect(RaisingClose(error))
            closed = factory.close()
            self.assertNoResult(closed)
            proto.connectionLost(Failure(ConnectionDone()))
            self.successResultOf(closed)
            self.assertEqual(len(self.flushLoggedErrors(error)), 1)


class RefusingClose(BaseHandler):
    """
    An C{onClose} refusing with C{error}: raised at once, or through a
    Deferred (C{later}).
    """

    def __init__(self, error: SMTPError, how: str) -> None:
        self.error = error
        self.how = how

    def onClose(self, session: Session) -> object:
        if self.how == "later":
            return fail(self.error)
        raise self.error


class CloseRefusalTests(SynchronousTestCase):
    """
    At close there is no reply to give: an C{onClose} refusing with an
    L{SMTPError} (a handler whose hooks share one refusing helper) is one
    line naming the hook, the code and the text, without a traceback.
    """

    def test_refusalOneLine(self) -> None:
        """
        Raised at once or through a Deferred, the L{SMTPError} is one
        warning line, its text made printable; no error is logged.
        """
        for how in ("now", "later"):
            log = LogCatcher(self)
            error = SMTPError(550, "no\x1b[2J such\r\nuser", "5.1.1")
            proto, transport, clock, factory = connect(RefusingClose(error, how))
            proto.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(self.flushLoggedErrors(), [])
            (line,) = log.matching("onClose")
            self.assertEqual(
                line,
                f"{proto.session.id} onClose refused with 550 5.1.1"
                f" {printable(error.message)}: there is no reply at close, nothing is done",
            )
            self.assertNotIn("\x1b", line)
            self.assertNotIn("\n", line)

    def test_otherFailuresKeepTraceback(self) -> None:
        """
        Any other exception of C{onClose} is still logged as a failure,
        with its traceback.
        """
        proto, transport, clock, factory = connect(RaisingClose(ValueError))
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class Returning(BaseHandler):
    """
    Return C{answer} (or a Deferred firing with it, when C{later}) from
    C{onAuth} and C{onRcptTo}, instead of raising it.
    """

    def __init__(self, answer: object, later: bool = False) -> None:
        self.answer = answer
        self.later = later

    def _answer(self) -> object:
        return succeed(self.answer) if self.later else self.answer

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        return self._answer()

    def onRcptTo(self, address: Address, session: Session) -> object:
        return self._answer()


class ReturningFromData(BaseHandler):
    """
    Return C{answer} (or a Deferred firing with it, when C{later}) from
    C{onData}.
    """

    def __init__(self, answer: object, later: bool = False) -> None:
        self.answer = answer
        self.later = later

    def onData(self, stream: IMessageStream, session: Session) -> object:
        stream.drain()
        return succeed(self.answer) if self.later else self.answer


class ReturnedExceptionTests(SynchronousTestCase):
    """
    An exception a hook returns instead of raising refuses, as raised: it
    does not read as an acceptance.
    """

    def test_onAuthReturnsRefusal(self) -> None:
        """
        An C{onAuth} returning C{SMTPError(535)} (or a Deferred firing with
        it) refuses the login: the client is not logged in.
        """
        for later in (False, True):
            handler = Returning(SMTPError(535, "bad password", "5.7.8"), later)
            proto, transport, clock, factory = connect(handler, allowInsecureAuth=True)
            proto.dataReceived(b"EHLO c\r\n")
            take(transport)
            proto.dataReceived(PLAIN)
            self.assertEqual(take(transport), b"535 5.7.8 bad password\r\n")
            self.assertIsNone(proto.session.user)

    def test_onRcptToReturnsRefusal(self) -> None:
        """
        An C{onRcptTo} returning an L{SMTPError} refuses the recipient with
        it; one returning another exception is answered 451 and logged.
        """
        for answer, expected in [
            (SMTPError(550, "no such user", "5.1.1"), b"550 5.1.1 no such user\r\n"),
            (ValueError("broken"), replies.LOCAL_ERROR),
        ]:
            proto, transport, clock, factory = connect(Returning(answer), authOptional=True)
            proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@e.com>\r\n")
            take(transport)
            proto.dataReceived(b"RCPT TO:<b@e.com>\r\n")
            self.assertEqual(take(transport), expected)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_onDataReturnsRefusal(self) -> None:
        """
        An C{onData} returning an L{SMTPError} (or a Deferred firing with
        it) refuses the message with it: no 250.
        """
        for later in (False, True):
            handler = ReturningFromData(SMTPError(554, "rejected as spam", "5.7.1"), later)
            proto, transport, clock, factory = connect(handler)
            proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n")
            take(transport)
            proto.dataReceived(b"DATA\r\nx\r\n.\r\n")
            self.assertEqual(
                take(transport), replies.START_DATA + b"554 5.7.1 rejected as spam\r\n"
            )
