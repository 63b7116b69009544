# -*- test-case-name: tests.test_stopsignals -*-
"""
L{StopOnce}: a second SIGTERM or SIGINT while the reactor stops is ignored.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._twistd.stopsignals import StopOnce


class _Reactor:
    """
    Records the triggers and the calls made once running.
    """

    def __init__(self) -> None:
        self.whenRunning: list[Callable[[], object]] = []
        self.beforeShutdown: list[Callable[[], object]] = []

    def callWhenRunning(self, f: Callable[[], object]) -> None:
        self.whenRunning.append(f)

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], object]) -> None:
        assert (phase, event) == ("before", "shutdown")
        self.beforeShutdown.append(f)


class StopOnceTests(SynchronousTestCase):
    """
    The reactor's stop handlers see one signal only.
    """

    def setUp(self) -> None:
        self.received: list[int] = []
        for number in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
            signal.signal(number, self.reactorHandler)
        self.reactor = _Reactor()
        StopOnce(self.reactor).install()
        # The reactor runs: its handlers (here reactorHandler) are in place.
        for f in self.reactor.whenRunning:
            f()

    def reactorHandler(self, number: int, frame: Any) -> None:
        self.received.append(number)

    def deliver(self, number: int) -> None:
        handler = signal.getsignal(number)
        assert callable(handler)
        handler(number, None)

    def test_secondSignalIgnored(self) -> None:
        """
        The first SIGTERM reaches the reactor's handler; a second SIGTERM or
        a SIGINT after it does not.
        """
        self.deliver(signal.SIGTERM)
        self.deliver(signal.SIGTERM)
        self.deliver(signal.SIGINT)
        self.assertEqual(self.received, [signal.SIGTERM])

    def test_afterOtherStop(self) -> None:
        """
        Once the reactor began stopping by other means (the parent of a
        worker gone), SIGTERM is ignored.
        """
        for f in self.reactor.beforeShutdown:
            f()
        self.deliver(signal.SIGTERM)
        self.assertEqual(self.received, [])

    def test_firstSignalPassedOn(self) -> None:
        """
        SIGINT alone reaches the reactor's handler.
        """
        self.deliver(signal.SIGINT)
        self.assertEqual(self.received, [signal.SIGINT])


class HeldSignalsTests(SynchronousTestCase):
    """
    L{HeldSignals}: SIGHUP and SIGUSR1 are kept while no server handles
    them, and handed to the server's handler when it takes over.
    """

    def setUp(self) -> None:
        for number in (signal.SIGHUP, signal.SIGUSR1):
            self.addCleanup(signal.signal, number, signal.getsignal(number))

    def test_keptThenHandled(self) -> None:
        """
        Once installed, the signals are kept (the process lives); the
        handler that takes over is called once for a kept signal, and the
        handler it replaced is returned, to be put back at the stop.
        """
        from twisted_smtpd._twistd.heldsignals import HeldSignals

        held = HeldSignals()
        held.install()
        signal.raise_signal(signal.SIGHUP)
        signal.raise_signal(signal.SIGHUP)
        signal.raise_signal(signal.SIGUSR1)
        calls: list[int] = []
        previous = held.handle(signal.SIGHUP, lambda number, frame: calls.append(number))
        self.assertEqual(calls, [signal.SIGHUP])
        signal.raise_signal(signal.SIGHUP)
        self.assertEqual(calls, [signal.SIGHUP, signal.SIGHUP])
        signal.signal(signal.SIGHUP, previous)
        signal.raise_signal(signal.SIGHUP)
        self.assertEqual(calls, [signal.SIGHUP, signal.SIGHUP])
        held.handle(signal.SIGUSR1, lambda number, frame: calls.append(number))
        self.assertEqual(calls, [signal.SIGHUP, signal.SIGHUP, signal.SIGUSR1])
