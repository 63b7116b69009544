# -*- test-case-name: tests.test_metricsaside -*-
"""
The unreadable files of ended workers that the parent of C{--workers
--metrics} sets aside (C{counter_PID.unreadable}) are bounded: one per kind
of file, the latest, however often a worker is started again and leaves
one; one line for each file set aside.
"""

from __future__ import annotations

import glob
import os
import signal

from twisted.internet.error import ProcessTerminated
from twisted.python.failure import Failure

from tests.test_metricsfold import OneWorkerPool, _counterFile
from twisted_smtpd._twistd.metricsservice import foldEndedWorker


class SetAsideBoundTests(OneWorkerPool):
    """
    A worker that leaves an unreadable file each time it ends, started
    again and again.
    """

    def corrupt(self, pid: int) -> None:
        """
        An empty counter file of C{pid}: a worker killed between making
        it and sizing it.
        """
        with open(os.path.join(self.directory, f"counter_{pid}.db"), "wb"):
            pass

    def unreadable(self) -> list[str]:
        return sorted(
            os.path.basename(p) for p in glob.glob(os.path.join(self.directory, "*.unreadable"))
        )

    def test_restartLoop(self) -> None:
        """
        Twenty workers in a row each leave an unreadable counter file: the
        directory keeps one, the last one's, and each was set aside with
        one line naming it.
        """
        pool, clock = self.pool()
        _counterFile(self.directory, "counter_ended.db", 5.0)
        pids = []
        for round in range(20):
            worker, _ = clock.spawned[-1]
            pids.append(worker.pid)
            self.corrupt(worker.pid or 0)
            worker.processEnded(Failure(ProcessTerminated(None, signal.SIGKILL)))
            # Started again, after a delay growing with each crash.
            for _ in range(600):
                if len(clock.spawned) == round + 2:
                    break
                clock.advance(1)
            self.assertEqual(len(clock.spawned), round + 2)
        self.assertEqual(self.unreadable(), [f"counter_{pids[-1]}.unreadable"])
        for pid in pids:
            (line,) = self.log.matching(f"counter_{pid}.db is unreadable")
            self.assertIn(f"set aside as counter_{pid}.unreadable", line)
        self.assertEqual(len(self.log.matching("set aside as")), 20)
        # The others' sum was never touched.
        self.assertTrue(os.path.exists(os.path.join(self.directory, "counter_ended.db")))

    def test_otherKindsKept(self) -> None:
        """
        Only the files set aside of the same kind go: the sum's
        (C{counter_ended.unreadable}), another kind's
        (C{gauge_max_7.unreadable}, C{histogram_7.unreadable}) and a file
        that is no worker's stay.
        """
        for name in [
            "counter_ended.unreadable",
            "gauge_max_7.unreadable",
            "histogram_7.unreadable",
            "counter_x7.unreadable",
        ]:
            with open(os.path.join(self.directory, name), "wb"):
                pass
        for pid in (8, 9):
            with open(os.path.join(self.directory, f"counter_{pid}.db"), "wb"):
                pass
            foldEndedWorker(self.directory, pid)
        self.assertEqual(
            self.unreadable(),
            [
                "counter_9.unreadable",
                "counter_ended.unreadable",
                "counter_x7.unreadable",
                "gauge_max_7.unreadable",
                "histogram_7.unreadable",
            ],
        )
        (line,) = self.log.matching("counter_9.db is unreadable")
        self.assertIn("replacing counter_8.unreadable", line)
