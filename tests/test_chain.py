# -*- test-case-name: tests.test_chain -*-
"""
Tests for L{ChainHandler}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests import replies
from tests.test_client import Recorder, endpointFor, startServer
from tests.test_handlers import feed, makeSession
from tests.test_protocol import connect, take
from twisted_smtpd import AuthResult, SMTPError
from twisted_smtpd._core.session import Address, AuthRequest, Session
from twisted_smtpd._smtpclient.client import deliver
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.handlers.chain import ChainHandler
from twisted_smtpd.handlers.relay import RelayHandler
from twisted_smtpd.interfaces import IMessageStream, ISMTPHandler

HOOKS = ("onConnect", "onSecure", "onClose")


class Logging(BaseHandler):
    """
    Records every hook call in a shared list as C{(name, hook)}.
    """

    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        self.name = name
        self.calls = calls

    def onConnect(self, session: Session) -> object:
        self.calls.append((self.name, "onConnect"))
        return None

    def onHelo(self, hostname: str, session: Session) -> object:
        self.calls.append((self.name, "onHelo"))
        return None

    def onSecure(self, session: Session) -> object:
        self.calls.append((self.name, "onSecure"))
        return None

    def onMailFrom(self, address: Address, session: Session) -> object:
        self.calls.append((self.name, "onMailFrom"))
        return None

    def onRcptTo(self, address: Address, session: Session) -> object:
        self.calls.append((self.name, "onRcptTo"))
        return None

    def onData(self, stream: IMessageStream, session: Session) -> object:
        self.calls.append((self.name, "onData"))
        return "queued"

    def onClose(self, session: Session) -> object:
        self.calls.append((self.name, "onClose"))
        return None


class RefuseRecipient(Logging):
    """
    Refuses C{nobody@example.org}.
    """

    def onRcptTo(self, address: Address, session: Session) -> object:
        super().onRcptTo(address, session)
        if address.address == "nobody@example.org":
            raise SMTPError(550, "No such user", "5.1.1")
        return None


class ReturnsAnswer(Logging):
    """
    Answers C{onRcptTo} by returning C{answer} (not raising it) for
    C{nobody@example.org}.
    """

    def __init__(self, name: str, calls: list[tuple[str, str]], answer: object) -> None:
        super().__init__(name, calls)
        self.answer = answer

    def onRcptTo(self, address: Address, session: Session) -> object:
        super().onRcptTo(address, session)
        if address.address == "nobody@example.org":
            return self.answer
        return None


class Slow(Logging):
    """
    Answers C{onMailFrom} only when C{pending} fires.
    """

    def onMailFrom(self, address: Address, session: Session) -> object:
        super().onMailFrom(address, session)
        self.pending: Deferred[None] = Deferred()
        return self.pending


class AsyncFilter(Logging):
    """
    An C{async def} C{onMailFrom} that refuses C{spammer@example.com}.
    """

    async def onMailFrom(self, address: Address, session: Session) -> object:  # type: ignore[override]
        super().onMailFrom(address, session)
        if address.address == "spammer@example.com":
            raise SMTPError(554, "Go away", "5.7.1")
        return None


class Authenticator(Logging):
    """
    Accepts every AUTH, naming itself as the user.
    """

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        return AuthResult(self.name)


class ChainTests(SynchronousTestCase):
    """
    L{ChainHandler} runs filters, then the delivery handler.
    """

    def setUp(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.session = makeSession()

    def test_interface(self) -> None:
        """
        L{ChainHandler} provides L{ISMTPHandler}.
        """
        chain = ChainHandler(delivery=BaseHandler())
        self.assertTrue(verifyObject(ISMTPHandler, chain))

    def test_order(self) -> None:
        """
        Each hook runs on every filter in order, then on the delivery
        handler.
        """
        chain = ChainHandler(
            Logging("a", self.calls), Logging("b", self.calls), delivery=Logging("d", self.calls)
        )
        for hook in HOOKS:
            self.successResultOf(getattr(chain, hook)(self.session))
        self.successResultOf(chain.onHelo("client.example", self.session))
        self.successResultOf(chain.onMailFrom(Address("a@example.com"), self.session))
        self.successResultOf(chain.onRcptTo(Address("b@example.com"), self.session))
        expected = [
            (name, hook)
            for hook in (*HOOKS, "onHelo", "onMailFrom", "onRcptTo")
            for name in ("a", "b", "d")
        ]
        self.assertEqual(self.calls, expected)

    def test_refusalStops(self) -> None:
        """
        A filter's refusal is the reply; the handlers after it are not
        asked.
        """
        chain = ChainHandler(
            Logging("a", self.calls),
            RefuseRecipient("r", self.calls),
            Logging("b", self.calls),
            delivery=Logging("d", self.calls),
        )
        error = self.failureResultOf(
            chain.onRcptTo(Address("nobody@example.org"), self.session), SMTPError
        ).value
        self.assertEqual((error.code, error.enhanced), (550, "5.1.1"))
        self.assertEqual(self.calls, [("a", "onRcptTo"), ("r", "onRcptTo")])
        self.successResultOf(chain.onRcptTo(Address("bob@example.org"), self.session))

    def test_asyncInOrder(self) -> None:
        """
        A filter answering later holds the next ones back until it has
        answered; C{async def} filters are awaited too.
        """
        slow = Slow("slow", self.calls)
        chain = ChainHandler(
            slow, AsyncFilter("async", self.calls), delivery=Logging("d", self.calls)
        )
        d = chain.onMailFrom(Address("alice@example.com"), self.session)
        self.assertNoResult(d)
        self.assertEqual(self.calls, [("slow", "onMailFrom")])
        slow.pending.callback(None)
        self.successResultOf(d)
        self.assertEqual(
            self.calls, [("slow", "onMailFrom"), ("async", "onMailFrom"), ("d", "onMailFrom")]
        )

    def test_closeStopsChain(self) -> None:
        """
        A session that ends while a filter's hook runs is told C{onClose}
        by every handler at once, and the handlers after that filter are
        never called for the hook: they were told the session is over.
        Another session's hook goes on to the end.
        """
        slow = Slow("slow", self.calls)
        chain = ChainHandler(slow, delivery=Logging("d", self.calls))
        d = chain.onMailFrom(Address("alice@example.com"), self.session)
        pending = slow.pending
        other = makeSession(id="s2d")
        later = chain.onMailFrom(Address("carol@example.com"), other)
        self.successResultOf(chain.onClose(self.session))
        pending.callback(None)
        self.successResultOf(d)
        slow.pending.callback(None)
        self.successResultOf(later)
        self.assertEqual(
            self.calls,
            [
                ("slow", "onMailFrom"),
                ("slow", "onMailFrom"),
                ("slow", "onClose"),
                ("d", "onClose"),
                ("d", "onMailFrom"),
            ],
        )
        # Nothing is kept for either session.
        self.assertEqual((chain._work._running, chain._work._ended), ({}, set()))

    def test_returnedRefusalStops(self) -> None:
        """
        A filter refusing by returning an L{SMTPError}, or a reply's text
        with a 4xx or 5xx code, rather than raising stops the chain: the
        handlers after it are not called, and the chain answers what it
        returned, which the server refuses with.  Before, the next
        handler's answer replaced it and the chain accepted.
        """
        nobody = Address("nobody@example.org")
        for answer in [SMTPError(550, "No such user", "5.1.1"), "550 No such user", "451-x", "550"]:
            calls: list[tuple[str, str]] = []
            chain = ChainHandler(
                ReturnsAnswer("f", calls, answer), Logging("g", calls), delivery=Logging("d", calls)
            )
            self.assertIs(self.successResultOf(chain.onRcptTo(nobody, self.session)), answer)
            self.assertEqual(calls, [("f", "onRcptTo")])

    def test_returnedValueGoesOn(self) -> None:
        """
        Any other value a filter returns (a text with a 2xx code among
        them) accepts: the chain goes on to the next handler.
        """
        nobody = Address("nobody@example.org")
        for answer in ["250 OK", "5", "55", "550x", 250, b"250 ok", (550, "no", "x"), 1000, True]:
            calls: list[tuple[str, str]] = []
            chain = ChainHandler(ReturnsAnswer("f", calls, answer), delivery=Logging("d", calls))
            self.successResultOf(chain.onRcptTo(nobody, self.session))
            self.assertEqual(calls, [("f", "onRcptTo"), ("d", "onRcptTo")], answer)

    def test_returnedCodeStops(self) -> None:
        """
        A filter answering with a refusal's reply code in another form than
        text (C{550}, C{b"550 no"}, C{(550, "no")}), which the server takes
        as the handler's bug and answers 451, stops the chain too: the
        delivery handler's answer never replaces it, so the chain is not
        accepted where the filter alone is refused.
        """
        nobody = Address("nobody@example.org")
        for answer in [550, b"550 no such user", (550, "no such user"), [451, "later"]]:
            calls: list[tuple[str, str]] = []
            chain = ChainHandler(ReturnsAnswer("f", calls, answer), delivery=Logging("d", calls))
            self.assertIs(self.successResultOf(chain.onRcptTo(nobody, self.session)), answer)
            self.assertEqual(calls, [("f", "onRcptTo")], answer)

    def test_returnedCodeRefusedByServer(self) -> None:
        """
        Behind the server, a filter's C{onRcptTo} answering C{550} has the
        recipient answered 451 as the filter alone would, not 250.
        """
        calls: list[tuple[str, str]] = []
        chain = ChainHandler(ReturnsAnswer("f", calls, 550), delivery=Logging("d", calls))
        proto, transport, _, _ = connect(chain, authOptional=True)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<nobody@example.org>\r\n")
        self.assertEqual(take(transport), replies.LOCAL_ERROR)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_memberCheckedAsHandler(self) -> None:
        """
        A member of the chain is refused when the chain is made, as the
        server refuses a handler: a misspelt hook (never called, so that
        the chain accepted what the filter meant to refuse), a hook that is
        not callable, a class given for its instance, an object with no
        hook at all.
        """

        class Misspelled(BaseHandler):
            def onRcpt(self, address: Address, session: Session) -> object:
                raise SMTPError(550, "No such user", "5.1.1")

        class Broken:
            onMailFrom = "refuse"

        for member, text in [
            (
                Misspelled(),
                "chain member Misspelled: onRcpt is not a hook of ISMTPHandler;"
                " did you mean onRcptTo?",
            ),
            (Broken(), "chain member Broken: onMailFrom is not callable (str)"),
            (Logging, "chain member Logging is a class, not a handler: pass an instance,"),
            (object(), "chain member object has none of the hooks"),
        ]:
            e = self.assertRaises(TypeError, ChainHandler, member, delivery=BaseHandler())
            self.assertIn(text, str(e))
            e = self.assertRaises(TypeError, ChainHandler, delivery=member)
            self.assertIn(text, str(e))

    def test_asyncRefusal(self) -> None:
        """
        An C{async def} filter's refusal stops the chain.
        """
        chain = ChainHandler(AsyncFilter("async", self.calls), delivery=Logging("d", self.calls))
        d = chain.onMailFrom(Address("spammer@example.com"), self.session)
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 554)
        self.assertEqual(self.calls, [("async", "onMailFrom")])

    def test_dataToDeliveryOnly(self) -> None:
        """
        The body goes to the delivery handler alone.
        """
        chain = ChainHandler(Logging("a", self.calls), delivery=Logging("d", self.calls))
        self.assertEqual(chain.onData(MessageStream(), self.session), "queued")
        self.assertEqual(self.calls, [("d", "onData")])

    def test_deliveryWithoutDataAccepts(self) -> None:
        """
        A delivery handler without an C{onData} (one providing only some
        hooks) accepts the message as the server takes such a handler: the
        body drained, no C{AttributeError}.
        """

        class OnlyRcpt:
            def onRcptTo(self, address: Address, session: Session) -> object:
                return None

        chain = ChainHandler(Logging("a", self.calls), delivery=OnlyRcpt())  # type: ignore[arg-type]
        stream = MessageStream()
        d = maybeDeferred(chain.onData, stream, self.session)
        feed(stream, b"Subject: x\r\n\r\nbody\r\n")
        self.assertEqual(self.successResultOf(d), 20)
        self.assertEqual(self.calls, [])

    def test_filterWithDataWarned(self) -> None:
        """
        A filter with an C{onData} of its own, which the chain never calls
        (a delivery handler put among the filters), is named in one
        warning when the chain is made; a filter inheriting
        L{BaseHandler.onData}, or without C{onData}, is not.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        class OnlyRcpt:
            def onRcptTo(self, address: Address, session: Session) -> object:
                return None

        ChainHandler(BaseHandler(), OnlyRcpt(), delivery=Logging("d", self.calls))
        self.assertEqual(len(events), 0)
        mailbox = Logging("mailbox", self.calls)
        ChainHandler(BaseHandler(), mailbox, delivery=Logging("d", self.calls))
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"], LogLevel.warn)
        self.assertEqual(
            formatEvent(events[0]),
            f"ChainHandler: filter {mailbox!r} has an onData of its own, which the chain"
            " never calls: only the delivery handler gets the message",
        )

    def test_auth(self) -> None:
        """
        AUTH goes to the first handler implementing it; when none does, to
        the delivery handler, whose default refuses.
        """
        auth = AuthRequest("PLAIN", "alice", "pw")
        chain = ChainHandler(
            Logging("a", self.calls),
            Authenticator("first", self.calls),
            Authenticator("second", self.calls),
            delivery=Logging("d", self.calls),
        )
        self.assertEqual(chain.onAuth(auth, self.session), AuthResult("first"))
        plain = ChainHandler(Logging("a", self.calls), delivery=Logging("d", self.calls))
        self.assertRaises(SMTPError, plain.onAuth, auth, self.session)
        # The server offers AUTH only for handlers with an onAuth of their own.
        self.assertIs(type(plain).onAuth, BaseHandler.onAuth)
        self.assertIsNot(type(chain).onAuth, BaseHandler.onAuth)
        self.assertIsInstance(chain, ChainHandler)

    def test_nestedAuth(self) -> None:
        """
        A chain inside a chain counts as implementing AUTH only if one of its
        handlers does.
        """
        auth = AuthRequest("PLAIN", "alice", "pw")
        inner = ChainHandler(delivery=Logging("inner", self.calls))
        outer = ChainHandler(inner, Authenticator("outer", self.calls), delivery=BaseHandler())
        self.assertEqual(outer.onAuth(auth, self.session), AuthResult("outer"))
        withAuth = ChainHandler(
            ChainHandler(delivery=Authenticator("i", self.calls)), delivery=inner
        )
        self.assertEqual(withAuth.onAuth(auth, self.session), AuthResult("i"))

    def test_closeReachesEveryone(self) -> None:
        """
        A failing C{onClose} is logged and the others are still told.
        """

        class Broken(Logging):
            def onClose(self, session: Session) -> object:
                super().onClose(session)
                raise RuntimeError("boom")

        chain = ChainHandler(Broken("x", self.calls), delivery=Logging("d", self.calls))
        self.successResultOf(chain.onClose(self.session))
        self.assertEqual(self.calls, [("x", "onClose"), ("d", "onClose")])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_closeRefusalOneLine(self) -> None:
        """
        A member's C{onClose} refusing with an L{SMTPError} is one warning
        line naming the member, the code and the text, without a
        traceback (there is no reply at close); the others are still told.
        """
        from tests.test_deadlines import LogCatcher

        class Refusing(Logging):
            def onClose(self, session: Session) -> object:
                super().onClose(session)
                raise SMTPError(554, "go\naway")

        log = LogCatcher(self)
        chain = ChainHandler(Refusing("x", self.calls), delivery=Logging("d", self.calls))
        self.successResultOf(chain.onClose(self.session))
        self.assertEqual(self.calls, [("x", "onClose"), ("d", "onClose")])
        self.assertEqual(self.flushLoggedErrors(), [])
        (line,) = log.matching("refused")
        self.assertTrue(
            line.endswith(
                " refused with 554 5.0.0 go\\x0aaway: there is no reply at close, nothing is done"
            ),
            line,
        )

    def test_closeReachesEveryoneAfterBaseException(self) -> None:
        """
        An C{onClose} failing with an exception outside L{Exception} (an
        C{asyncio.CancelledError}, a C{KeyboardInterrupt}), raised at once
        or by a coroutine, is logged too, and the others are still told.
        """
        import asyncio

        class Raising(Logging):
            def onClose(self, session: Session) -> object:
                super().onClose(session)
                raise asyncio.CancelledError("boom")

        class AsyncRaising(Logging):
            async def onClose(self, session: Session) -> object:
                super().onClose(session)
                raise SystemExit("boom")

        chain = ChainHandler(
            Raising("x", self.calls),
            AsyncRaising("y", self.calls),
            delivery=Logging("d", self.calls),
        )
        self.successResultOf(chain.onClose(self.session))
        self.assertEqual(self.calls, [("x", "onClose"), ("y", "onClose"), ("d", "onClose")])
        self.assertEqual(len(self.flushLoggedErrors(asyncio.CancelledError, SystemExit)), 2)


class ChainServerTests(TestCase):
    """
    L{ChainHandler} behind a real server.
    """

    async def test_filterRefusesRecipient(self) -> None:
        """
        A filter refusing a recipient at RCPT keeps the message from that
        recipient only.
        """
        calls: list[tuple[str, str]] = []
        store = Recorder()
        chain: Any = ChainHandler(RefuseRecipient("r", calls), delivery=store)
        server, port = await startServer(self, chain)
        result = await deliver(
            endpointFor(port),
            sender="alice@example.com",
            recipients=["nobody@example.org", "bob@example.org"],
            stream=b"Subject: chained\r\n\r\nhello\r\n",
            heloName="client.example",
            tls="none",
            reactor=reactor,
        )
        self.assertEqual([r.reply.code for r in result.recipients], [550, 250])
        self.assertEqual(store.messages[0].recipients, ["bob@example.org"])

    async def test_filterReturnsRefusal(self) -> None:
        """
        Behind a real server, a filter returning (not raising)
        C{SMTPError(550, ...)} for a recipient has it refused with that
        reply, and the message goes to the other recipient only.
        """
        calls: list[tuple[str, str]] = []
        store = Recorder()
        refusal = SMTPError(550, "No such user", "5.1.1")
        chain: Any = ChainHandler(ReturnsAnswer("r", calls, refusal), delivery=store)
        server, port = await startServer(self, chain)
        result = await deliver(
            endpointFor(port),
            sender="alice@example.com",
            recipients=["nobody@example.org", "bob@example.org"],
            stream=b"Subject: chained\r\n\r\nhello\r\n",
            heloName="client.example",
            tls="none",
            reactor=reactor,
        )
        self.assertEqual([r.reply.code for r in result.recipients], [550, 250])
        self.assertEqual(store.messages[0].recipients, ["bob@example.org"])

    async def test_clientLeavesDuringFilter(self) -> None:
        """
        A client gone while a filter's C{onMailFrom} runs does not make the
        relay behind it take a session to the smarthost once the filter
        answers: with one session to the smarthost, the next message is
        relayed at once.
        """
        reached: Deferred[None] = Deferred()
        gate: Deferred[None] = Deferred()

        class SlowFilter(BaseHandler):
            def onMailFrom(self, address: Address, session: Session) -> object:
                if reached.called:
                    return None
                reached.callback(None)
                return gate

        smarthost = Recorder()
        server, port = await startServer(self, smarthost)
        relay = RelayHandler(
            "127.0.0.1", port, heloName="relay.example", tls="none", maxSessions=1, timeout=5
        )
        self.addCleanup(relay.close)
        front, frontPort = await startServer(self, ChainHandler(SlowFilter(), delivery=relay))
        closed: Deferred[None] = Deferred()

        def observe(event: str, session: Session, data: object) -> None:
            if not closed.called:
                closed.callback(None)

        observe.events = {"close"}  # type: ignore[attr-defined]
        front.addObserver(observe)
        leaving = await endpointFor(frontPort).connect(Factory.forProtocol(Protocol))
        leaving.transport.write(b"EHLO client.example\r\nMAIL FROM:<alice@example.com>\r\n")
        await reached
        leaving.transport.abortConnection()
        await closed
        # The close event comes before onClose: let the session end first.
        await deferLater(reactor, 0, lambda: None)
        gate.callback(None)
        # Before the fix: the relay took the only session to the smarthost
        # for the session gone, for good, and this message waited 5 s for
        # it, then got 451.
        result = await deliver(
            endpointFor(frontPort),
            sender="alice@example.com",
            recipients=["bob@example.org"],
            stream=b"Subject: chained\r\n\r\nhello\r\n",
            heloName="client.example",
            tls="none",
            reactor=reactor,
        )
        self.assertEqual([r.reply.code for r in result.recipients], [250])
        self.assertEqual(len(smarthost.messages), 1)
