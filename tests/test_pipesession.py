# -*- test-case-name: tests.test_pipesession -*-
"""
Tests for L{PipeHandler} when the session ends while its message is being
delivered: the command is killed, or never started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.test_handlers import ManualThreadPool, Upstream, feed, makeSession
from tests.test_pipe import BODY, ProcessReactor
from twisted_smtpd import SMTPError
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers.pipe import PipeHandler


class ManualThreads:
    """
    Starts the threads a kill runs in: at once in the calling thread, or
    only when told.
    """

    def __init__(self, runAtOnce: bool) -> None:
        self.runAtOnce = runAtOnce
        self.pending: list[tuple[Callable[..., object], tuple[object, ...]]] = []

    def start(self, f: Callable[..., object], *args: object) -> None:
        if self.runAtOnce:
            f(*args)
        else:
            self.pending.append((f, args))

    def runAll(self) -> None:
        while self.pending:
            f, args = self.pending.pop(0)
            f(*args)


class PipeSessionEndTests(SynchronousTestCase):
    """
    L{PipeHandler.onClose} against a fake process.
    """

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.session = makeSession()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.threads = ManualThreads(runAtOnce=True)

    def lines(self) -> list[str]:
        return [
            formatEvent(event)
            for event in self.events
            if event.get("log_namespace", "").endswith("PipeHandler")
        ]

    def start(self, **kwargs: Any) -> tuple[PipeHandler, Any, Any]:
        handler = PipeHandler("cat -u", reactor=self.reactor, **kwargs)
        handler._startKill = self.threads.start
        stream = MessageStream(upstream=Upstream(), maxBuffer=10)
        d = handler.onData(stream, self.session)
        feed(stream, BODY)
        return handler, d, self.reactor.spawned[0][3] if self.reactor.spawned else None

    def test_sessionEndKillsCommand(self) -> None:
        """
        A command still running when its session ends is killed at once,
        with one log line; its Deferred fails with a 451 nobody hears, and
        no other line is logged for it.
        """
        handler, d, process = self.start()
        self.assertEqual(process.signals, [])
        handler.onClose(self.session)
        self.assertEqual(process.signals, ["STOP", "KILL"])
        self.assertEqual(
            self.lines(), ["s1d pipe command killed: the session ended before it exited"]
        )
        process.exit(None, 9)
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(len(self.lines()), 1)
        # Its timer is gone too.
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_unkillableCommandLeavesNothingStopped(self) -> None:
        """
        A command the server may not signal (a setuid program that took
        another real user: C{EPERM}) does not make C{onClose} or the time
        limit fail: the processes below it that were stopped are killed
        all the same, never left stopped, and one line says the command
        could not be killed.
        """
        from twisted_smtpd.handlers import _processtree

        killed: list[list[int]] = []

        def stopDescendants(
            root: _processtree.Process, stopped: list[_processtree.Process]
        ) -> list[_processtree.Process]:
            stopped.extend([_processtree.Process(root.pid + 1), _processtree.Process(root.pid + 2)])
            return stopped

        def kill(processes: list[_processtree.Process]) -> None:
            killed.append([process.pid for process in processes])

        self.patch(_processtree, "stopDescendants", stopDescendants)
        self.patch(_processtree, "kill", kill)

        def refuse(signal: str) -> None:
            raise PermissionError(1, "Operation not permitted")

        handler, d, process = self.start(timeout=10)
        process.pid = 4000
        process.signalProcess = refuse
        handler.onClose(self.session)
        self.assertEqual(killed, [[4001, 4002]])
        self.assertEqual(
            self.lines(),
            [
                "s1d pipe command could not be killed (Operation not permitted):"
                " the session ended before it exited"
            ],
        )
        process.exit(None, 9)
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)

        self.session = makeSession(id="s2")
        handler, d, _ = self.start(timeout=10)
        process = self.reactor.spawned[-1][3]
        process.pid = 5000
        process.signalProcess = refuse
        self.reactor.advance(10)
        self.assertEqual(killed[1:], [[5001, 5002]])
        self.assertEqual(
            self.lines()[1:],
            ["s2 pipe command could not be killed at its time limit (Operation not permitted)"],
        )
        process.exit(None, 9)
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)

    def test_treeWalkInThreadOfItsOwn(self) -> None:
        """
        The command is stopped at once, on the reactor's thread, but the
        walk of C{/proc} for the processes below it, and their death and
        its, happen in a thread started for that kill: with 300 processes
        on the system, the walk takes milliseconds in which no session
        would be served.  Not in the handler's thread pool, whose threads
        may all be held by spool writes to a disk that hangs: the kill of a
        command past its time limit would wait for one, the command left
        stopped and its client unanswered.  That holds at the session's end
        and at the time limit.
        """
        from twisted_smtpd.handlers import _processtree

        walked: list[int] = []
        killed: list[list[int]] = []

        def stopDescendants(
            root: _processtree.Process, stopped: list[_processtree.Process]
        ) -> list[_processtree.Process]:
            walked.append(root.pid)
            stopped.append(_processtree.Process(root.pid + 1))
            return stopped

        def kill(processes: list[_processtree.Process]) -> None:
            killed.append([process.pid for process in processes])

        self.patch(_processtree, "stopDescendants", stopDescendants)
        self.patch(_processtree, "kill", kill)
        self.threads.runAtOnce = False
        pool = ManualThreadPool()
        handler, d, process = self.start(threadpool=pool, timeout=10)
        while process is None:
            pool.runOne()
            process = self.reactor.spawned[0][3] if self.reactor.spawned else None
        pool.runAll()
        # From here on the pool is taken: nothing queued there ever runs.
        process.pid = 4000
        handler.onClose(self.session)
        self.assertEqual((process.signals, walked, killed), (["STOP"], [], []))
        self.assertEqual(
            self.lines(), ["s1d pipe command killed: the session ended before it exited"]
        )
        self.threads.runAll()
        self.assertEqual((process.signals, walked, killed), (["STOP", "KILL"], [4000], [[4001]]))
        self.assertEqual(pool.jobs, [])
        process.exit(None, 9)
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)

        self.session = makeSession(id="s2")
        handler, d, _ = self.start(threadpool=pool, timeout=10)
        while len(self.reactor.spawned) < 2:
            pool.runOne()
        process = self.reactor.spawned[1][3]
        pool.runAll()
        process.pid = 5000
        self.reactor.advance(10)
        self.assertEqual((process.signals, walked[1:]), (["STOP"], []))
        self.threads.runAll()
        self.assertEqual(
            (process.signals, walked[1:], killed[1:]), (["STOP", "KILL"], [5000], [[5001]])
        )
        self.assertEqual(pool.jobs, [])
        process.exit(None, 9)
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)
        self.assertEqual(self.lines()[1:], ["s2 pipe command timed out"])

    def test_oneKillPerCommand(self) -> None:
        """
        A command killed at its time limit whose session then ends before
        it is reaped is not stopped nor walked a second time.
        """
        self.threads.runAtOnce = False
        handler, d, process = self.start(timeout=10)
        self.reactor.advance(10)
        handler.onClose(self.session)
        self.assertEqual((process.signals, len(self.threads.pending)), (["STOP"], 1))
        self.threads.runAll()
        self.assertEqual(process.signals, ["STOP", "KILL"])
        process.exit(None, 9)
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)

    def test_sessionEndBeforeStartRunsNothing(self) -> None:
        """
        A session that ends after its message was received whole but before
        the spool was ready starts no command.
        """
        pool = ManualThreadPool()
        handler, d, process = self.start(threadpool=pool)
        self.assertIsNone(process)
        self.assertNoResult(d)
        handler.onClose(self.session)
        pool.runAll()
        self.assertEqual(self.reactor.spawned, [])
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)
        self.assertEqual(self.lines(), ["s1d pipe command not started: the session ended"])

    def test_closeAfterVerdictKillsNothing(self) -> None:
        """
        C{onClose} after the command's verdict signals nothing and logs
        nothing.
        """
        handler, d, process = self.start()
        process.exit(0)
        self.assertEqual(self.successResultOf(d), "OK: delivered to cat")
        handler.onClose(self.session)
        self.assertEqual(process.signals, [])
        self.assertEqual(self.lines(), [])

    def test_otherSessionUntouched(self) -> None:
        """
        The end of another session kills nothing.
        """
        handler, d, process = self.start()
        handler.onClose(makeSession(id="other"))
        self.assertEqual(process.signals, [])
        process.exit(0)
        self.successResultOf(d)

    def test_closeAfterTimeoutOneLine(self) -> None:
        """
        A command killed at its time limit whose session then ends is logged
        once, as timed out.
        """
        handler, d, process = self.start(timeout=10)
        self.reactor.advance(10)
        handler.onClose(self.session)
        process.exit(None, 9)
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)
        self.assertEqual(self.lines(), ["s1d pipe command timed out"])
