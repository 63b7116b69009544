# -*- test-case-name: tests.test_deliverybound -*-
"""
L{DeliveryBound}: at most so many messages handed on at once by a delivery
that hands each one to something outside the server (an HTTP request for
C{--webhook}, a process for C{--pipe}), as Postfix bounds a transport's
processes (C{maxproc}) and its deliveries to one destination
(C{default_destination_concurrency_limit}, 20).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.logger import Logger

__all__ = ["DeliveryBound", "checkConcurrency"]


def checkConcurrency(name: str, value: int) -> int:
    """
    Check the handler argument C{name}, a number of messages handed on at
    once: a whole number above 0.

    @raise ValueError: Naming the argument.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number above 0, got {value!r}")
    return value


class DeliveryBound:
    """
    A L{DeferredSemaphore} of C{limit} slots, each message waiting for one
    for at most a given time, and one log line when the bound is reached
    (from below: not one a waiting message).

    @ivar limit: The most messages handed on at once.
    """

    _log = Logger()

    def __init__(self, what: str, limit: int, clock: Any) -> None:
        """
        @param what: What is bounded, for the log line (C{"webhook
            requests"}).
        @param limit: The most messages handed on at once (at least 1).
        @param clock: The reactor, for the deadlines.
        """
        self.limit = limit
        self._what = what
        self._clock = clock
        self._semaphore = DeferredSemaphore(limit)
        self._full = False

    @property
    def busy(self) -> int:
        """
        How many slots are taken.
        """
        return self.limit - self._semaphore.tokens

    @property
    def waiting(self) -> int:
        """
        How many messages wait for a slot.
        """
        return len(self._semaphore.waiting)

    def acquire(self, seconds: float) -> Deferred[bool]:
        """
        Take a slot, waiting for one for at most C{seconds}.

        @return: A L{Deferred} firing with C{True} once the caller holds a
            slot (to give back with L{release}), or C{False} if none came
            free in time (a slot that comes with no time left is given
            back: not taken).  Cancelling it while it waits leaves the
            queue: no slot is taken for it later.
        """
        return Deferred.fromCoroutine(self._acquire(seconds))

    async def _acquire(self, seconds: float) -> bool:
        deadline = self._clock.seconds() + seconds
        wait = self._semaphore.acquire()
        expired = []

        def expire() -> None:
            expired.append(True)
            wait.cancel()

        timer = None if wait.called else self._clock.callLater(max(seconds, 0), expire)
        try:
            await wait
        except CancelledError:
            if expired:
                return False
            raise
        finally:
            if timer is not None and timer.active():
                timer.cancel()
        if self._clock.seconds() >= deadline:
            self.release()
            return False
        if self._semaphore.tokens == 0 and not self._full:
            self._full = True
            self._log.warn(
                "{what} in flight reached {limit}, the most at once:"
                " more messages wait for one to end",
                limit=self.limit,
                what=self._what,
            )
        return True

    def release(self) -> None:
        """
        Give back a slot taken with L{acquire}.  The next waiting message
        takes it in the reactor's next turn, rather than inside the
        caller's own (an HTTP answer still being read, a process still
        being reaped).
        """
        if self._semaphore.waiting:
            self._clock.callLater(0, self._release)
        else:
            self._release()

    def _release(self) -> None:
        self._semaphore.release()
        if self._semaphore.tokens > 0:
            self._full = False
