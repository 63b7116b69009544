# -*- test-case-name: tests.test_deliverybound -*-
"""
The bound on the messages C{--webhook} and C{--pipe} hand on at once
(C{maxConcurrent}, C{--webhook-concurrency}, C{--pipe-concurrency}), on a
memory reactor: a message beyond it waits for a turn within its deadline,
one that gets none in time is answered 451 4.4.5, and one whose session
ends while it waits leaves the queue.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_handlers import feed, makeSession
from tests.test_pipe import BODY, ProcessReactor, runNow
from tests.test_tap import parse
from tests.test_webhookexchange import MESSAGE, Exchange
from twisted_smtpd import SMTPError
from twisted_smtpd._core.session import Session
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers._concurrency import DeliveryBound
from twisted_smtpd.handlers.pipe import PipeHandler
from twisted_smtpd.handlers.webhook import WebhookHandler

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def infoLines(logs: EventLoggingObserver) -> list[str]:
    """
    The log lines at info level or above.
    """
    return [formatEvent(e) for e in logs if e["log_level"] >= LogLevel.info]


class WebhookBoundTests(SynchronousTestCase):
    """
    L{WebhookHandler} posts at most C{maxConcurrent} messages at once.
    """

    def setUp(self) -> None:
        self.logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.sessions: list[Session] = []

    def deliver(self, exchange: Exchange) -> Deferred[str]:
        """
        Hand a message on a session of its own to the handler.
        """
        session = makeSession(id=f"s{len(self.sessions)}")
        self.sessions.append(session)
        stream = MessageStream()
        d = exchange.handler.onData(stream, session)
        feed(stream, MESSAGE, 7)
        exchange.reactor.advance(0)
        return d

    def posts(self, exchange: Exchange) -> int:
        """
        How many requests the handler wrote, on every connection.
        """
        return sum(t.value().count(b"POST /hook ") for t in exchange.transports)

    def test_beyondTheBoundWaits(self) -> None:
        """
        With C{maxConcurrent=2}, a third message is not posted while two
        are; once one is answered, it is, and every message gets its 250.
        One line says the bound was reached, none per message waiting.
        """
        exchange = Exchange(maxConcurrent=2)
        results = [self.deliver(exchange) for _ in range(4)]
        exchange.connect()
        # Before the fix: four connections and four requests at once.
        self.assertEqual((len(exchange.reactor.tcpClients), self.posts(exchange)), (2, 2))
        for d in results:
            self.assertNoResult(d)
        self.assertEqual(
            infoLines(self.logs),
            [
                "webhook requests in flight reached 2, the most at once:"
                " more messages wait for one to end"
            ],
        )
        exchange.answer(OK, 0)
        exchange.connect()
        self.assertEqual(self.posts(exchange), 3)
        exchange.answer(OK, 1)
        exchange.connect()
        self.assertEqual(self.posts(exchange), 4)
        for index in range(len(exchange.protocols)):
            exchange.answer(OK, index)
        self.assertEqual(
            [self.successResultOf(d) for d in results],
            [f"OK: queued as s{i}.1" for i in range(4)],
        )
        self.assertEqual((exchange.handler._bound.busy, exchange.handler._bound.waiting), (0, 0))
        bounds = [line for line in infoLines(self.logs) if "most at once" in line]
        self.assertEqual(len(bounds), 1)

    def test_waitWithinTimeout(self) -> None:
        """
        A message that gets no turn within its C{timeout} (one that comes
        with no time left counts as none) is answered 451 4.4.5 with one
        log line, and never posted; the wait counts within that
        C{timeout}, so that a message whose turn comes late has only what
        is left of it for its attempts.
        """
        exchange = Exchange(maxConcurrent=1, timeout=10.0, attemptTimeout=10.0)
        first = self.deliver(exchange)
        second = self.deliver(exchange)
        exchange.connect()
        exchange.reactor.advance(9.9)
        self.assertNoResult(second)
        exchange.reactor.advance(0.1)
        self.assertIn("no answer in time", str(self.failureResultOf(first).value))
        error = self.failureResultOf(second, SMTPError).value
        self.assertEqual(
            (error.code, error.enhanced, str(error.message)),
            (451, "4.4.5", "Error: webhook busy, too many messages in flight"),
        )
        self.assertIn(
            "s1 webhook not posted: no turn in 10.0s (1 requests in flight)",
            infoLines(self.logs),
        )
        self.assertEqual(self.posts(exchange), 1)
        # A message whose turn comes 6 s late has 4 s left.
        third = self.deliver(exchange)
        fourth = self.deliver(exchange)
        exchange.connect()
        exchange.reactor.advance(6)
        exchange.answer(OK)
        self.successResultOf(third)
        exchange.connect()
        self.assertEqual(self.posts(exchange), 3)
        exchange.reactor.advance(3.9)
        self.assertNoResult(fourth)
        exchange.reactor.advance(0.1)
        error = self.failureResultOf(fourth, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertIn("no answer in time", str(error.message))
        exchange.reactor.advance(0)
        self.assertEqual((exchange.handler._bound.busy, exchange.handler._bound.waiting), (0, 0))

    def test_sessionEndsWhileWaiting(self) -> None:
        """
        A message whose session ends while it waits leaves the queue at
        once (451, one info line), and is never posted, nor given a turn
        later: the turns go to the messages still waiting.
        """
        exchange = Exchange(maxConcurrent=1)
        first = self.deliver(exchange)
        second = self.deliver(exchange)
        third = self.deliver(exchange)
        exchange.connect()
        exchange.handler.onClose(self.sessions[1])
        error = self.failureResultOf(second, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertIn(
            "s1 webhook not posted: the session ended before its turn", infoLines(self.logs)
        )
        self.assertEqual(exchange.handler._bound.waiting, 1)
        exchange.answer(OK, 0)
        self.successResultOf(first)
        exchange.connect()
        self.assertEqual(self.posts(exchange), 2)
        exchange.answer(OK)
        self.assertEqual(self.successResultOf(third), "OK: queued as s2.1")
        self.assertEqual((exchange.handler._bound.busy, exchange.handler._bound.waiting), (0, 0))
        self.assertEqual(exchange.handler._turns, {})

    def test_argumentChecked(self) -> None:
        """
        C{maxConcurrent} must be a whole number above 0: anything else is
        one line naming it.
        """
        for value in (0, -1, 1.5, True, "20"):
            error = self.assertRaises(
                ValueError, WebhookHandler, "http://127.0.0.1/", maxConcurrent=value
            )
            self.assertEqual(
                str(error), f"maxConcurrent must be a whole number above 0, got {value!r}"
            )


class PipeBoundTests(SynchronousTestCase):
    """
    L{PipeHandler} runs at most C{maxConcurrent} commands at once.
    """

    def setUp(self) -> None:
        self.logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.reactor = ProcessReactor()
        self.sessions: list[Session] = []

    def handler(self, **kwargs: Any) -> PipeHandler:
        handler = PipeHandler("cat", reactor=self.reactor, **kwargs)
        handler._startKill = runNow
        return handler

    def deliver(self, handler: PipeHandler) -> Deferred[str]:
        session = makeSession(id=f"s{len(self.sessions)}")
        self.sessions.append(session)
        stream = MessageStream()
        d = handler.onData(stream, session)
        feed(stream, BODY)
        return d

    def test_beyondTheBoundWaits(self) -> None:
        """
        With C{maxConcurrent=2}, a third message's command starts only
        once one of the two running has exited; each gets its reply. One
        line says the bound was reached.
        """
        handler = self.handler(maxConcurrent=2)
        results = [self.deliver(handler) for _ in range(4)]
        # Before the fix: four processes at once.
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertEqual(
            infoLines(self.logs),
            [
                "pipe commands in flight reached 2, the most at once:"
                " more messages wait for one to end"
            ],
        )
        self.reactor.spawned[0][3].exit(0)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertEqual(self.reactor.stdin[2], BODY)
        self.reactor.spawned[1][3].exit(0)
        self.reactor.advance(0)
        self.reactor.spawned[2][3].exit(75)
        self.reactor.spawned[3][3].exit(0)
        self.reactor.advance(0)
        self.successResultOf(results[0])
        self.successResultOf(results[1])
        self.assertEqual(self.failureResultOf(results[2], SMTPError).value.code, 451)
        self.successResultOf(results[3])
        self.assertEqual((handler._bound.busy, handler._bound.waiting), (0, 0))

    def test_waitWithinTimeout(self) -> None:
        """
        A message that gets no turn within C{timeout} is answered 451
        4.4.5 with one log line and its command never starts; a command
        that starts late may run only for what is left of C{timeout}.
        """
        handler = self.handler(maxConcurrent=1, timeout=10.0)
        first = self.deliver(handler)
        second = self.deliver(handler)
        self.reactor.advance(9)
        self.reactor.spawned[0][3].exit(0)
        self.successResultOf(first)
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.spawned), 2)
        third = self.deliver(handler)
        self.reactor.advance(1)
        # The second command was killed at its deadline: 1 s after it
        # started, 10 s after its message ended.
        process = self.reactor.spawned[1][3]
        self.assertEqual(process.signals, ["STOP", "KILL"])
        process.exit(None, 9)
        self.assertEqual(self.failureResultOf(second, SMTPError).value.code, 451)
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.reactor.spawned[2][3].exit(0)
        self.successResultOf(third)
        self.reactor.advance(0)
        fourth, fifth = self.deliver(handler), self.deliver(handler)
        self.reactor.advance(10)
        error = self.failureResultOf(fifth, SMTPError).value
        self.assertEqual(
            (error.code, error.enhanced, str(error.message)),
            (451, "4.4.5", "Error: too many delivery commands running"),
        )
        self.assertIn(
            "s4 pipe command not started: no turn in 10.0s (1 running)",
            infoLines(self.logs),
        )
        self.assertEqual(len(self.reactor.spawned), 4)
        self.reactor.spawned[3][3].exit(None, 9)
        self.failureResultOf(fourth, SMTPError)
        self.reactor.advance(0)
        self.assertEqual((handler._bound.busy, handler._bound.waiting), (0, 0))

    def test_sessionEndsWhileWaiting(self) -> None:
        """
        A message whose session ends while it waits leaves the queue at
        once (451, one info line), and its command never starts, even
        once a turn is free.
        """
        handler = self.handler(maxConcurrent=1)
        first = self.deliver(handler)
        second = self.deliver(handler)
        handler.onClose(self.sessions[1])
        error = self.failureResultOf(second, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertIn(
            "s1 pipe command not started: the session ended before its turn",
            infoLines(self.logs),
        )
        self.reactor.spawned[0][3].exit(0)
        self.successResultOf(first)
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertEqual((handler._bound.busy, handler._bound.waiting), (0, 0))

    def test_argumentChecked(self) -> None:
        """
        C{maxConcurrent} must be a whole number above 0.
        """
        for value in (0, -3, 2.0, False):
            error = self.assertRaises(ValueError, PipeHandler, "cat", maxConcurrent=value)
            self.assertEqual(
                str(error), f"maxConcurrent must be a whole number above 0, got {value!r}"
            )


class BoundLogTests(SynchronousTestCase):
    """
    L{DeliveryBound}'s line when the bound is reached.
    """

    def test_oncePerReach(self) -> None:
        """
        The line comes when the bound is reached from below, not while
        turns pass from message to message, and again once the bound is
        reached anew after it was left.
        """
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        bound = DeliveryBound("things", 1, clock)
        self.assertTrue(self.successResultOf(bound.acquire(5)))
        waiting = [bound.acquire(5) for _ in range(3)]
        for d in waiting:
            bound.release()
            clock.advance(0)
            self.assertTrue(self.successResultOf(d))
        self.assertEqual(len(infoLines(logs)), 1)
        bound.release()
        clock.advance(0)
        self.successResultOf(bound.acquire(5))
        self.assertEqual(len(infoLines(logs)), 2)


class FlagTests(SynchronousTestCase):
    """
    C{--webhook-concurrency} and C{--pipe-concurrency}.
    """

    def test_webhook(self) -> None:
        """
        C{--webhook-concurrency N} sets the webhook's bound (20 by
        default); a value that is not a whole number above 0, or the flag
        without C{--webhook}, is one line naming the flag.
        """
        url = "http://127.0.0.1:8080/hook"
        self.assertEqual(parse("--webhook", url)["handler"]._bound.limit, 20)
        handler = parse("--webhook", url, "--webhook-concurrency", "5")["handler"]
        self.assertEqual(handler._bound.limit, 5)
        for value in ("0", "-1", "1.5", "x"):
            error = self.assertRaises(
                usage.UsageError, parse, "--webhook", url, "--webhook-concurrency", value
            )
            self.assertTrue(str(error).startswith("--webhook-concurrency: "), str(error))
            self.assertNotIn("\n", str(error))
        error = self.assertRaises(usage.UsageError, parse, "--sink", "--webhook-concurrency", "3")
        self.assertIn("needs --webhook", str(error))

    def test_pipe(self) -> None:
        """
        C{--pipe-concurrency N} sets the pipe's bound (20 by default).
        """
        self.assertEqual(parse("--pipe", "cat")["handler"]._bound.limit, 20)
        handler = parse("--pipe", "cat", "--pipe-concurrency", "3")["handler"]
        self.assertEqual(handler._bound.limit, 3)
        error = self.assertRaises(
            usage.UsageError, parse, "--pipe", "cat", "--pipe-concurrency", "0"
        )
        self.assertEqual(str(error), "--pipe-concurrency: must be greater than 0, got '0'")
        error = self.assertRaises(usage.UsageError, parse, "--sink", "--pipe-concurrency", "3")
        self.assertIn("needs --pipe", str(error))
