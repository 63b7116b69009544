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


class _RunningReactor(_Reactor):
    """
    A L{_Reactor} with the reactor's own stop handlers, recording the
    signals they get.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stops: list[int] = []
        #: The signal the reactor's own handler last got, as Twisted's
        #: reactor records it.
        self._exitSignal: int | None = None

    def sigInt(self, number: int, frame: Any = None) -> None:
        self.stops.append(number)

    def sigTerm(self, number: int, frame: Any = None) -> None:
        self.stops.append(number)


class StopWhileStartingTests(SynchronousTestCase):
    """
    SIGTERM and SIGINT that come while the server starts, before the
    reactor runs, are kept (L{HeldSignals}), then handed to the reactor's
    handlers (L{StopOnce}) once it runs.
    """

    def setUp(self) -> None:
        from twisted_smtpd._twistd.heldsignals import HeldSignals

        for number in HeldSignals.numbers:
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        self.held = HeldSignals()
        self.held.install()
        self.reactor = _RunningReactor()
        StopOnce(self.reactor, self.held).install()

    def startReactor(self) -> None:
        """
        Start the reactor as Twisted's does: its SIGTERM handler replaces
        any, its SIGINT handler only Python's own (so not a kept one); then
        what runs once it runs.
        """
        signal.signal(signal.SIGTERM, self.reactor.sigTerm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self.reactor.sigInt)
        for f in self.reactor.whenRunning:
            f()

    def deliver(self, number: int) -> None:
        handler = signal.getsignal(number)
        assert callable(handler)
        handler(number, None)

    def test_sigintBeforeRunning(self) -> None:
        """
        A SIGINT before the reactor runs (a Ctrl-C right after the start)
        raises no C{KeyboardInterrupt} where the process is, which its start
        could swallow: the reactor's handler gets it once the reactor runs.
        """
        signal.raise_signal(signal.SIGINT)
        self.assertEqual(self.reactor.stops, [])
        self.startReactor()
        self.assertEqual(self.reactor.stops, [signal.SIGINT])

    def test_sigtermBeforeRunning(self) -> None:
        """
        A SIGTERM before the reactor runs ends no process at once: the
        reactor's handler gets it once the reactor runs.
        """
        signal.raise_signal(signal.SIGTERM)
        self.startReactor()
        self.assertEqual(self.reactor.stops, [signal.SIGTERM])

    def test_sigintOnceRunning(self) -> None:
        """
        Once the reactor runs, SIGINT, which the reactor left to the
        handler that kept it, reaches the reactor's handler; a second is
        ignored, as a second SIGTERM.
        """
        self.startReactor()
        self.deliver(signal.SIGINT)
        self.deliver(signal.SIGINT)
        self.deliver(signal.SIGTERM)
        self.assertEqual(self.reactor.stops, [signal.SIGINT])

    def test_bothBeforeRunning(self) -> None:
        """
        SIGTERM and SIGINT both before the reactor runs stop it once.
        """
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        self.startReactor()
        self.assertEqual(len(self.reactor.stops), 1)

    def test_reactorHandlerBeforeWrapped(self) -> None:
        """
        A SIGTERM that reached the reactor's own handler once it was in
        place, before L{StopOnce} wrapped it (the reactor's handler records
        it as the signal to exit by), stops the reactor alone: a SIGINT
        kept before (a worker's Ctrl-C, then its parent's SIGTERM) or one
        after stops it no second time, which Twisted logs as a critical
        C{ReactorNotRunning} traceback.
        """
        signal.raise_signal(signal.SIGINT)
        signal.signal(signal.SIGTERM, self.reactor.sigTerm)
        self.deliver(signal.SIGTERM)
        self.reactor._exitSignal = signal.SIGTERM
        for f in self.reactor.whenRunning:
            f()
        self.deliver(signal.SIGINT)
        self.assertEqual(self.reactor.stops, [signal.SIGTERM])

    def test_sameAgainEndsAtOnce(self) -> None:
        """
        The same stop signal twice before the reactor runs (a second
        Ctrl-C on a start that hangs) ends the process at once by it, as
        the signal's default does, with one line on standard error.
        """
        import io
        import os
        import sys

        err = io.StringIO()
        self.patch(sys, "__stderr__", err)
        killed: list[tuple[int, int]] = []
        self.patch(os, "kill", lambda pid, number: killed.append((pid, number)))
        self.deliver(signal.SIGINT)
        self.assertEqual(killed, [])
        self.deliver(signal.SIGINT)
        self.assertEqual(killed, [(os.getpid(), signal.SIGINT)])
        self.assertIs(signal.getsignal(signal.SIGINT), signal.SIG_DFL)
        self.assertEqual(
            err.getvalue(), "twistd smtpd: SIGINT again while starting; stopped at once\n"
        )
