# -*- test-case-name: tests.test_stopsignals -*-
"""
SIGHUP and SIGUSR1 never end C{twistd smtpd}, whenever they come.

The server handles them once it runs (SIGHUP reloads the certificates,
SIGUSR1 reopens the log file); before, their default action ends the
process (SIGHUP's terminates it; SIGUSR1's too).  A reload racing with a
restart (certbot's deploy hook, logrotate's C{postrotate} while the service
manager restarts the server) would then kill a server that is starting, or
one that has stopped serving and is about to exit cleanly.  So from the
moment C{twistd} hands its command line to C{smtpd} (L{HELD.install}) until
the process exits, either the server's handler or L{HELD}'s is in place:
L{HELD}'s keeps the signal, and the server, starting, acts on a signal kept
before it (L{HeldSignals.handle}); after the server stopped, the signal is
kept and nothing more.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

Handler = Callable[[int, Any], object]


class HeldSignals:
    """
    Keeps SIGHUP and SIGUSR1 while no server handles them.
    """

    numbers = (signal.SIGHUP, signal.SIGUSR1)

    def __init__(self) -> None:
        self._held: set[int] = set()
        self.installed = False

    def install(self) -> None:
        """
        Keep SIGHUP and SIGUSR1 from now on instead of dying of them (in
        the main thread only, where signals can be handled).
        """
        if self.installed or threading.current_thread() is not threading.main_thread():
            return
        for number in self.numbers:
            signal.signal(number, self._received)
        self.installed = True

    def _received(self, number: int, frame: Any) -> None:
        self._held.add(number)

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


#: The process's one L{HeldSignals}.
HELD = HeldSignals()
