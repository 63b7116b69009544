# -*- test-case-name: tests.test_hostileanswers -*-
"""
Handlers that answer with values the server cannot send as they are: an
L{SMTPError} whose code, text or enhanced status code is of the wrong type,
and texts that are C{str} subclasses (text passed on from a database, an
HTTP API or a next hop) whose own C{__str__}, C{__format__} or
C{isprintable} would write another reply.  Each is answered with one
well-formed reply, or refused as the handler's bug; the session goes on.
"""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_protocol import connect, take
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import Address, AuthRequest, AuthResult, Session
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

#: What the hostile subclasses below write instead of their characters.
FORGED = "no\r\n250 2.1.5 forged"


class ShiftyText(str):
    """
    A text that shows another text, holding a forged reply, when written,
    and says it is printable.
    """

    def __str__(self) -> str:
        return FORGED

    def __format__(self, spec: str) -> str:
        return FORGED

    def __repr__(self) -> str:
        return FORGED

    def isprintable(self) -> bool:
        return True


class ShiftyCode(int):
    """
    A reply code that writes itself as a whole forged reply.
    """

    def __str__(self) -> str:
        return "250 2.1.5 forged\r\n550"

    def __format__(self, spec: str) -> str:
        return "250 2.1.5 forged\r\n550"

    def __repr__(self) -> str:
        return "250 2.1.5 forged\r\n550"


class RefusingRecipients(BaseHandler):
    """
    Refuses every recipient with the error C{makeError} makes, in the hook
    (so that a wrong argument raises there, as in a handler).
    """

    def __init__(self, makeError: Callable[[], BaseException]) -> None:
        self.makeError = makeError

    def onRcptTo(self, address: Address, session: Session) -> object:
        raise self.makeError()


class AnsweringData(BaseHandler):
    """
    Answers C{onData} with C{answer}, after reading the body.
    """

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def onData(self, stream: IMessageStream, session: Session) -> object:
        d = stream.drain()
        d.addCallback(lambda _: self.answer)
        return d


class AcceptingAuth(BaseHandler):
    """
    Accepts every login with the L{AuthResult} C{makeResult} makes.
    """

    def __init__(self, makeResult: Callable[[str], object]) -> None:
        self.makeResult = makeResult

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        return self.makeResult(auth.username or "")


PLAIN = b"AUTH PLAIN " + b64encode(b"\0alice\0secret") + b"\r\n"


class SMTPErrorTypesTests(SynchronousTestCase):
    """
    An L{SMTPError} checks what it is given: a code, text or enhanced
    status code of the wrong type is the handler's error where it made it.
    """

    def rcptReply(self, makeError: Callable[[], BaseException]) -> bytes:
        """
        The reply to RCPT when C{onRcptTo} raises what C{makeError} makes;
        the session must stay open and the next command be answered.
        """
        proto, transport, _, factory = connect(RefusingRecipients(makeError))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<b@example.com>\r\n")
        written = take(transport)
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(take(transport), replies.OK)
        self.assertFalse(transport.disconnecting)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.connections, set())
        return written

    def test_textNotStr(self) -> None:
        """
        A text that is not a C{str} (C{bytes} from a next hop, a number,
        C{None}) raises L{TypeError} in the hook, answered 451 and logged,
        where it escaped the session before and dropped the client with no
        reply.
        """
        for text in (b"no such user", 550, None):
            error: Any = text
            self.assertEqual(
                self.rcptReply(partial(SMTPError, 550, error, "5.1.1")),
                replies.LOCAL_ERROR,
                text,
            )
            [logged] = self.flushLoggedErrors(TypeError)
            self.assertIn("SMTP reply text must be a str", str(logged.value))

    def test_enhancedNotStr(self) -> None:
        """
        An enhanced status code that is neither a C{str} nor C{None} is the
        handler's L{TypeError}, answered 451.
        """
        for enhanced in (511, b"5.1.1", (5, 1, 1)):
            value: Any = enhanced
            self.assertEqual(
                self.rcptReply(partial(SMTPError, 550, "no such user", value)),
                replies.LOCAL_ERROR,
            )
            self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_codeNotInt(self) -> None:
        """
        A code that is not an C{int} (C{550.0}, C{"550"}) is the handler's
        L{TypeError}, answered 451: never a reply line starting
        C{550.0}.
        """
        for code in (550.0, "550", b"550"):
            value: Any = code
            self.assertEqual(
                self.rcptReply(partial(SMTPError, value, "no such user")),
                replies.LOCAL_ERROR,
            )
            self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_checkedWhenSet(self) -> None:
        """
        The attributes are checked when set after the error was made too,
        and a subclass of C{int} or C{str} is kept as the plain value.
        """
        error = SMTPError(550, "no such user", "5.1.1")
        bad: Any = b"text"
        self.assertRaises(TypeError, setattr, error, "message", bad)
        self.assertRaises(TypeError, setattr, error, "enhanced", bad)
        self.assertRaises(TypeError, setattr, error, "code", bad)
        self.assertRaises(ValueError, setattr, error, "code", 999)
        error.code = ShiftyCode(551)
        error.message = ShiftyText("user not local")
        error.enhanced = ShiftyText("5.1.6")
        self.assertIs(type(error.code), int)
        self.assertIs(type(error.message), str)
        self.assertIs(type(error.enhanced), str)
        self.assertEqual(
            (error.code, error.message, error.enhanced), (551, "user not local", "5.1.6")
        )

    def test_argsFollowAttributes(self) -> None:
        """
        The repr and the text of a traceback show the attributes as they
        are now, also after one was set again, and as checked: a handler
        changing C{code} before raising is not logged with the old one.
        """
        error = SMTPError(550, "no such user")
        error.code = 451
        error.message = ShiftyText("try later")
        self.assertEqual(error.args, (451, "try later", None))
        self.assertEqual(repr(error), "SMTPError(451, 'try later', None)")
        self.assertIs(type(error.args[1]), str)
        error.enhanced = "4.3.0"
        self.assertEqual(str(error), "(451, 'try later', '4.3.0')")

    def test_classAttributesChecked(self) -> None:
        """
        A subclass giving C{code}, C{message} or C{enhanced} as a class
        attribute (C{code = 550}) has it checked as when set: a value of the
        wrong type or a code out of range raises when the class is made, a
        good one is the default its instances start from, kept as the plain
        value.  It does not hide the checks: before, C{code = 999} was sent
        as a C{999} reply and C{code = "550"} escaped the session with no
        reply.
        """
        bad: list[tuple[type[Exception], dict[str, object]]] = [
            (ValueError, {"code": 999}),
            (ValueError, {"code": 100}),
            (TypeError, {"code": "550"}),
            (TypeError, {"code": 550.0}),
            (TypeError, {"code": True}),
            (TypeError, {"message": b"no such user"}),
            (TypeError, {"enhanced": 511}),
        ]
        for exception, attributes in bad:
            self.assertRaises(exception, type, "Refusal", (SMTPError,), attributes)

        class NoSuchUser(SMTPError):
            code = ShiftyCode(550)
            message = ShiftyText("no such user")
            enhanced = ShiftyText("5.1.1")

            def __init__(self) -> None:
                super().__init__(self.code, self.message, self.enhanced)

        error = NoSuchUser()
        self.assertEqual(
            (error.code, error.message, error.enhanced), (550, "no such user", "5.1.1")
        )
        self.assertEqual((NoSuchUser.code, NoSuchUser.message), (550, "no such user"))
        self.assertEqual(
            (type(error.code), type(error.message), type(error.enhanced)), (int, str, str)
        )
        self.assertRaises(ValueError, setattr, error, "code", 999)
        self.assertEqual(self.rcptReply(NoSuchUser), b"550 5.1.1 no such user\r\n")

        class Busy(SMTPError):
            code = 451
            message = "try again later"
            enhanced = None

        self.assertEqual(Busy(452, "full").code, 452)
        self.assertEqual(self.rcptReply(lambda: Busy(451, "busy")), b"451 4.0.0 busy\r\n")

    def test_textSubclassCannotForge(self) -> None:
        """
        A text that is a C{str} subclass is sent as its characters: what
        its C{__format__} writes (a second, forged reply) is never sent.
        """
        self.assertEqual(
            self.rcptReply(lambda: SMTPError(550, ShiftyText("no such user"), "5.1.1")),
            b"550 5.1.1 no such user\r\n",
        )

    def test_enhancedSubclassCannotForge(self) -> None:
        """
        An enhanced status code that is a C{str} subclass is sent as its
        characters.
        """
        self.assertEqual(
            self.rcptReply(lambda: SMTPError(550, "no such user", ShiftyText("5.1.1"))),
            b"550 5.1.1 no such user\r\n",
        )

    def test_codeSubclassCannotForge(self) -> None:
        """
        A code that is an C{int} subclass is sent as its number.
        """
        self.assertEqual(
            self.rcptReply(lambda: SMTPError(ShiftyCode(550), "no such user", "5.1.1")),
            b"550 5.1.1 no such user\r\n",
        )


class TextSubclassAnswerTests(SynchronousTestCase):
    """
    Texts a hook answers with as C{str} subclasses are sent as their
    characters.
    """

    def test_onDataText(self) -> None:
        """
        C{onData}'s text (its queue id) as a C{str} subclass is the text of
        one 250 line, not the forged reply its C{__format__} writes.
        """
        proto, transport, _, _ = connect(AnsweringData(ShiftyText("queued as 1A2B")))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        take(transport)
        proto.dataReceived(b"DATA\r\nhello\r\n.\r\nNOOP\r\n")
        self.assertEqual(
            take(transport), replies.START_DATA + b"250 2.0.0 queued as 1A2B\r\n" + replies.OK
        )

    def test_onDataSMTPErrorText(self) -> None:
        """
        C{onData} failing with an L{SMTPError} whose text is a C{str}
        subclass: one reply, its characters.
        """
        error = SMTPError(554, ShiftyText("rejected as spam"), "5.7.1")
        proto, transport, _, _ = connect(AnsweringData(error))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        take(transport)
        proto.dataReceived(b"DATA\r\nhello\r\n.\r\n")
        self.assertEqual(take(transport), replies.START_DATA + b"554 5.7.1 rejected as spam\r\n")

    def test_authResultMessage(self) -> None:
        """
        An L{AuthResult} message that is a C{str} subclass is the text of
        one 235 line.
        """
        handler = AcceptingAuth(lambda user: AuthResult(user, ShiftyText("welcome")))
        proto, transport, _, _ = connect(handler, allowInsecureAuth=True)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(PLAIN)
        self.assertEqual(take(transport), b"235 2.7.0 welcome\r\n")
        self.assertEqual(proto.session.user, "alice")

    def test_authResultMessageNotStr(self) -> None:
        """
        An L{AuthResult} message that is not a C{str} is the handler's
        L{TypeError} where it made the result: the login is a temporary
        failure (454), not a session dropped with no reply, and the client
        is not logged in.
        """
        bad: Any = b"welcome"
        handler = AcceptingAuth(lambda user: AuthResult(user, bad))
        proto, transport, _, _ = connect(handler, allowInsecureAuth=True)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(PLAIN + b"NOOP\r\n")
        self.assertEqual(
            take(transport), b"454 4.7.0 Temporary authentication failure\r\n" + replies.OK
        )
        self.assertIsNone(proto.session.user)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)


class ReturningLater(BaseHandler):
    """
    C{async def} hooks: the one named C{hook} returns (rather than awaits)
    what C{answer} gives, a Deferred or a coroutine; the others accept.
    """

    def __init__(self, answer: Callable[[], object], hook: str = "onRcptTo") -> None:
        self.answer = answer
        self.hook = hook

    def _answer(self, hook: str) -> object:
        return self.answer() if hook == self.hook else AuthResult("alice")

    async def onAuth(self, auth: AuthRequest, session: Session) -> object:
        return self._answer("onAuth")

    async def onRcptTo(self, address: Address, session: Session) -> object:
        return self._answer("onRcptTo")

    async def onData(self, stream: IMessageStream, session: Session) -> object:
        await stream.drain()
        return self._answer("onData")


async def refuseRecipient() -> None:
    """
    Refuse, as a coroutine a hook may return without awaiting it.
    """
    raise SMTPError(550, "no such user", "5.1.1")


class AnswerLaterTests(SynchronousTestCase):
    """
    An C{async def} hook that returns a Deferred or a coroutine rather than
    awaiting it answers with what that gives, waited for as any hook's
    answer: it does not accept at once.
    """

    def rcpt(self, handler: BaseHandler, **options: Any) -> tuple[Any, Any, Any]:
        """
        A session of C{handler} past MAIL, RCPT sent.
        """
        proto, transport, clock, _ = connect(handler, authOptional=True, **options)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<b@example.com>\r\n")
        return proto, transport, clock

    def test_failedDeferredRefuses(self) -> None:
        """
        A Deferred that failed with an L{SMTPError} refuses the recipient
        with it, where the client was told 250 before and the refusal
        logged as an unhandled error.
        """
        handler = ReturningLater(lambda: fail(SMTPError(550, "no such user", "5.1.1")))
        proto, transport, _ = self.rcpt(handler)
        self.assertEqual(take(transport), b"550 5.1.1 no such user\r\n")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_coroutineRefuses(self) -> None:
        """
        A coroutine returned unawaited is run: its L{SMTPError} refuses.
        """
        proto, transport, _ = self.rcpt(ReturningLater(refuseRecipient))
        self.assertEqual(take(transport), b"550 5.1.1 no such user\r\n")

    def test_deferredWaitedFor(self) -> None:
        """
        The session waits for the returned Deferred: no reply until it
        fires, then the one it says.
        """
        pending: Deferred[None] = Deferred()
        proto, transport, _ = self.rcpt(ReturningLater(lambda: pending))
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(take(transport), b"")
        pending.callback(None)
        self.assertEqual(take(transport), replies.RCPT_OK + replies.OK)

    def test_neverFiresTimesOut(self) -> None:
        """
        A returned Deferred that never fires is a hook that does not
        answer: the session ends at C{handlerTimeout}.
        """
        pending: Deferred[None] = Deferred()
        proto, transport, clock = self.rcpt(
            ReturningLater(lambda: pending), handlerTimeout=30, socketTimeout=10
        )
        clock.advance(29)
        self.assertEqual(take(transport), b"")
        clock.advance(2)
        self.assertEqual(
            take(transport),
            b"421 4.3.0 Error: timeout waiting for the mail system, try again later\r\n",
        )
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(Failure(ConnectionDone()))
        pending.callback(None)
        self.assertEqual(transport.value(), b"")

    def test_onAuthNoLoginFromDeferred(self) -> None:
        """
        An C{onAuth} returning a Deferred that fires with C{None} (no
        login) refuses: the client is not logged in as the Deferred
        object.
        """
        proto, transport, _, _ = connect(
            ReturningLater(lambda: succeed(None), "onAuth"), allowInsecureAuth=True
        )
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(PLAIN)
        self.assertEqual(
            take(transport), b"535 5.7.8 Error: authentication credentials invalid\r\n"
        )
        self.assertIsNone(proto.session.user)

    def test_onDataText(self) -> None:
        """
        C{onData}'s returned Deferred gives the message's reply: its text,
        or its refusal, not the default 250.
        """
        for answer, expected in [
            (lambda: succeed("queued as 1A2B"), b"250 2.0.0 queued as 1A2B\r\n"),
            (
                lambda: fail(SMTPError(554, "rejected as spam", "5.7.1")),
                b"554 5.7.1 rejected as spam\r\n",
            ),
        ]:
            proto, transport, _, _ = connect(ReturningLater(answer, "onData"), authOptional=True)
            proto.dataReceived(
                b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            )
            take(transport)
            proto.dataReceived(b"DATA\r\nhello\r\n.\r\n")
            self.assertEqual(take(transport), replies.START_DATA + expected)
            self.assertEqual(self.flushLoggedErrors(), [])


class Answering(BaseHandler):
    """
    Answers the hook named C{hook} with C{answer}; accepts otherwise.
    """

    def __init__(self, hook: str, answer: object) -> None:
        self.hook = hook
        self.answer = answer

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        return self.answer if self.hook == "onAuth" else AuthResult(auth.username)

    def onRcptTo(self, address: Address, session: Session) -> object:
        return self.answer if self.hook == "onRcptTo" else None

    def onData(self, stream: IMessageStream, session: Session) -> object:
        d = stream.drain()
        if self.hook == "onData":
            d.addCallback(lambda _: self.answer)
        return d


#: Answers that read as a refusal's reply code.
REFUSING_CODES: tuple[object, ...] = (
    550,
    (550, "no such user"),
    [550, "no such user"],
    b"550 no such user",
    bytearray(b"550-no such user"),
    b"550",
)

#: Answers that hold no refusal's code: each accepts, as any value does.
ACCEPTING_VALUES: tuple[object, ...] = (
    250,
    (250, "ok"),
    b"250 ok",
    True,
    0,
    1000,
    (550, "no", "extra"),
    ("no such user", 550),
    b"5500",
    {"code": 550},
)


class CodeAnswerTests(SynchronousTestCase):
    """
    A hook's answer that is a reply code of 4xx or 5xx (an C{int}, C{bytes}
    starting with one, a C{(code, text)} pair) was meant to refuse: it is
    the handler's bug, answered 451 and logged once, never a 250 or a
    login.
    """

    def rcptReply(self, answer: object) -> bytes:
        proto, transport, _, _ = connect(Answering("onRcptTo", answer), authOptional=True)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<b@example.com>\r\nNOOP\r\n")
        return take(transport)

    def test_rcptRefusingCode(self) -> None:
        """
        C{onRcptTo} answering a refusal's code: 451, one logged
        L{TypeError} naming the code.
        """
        for answer in REFUSING_CODES:
            self.assertEqual(self.rcptReply(answer), replies.LOCAL_ERROR + replies.OK, answer)
            [logged] = self.flushLoggedErrors(TypeError)
            self.assertIn("holding the reply code 550", str(logged.value))

    def test_rcptOtherValues(self) -> None:
        """
        Any other answer accepts, with nothing logged.
        """
        for answer in ACCEPTING_VALUES:
            self.assertEqual(self.rcptReply(answer), replies.RCPT_OK + replies.OK, answer)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_authRefusingCode(self) -> None:
        """
        C{onAuth} answering C{535} (or C{b"535 ..."}, C{(535, ...)}) does
        not log the client in as the user C{535}: a temporary failure.
        """
        for answer in (535, b"535 5.7.8 bad password", (535, "bad password")):
            proto, transport, _, _ = connect(Answering("onAuth", answer), allowInsecureAuth=True)
            proto.dataReceived(b"EHLO c\r\n")
            take(transport)
            proto.dataReceived(PLAIN)
            self.assertEqual(
                take(transport), b"454 4.7.0 Temporary authentication failure\r\n", answer
            )
            self.assertIsNone(proto.session.user)
            self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_dataRefusingCode(self) -> None:
        """
        C{onData} answering a refusal's code: 451 for the message, one
        logged L{TypeError}, not 250.
        """
        for answer in REFUSING_CODES:
            proto, transport, _, _ = connect(Answering("onData", answer), authOptional=True)
            proto.dataReceived(
                b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            )
            take(transport)
            proto.dataReceived(b"DATA\r\nhello\r\n.\r\n")
            self.assertEqual(take(transport), replies.START_DATA + replies.LOCAL_ERROR, answer)
            self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_lmtpEntryCode(self) -> None:
        """
        In LMTP, an entry of C{onData}'s list that is a refusal's code is
        answered 451 for its recipient alone.
        """
        proto, transport, _, _ = connect(
            Answering("onData", [250, 550]), lmtp=True, authOptional=True
        )
        proto.dataReceived(
            b"LHLO c\r\nMAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n"
        )
        take(transport)
        proto.dataReceived(b"DATA\r\nhello\r\n.\r\n")
        self.assertEqual(
            take(transport), replies.START_DATA + replies.DATA_OK + replies.LOCAL_ERROR
        )
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
