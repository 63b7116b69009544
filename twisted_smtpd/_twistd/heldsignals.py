# -*- test-case-name: tests.test_stopsignals -*-
"""
No signal C{twistd smtpd} handles is lost or fatal while it starts or stops.

The server handles SIGHUP (it reloads the certificates) and SIGUSR1 (it
reopens the log file) once it runs; before, their default action ends the
process (SIGHUP's terminates it; SIGUSR1's too).  A reload racing with a
restart (certbot's deploy hook, logrotate's C{postrotate} while the service
manager restarts the server) would then kill a server that is starting, or
one that has stopped serving and is about to exit cleanly.  So from the
moment C{twistd} hands its command line to C{smtpd} (L{HELD.install}) until
the process exits, either the server's handler or L{HELD}'s is in place:
L{HELD}'s keeps the signal, and the server, starting, acts on a signal kept
before it (L{HeldSignals.handle}); after the server stopped, the signal is
kept and nothing more.

SIGTERM and SIGINT stop the server once its reactor runs, by the reactor's
handlers (L{StopOnce <twisted_smtpd._twistd.stopsignals.StopOnce>}).
Before, SIGTERM's default action killed the process at once, leaving its
pid file behind, and SIGINT raised C{KeyboardInterrupt} wherever the
process was, which the reactor's start (its startup triggers, a
L{Deferred <twisted.internet.defer.Deferred>}'s callbacks) swallows: an
operator's Ctrl-C right after the start was lost, the server went on
serving.  They are kept the same way, from the same moment, until the
reactor runs: then the reactor's handler stops it as for a signal that
came then.  The same one again before (a second Ctrl-C: a start that hangs,
a handler that cannot be made) ends the process at once, by that signal,
with one line on standard error, as it did before it was kept.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

Handler = Callable[[int, Any], object]


class HeldSignals:
    """
    Keeps SIGHUP, SIGUSR1, SIGTERM and SIGINT while no server handles them.
    """

    numbers = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._held: set[int] = set()
        self.installed = False
        #: Whether the same stop signal twice before the server runs ends
        #: the process at once (not in a worker of C{--workers}, L{keep}).
        self.repeatEnds = True

    def install(self) -> None:
        """
        Keep the signals from now on instead of dying of them (in the main
        thread only, where signals can be handled).
        """
        if self.installed or threading.current_thread() is not threading.main_thread():
            return
        for number in self.numbers:
            signal.signal(number, self._received)
        self.installed = True

    def _received(self, number: int, frame: Any) -> None:
        if number in self._held and number in _STOPS and self.repeatEnds:
            _endAtOnce(number)
        self._held.add(number)

    def keeps(self, number: int) -> bool:
        """
        Whether signal C{number} is kept here: no other handler took it.
        """
        return bool(signal.getsignal(number) == self._received)

    def handle(self, number: int, handler: Handler) -> Any:
        """
        Have C{handler} handle signal C{number} from now on, and call it at
        once if the signal came while it was kept here.

        @return: The handler in place before (L{HELD}'s own once installed),
            to put back when the server stops.
        """
        previous = signal.signal(number, handler)
        if number in self._held:
            self._held.discard(number)
            handler(number, None)
        return previous


@contextmanager
def blocked(numbers: Iterable[int]) -> Iterator[None]:
    """
    Block signals C{numbers} in this thread meanwhile: one that comes waits,
    pending, until they are unblocked.  A process started meanwhile starts
    with them blocked, until it unblocks them itself (L{keep}).
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, numbers)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def keep(held: HeldSignals) -> None:
    """
    In a process started with the signals of C{held} blocked (L{blocked}):
    keep them from now on (L{HeldSignals.install}), then unblock them, so
    that one that came meanwhile is kept too.

    Such a process is a worker of C{--workers}, which its parent stops and
    kills after its stop timeout: the same stop signal twice while it starts
    (systemd's C{KillMode=control-group} signals every process of the
    group, then the parent passes its own on) is kept as the first.
    """
    held.repeatEnds = False
    held.install()
    if held.installed:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held.numbers)


#: The signals that stop the server.
_STOPS = (signal.SIGTERM, signal.SIGINT)


def _endAtOnce(number: int) -> None:
    """
    End the process by signal C{number}, at once, with one line on the
    process's standard error (not the log, which is not written yet).
    """
    name = signal.Signals(number).name
    stream = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
    with suppress(OSError, ValueError):
        stream.write(f"twistd smtpd: {name} again while starting; stopped at once\n")
        stream.flush()
    signal.signal(number, signal.SIG_DFL)
    os.kill(os.getpid(), number)


#: The process's one L{HeldSignals}.
HELD = HeldSignals()
