"""
A handler's own gauges under C{--workers --metrics}, in the
C{prometheus_client} modes that keep the values of ended processes
(C{sum}, C{max}, C{min}, C{mostrecent}): folded into one file per mode as
workers end, what a scrape gives unchanged; in mode C{all}, a series per
pid by definition, left as they are.  With real multiprocess files.
"""

from __future__ import annotations

import os
import signal

from prometheus_client import Gauge
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from twisted.internet.error import ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_workers import _ProcessReactor
from twisted_smtpd._serving.metrics import multiprocessRegistry
from twisted_smtpd._twistd.metricsservice import WorkerMetrics, writeMetricsValue
from twisted_smtpd._twistd.workers import WorkerPool


def _known(mode: str) -> bool:
    """
    Whether the installed C{prometheus_client} has gauges in C{mode}
    (C{mostrecent} came after 0.17): files of a mode it does not know are
    never made.
    """
    try:
        Gauge("probe", "A probe.", registry=None, multiprocess_mode=mode)
    except ValueError:
        return False
    return True


#: The modes folded, and the one left as it is.
_MODES = tuple(mode for mode in ("sum", "max", "min", "mostrecent", "livesum") if _known(mode))


def _key(mode: str) -> str:
    return mmap_key(f"handler_{mode}", f"handler_{mode}", ["queue"], ["a"], "A handler's gauge.")


class HandlerGaugeTests(SynchronousTestCase):
    maxDiff = None

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        self.clock = _ProcessReactor()
        self.pool = WorkerPool([], 2, [], reactor=self.clock)
        WorkerMetrics(self.pool, "tcp:0:interface=127.0.0.1", self.directory)
        self.pool.startService()
        self.registry = multiprocessRegistry(self.directory)

    def gauges(self, pid: int, turn: int) -> None:
        """
        Worker C{pid} sets a gauge in each mode, its values and timestamps
        varying with C{turn} and the pid.
        """
        for mode in (*_MODES, "all"):
            d = MmapedDict(os.path.join(self.directory, f"gauge_{mode}_{pid}.db"))
            try:
                value = float((turn * 7 + pid) % 13) - 6.0
                # Distinct (a scrape keeps the first of equal ones, in
                # the order it lists the files), not in the order of ends.
                late = 1000.0 - turn * 2 - pid % 2
                timestamp = late if turn % 2 else 1.0 + turn * 2 + pid % 2
                writeMetricsValue(d, _key(mode), value, timestamp)
            finally:
                d.close()

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        found = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.startswith("handler_"):
                    found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    def test_foldedAsScraped(self) -> None:
        """
        Over 60 ends of workers, each scrape gives the same values just
        before and just after a worker's files are folded; gauges in the
        folded modes leave a bounded number of files, those in mode
        C{all} keep a series (and a file) per ended worker.
        """
        sizes = []
        ended = 0
        for turn in range(30):
            for _, process in list(self.clock.spawned[-2:]):
                self.gauges(process.pid, turn)
            for worker, _ in list(self.clock.spawned[-2:]):
                before = self.scrape()
                worker.processExited(Failure(ProcessTerminated(None, 9)))
                worker.processEnded(Failure(ProcessTerminated(None, 9)))
                ended += 1
                after = self.scrape()
                # The live gauge of the worker goes, as it should.
                before.pop(("handler_livesum", (("queue", "a"),)))
                after.pop(("handler_livesum", (("queue", "a"),)), None)
                self.assertEqual(before, after)
            names = os.listdir(self.directory)
            sizes.append(len([name for name in names if not name.startswith("gauge_all_")]))
            self.assertEqual(len([name for name in names if name.startswith("gauge_all_")]), ended)
            self.clock.advance(60.0)
        self.assertEqual(sizes, [sizes[0]] * 30, sorted(os.listdir(self.directory)))
        for mode in _MODES[:-1]:
            self.assertTrue(os.path.exists(os.path.join(self.directory, f"gauge_{mode}_ended.db")))
