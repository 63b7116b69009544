"""
Tests for the directory the workers of C{--workers} write their metrics
into: removed by the last worker out once their parent is gone, never while
the parent lives or another worker still holds it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._twistd.workerside import (
    METRICS_LOCK,
    ParentWatch,
    holdMetricsDirectory,
    markMetricsDirectory,
    removeMetricsDirectory,
)


def directory(case: SynchronousTestCase, marked: bool = True) -> str:
    """
    A metrics directory holding one worker's file, marked by its parent
    (L{markMetricsDirectory}) unless C{marked} is false.
    """
    path = tempfile.mkdtemp(prefix="smtpd-metrics-")
    case.addCleanup(shutil.rmtree, path, True)
    with open(os.path.join(path, "counter_1.db"), "wb") as f:
        f.write(b"x")
    if marked:
        markMetricsDirectory(path)
    return path


class MetricsDirectoryTests(SynchronousTestCase):
    """
    L{holdMetricsDirectory} and L{removeMetricsDirectory}: a shared lock
    per living worker, the directory removed by the last to leave.
    """

    def test_lastWorkerRemoves(self) -> None:
        """
        The first worker to leave keeps the directory, which the other
        still writes into; the last removes it.
        """
        path = directory(self)
        first = holdMetricsDirectory(path)
        second = holdMetricsDirectory(path)
        assert first is not None and second is not None
        self.assertFalse(removeMetricsDirectory(path, first))
        self.assertTrue(os.path.isdir(path))
        self.assertTrue(removeMetricsDirectory(path, second))
        self.assertFalse(os.path.exists(path))

    def test_notMarkedByParent(self) -> None:
        """
        A directory without its parent's lock file (one the worker was not
        given by its parent) is never locked, so never removed; the lock
        file is never followed through a symbolic link, nor made through
        one.
        """
        path = directory(self, marked=False)
        self.assertIsNone(holdMetricsDirectory(path))
        self.assertEqual(os.listdir(path), ["counter_1.db"])
        elsewhere = directory(self, marked=False)
        target = os.path.join(elsewhere, "target")
        os.symlink(target, os.path.join(path, METRICS_LOCK))
        self.assertIsNone(holdMetricsDirectory(path))
        markMetricsDirectory(path)
        self.assertFalse(os.path.exists(target))


class ParentWatchMetricsTests(SynchronousTestCase):
    """
    L{ParentWatch} with a metrics directory: held from the worker's start,
    removed once its reactor has stopped if its parent is gone by then.
    """

    def watch(self, path: str) -> tuple[ParentWatch, MemoryReactor, Any, int]:
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        memory = MemoryReactor()
        memory.running = True
        memory.hasStopped = False
        watch = ParentWatch(readEnd, reactor=memory, metricsDirectory=path)
        watch.startService()
        (reader,) = memory.getReaders()
        return watch, memory, reader, writeEnd

    def stopped(self, memory: MemoryReactor) -> None:
        """
        Run what the reactor runs once it has stopped.
        """
        for function, args, kw in memory.triggers.get("after", {}).get("shutdown", []):
            function(*args, **kw)

    def test_parentGone(self) -> None:
        """
        A worker whose parent is gone removes the directory once its
        reactor has stopped (its transactions have ended), not before.
        """
        path = directory(self)
        watch, memory, reader, writeEnd = self.watch(path)
        os.close(writeEnd)
        reader.doRead()
        self.assertTrue(watch.parentGone)
        self.assertTrue(os.path.isdir(path))
        self.stopped(memory)
        self.assertFalse(os.path.exists(path))

    def test_parentGoneWhileStopping(self) -> None:
        """
        A worker already stopping (SIGTERM) goes on watching its parent:
        a parent killed then is seen, and the directory removed once the
        reactor has stopped, even if the pipe's end was not read by then.
        """
        path = directory(self)
        watch, memory, reader, writeEnd = self.watch(path)
        watch.stopService()
        self.assertEqual(memory.getReaders(), [reader])
        os.close(writeEnd)
        self.assertFalse(watch.parentGone)
        self.stopped(memory)
        self.assertFalse(os.path.exists(path))

    def test_parentAlive(self) -> None:
        """
        A worker that stops while its parent lives (stopped by it, or
        started again) leaves the directory to the parent.
        """
        path = directory(self)
        watch, memory, reader, writeEnd = self.watch(path)
        self.addCleanup(os.close, writeEnd)
        self.stopped(memory)
        self.assertEqual(sorted(os.listdir(path)), ["counter_1.db", METRICS_LOCK])

    def test_parentAliveAfterShutdown(self) -> None:
        """
        A worker that stops by itself while its parent lives (SIGTERM sent
        to it alone) leaves the directory to its parent, which starts
        another worker in its place, though its reactor's shutdown stopped
        watching the pipe (disconnecting every reader) first.
        """
        path = directory(self)
        watch, memory, reader, writeEnd = self.watch(path)
        self.addCleanup(os.close, writeEnd)
        watch.stopService()
        reader.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(watch.parentGone)
        self.stopped(memory)
        self.assertEqual(sorted(os.listdir(path)), ["counter_1.db", METRICS_LOCK])

    def test_parentStopping(self) -> None:
        """
        A worker whose parent said it stops (before it passed SIGTERM on)
        removes the directory once its reactor has stopped, the parent
        still there: it may die before it removes it, and starts no other
        worker.
        """
        from twisted_smtpd._twistd.workers import PARENT_STOPPING

        path = directory(self)
        watch, memory, reader, writeEnd = self.watch(path)
        self.addCleanup(os.close, writeEnd)
        os.write(writeEnd, PARENT_STOPPING)
        reader.doRead()
        self.assertTrue(watch.parentStopping)
        self.assertFalse(watch.parentGone)
        watch.stopService()
        reader.connectionLost(Failure(ConnectionDone()))
        self.stopped(memory)
        self.assertFalse(os.path.exists(path))

    def test_notMarked(self) -> None:
        """
        A worker given a directory its parent did not mark does nothing
        with it when the parent is gone.
        """
        path = directory(self, marked=False)
        watch, memory, reader, writeEnd = self.watch(path)
        os.close(writeEnd)
        reader.doRead()
        self.stopped(memory)
        self.assertEqual(os.listdir(path), ["counter_1.db"])
