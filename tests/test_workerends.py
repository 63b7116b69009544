"""
How the parent of C{--workers} logs a worker's end.
"""

from __future__ import annotations

import signal

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_deadlines import LogCatcher
from tests.test_workers import _ProcessReactor
from twisted_smtpd._twistd import workers
from twisted_smtpd._twistd.workers import WorkerPool


class EndedLineTests(SynchronousTestCase):
    """
    One line per worker that ends, naming it, its pid and how it ended.
    """

    def test_namesPidAndHow(self) -> None:
        """
        Each end is logged with the worker's index, its pid and how it
        ended: its exit status, or the signal that killed it by name and
        number (SIGKILL from the OOM killer, SIGSEGV from a crash).
        """
        log = LogCatcher(self)
        clock = _ProcessReactor()
        pool = WorkerPool([], 2, [], reactor=clock)
        pool.startService()
        self.addCleanup(pool.stopService)
        (first, _), (second, _) = clock.spawned
        first.processEnded(Failure(ProcessTerminated(None, signal.SIGKILL)))
        second.processEnded(Failure(ProcessTerminated(None, signal.SIGSEGV)))
        clock.advance(0.5)
        (third, _), (fourth, _) = clock.spawned[2:]
        third.processEnded(Failure(ProcessTerminated(1)))
        fourth.processEnded(Failure(ProcessDone(0)))
        self.assertEqual(
            log.matching(" ended "),
            [
                "worker 0 ended (pid 1000, killed by SIGKILL, signal 9); restarting in 0.5s",
                "worker 1 ended (pid 1001, killed by SIGSEGV, signal 11); restarting in 0.5s",
                "worker 0 ended (pid 1002, exit status 1); restarting in 1.0s",
                "worker 1 ended (pid 1003, exit status 0); restarting in 1.0s",
            ],
        )

    def test_howEnded(self) -> None:
        """
        A signal number no name is known for is given as a number.
        """
        howEnded = workers.howEnded
        self.assertEqual(howEnded(ProcessTerminated(None, 200)), "killed by signal 200")
        self.assertEqual(
            howEnded(ProcessTerminated(None, signal.SIGABRT)), "killed by SIGABRT, signal 6"
        )
        self.assertEqual(howEnded(ProcessTerminated(3)), "exit status 3")
