# -*- test-case-name: tests.test_workerstartsignals -*-
"""
A worker of C{twistd smtpd --workers N} keeps the signals the server
handles from its first moment: its parent starts it with them blocked, and
it keeps them (L{HELD <twisted_smtpd._twistd.heldsignals.HELD>}) before it
unblocks them.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.test_workers import _Process, _ProcessReactor
from twisted_smtpd._twistd import workerside
from twisted_smtpd._twistd.heldsignals import HeldSignals, blocked
from twisted_smtpd._twistd.workers import WorkerPool
from twisted_smtpd._twistd.workerside import runWorker


class _MaskReactor(_ProcessReactor):
    """
    Records the signals blocked in this thread as each process is started.
    """

    def __init__(self) -> None:
        super().__init__()
        self.masks: list[set[int]] = []

    def spawnProcess(self, protocol: Any, *args: object, **kw: Any) -> _Process:
        self.masks.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
        return super().spawnProcess(protocol, *args, **kw)


class SpawnTests(SynchronousTestCase):
    """
    The parent starts each worker with the signals the server handles
    blocked; its own are blocked only meanwhile.
    """

    def test_blockedWhileSpawning(self) -> None:
        """
        SIGHUP, SIGUSR1, SIGTERM and SIGINT are blocked while a worker is
        started, so that it starts with them blocked, and no longer after.
        """
        before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        clock = _MaskReactor()
        pool = WorkerPool([], 1, [], reactor=clock)
        pool._spawn(0)
        self.assertEqual(len(clock.masks), 1)
        self.assertTrue(set(HeldSignals.numbers) <= clock.masks[0], clock.masks[0])
        self.assertEqual(signal.pthread_sigmask(signal.SIG_BLOCK, []), before)


class RunWorkerKeepsTests(SynchronousTestCase):
    """
    L{runWorker} keeps the signals, then unblocks them, before C{twistd}
    runs.
    """

    def setUp(self) -> None:
        self.held = HeldSignals()
        self.patch(workerside, "HELD", self.held)
        for number in HeldSignals.numbers:
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        self.addCleanup(
            signal.pthread_sigmask, signal.SIG_SETMASK, signal.pthread_sigmask(signal.SIG_BLOCK, [])
        )
        self.patch(sys, "argv", ["-c"])

    def test_signalWhileBlockedKept(self) -> None:
        """
        A SIGINT and a SIGHUP that came while the worker had them blocked
        (its first moments) neither raise C{KeyboardInterrupt} nor end it:
        they are kept, for the server to act on once it runs; C{twistd}
        runs with them unblocked.
        """
        seen: list[set[int]] = []

        def run() -> None:
            seen.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, [])))

        with blocked(HeldSignals.numbers):
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGHUP)
            runWorker(run)
        self.assertFalse(set(HeldSignals.numbers) & seen[0])
        calls: list[int] = []
        self.held.handle(signal.SIGINT, lambda number, frame: calls.append(number))
        self.held.handle(signal.SIGHUP, lambda number, frame: calls.append(number))
        self.assertEqual(calls, [signal.SIGINT, signal.SIGHUP])

    def test_repeatKept(self) -> None:
        """
        In a worker, the same stop signal twice while it starts (systemd's
        SIGTERM to every process of the group, then its parent's) is kept
        as the first, ending nothing at once: its parent stops it.
        """
        import os

        killed: list[tuple[int, int]] = []
        self.patch(os, "kill", lambda pid, number: killed.append((pid, number)))
        runWorker(lambda: None)
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
        self.assertEqual(killed, [])
        calls: list[int] = []
        self.held.handle(signal.SIGTERM, lambda number, frame: calls.append(number))
        self.assertEqual(calls, [signal.SIGTERM])
