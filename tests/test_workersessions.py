# -*- test-case-name: tests.test_workersessions -*-
"""
C{twistd smtpd --workers}: the parent says how many sessions a worker
that died held, and a worker's reload failure names the worker.
"""

from __future__ import annotations

import os
import signal

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_deadlines import LogCatcher
from tests.test_workers import _exited, _ProcessReactor
from twisted_smtpd._twistd import workers
from twisted_smtpd._twistd.workers import PARENT_PIPE, WorkerPool
from twisted_smtpd._twistd.workerwatchdog import Heartbeat


class DeadWorkerSessionsTests(SynchronousTestCase):
    """
    The parent learns each worker's session count from its signs of life.
    """

    def setUp(self) -> None:
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        self.log = LogCatcher(self)
        self.clock = _ProcessReactor()
        self.pool = WorkerPool([], 2, [], reactor=self.clock)
        self.pool.startService()
        self.addCleanup(self.stop)
        (self.first, _), (self.second, _) = self.clock.spawned
        self.first.inConnectionLost()
        self.second.inConnectionLost()

    def stop(self) -> None:
        stopping = self.pool.stopService()
        for worker, _ in self.clock.spawned:
            if not worker.ended.called:
                worker.processEnded(_exited(0))
        self.successResultOf(stopping)

    def sign(self, worker: workers._Worker, data: bytes) -> None:
        assert worker.heartbeatFD is not None
        worker.childDataReceived(worker.heartbeatFD, data)

    def test_deadWorkerSessionsLogged(self) -> None:
        """
        A worker that dies (the OOM killer, a crash) while it holds
        sessions is logged by the parent with how many it held at its last
        sign of life and how long before: their connections are lost, its
        clients' messages not acknowledged are sent again.  A worker that
        held none adds no line.
        """
        self.sign(self.first, b"1")
        self.sign(self.first, b"2\n")
        self.sign(self.second, b"0\n")
        self.clock.advance(3)
        self.first.processEnded(_exited(None, signal.SIGKILL))
        self.second.processEnded(_exited(None, signal.SIGKILL))
        self.assertEqual(
            self.log.matching("sessions at its last sign"),
            [
                "worker 0 (pid 1000) held 12 sessions at its last sign of life, 3s before it"
                " ended: any still open were cut"
            ],
        )
        self.assertEqual(
            len(self.log.matching("worker 0 ended (pid 1000, killed by SIGKILL, signal 9)")), 1
        )

    def test_signsBounded(self) -> None:
        """
        What is not a count is a sign of life and nothing more; a line too
        long for a count is dropped, never kept growing.
        """
        self.sign(self.first, b"3\n.")
        self.sign(self.first, b"9" * 40)
        self.sign(self.first, b"9" * 40 + b"\n")
        self.assertEqual(self.first.sessions, 3)
        self.assertLess(len(self.first._sign), 20)
        self.sign(self.first, b"x\n5\nzz")
        self.assertEqual(self.first.sessions, 5)

    def test_workerToldItsIndex(self) -> None:
        """
        Each worker is told its index, for its own lines to name it.
        """
        self.assertEqual([env[workers.WORKER_INDEX] for env in self.clock.environments], ["0", "1"])


class HeartbeatCountTests(SynchronousTestCase):
    """
    A worker's signs of life carry its session count.
    """

    def test_countWritten(self) -> None:
        """
        Each sign of life is the number of sessions and a line end.
        """
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        self.addCleanup(os.close, writeEnd)
        clock = Clock()
        sessions = [4]
        heartbeat = Heartbeat(writeEnd, 5.0, clock, lambda: sessions[0])
        heartbeat.start()
        sessions[0] = 0
        clock.advance(5)
        heartbeat._call.stop()
        self.assertEqual(os.read(readEnd, 100), b"4\n0\n")


class WorkerNameTests(SynchronousTestCase):
    """
    L{workerName}: how a worker's own lines name it.
    """

    def test_names(self) -> None:
        """
        A worker is named by its index and pid; an index that is not a
        small number is left out (never written into the log); outside a
        worker there is no name.
        """
        from twisted_smtpd._twistd.workerside import workerName

        pid = os.getpid()
        environ = {PARENT_PIPE: "7", workers.WORKER_INDEX: "2"}
        self.assertEqual(workerName(environ), f"worker 2, pid {pid}")
        environ[workers.WORKER_INDEX] = "2\x1b[31m"
        self.assertEqual(workerName(environ), f"worker pid {pid}")
        self.assertIsNone(workerName({workers.WORKER_INDEX: "2"}))
