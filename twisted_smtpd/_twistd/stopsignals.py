# -*- test-case-name: tests.test_stopsignals -*-
"""
SIGTERM or SIGINT stops C{twistd smtpd} once, whenever it comes.

The reactor's handlers stop the reactor on each of them; a second one while
the first stop is under way (systemd's C{KillMode=control-group} signals
every worker of C{--workers} and their parent, which passes its own on;
an operator pressing Ctrl-C twice) would stop it again, which Twisted logs
as a critical C{ReactorNotRunning} traceback.  The graceful stop goes on
whatever the second signal says.

One that came while the server started, before the reactor ran, was kept
(L{HELD <twisted_smtpd._twistd.heldsignals.HELD>}): the reactor's handler
gets it once the reactor runs.
"""

from __future__ import annotations

import functools
import signal
import threading
from typing import Any

from twisted_smtpd._twistd.heldsignals import HELD, HeldSignals


class StopOnce:
    """
    Wraps the reactor's SIGTERM and SIGINT handlers, once it runs (it
    installs them as it starts): the first signal goes to the reactor's
    handler, any later one, or one after the reactor began stopping by
    other means, is ignored.  A signal kept before goes to the reactor's
    handler then.

    @ivar stopping: Whether the reactor was told to stop.
    """

    def __init__(self, reactor: Any, held: HeldSignals = HELD) -> None:
        """
        @param reactor: The reactor whose handlers to wrap.
        @param held: What kept the signals until the reactor ran.
        """
        self._reactor = reactor
        self._held = held
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
        if getattr(self._reactor, "_exitSignal", None) is not None:
            # The reactor's own handler had one already, between installing
            # itself and now (C{twistd} reads the same attribute to exit by
            # that signal): the stop is under way.
            self.stopping = True
        reactorHandlers = {
            signal.SIGTERM: getattr(self._reactor, "sigTerm", None),
            signal.SIGINT: getattr(self._reactor, "sigInt", None),
        }
        for number, reactorHandler in reactorHandlers.items():
            handler = signal.getsignal(number)
            if self._held.keeps(number):
                # The reactor installs no SIGINT handler over another one
                # than Python's own: it is the reactor's from now on.
                handler = reactorHandler
            if callable(handler):
                self._held.handle(number, functools.partial(self._received, handler))

    def _received(self, handler: Any, number: int, frame: Any) -> None:
        if self.stopping:
            return
        self.stopping = True
        handler(number, frame)
