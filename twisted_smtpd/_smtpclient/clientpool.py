# -*- test-case-name: tests.test_clientsession -*-
"""
L{SessionPool}: a few open sessions to one next hop, reused from message to
message.

A session handed out is checked with RSET first (RFC 5321 section 4.1.1.5),
which also ends anything a previous message left behind; one that fails it
is dropped and another is used or opened.  At most C{maxSessions} are open
at once; a message arriving when all are busy waits for one, for at most
C{waitTimeout} seconds (one log line when all become busy, from fewer: not
one a waiting message).  An idle session is closed with QUIT after
C{idleTimeout} seconds, and every one when the pool closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._smtpclient.clientsession import ClientSession
from twisted_smtpd._smtpclient.clientwire import DeliveryError


class SessionPool:
    """
    Open sessions to one next hop.

    @ivar opened: How many sessions were opened so far.
    @ivar maxSessions: The most sessions open at once.
    """

    _log = Logger()

    def __init__(
        self,
        connect: Callable[[], Deferred[ClientSession]],
        clock: Any,
        *,
        maxSessions: int = 4,
        idleTimeout: float = 30.0,
        waitTimeout: float = 60.0,
        name: str = "the next hop",
    ) -> None:
        """
        @param connect: Opens a new session.
        @param clock: The reactor, for the timers.
        @param maxSessions: The most sessions open at once (at least 1).
        @param idleTimeout: Seconds an unused session stays open; 0 closes
            each session after its message.
        @param waitTimeout: Seconds a message waits for a busy session.
        @param name: The next hop, for the log line (safe to log).
        """
        if maxSessions < 1:
            raise ValueError("maxSessions must be at least 1")
        self._connect = connect
        self._clock = clock
        self.maxSessions = maxSessions
        self._idleTimeout = idleTimeout
        self._waitTimeout = waitTimeout
        self._idle: list[tuple[ClientSession, IDelayedCall | None]] = []
        self._waiters: list[Deferred[None]] = []
        self._open = 0
        self._closing: list[Deferred[None]] = []
        self._closed = False
        self._name = name
        #: Whether every session is busy since the log line said so.
        self._full = False
        self.opened = 0

    def acquire(self) -> Deferred[ClientSession]:
        """
        A session ready for a transaction, for the caller alone until it
        gives it back with L{release}.

        @return: A L{Deferred} failing with L{DeliveryError} (451) when no
            session can be had.  Cancelling it while it waits for a busy
            session leaves the queue at once; once a session is being
            checked or opened for it, that session is given back when
            ready.
        """
        # The request's place in the queue, while it waits.
        waiting: list[Deferred[None]] = []

        def cancel(result: Deferred[ClientSession]) -> None:
            if waiting:
                waiting[0].cancel()

        result: Deferred[ClientSession] = Deferred(cancel)

        def done(outcome: ClientSession | Failure) -> None:
            if not result.called:
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)
            elif not isinstance(outcome, Failure):
                # Cancelled while its session was checked or opened: the
                # session is for the next message (a failure, for nobody).
                self.release(outcome)

        Deferred.fromCoroutine(self._acquire(waiting)).addBoth(done)
        return result

    async def _acquire(self, waiting: list[Deferred[None]]) -> ClientSession:
        while True:
            if self._closed:
                raise DeliveryError(451, "Error: shutting down", "4.3.2", stage="connect")
            while self._idle:
                session, timer = self._idle.pop()
                if timer is not None and timer.active():
                    timer.cancel()
                if await self._check(session):
                    if self._open < self.maxSessions:
                        # A place freed by a failed RSET, not needed now.
                        self._wake()
                    self._handedOut()
                    return session
            if self._open < self.maxSessions:
                break
            await self._wait(waiting)
        self._open += 1
        try:
            session = await self._connect()
        except BaseException:
            self._open -= 1
            self._wake()
            raise
        self.opened += 1
        self._handedOut()
        return session

    def _handedOut(self) -> None:
        """
        A session was handed out: log once when that makes every one busy.
        """
        if self.busy >= self.maxSessions and not self._full:
            self._full = True
            self._log.warn(
                "sessions to {name} reached {limit}, the most at once:"
                " more messages wait for one to end",
                name=self._name,
                limit=self.maxSessions,
            )

    async def _check(self, session: ClientSession) -> bool:
        """
        RSET a session taken from the idle ones; drop it if that fails,
        its place kept for the caller (not handed to a request behind it).
        """
        if session.usable:
            try:
                reply = await session.rset()
            except DeliveryError:
                pass
            else:
                if reply.positive:
                    return True
        self._drop(session, wake=False)
        return False

    async def _wait(self, waiting: list[Deferred[None]]) -> None:
        """
        Wait in the queue for a session given back, for at most
        C{waitTimeout} seconds (the caller logs the failure, naming its
        message).

        @param waiting: Holds the place in the queue while it waits.
        """
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        waiting.append(waiter)

        def timeOut() -> None:
            waiter.errback(
                DeliveryError(
                    451,
                    f"no session to the next hop free after {self._waitTimeout:g} s"
                    f" ({self.maxSessions} busy)",
                    "4.4.5",
                    stage="connect",
                )
            )

        timer = self._clock.callLater(self._waitTimeout, timeOut)
        try:
            await waiter
        finally:
            waiting.clear()
            # Timed out or cancelled: a wake-up must not be spent on it.
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if timer.active():
                timer.cancel()

    def _wake(self) -> None:
        if self._waiters:
            self._waiters.pop(0).callback(None)

    def release(self, session: ClientSession) -> None:
        """
        Give a session back after a message: it stays open for the next one
        if it is still usable and the pool is open, else it is closed.
        """
        if self._closed or not session.usable or self._idleTimeout <= 0:
            self._drop(session)
        else:
            timer = self._clock.callLater(self._idleTimeout, self._expire, session)
            self._idle.append((session, timer))
            self._wake()
        if self.busy < self.maxSessions:
            self._full = False

    def _expire(self, session: ClientSession) -> None:
        for index, (idle, _timer) in enumerate(self._idle):
            if idle is session:
                del self._idle[index]
                self._drop(session)
                return

    def _drop(self, session: ClientSession, wake: bool = True) -> None:
        """
        Close a session (QUIT when possible) and free its place.

        @param wake: Whether to hand the place to the first request waiting.
        """
        self._open -= 1
        d = Deferred.fromCoroutine(session.quit())
        self._closing.append(d)

        def closed(result: object) -> None:
            self._closing.remove(d)

        d.addBoth(closed)
        if wake:
            self._wake()

    def close(self) -> Deferred[None]:
        """
        Close every idle session with QUIT, and every busy one when it is
        given back; fail the messages waiting for a session.

        @return: A L{Deferred} firing once the idle sessions are closed.
        """
        self._closed = True
        idle, self._idle = self._idle, []
        for session, timer in idle:
            if timer is not None and timer.active():
                timer.cancel()
            self._drop(session)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            # They find the pool closed and fail.
            waiter.callback(None)
        closing: Deferred[Any] = DeferredList(list(self._closing), consumeErrors=True)

        def done(result: object) -> None:
            return None

        return closing.addCallback(done)

    @property
    def idle(self) -> int:
        """
        How many sessions are open and unused.
        """
        return len(self._idle)

    @property
    def busy(self) -> int:
        """
        How many sessions are handed out.
        """
        return self._open - len(self._idle)
