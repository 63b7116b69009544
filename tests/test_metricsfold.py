"""
The parent of C{--workers --metrics} adds an ended worker's counters into
those of the workers that ended before it (L{foldEndedWorker}): with real
C{prometheus_client} files, including ones a worker left unreadable.
"""

from __future__ import annotations

import os
import signal
import struct

from prometheus_client import generate_latest
from twisted.internet.error import ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_deadlines import LogCatcher
from tests.test_workers import _ProcessReactor
from twisted_smtpd._serving.metrics import multiprocessRegistry
from twisted_smtpd._twistd.metricsservice import (
    WorkerMetrics,
    foldEndedWorker,
    readMetricsFile,
    writeMetricsValue,
)
from twisted_smtpd._twistd.workers import WorkerPool

#: A key as C{prometheus_client} writes it.
_KEY = '["smtpd_connections_total", "smtpd_connections_total", {}, "help"]'


def _counterFile(directory: str, name: str, value: float) -> str:
    """
    Write a real multiprocess counter file holding C{value} under L{_KEY}.
    """
    from prometheus_client.mmap_dict import MmapedDict

    path = os.path.join(directory, name)
    d = MmapedDict(path)
    try:
        writeMetricsValue(d, _KEY, value, 0.0)
    finally:
        d.close()
    return path


class OneWorkerPool(SynchronousTestCase):
    """
    A metrics directory, a log catcher, and a pool of one worker with
    C{--metrics} (L{pool}).
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.log = LogCatcher(self)

    def pool(self) -> tuple[WorkerPool, _ProcessReactor]:
        """
        A pool of one worker with C{--metrics} in L{directory}, started.
        """
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        clock = _ProcessReactor()
        pool = WorkerPool([], 1, [], reactor=clock)
        WorkerMetrics(pool, "tcp:0:interface=127.0.0.1", self.directory)
        pool.startService()
        return pool, clock


class UnreadableFileTests(OneWorkerPool):
    """
    A worker's file the parent cannot read (cut short: a worker killed
    while it made it, a disk that filled) costs its own counts at most:
    one line says so, the worker is started again, the sums of the others
    stay whole and nothing is counted twice; the unreadable file is set
    aside, so that the scrapes still serve the others' sums.
    """

    def corrupt(self, pid: int, data: bytes) -> str:
        """
        A real counter file of C{pid}, then overwritten from its start
        with C{data} and cut after it.
        """
        path = _counterFile(self.directory, f"counter_{pid}.db", 3.0)
        with open(path, "r+b") as f:
            f.write(data)
            f.truncate(len(data))
        return path

    def assertRestartedAfter(self, data: bytes) -> None:
        pool, clock = self.pool()
        _counterFile(self.directory, "counter_ended.db", 5.0)
        worker, _ = clock.spawned[0]
        path = self.corrupt(worker.pid or 0, data)
        worker.processEnded(Failure(ProcessTerminated(None, signal.SIGKILL)))
        clock.advance(0.5)
        # Started again, one line saying the worker's counts were not added.
        self.assertEqual(len(clock.spawned), 2)
        (line,) = self.log.matching("could not be added")
        self.assertIn(f"pid {worker.pid}", line)
        # The others' sum is whole; the unreadable file was not counted in.
        ended = readMetricsFile(os.path.join(self.directory, "counter_ended.db"))
        self.assertEqual([(key, value) for key, value, _ in ended], [(_KEY, 5.0)])
        # Set aside, out of the scrapes' way: they serve the others' sum.
        self.assertFalse(os.path.exists(path))
        self.assertTrue(os.path.exists(path[: -len(".db")] + ".unreadable"))
        text = generate_latest(multiprocessRegistry(self.directory)).decode("utf-8")
        self.assertIn("\nsmtpd_connections_total 5.0\n", text)

    def test_emptyFile(self) -> None:
        """
        An empty file (a worker killed between creating it and sizing it).
        """
        self.assertRestartedAfter(b"")

    def test_cutFile(self) -> None:
        """
        A file whose header says more is used than it holds.
        """
        self.assertRestartedAfter(b"\x00\x10\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00ab")

    def test_garbageEntry(self) -> None:
        """
        An entry whose length runs past what the header says is used.
        """
        self.assertRestartedAfter(b"\x20\x00\x00\x00\x00\x00\x00\x00\xff\xff\x00\x00" + b"x" * 20)

    def test_keyNotJSON(self) -> None:
        """
        An entry whose key is no metric's (no JSON): added into the sum, it
        would fail every scrape from then on.
        """
        key = b"not json"
        padded = key + b" " * (8 - (len(key) + 4) % 8)
        entry = struct.pack(f"i{len(padded)}sdd", len(key), padded, 1.0, 0.0)
        self.assertRestartedAfter(struct.pack("i", 8 + len(entry)) + b"\0" * 4 + entry)

    def test_unreadableSum(self) -> None:
        """
        The sum of the workers that ended before is unreadable: it is set
        aside, with one line, and the ended worker's counts start a new
        sum; its own file goes; the worker is started again.
        """
        pool, clock = self.pool()
        ended = os.path.join(self.directory, "counter_ended.db")
        with open(ended, "wb") as f:
            f.write(b"\x01")
        worker, _ = clock.spawned[0]
        path = _counterFile(self.directory, f"counter_{worker.pid}.db", 2.0)
        worker.processEnded(Failure(ProcessTerminated(None, signal.SIGKILL)))
        clock.advance(0.5)
        self.assertEqual(len(clock.spawned), 2)
        self.assertEqual(self.log.matching("could not be added"), [])
        self.assertEqual(len(self.log.matching("counter_ended.db is unreadable")), 1)
        self.assertEqual([value for _, value, _ in readMetricsFile(ended)], [2.0])
        self.assertFalse(os.path.exists(path))
        self.assertTrue(os.path.exists(os.path.join(self.directory, "counter_ended.unreadable")))

    def test_foldStillAdds(self) -> None:
        """
        Readable files are still added up, the worker's own removed.
        """
        _counterFile(self.directory, "counter_ended.db", 5.0)
        path = _counterFile(self.directory, "counter_77.db", 2.0)
        foldEndedWorker(self.directory, 77)
        ended = readMetricsFile(os.path.join(self.directory, "counter_ended.db"))
        self.assertEqual([(key, value) for key, value, _ in ended], [(_KEY, 7.0)])
        self.assertFalse(os.path.exists(path))
