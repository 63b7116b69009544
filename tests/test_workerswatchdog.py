"""
The watchdog of C{twistd smtpd --workers}: a worker that gives no sign of
life for C{--worker-timeout} seconds is killed and started again.
"""

from __future__ import annotations

import os
import signal

from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from tests.test_workers import _exited, _PoolTestCase
from twisted_smtpd._twistd.tap import Options
from twisted_smtpd._twistd.workerside import ParentWatch
from twisted_smtpd._twistd.workerwatchdog import (
    HEARTBEAT,
    START_TIMEOUT,
    Heartbeat,
    heartbeatPipe,
)


class WatchdogTests(_PoolTestCase):
    """
    The parent kills a worker silent for the timeout, once, with one line.
    """

    def test_silentWorkerKilled(self) -> None:
        """
        By default a worker is killed (SIGKILL) once it has given no sign
        of life for 60 seconds, with one line naming it, its pid and its
        silence; one that gives a sign every 5 seconds is left alone.  The
        killed worker is started again as any worker that ended, and the
        new one gets a whole timeout of its own.
        """
        pool, clock, log = self.pool()
        (first, firstProcess), (second, secondProcess) = clock.spawned
        fd = first.heartbeatFD
        assert fd is not None
        self.assertEqual(clock.environments[0][HEARTBEAT], f"{fd},5.0")
        first.inConnectionLost()
        second.inConnectionLost()
        for _ in range(11):
            clock.advance(5)
            first.childDataReceived(fd, b".")
        self.assertEqual(secondProcess.signals, [])
        clock.advance(5)
        self.assertEqual(secondProcess.signals, ["KILL"])
        self.assertEqual(firstProcess.signals, [])
        self.assertEqual(
            log.matching("sign of life"),
            ["worker 1 (pid 1001) gave no sign of life for 60s; killed (--worker-timeout 60)"],
        )
        # Slow to go: neither signalled nor logged again.
        clock.advance(5)
        first.childDataReceived(fd, b".")
        self.assertEqual(secondProcess.signals, ["KILL"])
        self.assertEqual(len(log.matching("sign of life")), 1)
        second.processEnded(_exited(None, signal.SIGKILL))
        self.assertEqual(
            log.matching("worker 1 ended"),
            ["worker 1 ended (pid 1001, killed by SIGKILL, signal 9); restarting in 0.5s"],
        )
        clock.advance(0.5)
        third, thirdProcess = clock.spawned[-1]
        self.assertEqual(third.index, 1)
        for _ in range(11):
            clock.advance(5)
            first.childDataReceived(fd, b".")
        self.assertEqual(thirdProcess.signals, [])
        self.assertEqual(firstProcess.signals, [])

    def test_neverReadyKilled(self) -> None:
        """
        A worker that never says it is ready (hung while it starts, its
        socket taking connections all the same) is killed after the
        timeout too.
        """
        pool, clock, log = self.pool(1, workerTimeout=10)
        ((worker, process),) = clock.spawned
        self.assertEqual(clock.environments[0][HEARTBEAT], f"{worker.heartbeatFD},2.5")
        clock.pump([2.5] * 3)
        self.assertEqual(process.signals, [])
        clock.pump([2.5])
        self.assertEqual(process.signals, ["KILL"])
        self.assertEqual(
            log.matching("sign of life"),
            ["worker 0 (pid 1000) gave no sign of life for 10s; killed (--worker-timeout 10)"],
        )

    def test_shortTimeoutLeavesTimeToStart(self) -> None:
        """
        Under a C{--worker-timeout} shorter than a worker's start (1 s: the
        imports, the certificates), a worker still starting is given
        L{START_TIMEOUT} seconds before it is killed, not the timeout: it
        would otherwise be killed at each start, for ever.  Once ready,
        the timeout is its own.
        """
        pool, clock, log = self.pool(2, workerTimeout=1)
        (first, firstProcess), (second, secondProcess) = clock.spawned
        first.inConnectionLost()
        fd = first.heartbeatFD
        assert fd is not None
        for _ in range(int(START_TIMEOUT / 0.25) - 1):
            clock.advance(0.25)
            first.childDataReceived(fd, b".")
        self.assertEqual((firstProcess.signals, secondProcess.signals), ([], []))
        clock.advance(0.25)
        first.childDataReceived(fd, b".")
        self.assertEqual((firstProcess.signals, secondProcess.signals), ([], ["KILL"]))
        clock.pump([0.25] * 4)
        self.assertEqual(firstProcess.signals, ["KILL"])
        self.assertEqual(
            log.matching("sign of life"),
            [
                f"worker 1 (pid 1001) gave no sign of life for {START_TIMEOUT:g}s; killed"
                " (--worker-timeout 1)",
                "worker 0 (pid 1000) gave no sign of life for 1s; killed (--worker-timeout 1)",
            ],
        )

    def test_parentHeldUp(self) -> None:
        """
        A check that comes late (the parent itself was stopped, or its
        machine suspended) kills nobody: the signs written meanwhile wait
        unread.  The next one, on time, kills a worker still silent.
        """
        pool, clock, log = self.pool()
        (first, firstProcess), (second, secondProcess) = clock.spawned
        first.inConnectionLost()
        second.inConnectionLost()
        clock.advance(300)
        self.assertEqual((firstProcess.signals, secondProcess.signals), ([], []))
        assert first.heartbeatFD is not None
        first.childDataReceived(first.heartbeatFD, b"." * 60)
        clock.advance(5)
        self.assertEqual((firstProcess.signals, secondProcess.signals), ([], ["KILL"]))

    def test_zeroNeverKills(self) -> None:
        """
        With a timeout of 0 no worker is watched, or told to give signs of
        life, even with the variable in the parent's environment.
        """
        os.environ[HEARTBEAT] = "4,1"
        self.addCleanup(os.environ.pop, HEARTBEAT, None)
        pool, clock, log = self.pool(1, workerTimeout=0)
        ((worker, process),) = clock.spawned
        self.assertNotIn(HEARTBEAT, clock.environments[0])
        self.assertIsNone(worker.heartbeatFD)
        clock.pump([5] * 100)
        self.assertEqual(process.signals, [])

    def test_stoppingWorkerKilledAfterStopTimeout(self) -> None:
        """
        While the workers stop the watchdog is off; a worker that does not
        end (one stopped by SIGSTOP never handles SIGTERM) is killed after
        the stop timeout, so the parent's stop never waits for ever.
        """
        pool, clock, log = self.pool(1, stopTimeout=11)
        ((worker, process),) = clock.spawned
        worker.inConnectionLost()
        stopping = pool.stopService()
        clock.pump([5, 5])
        self.assertEqual(process.signals, ["TERM"])
        self.assertNoResult(stopping)
        clock.advance(1)
        self.assertEqual(process.signals, ["TERM", "KILL"])
        self.assertEqual(log.matching("sign of life"), [])
        worker.processEnded(_exited(None, signal.SIGKILL))
        self.successResultOf(stopping)


class HeartbeatTests(SynchronousTestCase):
    """
    The worker's side: its reactor writes a sign of life every interval.
    """

    def pipe(self) -> tuple[int, int]:
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, writeEnd)
        os.set_blocking(readEnd, False)
        return readEnd, writeEnd

    def test_signsOnceReactorRuns(self) -> None:
        """
        L{ParentWatch} starts the signs once the reactor runs: one at once,
        then one every interval, on a pipe no process the worker starts
        inherits.
        """
        readEnd, writeEnd = self.pipe()
        self.addCleanup(os.close, readEnd)
        parentRead, parentWrite = os.pipe()
        self.addCleanup(os.close, parentRead)
        self.addCleanup(os.close, parentWrite)
        # As the worker gets it from its parent.
        os.set_inheritable(writeEnd, True)
        clock = MemoryReactorClock()
        clock.hasStopped = False
        ParentWatch(parentRead, reactor=clock, heartbeat=(writeEnd, 5.0)).startService()
        self.assertRaises(BlockingIOError, os.read, readEnd, 10)
        clock.run()
        self.assertEqual(os.read(readEnd, 10), b".")
        # Never held by a process the worker starts.
        self.assertFalse(os.get_inheritable(writeEnd))
        clock.advance(4.9)
        self.assertRaises(BlockingIOError, os.read, readEnd, 10)
        clock.advance(0.1)
        self.assertEqual(os.read(readEnd, 10), b".")

    def test_parentNotReadingOrGone(self) -> None:
        """
        A full pipe (the parent held up) costs the sign, a closed one (the
        parent gone) ends the signs; neither raises.
        """
        readEnd, writeEnd = self.pipe()
        os.set_blocking(writeEnd, False)
        with self.assertRaises(BlockingIOError):
            while True:
                os.write(writeEnd, b"x" * 4096)
        clock = MemoryReactorClock()
        Heartbeat(writeEnd, 1.0, clock).start()
        clock.advance(1)
        os.close(readEnd)
        clock.advance(1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_heartbeatPipe(self) -> None:
        """
        The variable gives the descriptor and the interval; anything else
        there is no heartbeat at all.
        """
        self.assertEqual(heartbeatPipe({HEARTBEAT: "7,5.0"}), (7, 5.0))
        self.assertEqual(heartbeatPipe({HEARTBEAT: "7,0.25"}), (7, 0.25))
        self.assertIsNone(heartbeatPipe({}))
        for bad in ("7", "x,5", "-1,5", "7,0", "7,-1", "7,nan", "7,inf", "7,x", ",5"):
            self.assertIsNone(heartbeatPipe({HEARTBEAT: bad}), bad)


class OptionTests(SynchronousTestCase):
    def test_workerTimeout(self) -> None:
        """
        C{--worker-timeout} takes seconds, 60 by default, 0 for never; a
        negative or non-finite value is one line.
        """
        listen = ["--sink", "--listen", "tcp:0:interface=127.0.0.1"]
        options = Options()
        options.parseOptions(listen)
        self.assertEqual(options["worker-timeout"], 60.0)
        options = Options()
        options.parseOptions(["--worker-timeout", "0", *listen])
        self.assertEqual(options["worker-timeout"], 0.0)
        for bad in ("-1", "nan", "x"):
            error = self.assertRaises(
                UsageError, Options().parseOptions, ["--worker-timeout", bad, *listen]
            )
            self.assertTrue(str(error).startswith("--worker-timeout: "), str(error))

    def test_workerTimeoutTooShort(self) -> None:
        """
        A C{--worker-timeout} above 0 but under a second, in which no worker
        gets to start (every worker killed and started again for ever, its
        signs of life and its parent's checks a busy loop), is one line; a
        second is taken.
        """
        listen = ["--sink", "--listen", "tcp:0:interface=127.0.0.1"]
        for bad in ("0.001", "0.999", "1e-300"):
            error = self.assertRaises(
                UsageError, Options().parseOptions, ["--worker-timeout", bad, *listen]
            )
            self.assertEqual(
                str(error),
                f"--worker-timeout: must be 0 (never) or at least 1, got {bad!r}",
            )
        options = Options()
        options.parseOptions(["--worker-timeout", "1", *listen])
        self.assertEqual(options["worker-timeout"], 1.0)
