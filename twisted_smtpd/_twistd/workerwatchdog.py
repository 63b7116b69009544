# -*- test-case-name: tests.test_workerswatchdog -*-
"""
The watchdog of C{twistd smtpd --workers N}: a worker whose reactor stops
running (stopped by SIGSTOP, a handler that blocks, a loop that never
ends) is killed and started again.

Each worker's socket is its own (C{SO_REUSEPORT}): the kernel goes on
handing a worker that no longer runs its share of new connections, which
would wait for ever for their greeting.  So every worker's reactor writes a
sign of life (the number of sessions it holds, so that the parent can say
how many a worker that died took with it) on a pipe to its parent every
few seconds (L{Heartbeat}); the parent (L{Watchdog}) kills with SIGKILL a worker it has
heard nothing from, not even that it is ready, for C{--worker-timeout}
seconds, with one line naming the worker, its pid and how long it was
silent, and starts it again as any worker that ended.  Its socket stays
open in the parent meanwhile: the connections waiting in its backlog are
answered by the worker started in its place.  Postfix's daemons kill
themselves the same way (C{daemon_timeout}).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from twisted.internet.error import ProcessExitedAlready
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

#: The environment variable that tells a worker where to write its signs
#: of life and how often: C{fd,seconds}.
HEARTBEAT = "TWISTED_SMTPD_HEARTBEAT"

#: The default of C{--worker-timeout}: a reactor that runs nothing for a
#: minute is broken, whatever its worker is busy with.
DEFAULT_TIMEOUT = 60.0


#: Seconds a worker still starting (not yet ready) is given at least, under
#: a shorter C{--worker-timeout}: Python's imports and the certificates
#: take a second or more on a loaded machine, and a worker killed each time
#: it starts would never serve.
START_TIMEOUT = 10.0


def heartbeatInterval(timeout: float) -> float:
    """
    How often a worker gives a sign of life, and its parent looks for
    silent workers, under C{--worker-timeout} C{timeout}: every 5 seconds,
    or 4 times within a shorter timeout.
    """
    return min(5.0, timeout / 4)


def heartbeatPipe(environ: dict[str, str] | None = None) -> tuple[int, float] | None:
    """
    Where and how often a worker gives its signs of life, as C{(fd,
    seconds)}, or C{None} (not a worker, or its parent watches none).
    """
    value = (environ if environ is not None else os.environ).get(HEARTBEAT, "")
    fd, _, seconds = value.partition(",")
    try:
        interval = float(seconds)
    except ValueError:
        return None
    if not fd.isdigit() or not 0 < interval < float("inf"):
        return None
    return int(fd), interval


class Heartbeat:
    """
    In a worker: write a sign of life on the pipe to the parent every
    C{interval} seconds, from the reactor, so that a reactor that runs
    nothing any more writes nothing.  A parent that does not read (the pipe
    full) or is gone costs nothing but the failed write.
    """

    def __init__(
        self, fd: int, interval: float, reactor: Any, sessions: Callable[[], int] | None = None
    ) -> None:
        """
        @param sessions: Gives how many sessions the worker holds: each
            sign of life is then that number and a line end (C{b"3\\n"}),
            so that the parent can say how many a worker that died took
            with it; without it, one octet.
        """
        self._sessions = sessions
        self._fd = fd
        self._interval = interval
        self._call = LoopingCall(self._beat)
        self._call.clock = reactor

    def start(self) -> None:
        os.set_blocking(self._fd, False)
        # A process this worker starts never holds the pipe: once this
        # worker is killed, its parent learns of its end only when every
        # copy of its pipes is closed.
        os.set_inheritable(self._fd, False)
        self._call.start(self._interval, now=True)

    def _beat(self) -> None:
        sign = b"."
        if self._sessions is not None:
            sign = b"%d\n" % self._sessions()
        try:
            os.write(self._fd, sign)
        except BlockingIOError:
            pass
        except OSError:
            # The parent is gone (EPIPE): the pipe from it says so too.
            self._call.stop()


class Watchdog:
    """
    In the parent: every L{heartbeatInterval}, kill each worker silent for
    C{timeout} seconds (one not ready yet, for L{START_TIMEOUT} seconds
    when that is longer).

    A worker's C{lastSign} (the reactor's time) is when it was started,
    said it is ready, or wrote a sign of life; C{ready} whether it said it
    is ready; C{killed} is set once it is
    killed (so that a process slow to go is neither signalled nor logged
    again), C{index} and C{pid} name it.
    """

    _log = Logger()

    def __init__(
        self, timeout: float, workers: Callable[[], Iterable[tuple[Any, Any]]], reactor: Any
    ) -> None:
        """
        @param workers: Gives the C{(process, worker)} pairs running now.
        """
        self.timeout = timeout
        self.interval = heartbeatInterval(timeout)
        self._workers = workers
        self._reactor = reactor
        self._lastCheck = 0.0
        self._call = LoopingCall(self.check)
        self._call.clock = reactor

    def start(self) -> None:
        self._lastCheck = self._reactor.seconds()
        self._call.start(self.interval, now=False)

    def stop(self) -> None:
        if self._call.running:
            self._call.stop()

    def check(self) -> None:
        """
        Kill the workers silent for the timeout.  Not when this check comes
        late: this process was held up itself (stopped, its machine
        suspended), and the signs its workers wrote meanwhile wait unread in
        their pipes, read before the next check.
        """
        now = self._reactor.seconds()
        late = now - self._lastCheck > 2 * self.interval
        self._lastCheck = now
        if late:
            return
        for process, worker in list(self._workers()):
            silent = now - worker.lastSign
            # One still starting gets the time to: at least START_TIMEOUT.
            limit = self.timeout if worker.ready else max(self.timeout, START_TIMEOUT)
            # One that has ended already, its pipes still open, is not
            # silent: it waits for them to close.
            if worker.killed or getattr(worker, "exited", False) or silent < limit:
                continue
            worker.killed = True
            self._log.warn(
                "worker {index} (pid {pid}) gave no sign of life for {silent}s; killed"
                " (--worker-timeout {timeout})",
                index=worker.index,
                pid=worker.pid,
                silent=round(silent),
                timeout=f"{self.timeout:g}",
            )
            with suppress(ProcessExitedAlready):
                process.signalProcess("KILL")
