"""
The files of the workers' metrics (C{prometheus_client}'s multiprocess
mode) once workers end: what they counted stays in the sums, in a number of
files that does not grow with the number of workers that ended.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from prometheus_client.mmap_dict import MmapedDict, mmap_key
from twisted.internet.error import ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_deadlines import LogCatcher
from tests.test_workers import _ProcessReactor
from twisted_smtpd._serving.metrics import multiprocessRegistry
from twisted_smtpd._twistd.metricsservice import WorkerMetrics, writeMetricsValue
from twisted_smtpd._twistd.workers import WorkerPool

_COUNTER = mmap_key("smtpd_test_total", "smtpd_test_total", [], [], "Things counted.")
_BUCKET = mmap_key("smtpd_test_seconds", "smtpd_test_seconds_bucket", ["le"], ["1.0"], "Times.")
_COUNT = mmap_key("smtpd_test_seconds", "smtpd_test_seconds_count", [], [], "Times.")
_OPEN = mmap_key("smtpd_test_open", "smtpd_test_open", [], [], "Open now.")


def record(directory: str, name: str, values: dict[str, float]) -> None:
    """
    Write C{values} into the file C{name} of C{directory}, as a worker's
    C{prometheus_client} does.
    """
    d = MmapedDict(os.path.join(directory, name))
    try:
        for key, value in values.items():
            writeMetricsValue(d, key, value, 0.0)
    finally:
        d.close()


class EndedWorkerFilesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="smtpd-metrics-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.clock = _ProcessReactor()
        self.pool = WorkerPool([], 2, [], reactor=self.clock)
        self.metrics = WorkerMetrics(self.pool, "tcp:0:interface=127.0.0.1", self.directory)
        # The pool alone: the metrics listener is not needed.
        self.pool.startService()
        self.addCleanup(self.pool.stopService)

    def work(self, pid: int, counted: float) -> None:
        record(self.directory, f"counter_{pid}.db", {_COUNTER: counted})
        record(self.directory, f"histogram_{pid}.db", {_BUCKET: counted, _COUNT: counted})
        record(self.directory, f"gauge_livesum_{pid}.db", {_OPEN: 1.0})

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """
        The value of sample C{name} a scrape gives.
        """
        registry = multiprocessRegistry(self.directory)
        value: float | None = registry.get_sample_value(name, labels)
        return value

    def test_countersStayFilesBounded(self) -> None:
        """
        Over 100 ends of workers (a worker dying at once, started again
        and again), each ended worker's counters and histograms stay in
        the sums and its open gauges leave them, while the directory holds
        the same number of files as after the first ends: a scrape reads
        them all, and they would otherwise grow for as long as the parent
        runs.
        """
        counted = 0.0
        sizes = []
        for turn in range(50):
            for _, process in list(self.clock.spawned[-2:]):
                self.work(process.pid, turn + 1.0)
                counted += turn + 1.0
            for worker, _ in list(self.clock.spawned[-2:]):
                worker.processEnded(Failure(ProcessTerminated(None, 9)))
            sizes.append(len(os.listdir(self.directory)))
            self.clock.advance(60.0)
        self.assertEqual(len(self.clock.spawned), 102)
        self.assertEqual(self.sample("smtpd_test_total"), counted)
        self.assertEqual(self.sample("smtpd_test_seconds_count"), counted)
        self.assertEqual(self.sample("smtpd_test_seconds_bucket", {"le": "1.0"}), counted)
        # No worker that wrote it runs any more.
        self.assertIsNone(self.sample("smtpd_test_open"))
        self.assertEqual(sizes, [sizes[0]] * 50, sorted(os.listdir(self.directory)))

    def test_liveWorkersCounted(self) -> None:
        """
        The files of workers running now are left as they are, and their
        counts added to those of the ended ones.
        """
        (first, firstProcess), (_, secondProcess) = self.clock.spawned
        self.work(firstProcess.pid, 3.0)
        self.work(secondProcess.pid, 4.0)
        first.processEnded(Failure(ProcessTerminated(None, 9)))
        self.assertEqual(self.sample("smtpd_test_total"), 7.0)
        self.assertEqual(self.sample("smtpd_test_open"), 1.0)
        self.assertTrue(
            os.path.exists(os.path.join(self.directory, f"counter_{secondProcess.pid}.db"))
        )
        self.assertFalse(
            os.path.exists(os.path.join(self.directory, f"counter_{firstProcess.pid}.db"))
        )

    def test_failureCountsNothingTwice(self) -> None:
        """
        If the sum cannot be written, the ended worker's files stay as
        they are, counted once, with one line saying so.
        """
        log = LogCatcher(self)
        (first, firstProcess), _ = self.clock.spawned
        self.work(firstProcess.pid, 3.0)
        # Where the new sum would be written: a directory, not a file.
        os.mkdir(os.path.join(self.directory, "counter_ended.new"))
        first.processEnded(Failure(ProcessTerminated(None, 9)))
        self.assertEqual(self.sample("smtpd_test_total"), 3.0)
        self.assertEqual(len(log.matching(f"metrics of ended worker pid {firstProcess.pid}")), 1)
