# -*- test-case-name: tests.test_stopsignals -*-
"""
A second SIGTERM or SIGINT while C{twistd smtpd} stops is ignored.

The reactor's handlers stop the reactor on each of them; a second one while
the first stop is under way (systemd's C{KillMode=control-group} signals
every worker of C{--workers} and their parent, which passes its own on;
an operator pressing Ctrl-C twice) would stop it again, which Twisted logs
as a critical C{ReactorNotRunning} traceback.  The graceful stop goes on
whatever the second signal says.
"""

from __future__ import annotations

import functools
import signal
import threading
from typing import Any


class StopOnce:
    """
    Wraps the reactor's SIGTERM and SIGINT handlers, once it runs (it
    installs them as it starts): the first signal goes to the reactor's
    handler, any later one, or one after the reactor began stopping by
    other means, is ignored.

    @ivar stopping: Whether the reactor was told to stop.
    """

    def __init__(self, reactor: Any) -> None:
        """
        @param reactor: The reactor whose handlers to wrap.
        """
        self._reactor = reactor
        self.stopping = False

    def install(self) -> None:
        """
        Wrap the handlers once the reactor runs (in the main thread only,
        where signals can be handled).
        """
        if threading.current_thread() is not threading.main_thread():
            return
        self._reactor.addSystemEventTrigger("before", "shutdown", self._stopped)
        self._reactor.callWhenRunning(self._wrap)

    def _stopped(self) -> None:
        self.stopping = True

    def _wrap(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(number)
            if callable(handler):
                signal.signal(number, functools.partial(self._received, handler))

    def _received(self, handler: Any, number: int, frame: Any) -> None:
        if self.stopping:
            return
        self.stopping = True
        handler(number, frame)
