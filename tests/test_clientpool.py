# -*- test-case-name: tests.test_clientpool -*-
"""
Tests for L{twisted_smtpd._smtpclient.clientpool.SessionPool}: with a clock and
sessions that record what is done to them, then through a L{RelayHandler}
to a real server on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_client import Recorder, startServer
from tests.test_relay import closeWith, outcome, replies, send
from twisted_smtpd._core.address import Address
from twisted_smtpd._core.session import Session
from twisted_smtpd._smtpclient.clientpool import SessionPool
from twisted_smtpd._smtpclient.clientwire import ClientReply, DeliveryError
from twisted_smtpd.handlers.relay import RelayHandler


def logged(events: EventLoggingObserver, start: int = 0) -> list[str]:
    """
    The lines logged from the C{start}th event on.
    """
    return [formatEvent(events[i]) for i in range(start, len(events))]


class FakeSession:
    """
    Stands for a L{ClientSession}: answers RSET with C{rsetReply}, records
    QUIT.
    """

    def __init__(self) -> None:
        self.usable = True
        self.rsets = 0
        self.quits = 0
        self.rsetReply = ClientReply(250, "2.0.0", "Ok")

    async def rset(self) -> ClientReply:
        self.rsets += 1
        return self.rsetReply

    async def quit(self) -> None:
        self.quits += 1
        self.usable = False


class PoolTests(SynchronousTestCase):
    """
    Reuse, limits and timers of L{SessionPool}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.made: list[FakeSession] = []

        def connect() -> Deferred[Any]:
            session = FakeSession()
            self.made.append(session)
            return succeed(session)

        self.pool = SessionPool(connect, self.clock, maxSessions=2, idleTimeout=30, waitTimeout=60)

    def test_reuseWithRset(self) -> None:
        """
        A session given back is handed out again after a successful RSET.
        """
        first = self.successResultOf(self.pool.acquire())
        self.pool.release(first)
        second = self.successResultOf(self.pool.acquire())
        self.assertIs(first, second)
        self.assertEqual((first.rsets, self.pool.opened), (1, 1))

    def test_rsetRefused(self) -> None:
        """
        An idle session whose RSET is refused is closed and a new one made.
        """
        first = self.successResultOf(self.pool.acquire())
        self.pool.release(first)
        first.rsetReply = ClientReply(421, "4.4.2", "Timeout")
        second = self.successResultOf(self.pool.acquire())
        self.assertIsNot(first, second)
        self.assertEqual(first.quits, 1)

    def test_idleTimeout(self) -> None:
        """
        A session unused for C{idleTimeout} seconds is closed with QUIT.
        """
        session = self.successResultOf(self.pool.acquire())
        self.pool.release(session)
        self.clock.advance(29)
        self.assertEqual((session.quits, self.pool.idle), (0, 1))
        self.clock.advance(1)
        self.assertEqual((session.quits, self.pool.idle), (1, 0))

    def test_limitAndWait(self) -> None:
        """
        With C{maxSessions} busy, the next request waits for one to be
        given back.
        """
        first = self.successResultOf(self.pool.acquire())
        self.successResultOf(self.pool.acquire())
        waiting = self.pool.acquire()
        self.assertNoResult(waiting)
        self.assertEqual(len(self.made), 2)
        self.pool.release(first)
        self.assertIs(self.successResultOf(waiting), first)

    def test_waitTimeout(self) -> None:
        """
        A request waiting longer than C{waitTimeout} fails with 451 4.4.5.
        """
        self.successResultOf(self.pool.acquire())
        self.successResultOf(self.pool.acquire())
        waiting = self.pool.acquire()
        self.clock.advance(60)
        error = self.failureResultOf(waiting, DeliveryError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.4.5"))

    def test_unusableDropped(self) -> None:
        """
        A session given back unusable is closed and frees its place.
        """
        first = self.successResultOf(self.pool.acquire())
        self.successResultOf(self.pool.acquire())
        waiting = self.pool.acquire()
        first.usable = False
        self.pool.release(first)
        third = self.successResultOf(waiting)
        self.assertIsNot(third, first)
        self.assertEqual(len(self.made), 3)

    def test_close(self) -> None:
        """
        Closing the pool QUITs the idle sessions, fails waiting requests
        and later ones, and closes busy sessions when given back.
        """
        idle = self.successResultOf(self.pool.acquire())
        busy = self.successResultOf(self.pool.acquire())
        waiting = self.pool.acquire()
        self.pool.release(idle)
        # The waiting request took the idle session.
        taken = self.successResultOf(waiting)
        self.pool.release(taken)
        self.successResultOf(self.pool.close())
        self.assertEqual(idle.quits, 1)
        self.failureResultOf(self.pool.acquire(), DeliveryError)
        self.pool.release(busy)
        self.assertEqual(busy.quits, 1)

    def test_invalid(self) -> None:
        """
        C{maxSessions} must be at least 1.
        """
        self.assertRaises(ValueError, SessionPool, lambda: succeed(None), self.clock, maxSessions=0)

    def test_failedRsetKeepsTurn(self) -> None:
        """
        A waiting request handed a session that then fails its RSET keeps
        its turn: it opens the new session in its place, rather than going
        behind the requests after it (and waiting all over again).
        """
        pool = SessionPool(self.pool._connect, self.clock, maxSessions=1, waitTimeout=60)
        held = self.successResultOf(pool.acquire())
        first = pool.acquire()
        self.clock.advance(30)
        second = pool.acquire()
        held.rsetReply = ClientReply(421, "4.4.2", "Timeout")
        pool.release(held)
        self.assertEqual(held.quits, 1)
        self.assertIs(self.successResultOf(first), self.made[-1])
        self.assertNoResult(second)
        self.assertEqual((pool.busy, pool.idle, len(self.made)), (1, 0, 2))

    def test_cancelWhileOpening(self) -> None:
        """
        A request cancelled while its session is being opened fails at
        once; the session, once open, is kept for the next message rather
        than lost with its place in the pool.
        """
        opening: Deferred[Any] = Deferred()
        pool = SessionPool(lambda: opening, self.clock, maxSessions=1)
        request = pool.acquire()
        request.cancel()
        self.failureResultOf(request, CancelledError)
        session = FakeSession()
        opening.callback(session)
        self.assertEqual((pool.busy, pool.idle), (0, 1))
        self.assertIs(self.successResultOf(pool.acquire()), session)

    def test_cancelledWaitLeavesQueue(self) -> None:
        """
        A request cancelled while it waits leaves the queue at once: the
        next session given back goes to the request behind it, not lost on
        the cancelled one.
        """
        first = self.successResultOf(self.pool.acquire())
        self.successResultOf(self.pool.acquire())
        cancelled = self.pool.acquire()
        behind = self.pool.acquire()
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.pool.release(first)
        self.assertIs(self.successResultOf(behind), first)
        self.assertEqual((self.pool.busy, self.pool.idle, len(self.made)), (2, 0, 2))
        # No timer is left for it either.
        self.clock.advance(60)
        self.assertEqual((self.pool.busy, self.pool.idle), (2, 0))

    def test_limitReachedLogged(self) -> None:
        """
        One warning when every session is busy, on reaching the bound from
        below: none for each message then waiting, one again after the
        bound was left.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.pool = SessionPool(
            self.pool._connect,
            self.clock,
            maxSessions=2,
            idleTimeout=30,
            waitTimeout=60,
            name="the next hop mx.example:25",
        )
        first = self.successResultOf(self.pool.acquire())
        second = self.successResultOf(self.pool.acquire())
        waiting = [self.pool.acquire() for _ in range(3)]
        self.pool.release(first)
        self.pool.release(self.successResultOf(waiting[0]))
        lines = logged(events)
        self.assertEqual(
            lines,
            [
                "sessions to the next hop mx.example:25 reached 2, the most at once:"
                " more messages wait for one to end"
            ],
        )
        for d in waiting[1:]:
            self.pool.release(self.successResultOf(d))
        self.pool.release(second)
        self.assertEqual((self.pool.busy, self.pool.idle), (0, 2))
        self.successResultOf(self.pool.acquire())
        self.successResultOf(self.pool.acquire())
        self.assertEqual(len(events), 2)

    def test_waitTimeoutOneLine(self) -> None:
        """
        A request that times out waiting logs nothing itself (the caller's
        line names the session); its error says how long it waited, and
        for how many busy sessions.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.successResultOf(self.pool.acquire())
        self.successResultOf(self.pool.acquire())
        start = len(events)
        waiting = self.pool.acquire()
        self.clock.advance(60)
        error = self.failureResultOf(waiting, DeliveryError).value
        self.assertEqual(logged(events, start), [])
        self.assertEqual(
            (error.code, error.enhanced, error.message),
            (451, "4.4.5", "no session to the next hop free after 60 s (2 busy)"),
        )
        self.assertEqual((self.pool.busy, self.pool.idle), (2, 0))


class HandlerWaitTests(SynchronousTestCase):
    """
    A L{RelayHandler} whose MAIL waits for a session of its pool.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.handler = RelayHandler(
            "127.0.0.1", 1, tls="none", heloName="relay.example", reactor=self.clock
        )
        self.made: list[FakeSession] = []

        def connect() -> Deferred[Any]:
            session = FakeSession()
            self.made.append(session)
            return succeed(session)

        self.handler.pool = SessionPool(connect, self.clock, maxSessions=1, waitTimeout=60)
        self.held = self.successResultOf(self.handler.pool.acquire())
        # After the line saying the one session is busy.
        self.start = len(self.events)

    def test_closeWhileWaiting(self) -> None:
        """
        A session that ends while its MAIL waits for a session to the next
        hop leaves the queue at once: its MAIL ends, and the session given
        back later stays free for the next message.
        """
        session = Session(id="s1")
        mail = Deferred.fromCoroutine(self.handler.onMailFrom(Address("a@example.com"), session))
        self.assertNoResult(mail)
        self.handler.onClose(session)
        self.successResultOf(mail)
        self.handler.pool.release(self.held)
        self.assertEqual((self.handler.pool.busy, self.handler.pool.idle), (0, 1))
        self.assertEqual(self.held.rsets, 0)
        self.assertEqual(logged(self.events, self.start), [])

    def test_waitTimeoutLine(self) -> None:
        """
        A MAIL that waited too long for a session is refused 451 4.4.5 with
        one log line naming the session and the wait.
        """
        session = Session(id="s1")
        mail = Deferred.fromCoroutine(self.handler.onMailFrom(Address("a@example.com"), session))
        self.clock.advance(60)
        error = self.failureResultOf(mail).value
        self.assertEqual((error.code, error.enhanced), (451, "4.4.5"))
        self.assertEqual(
            logged(self.events, self.start),
            [
                "s1 next hop 127.0.0.1:1 unavailable: 451 4.4.5 no session to the next hop"
                " free after 60 s (1 busy) (connect)"
            ],
        )
        self.assertEqual((self.handler.pool.busy, self.handler.pool.idle), (1, 0))


class LoopbackPoolTests(TestCase):
    """
    Sessions from a L{RelayHandler} to a real server on 127.0.0.1 are
    reused from message to message.
    """

    async def front(self, smarthost: Recorder, **relay: Any) -> int:
        server, port = await startServer(self, smarthost)
        self.handler = closeWith(
            self, RelayHandler("127.0.0.1", port, tls="none", heloName="relay.example", **relay)
        )
        front, frontPort = await startServer(self, self.handler)
        return frontPort

    async def test_reused(self) -> None:
        """
        Messages one after the other travel on one session to the
        smarthost (RSET between them), not one connection each.
        """
        smarthost = Recorder()
        port = await self.front(smarthost)
        for _ in range(3):
            self.assertEqual(replies(await send(port)), [(250, "2.0.0")])
        self.assertEqual(len(smarthost.messages), 3)
        self.assertEqual(len({m.session.id for m in smarthost.messages}), 1)
        self.assertEqual(self.handler.pool.opened, 1)
        self.assertEqual(self.handler.pool.idle, 1)

    async def test_limit(self) -> None:
        """
        No more than C{maxSessions} sessions are open at once: messages
        arriving together wait for a free one, and all get through.
        """
        smarthost = Recorder()
        port = await self.front(smarthost, maxSessions=2)
        results = await gatherResults([Deferred.fromCoroutine(send(port)) for _ in range(6)])
        self.assertEqual([replies(r) for r in results], [[(250, "2.0.0")]] * 6)
        self.assertEqual(len(smarthost.messages), 6)
        self.assertLessEqual(len({m.session.id for m in smarthost.messages}), 2)
        self.assertLessEqual(self.handler.pool.opened, 2)

    async def test_closedByNextHop(self) -> None:
        """
        A session the smarthost closed while it was idle is not used again.
        """
        smarthost = Recorder()
        server, smarthostPort = await startServer(self, smarthost)
        handler = closeWith(
            self, RelayHandler("127.0.0.1", smarthostPort, tls="none", heloName="relay.example")
        )
        front, port = await startServer(self, handler)
        self.assertEqual(replies(await send(port)), [(250, "2.0.0")])
        await server.close()
        # The smarthost is gone: the idle session is dropped, a new
        # connection is refused, and the client is told to try later.
        self.assertEqual(await outcome(port), [(451, "4.4.1")])
        self.assertEqual(handler.pool.idle, 0)

    async def test_closeQuits(self) -> None:
        """
        Closing the handler says QUIT on the idle sessions.
        """
        smarthost = Recorder()
        closed: list[str] = []
        smarthost.onClose = lambda session: closed.append(session.id)  # type: ignore[method-assign]
        port = await self.front(smarthost)
        await send(port)
        self.assertEqual(closed, [])
        await self.handler.close()
        self.assertEqual(self.handler.pool.idle, 0)
        self.assertEqual(len(closed), 1)
        self.assertEqual(await outcome(port), [(451, "4.3.2")])
