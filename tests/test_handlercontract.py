# -*- test-case-name: tests.test_handlercontract -*-
"""
What the server makes of handler answers that do not fit the contract: LMTP
result lists of the wrong length, a transaction whose recipients the
handler took away, aiosmtpd-style reply strings, malformed enhanced codes,
and a chain's own connections at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_protocol import connect, take
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd._serving.hookanswers import resetReplyTextWarnings
from twisted_smtpd._serving.hooks import resetEnhancedWarnings
from twisted_smtpd._serving.protocol import SMTPProtocol
from twisted_smtpd._serving.service import SMTPServer
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.handlers.chain import ChainHandler
from twisted_smtpd.interfaces import IMessageStream


class _Listing(BaseHandler):
    """
    An LMTP handler answering with a fixed list.
    """

    def __init__(self, results: list[object]) -> None:
        self.results = results

    def onData(self, stream: IMessageStream, session: Session) -> object:
        stream.drain()
        return self.results


def _lmtpMessage(
    handler: BaseHandler, recipients: int, body: bytes = b"DATA\r\nhi\r\n.\r\n"
) -> bytes:
    """
    One LMTP message to C{recipients} recipients, and what the server
    answered after the body.
    """
    proto, transport, clock, _ = connect(handler, lmtp=True)
    proto.dataReceived(b"LHLO c\r\nMAIL FROM:<s@e.com>\r\n")
    for n in range(recipients):
        proto.dataReceived(b"RCPT TO:<r%d@e.com>\r\n" % (n,))
    take(transport)
    proto.dataReceived(body)
    return take(transport)


class LMTPListLengthTests(SynchronousTestCase):
    """
    An LMTP C{onData} list with more or fewer entries than recipients.
    """

    def test_shortListRefusesTheRest(self) -> None:
        """
        Recipients with no entry in a short list are answered 451 4.3.0,
        never 250 (nothing says the handler kept the message for them), and
        the handler's short answer is logged once.
        """
        out = _lmtpMessage(_Listing(["delivered"]), 3)
        self.assertEqual(
            out,
            replies.START_DATA
            + b"250 2.0.0 delivered\r\n"
            + replies.LOCAL_ERROR
            + replies.LOCAL_ERROR,
        )
        errors = self.flushLoggedErrors(TypeError)
        self.assertEqual(len(errors), 1)
        self.assertIn("1 results for 3 recipients", str(errors[0].value))

    def test_emptyListRefusesAll(self) -> None:
        """
        An empty list accepts nobody: every recipient gets 451, over BDAT
        as over DATA.
        """
        out = _lmtpMessage(_Listing([]), 2, b"BDAT 2 LAST\r\nhi")
        self.assertEqual(out, replies.LOCAL_ERROR * 2)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_longListIsHandlerError(self) -> None:
        """
        A list longer than the recipients is not cut silently: which entry
        is whose cannot be told, so every recipient gets 451 and the error
        is logged once.
        """
        out = _lmtpMessage(_Listing(["a", "b", "c"]), 2)
        self.assertEqual(out, replies.START_DATA + replies.LOCAL_ERROR * 2)
        errors = self.flushLoggedErrors(TypeError)
        self.assertEqual(len(errors), 1)
        self.assertIn("3 results for 2 recipients", str(errors[0].value))

    def test_exactListUnchanged(self) -> None:
        """
        A list with one entry per recipient is answered entry by entry, and
        nothing is logged.
        """
        out = _lmtpMessage(_Listing(["a", SMTPError(550, "no", "5.1.1")]), 2)
        self.assertEqual(out, replies.START_DATA + b"250 2.0.0 a\r\n550 5.1.1 no\r\n")
        self.assertEqual(self.flushLoggedErrors(), [])


class _Forgetting(BaseHandler):
    """
    A careless handler: it empties the envelope's recipients when it
    refuses one.
    """

    def __init__(self) -> None:
        self.messages = 0

    def onRcptTo(self, address: object, session: Session) -> object:
        if session.envelope.rcptTo:
            session.envelope.rcptTo.clear()
            raise SMTPError(550, "no such user", "5.1.1")
        return None

    def onData(self, stream: IMessageStream, session: Session) -> object:
        self.messages += 1
        stream.drain()
        return None


class NoRecipientLeftTests(SynchronousTestCase):
    """
    DATA and BDAT once a handler took away every recipient of the envelope.
    """

    def _session(self, lmtp: bool) -> tuple[_Forgetting, SMTPProtocol, StringTransport]:
        handler = _Forgetting()
        proto, transport, clock, _ = connect(handler, lmtp=lmtp)
        proto.dataReceived(b"LHLO c\r\n" if lmtp else b"EHLO c\r\n")
        proto.dataReceived(b"MAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n")
        take(transport)
        return handler, proto, transport

    def test_dataRefused(self) -> None:
        """
        DATA is answered 554 5.5.1, as Postfix answers it when no recipient
        is valid, and the handler's C{onData} is never called: no message
        to nobody is answered 250.
        """
        handler, proto, transport = self._session(False)
        proto.dataReceived(b"DATA\r\n")
        self.assertEqual(take(transport), replies.NO_VALID_RECIPIENTS)
        self.assertEqual(handler.messages, 0)

    def test_lmtpDataRefused(self) -> None:
        """
        In LMTP, where the body would get no reply at all (one per
        recipient, and there are none), DATA is answered 554 5.5.1 too.
        """
        handler, proto, transport = self._session(True)
        proto.dataReceived(b"DATA\r\n")
        self.assertEqual(take(transport), replies.NO_VALID_RECIPIENTS)
        self.assertEqual(handler.messages, 0)

    def test_bdatRefused(self) -> None:
        """
        A first BDAT chunk is read and dropped, then answered 554 5.5.1;
        after RSET the session goes on.
        """
        handler, proto, transport = self._session(True)
        proto.dataReceived(b"BDAT 5 LAST\r\nhello")
        self.assertEqual(take(transport), replies.NO_VALID_RECIPIENTS)
        proto.dataReceived(b"RSET\r\nNOOP\r\n")
        self.assertEqual(take(transport), replies.RESET + replies.OK)
        self.assertEqual(handler.messages, 0)


class _Closing(BaseHandler):
    """
    A handler with connections of its own to close at the server's stop.
    """

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.closing: list[Deferred[None]] = []

    def close(self) -> Deferred[None]:
        if self.fails:
            raise ValueError("pool already gone")
        d: Deferred[None] = Deferred()
        self.closing.append(d)
        return d


class ChainCloseTests(SynchronousTestCase):
    """
    L{ChainHandler.close} and the C{close} of a handler the server completes.
    """

    def test_closesEveryMember(self) -> None:
        """
        C{close} closes every handler of the chain that has one, all at
        once; a member failing is logged and does not stop the others, and
        the chain's close fires once every member's has.
        """
        first, broken, delivery = _Closing(), _Closing(fails=True), _Closing()
        chain = ChainHandler(first, broken, BaseHandler(), delivery=delivery)
        done: list[object] = []
        chain.close().addCallback(done.append)
        self.assertEqual((len(first.closing), len(delivery.closing)), (1, 1))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        first.closing[0].callback(None)
        self.assertEqual(done, [])
        delivery.closing[0].callback(None)
        self.assertEqual(done, [None])

    def test_serverCallsChainClose(self) -> None:
        """
        The daemon's stop finds the chain's C{close}, as it finds any
        handler's.
        """
        delivery = _Closing()
        server = SMTPServer(ChainHandler(delivery=delivery))
        close = getattr(server.factory.handler, "close", None)
        self.assertIsNotNone(close)
        assert close is not None
        close()
        self.assertEqual(len(delivery.closing), 1)

    def test_partialHandlerKeepsClose(self) -> None:
        """
        A handler providing only some hooks, completed by the server with
        the accepting defaults, keeps its own C{close} for the server's
        stop.
        """

        class OnlyData:
            closed = 0

            def onData(self, stream: IMessageStream, session: Session) -> object:
                return stream.drain()

            def close(self) -> None:
                self.closed += 1

        handler = OnlyData()
        server = SMTPServer(handler)
        close = getattr(server.factory.handler, "close", None)
        self.assertIsNotNone(close)
        assert close is not None
        close()
        self.assertEqual(handler.closed, 1)

    def test_partialHandlerWithoutClose(self) -> None:
        """
        A completed handler without a C{close} of its own has none either.
        """

        class OnlyData:
            def onData(self, stream: IMessageStream, session: Session) -> object:
                return stream.drain()

        self.assertIsNone(getattr(SMTPServer(OnlyData()).factory.handler, "close", None))


class ChainPartialMemberTests(SynchronousTestCase):
    """
    A L{ChainHandler} member that provides only some hooks.
    """

    def test_partialMemberAccepts(self) -> None:
        """
        A member of the chain providing only some hooks accepts for the
        others, as the server takes such a handler, rather than failing
        every session with 451 and a traceback; its own hook still refuses,
        and the session's end reaches the chain without an error.
        """

        class OnlyRcpt:
            def onRcptTo(self, address: object, session: Session) -> object:
                raise SMTPError(550, "no such user", "5.1.1")

        chain = ChainHandler(OnlyRcpt(), delivery=BaseHandler())
        proto, transport, clock, _ = connect(chain)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\n")
        out = take(transport)
        self.assertTrue(out.endswith(replies.MAIL_OK + b"550 5.1.1 no such user\r\n"), out)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_partialMemberOffersNoAuth(self) -> None:
        """
        A member with no C{onAuth} at all does not make the chain answer
        AUTH (which would offer AUTH and fail every attempt with 451).
        """

        class OnlyRcpt:
            def onRcptTo(self, address: object, session: Session) -> object:
                return None

        chain = ChainHandler(OnlyRcpt(), delivery=BaseHandler())
        self.assertIs(type(chain), ChainHandler)
        proto, transport, clock, _ = connect(chain)
        proto.dataReceived(b"EHLO c\r\n")
        self.assertNotIn(b"AUTH", take(transport))


class _Aiosmtpd(BaseHandler):
    """
    A handler written for aiosmtpd: its hooks return reply strings.
    """

    def __init__(self, mail: str = "250 OK", rcpt: str = "250 OK", data: object = None) -> None:
        self.mail = mail
        self.rcpt = rcpt
        self.data = data
        self.messages = 0

    def onMailFrom(self, address: object, session: Session) -> object:
        return self.mail

    def onRcptTo(self, address: object, session: Session) -> object:
        return self.rcpt

    def onData(self, stream: IMessageStream, session: Session) -> object:
        self.messages += 1
        stream.drain()
        return self.data


class ReplyStringTests(SynchronousTestCase):
    """
    A hook answering with a string that looks like an SMTP reply, as
    aiosmtpd's hooks do.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        resetReplyTextWarnings()
        self.addCleanup(resetReplyTextWarnings)

    def warnings(self) -> list[str]:
        """
        The warnings about reply strings logged so far.
        """
        return [
            formatEvent(e)
            for e in self.events
            if e.get("log_level") == LogLevel.warn and "not a reply" in formatEvent(e)
        ]

    def test_refusalStringRefuses(self) -> None:
        """
        A string starting with a 4xx or 5xx code, meant to refuse, does not
        accept the recipient: it is answered 451 and logged as the
        handler's bug, naming the hook and the text.
        """
        proto, transport, clock, _ = connect(_Aiosmtpd(rcpt="550 no such user"))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<a@e.com>\r\n")
        self.assertEqual(take(transport), replies.LOCAL_ERROR)
        self.assertEqual(proto.session.envelope.rcptTo, [])
        errors = self.flushLoggedErrors(TypeError)
        self.assertEqual(len(errors), 1)
        self.assertIn("onRcptTo", str(errors[0].value))
        self.assertIn("550 no such user", str(errors[0].value))

    def test_refusalStringSubclassRefuses(self) -> None:
        """
        A refusal string of a C{str} subclass (an C{enum.StrEnum} member, a
        markup string) is refused as a plain one is, as C{onData}'s is.
        """

        class Text(str):
            pass

        proto, transport, clock, _ = connect(_Aiosmtpd(rcpt=Text("550 no such user")))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<a@e.com>\r\n")
        self.assertEqual(take(transport), replies.LOCAL_ERROR)
        self.assertEqual(proto.session.envelope.rcptTo, [])
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_refusalStringFromData(self) -> None:
        """
        C{onData} returning C{"554 rejected"} refuses the message with 451
        (logged), rather than answering C{250 2.0.0 554 rejected}.
        """
        proto, transport, clock, _ = connect(_Aiosmtpd(data="554 5.7.1 rejected"))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"DATA\r\nhi\r\n.\r\n")
        self.assertEqual(take(transport), replies.START_DATA + replies.LOCAL_ERROR)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_refusalStringInLMTPList(self) -> None:
        """
        In an LMTP list, a refusal string refuses its recipient alone.
        """
        out = _lmtpMessage(_Listing(["ok", "550 5.1.1 no such user"]), 2)
        self.assertEqual(out, replies.START_DATA + b"250 2.0.0 ok\r\n" + replies.LOCAL_ERROR)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_refusalStringFromAuth(self) -> None:
        """
        C{onAuth} returning C{"535 bad credentials"} does not log the
        client in under that name: 451, logged.
        """

        class Auth(BaseHandler):
            def onAuth(self, auth: object, session: Session) -> object:
                return "535 5.7.8 Authentication credentials invalid"

        proto, transport, clock, _ = connect(Auth(), allowInsecureAuth=True)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"AUTH PLAIN AGEAYg==\r\n")
        self.assertTrue(take(transport).startswith(b"4"))
        self.assertIsNone(proto.session.user)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_positiveStringWarnsOnce(self) -> None:
        """
        C{"250 OK"} accepts, as any value does, but one warning per hook
        says a string is not a reply, however many commands return it.
        """
        handler = _Aiosmtpd()
        for _ in range(3):
            proto, transport, clock, _ = connect(handler)
            take(transport)
            proto.dataReceived(
                b"EHLO c\r\nMAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n"
            )
            self.assertEqual(
                take(transport), replies.EHLO_DEFAULT + replies.MAIL_OK + replies.RCPT_OK * 2
            )
        warnings = self.warnings()
        self.assertEqual(len(warnings), 2, warnings)
        self.assertIn("onMailFrom", warnings[0])
        self.assertIn("onRcptTo", warnings[1])

    def test_queueIdUnchanged(self) -> None:
        """
        A text that is not a reply (a queue id, even one made of digits)
        is the 250's text as before, with no warning.
        """
        proto, transport, clock, _ = connect(_Aiosmtpd(mail="", rcpt="4242", data="5501A2B"))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"DATA\r\nhi\r\n.\r\n")
        self.assertEqual(take(transport), replies.START_DATA + b"250 2.0.0 5501A2B\r\n")
        self.assertEqual(self.warnings(), [])
        self.assertEqual(self.flushLoggedErrors(), [])


class _Refusing(BaseHandler):
    """
    A handler refusing every recipient with a given L{SMTPError}.
    """

    def __init__(self, error: SMTPError) -> None:
        self.error = error

    def onRcptTo(self, address: object, session: Session) -> object:
        raise self.error


class EnhancedCodeTests(SynchronousTestCase):
    """
    An L{SMTPError} whose enhanced status code cannot be sent.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        resetEnhancedWarnings()
        self.addCleanup(resetEnhancedWarnings)

    def warnings(self) -> list[str]:
        """
        The warnings about enhanced status codes logged so far.
        """
        return [
            formatEvent(e)
            for e in self.events
            if e.get("log_level") == LogLevel.warn and "enhanced status code" in formatEvent(e)
        ]

    def refuse(self, error: SMTPError, times: int = 1) -> bytes:
        """
        Send C{times} recipients to a handler refusing them with C{error}.
        """
        proto, transport, clock, _ = connect(_Refusing(error))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<a@e.com>\r\n" * times)
        return take(transport)

    def test_classMismatchLoggedOnce(self) -> None:
        """
        C{SMTPError(550, "x", "4.1.1")} is sent with the generic C{5.0.0},
        as before, and one warning names the code and the enhanced code
        given, however often the handler raises it.
        """
        out = self.refuse(SMTPError(550, "no such user", "4.1.1"), 3)
        self.assertEqual(out, b"550 5.0.0 no such user\r\n" * 3)
        warnings = self.warnings()
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("550", warnings[0])
        self.assertIn("4.1.1", warnings[0])

    def test_malformedLogged(self) -> None:
        """
        A malformed enhanced code (C{"9.9.9"}, C{"5.1"}) is replaced and
        logged, its text made printable.
        """
        self.refuse(SMTPError(550, "x", "9.9.9"))
        self.refuse(SMTPError(451, "x", "4.1\r\nX"))
        warnings = self.warnings()
        self.assertEqual(len(warnings), 2, warnings)
        self.assertNotIn("\r", warnings[1])

    def test_validNotLogged(self) -> None:
        """
        A valid enhanced code, or none, is sent with no warning.
        """
        self.assertEqual(
            self.refuse(SMTPError(550, "no such user", "5.1.1")),
            b"550 5.1.1 no such user\r\n",
        )
        self.refuse(SMTPError(550, "no such user"))
        self.assertEqual(self.warnings(), [])


class GeneratorHookTests(SynchronousTestCase):
    """
    A hook written with C{yield} but not decorated with C{inlineCallbacks}:
    calling it runs none of its body.
    """

    def test_generatorHookRefusedAtBuild(self) -> None:
        """
        The server refuses such a handler when it is built, naming the hook
        and the fix, rather than accept every message C{onData} never saw.
        """

        class Forgot(BaseHandler):
            def onData(self, stream: IMessageStream, session: Session) -> Iterator[object]:
                yield stream.collect()
                raise SMTPError(554, "rejected", "5.7.1")

        e = self.assertRaises(TypeError, SMTPServer, Forgot())
        self.assertIn("onData is a generator function", str(e))
        self.assertIn("inlineCallbacks", str(e))

    def test_asyncGeneratorHookRefusedAtBuild(self) -> None:
        """
        An C{async def} hook with C{yield} is refused too.
        """

        class Forgot:
            async def onRcptTo(self, address: object, session: Session) -> AsyncIterator[None]:
                yield None

        e = self.assertRaises(TypeError, SMTPServer, Forgot())
        self.assertIn("onRcptTo is an asynchronous generator function", str(e))

    def test_chainMemberRefused(self) -> None:
        """
        A member of a L{ChainHandler} with such a hook is refused when the
        chain is made.
        """

        class Forgot:
            def onRcptTo(self, address: object, session: Session) -> Iterator[None]:
                yield None

        e = self.assertRaises(TypeError, ChainHandler, Forgot(), delivery=BaseHandler())
        self.assertIn("onRcptTo is a generator function", str(e))

    def test_inlineCallbacksAccepted(self) -> None:
        """
        The same hook decorated with C{inlineCallbacks} is a handler's.
        """

        class Decorated(BaseHandler):
            @inlineCallbacks
            def onRcptTo(self, address: object, session: Session) -> Generator[Any, Any, None]:
                yield succeed(None)

        SMTPServer(Decorated())
        ChainHandler(Decorated(), delivery=BaseHandler())


class _Expanding(BaseHandler):
    """
    A careless LMTP handler: it expands an alias by adding recipients to
    the envelope, or drops one, and accepts the message for all.
    """

    def __init__(self, add: int = 0, drop: bool = False) -> None:
        self.add = add
        self.drop = drop

    def onRcptTo(self, address: Address, session: Session) -> object:
        rcptTo = session.envelope.rcptTo
        for n in range(self.add):
            rcptTo.append(Address(f"member{n}@e.com"))
        if self.drop and rcptTo:
            rcptTo.pop()
        return None

    def onData(self, stream: IMessageStream, session: Session) -> object:
        return stream.drain().addCallback(lambda _: "kept")


class LMTPReplyCountTests(SynchronousTestCase):
    """
    LMTP sends one reply per RCPT command accepted (RFC 2033 section 4.2),
    whatever the handler did to C{session.envelope.rcptTo}.
    """

    def exchange(self, handler: BaseHandler, body: bytes) -> bytes:
        """
        Two RCPT commands, a message, and a NOOP pipelined behind it.
        """
        proto, transport, clock, _ = connect(handler, lmtp=True)
        proto.dataReceived(b"LHLO c\r\nMAIL FROM:<s@e.com>\r\n")
        proto.dataReceived(b"RCPT TO:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n")
        take(transport)
        proto.dataReceived(body + b"NOOP\r\n")
        return take(transport)

    def test_addedRecipientsGetNoReply(self) -> None:
        """
        Recipients a handler added get no reply of their own: two RCPT
        commands, two replies after the body, and the NOOP behind the
        message gets its own reply, not a surplus 250.
        """
        out = self.exchange(_Expanding(add=2), b"DATA\r\nhi\r\n.\r\n")
        self.assertEqual(out, replies.START_DATA + b"250 2.0.0 kept\r\n" * 2 + replies.OK)

    def test_droppedRecipientStillAnswered(self) -> None:
        """
        A recipient a handler dropped after its RCPT was answered 250 still
        gets its reply after the body: the client waits for one per RCPT.
        """
        out = self.exchange(_Expanding(drop=True), b"DATA\r\nhi\r\n.\r\n")
        self.assertEqual(out, replies.START_DATA + b"250 2.0.0 kept\r\n" * 2 + replies.OK)

    def test_oversizedChunkCountsCommands(self) -> None:
        """
        A LAST BDAT chunk past the size limit is answered once per RCPT
        command too.
        """
        handler = _Expanding(add=1)
        proto, transport, clock, _ = connect(handler, lmtp=True, size=10)
        proto.dataReceived(b"LHLO c\r\nMAIL FROM:<s@e.com>\r\n")
        proto.dataReceived(b"RCPT TO:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"BDAT 14 LAST\r\n" + b"x" * 14 + b"NOOP\r\n")
        out = take(transport)
        self.assertEqual(out.count(b"552 "), 2, out)
        self.assertTrue(out.endswith(replies.OK), out)


def _smtpMessage(handler: BaseHandler, recipients: int = 2) -> bytes:
    """
    One SMTP message to C{recipients} recipients, and what the server
    answered after the body.
    """
    proto, transport, clock, _ = connect(handler)
    proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@e.com>\r\n")
    for n in range(recipients):
        proto.dataReceived(b"RCPT TO:<r%d@e.com>\r\n" % (n,))
    take(transport)
    proto.dataReceived(b"DATA\r\nhi\r\n.\r\n")
    return take(transport)


class SMTPListTests(SynchronousTestCase):
    """
    An LMTP-style list from C{onData} in an SMTP session, which has one
    reply for the whole message.
    """

    def test_allRefusedRefuses(self) -> None:
        """
        A list whose every entry refuses refuses the message with the first
        refusal, instead of C{250}.
        """
        full = SMTPError(452, "mailbox full", "4.2.2")
        out = _smtpMessage(_Listing([full, SMTPError(550, "no", "5.1.1")]))
        self.assertEqual(out, replies.START_DATA + b"452 4.2.2 mailbox full\r\n")

    def test_mixedIsHandlerError(self) -> None:
        """
        A list that accepts for some recipients and refuses for others
        cannot be one reply: a 250 would say the message was kept for all.
        It is answered 451 and logged as the handler's error.
        """
        out = _smtpMessage(_Listing(["kept", SMTPError(550, "no", "5.1.1")]))
        self.assertEqual(out, replies.START_DATA + replies.LOCAL_ERROR)
        errors = self.flushLoggedErrors(TypeError)
        self.assertEqual(len(errors), 1)
        self.assertIn("1 of 2", str(errors[0].value))

    def test_allAcceptedAccepts(self) -> None:
        """
        A list whose every entry accepts is answered 250, as before.
        """
        out = _smtpMessage(_Listing(["kept", "kept"]))
        self.assertEqual(out, replies.START_DATA + replies.DATA_OK)
        self.assertEqual(self.flushLoggedErrors(), [])
