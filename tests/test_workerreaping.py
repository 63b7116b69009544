"""
The parent of C{--workers} and the two moments Twisted reports a worker's
end: C{processExited}, at once after C{waitpid} reaped it (its pid free
from then on), and C{processEnded}, once every pipe to it is closed as
well (later, or never, while a process the worker started holds a copy).
"""

from __future__ import annotations

import os
import signal

from twisted.internet.error import ProcessTerminated
from twisted.python.failure import Failure

from tests.test_workers import _PoolTestCase
from tests.test_workersmetricsfiles import _COUNTER, record
from twisted_smtpd._serving.metrics import multiprocessRegistry
from twisted_smtpd._twistd.metricsservice import WorkerMetrics
from twisted_smtpd._twistd.workerprocess import PIPES_DEADLINE


def _killed() -> Failure:
    return Failure(ProcessTerminated(None, signal.SIGKILL))


class _Transport:
    """
    The pipes of a worker's process transport: which were closed.
    """

    def __init__(self) -> None:
        self.closed: list[int] = []

    def closeChildFD(self, fd: int) -> None:
        self.closed.append(fd)


class ReapOrderTests(_PoolTestCase):
    """
    What the parent keeps under a worker's pid (its metrics files) is dealt
    with when the worker is reaped, before any other process is started:
    never under a pid already given to a new process.
    """

    def test_foldedWhenReaped(self) -> None:
        """
        The ended worker's counters are added to the sums when it is
        reaped (C{processExited}), once: not again at C{processEnded}.
        """
        pool, clock, _ = self.pool()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        WorkerMetrics(pool, "tcp:0:interface=127.0.0.1", directory)
        ended: list[int] = []
        pool.onWorkerEnded.append(ended.append)
        (worker, process), _ = clock.spawned
        record(directory, f"counter_{process.pid}.db", {_COUNTER: 3.0})
        worker.processExited(_killed())
        self.assertEqual(ended, [process.pid])
        self.assertFalse(os.path.exists(os.path.join(directory, f"counter_{process.pid}.db")))
        worker.processEnded(_killed())
        self.assertEqual(ended, [process.pid])
        value = multiprocessRegistry(directory).get_sample_value("smtpd_test_total")
        self.assertEqual(value, 3.0)

    def test_pidReusedBeforeEnd(self) -> None:
        """
        A worker reaped while a process it started holds its pipes: its
        pid, free, is given to a worker started meanwhile (the other one,
        restarted).  The files the new worker writes under that pid stay
        its own when the first one's C{processEnded} finally comes.
        """
        pool, clock, _ = self.pool()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        WorkerMetrics(pool, "tcp:0:interface=127.0.0.1", directory)
        (first, firstProcess), (second, _) = clock.spawned
        record(directory, f"counter_{firstProcess.pid}.db", {_COUNTER: 3.0})
        first.processExited(_killed())
        second.processExited(_killed())
        second.processEnded(_killed())
        clock.advance(0.5)
        (new, newProcess) = clock.spawned[-1]
        self.assertIs(pool.workers[1][1], new)
        # The kernel gives the new worker the first one's pid.
        newProcess.pid = new.pid = firstProcess.pid
        record(directory, f"counter_{newProcess.pid}.db", {_COUNTER: 4.0})
        first.processEnded(_killed())
        path = os.path.join(directory, f"counter_{newProcess.pid}.db")
        self.assertTrue(os.path.exists(path))
        value = multiprocessRegistry(directory).get_sample_value("smtpd_test_total")
        self.assertEqual(value, 7.0)


class HeldPipesTests(_PoolTestCase):
    """
    A worker reaped whose pipes stay open (held by a process it started):
    the parent closes them after L{PIPES_DEADLINE}, so that the worker is
    started again and a stop ends.
    """

    def test_closedAfterDeadline(self) -> None:
        """
        L{PIPES_DEADLINE} seconds after the worker was reaped, its pipes
        are closed, with one line.
        """
        pool, clock, log = self.pool()
        (worker, _), _ = clock.spawned
        transport = _Transport()
        worker.makeConnection(transport)
        worker.processExited(_killed())
        clock.advance(PIPES_DEADLINE - 0.1)
        self.assertEqual(transport.closed, [])
        clock.advance(0.1)
        self.assertEqual(sorted(transport.closed), sorted(worker.childPipes))
        # Its standard input, the pipe it watches, its signs of life.
        self.assertEqual(len(transport.closed), 3)
        (line,) = log.matching("still holds its pipes")
        self.assertEqual(
            line,
            f"worker 0 (pid {worker.pid}) ended {PIPES_DEADLINE:g}s ago, but a process it"
            " started still holds its pipes; closed them",
        )
        # Closed, they end the worker as usual: it is started again.
        worker.processEnded(_killed())
        clock.advance(0.5)
        self.assertEqual(len(clock.spawned), 3)

    def test_noDeadlineOnceEnded(self) -> None:
        """
        Pipes closed in time (the rule): nothing more is closed, nothing
        more logged.
        """
        pool, clock, log = self.pool()
        (worker, _), _ = clock.spawned
        transport = _Transport()
        worker.makeConnection(transport)
        worker.processExited(_killed())
        worker.processEnded(_killed())
        clock.advance(PIPES_DEADLINE * 2)
        self.assertEqual(transport.closed, [])
        self.assertEqual(log.matching("still holds its pipes"), [])

    def test_stopEnds(self) -> None:
        """
        A stop waits for a worker whose pipes stay open no longer than
        L{PIPES_DEADLINE} after its end.
        """
        pool, clock, _ = self.pool(count=1)
        (worker, _) = clock.spawned[0]
        transport = _Transport()
        worker.makeConnection(transport)
        stopping = pool.stopService()
        worker.processExited(Failure(ProcessTerminated(None, signal.SIGTERM)))
        self.assertNoResult(stopping)
        clock.advance(PIPES_DEADLINE)
        self.assertEqual(sorted(transport.closed), sorted(worker.childPipes))
        worker.processEnded(Failure(ProcessTerminated(None, signal.SIGTERM)))
        self.successResultOf(stopping)

    def test_notKilledByWatchdog(self) -> None:
        """
        While its pipes stay open, a worker that has ended is not taken
        for a silent one by the watchdog (no line saying it was killed).
        """
        pool, clock, log = self.pool(count=1, workerTimeout=1.0)
        (worker, process) = clock.spawned[0]
        worker.makeConnection(_Transport())
        worker.processExited(_killed())
        for _ in range(8):
            clock.advance(0.25)
        self.assertEqual(log.matching("gave no sign of life"), [])
        self.assertEqual(process.signals, [])

    def test_notCountedAlive(self) -> None:
        """
        While its pipes stay open, a worker that has ended is not counted
        in C{smtpd_workers_alive}.
        """
        from twisted_smtpd._twistd.metricsservice import _WorkersCollector

        pool, clock, _ = self.pool()
        (worker, _), _ = clock.spawned
        worker.makeConnection(_Transport())
        worker.processExited(_killed())
        (family,) = _WorkersCollector(pool).collect()
        self.assertEqual(family.samples[0].value, 1.0)

    def test_notHealthyWithNoneAlive(self) -> None:
        """
        While its pipes stay open, a worker that has ended does not keep
        C{/healthz} answering 200: with no other worker running, none
        accepts connections.
        """
        pool, clock, _ = self.pool(count=1)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        metrics = WorkerMetrics(pool, "tcp:0:interface=127.0.0.1", directory)
        # Running, as /healthz sees it, without listening.
        metrics.running = True
        (worker, _) = clock.spawned[0]
        worker.makeConnection(_Transport())
        self.assertTrue(metrics._healthy())
        worker.processExited(_killed())
        self.assertFalse(metrics._healthy())
