"""
Tests for the directory the workers of C{--workers} write their metrics
into: removed by the last worker out once their parent is gone, never while
the parent or another worker still holds it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._twistd.workerside import (
    METRICS_LOCK,
    ParentWatch,
    holdMetricsDirectory,
    removeMetricsDirectory,
)


class MetricsDirectoryTests(SynchronousTestCase):
    """
    L{holdMetricsDirectory} and L{removeMetricsDirectory}: a shared lock
    per living process, the directory removed by the last to leave.
    """

    def directory(self) -> str:
        directory = tempfile.mkdtemp(prefix="smtpd-metrics-")
        self.addCleanup(shutil.rmtree, directory, True)
        with open(os.path.join(directory, "counter_1.db"), "wb") as f:
            f.write(b"x")
        return directory

    def test_lastWorkerRemoves(self) -> None:
        """
        Once the parent's lock is gone (killed, its descriptors closed by
        the kernel), the first worker to leave keeps the directory, which
        the other still writes into; the last removes it.
        """
        directory = self.directory()
        parent = holdMetricsDirectory(directory, create=True)
        first = holdMetricsDirectory(directory)
        second = holdMetricsDirectory(directory)
        assert parent is not None and first is not None and second is not None
        os.close(parent)
        self.assertFalse(removeMetricsDirectory(directory, first))
        self.assertTrue(os.path.isdir(directory))
        self.assertTrue(removeMetricsDirectory(directory, second))
        self.assertFalse(os.path.exists(directory))

    def test_parentAlive(self) -> None:
        """
        While the parent holds its lock, no worker removes the directory,
        however many leave (they are started again).
        """
        directory = self.directory()
        parent = holdMetricsDirectory(directory, create=True)
        assert parent is not None
        self.addCleanup(os.close, parent)
        for _ in range(2):
            worker = holdMetricsDirectory(directory)
            assert worker is not None
            self.assertFalse(removeMetricsDirectory(directory, worker))
        self.assertEqual(sorted(os.listdir(directory)), ["counter_1.db", METRICS_LOCK])

    def test_notLockedByParent(self) -> None:
        """
        A directory without the parent's lock file (one the worker was
        not given by its parent) is never locked, so never removed; the
        lock file is never followed through a symbolic link.
        """
        directory = self.directory()
        self.assertIsNone(holdMetricsDirectory(directory))
        self.assertEqual(os.listdir(directory), ["counter_1.db"])
        elsewhere = self.directory()
        os.symlink(os.path.join(elsewhere, "counter_1.db"), os.path.join(directory, METRICS_LOCK))
        self.assertIsNone(holdMetricsDirectory(directory))
        self.assertIsNone(holdMetricsDirectory(directory, create=True))

    def watch(self, directory: str) -> tuple[ParentWatch, Any, int, list[tuple[Any, ...]]]:
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        memory = MemoryReactor()
        memory.running = True
        memory.hasStopped = False
        registered: list[tuple[Any, ...]] = []

        def atExit(function: Callable[..., object], *args: object) -> None:
            registered.append((function, *args))

        watch = ParentWatch(readEnd, reactor=memory, metricsDirectory=directory, atExit=atExit)
        watch.startService()
        (reader,) = memory.getReaders()
        return watch, reader, writeEnd, registered

    def test_workerRemovesAtExitOnceParentGone(self) -> None:
        """
        A worker holds the metrics directory from its start; once its
        parent is gone it removes it at exit (after its transactions have
        ended), if it is the last.
        """
        directory = self.directory()
        parent = holdMetricsDirectory(directory, create=True)
        assert parent is not None
        watch, reader, writeEnd, registered = self.watch(directory)
        reader.doRead()
        self.assertEqual(registered, [])
        os.close(parent)
        os.close(writeEnd)
        reader.doRead()
        (call,) = registered
        self.assertTrue(os.path.isdir(directory))
        call[0](*call[1:])
        self.assertFalse(os.path.exists(directory))

    def test_workerWithoutParentLock(self) -> None:
        """
        A worker given a directory its parent did not lock does nothing
        with it when the parent is gone.
        """
        directory = self.directory()
        watch, reader, writeEnd, registered = self.watch(directory)
        os.close(writeEnd)
        reader.doRead()
        self.assertEqual(registered, [])
        self.assertEqual(os.listdir(directory), ["counter_1.db"])
