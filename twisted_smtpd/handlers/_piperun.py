# -*- test-case-name: tests.test_pipesession -*-
"""
One run of a C{--pipe} command (L{CommandRun}): its standard error kept, its
end awaited, and its kill, with every process below it, through pidfds
where Linux has them (see L{twisted_smtpd.handlers._processtree}).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from twisted_smtpd.handlers import _processtree

# How much standard error is kept to find its first line.
_STDERR_KEEP = 4096
# Seconds an exited command's output pipes may stay open.
_PIPE_GRACE = 1.0


class CommandRun(ProcessProtocol):
    """
    One run of the command for one message.

    Once the command has exited, its output pipes are given
    L{_PIPE_GRACE} seconds to be read to their end, then closed: a process
    it left running in the background with them open cannot hold the reply
    back.
    """

    def __init__(self, clock: Any) -> None:
        self.stderr = b""
        self.exited: Failure | None = None
        self.ended: Deferred[None] = Deferred()
        self._clock = clock
        self._closer: IDelayedCall | None = None
        self._root: _processtree.Process | None = None
        self._killing = False

    def connectionMade(self) -> None:
        """
        Hold the command by a pidfd (Linux), opened now: Twisted calls this
        before it first tries to reap the process, so its number is still
        its own.
        """
        pid = getattr(self.transport, "pid", None)
        if isinstance(pid, int):
            with contextlib.suppress(OSError):
                self._root = _processtree.handle(pid)

    def errReceived(self, data: bytes) -> None:
        if len(self.stderr) < _STDERR_KEEP:
            self.stderr += data[: _STDERR_KEEP - len(self.stderr)]

    def outReceived(self, data: bytes) -> None:
        """
        Standard output is discarded.
        """

    def processExited(self, reason: Failure) -> None:
        self.exited = reason
        self._releaseRoot()
        self._closer = self._clock.callLater(_PIPE_GRACE, self._closePipes)

    def _releaseRoot(self) -> None:
        root, self._root = self._root, None
        if root is not None:
            root.close()

    def _closePipes(self) -> None:
        self._closer = None
        if self.transport is not None:
            self.transport.loseConnection()

    def processEnded(self, reason: Failure) -> None:
        if self._closer is not None and self._closer.active():
            self._closer.cancel()
        self._closer = None
        self.exited = reason
        self._releaseRoot()
        self.ended.callback(None)

    def kill(self, inThread: Callable[..., object]) -> str | None:
        """
        Kill the command and the processes it started (on Linux), or close
        the pipes an exited command left open.

        The command is stopped (C{SIGSTOP}) here, at once; the processes
        below it are looked for (a walk of C{/proc}), stopped and killed
        with it in a thread, by C{inThread}.  Where pidfds exist (Linux
        5.3), every signal goes through one, so none can reach a process
        that took the number of one that ended.  A second call while the
        first kill is under way does nothing.

        @return: Why the command could not be stopped nor killed (a setuid
            program that took another real user), or C{None}.  The
            processes below it that could be stopped are killed all the
            same, never left stopped.
        """
        transport = self.transport
        if self.exited is None and transport is not None:
            if self._killing:
                return None
            root = self._root
            try:
                if root is not None:
                    root.send(signal.SIGSTOP)
                else:
                    transport.signalProcess("STOP")
            except (ProcessExitedAlready, ProcessLookupError):
                return None
            except OSError as e:
                problem: str | None = e.strerror or type(e).__name__
            else:
                problem = None
            self._killing = True
            if root is not None:
                # The thread gets a pidfd of its own, closed when it is
                # done: ours is closed when the command is reaped, maybe
                # before, and its number could then name another file.
                try:
                    target = root.duplicate()
                except OSError:
                    # No descriptor to be had (EMFILE): by number, as
                    # without pidfds, rather than left stopped for ever.
                    target = _processtree.Process(root.pid)
                inThread(_processtree.killTree, target, partial(target.send, signal.SIGKILL))
            else:
                pid = getattr(transport, "pid", None)
                inThread(
                    _processtree.killTree,
                    _processtree.Process(pid) if isinstance(pid, int) else None,
                    partial(transport.signalProcess, "KILL"),
                )
            return problem
        if self._closer is not None:
            # It exited but something holds its pipes: close them now.
            self._closer.cancel()
            self._closePipes()
        return None


class KillThreads:
    """
    Runs each kill in a thread of its own, and waits for those still
    running when the reactor shuts down.

    A kill never waits for a pool's thread: the handler's pool may be
    taken by spool writes to a disk that hangs, and a command past its time
    limit would stay stopped, its reply held back, until one came free.  A
    kill is a walk of C{/proc} and a few signals, over in milliseconds;
    the wait at shutdown is bounded by L{SHUTDOWN_WAIT} all the same.
    Without it, a command killed as the server stops (past
    C{closeTimeout}) could be left stopped for ever: C{twistd} ends by
    sending itself the signal that stopped it, and no thread of ours
    outlives that.
    """

    #: The longest the reactor's shutdown waits for kills under way.
    SHUTDOWN_WAIT = 10.0

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._threads: list[threading.Thread] = []
        self._watching = False
        self._shutDown = False

    def start(self, f: Callable[..., object], *args: object) -> None:
        """
        Run C{f} with C{args} in a new thread; here, at once, when no
        thread can be started or the reactor has shut down.
        """
        if self._shutDown:
            f(*args)
            return
        thread = threading.Thread(target=f, args=args, name="twisted-smtpd pipe kill")
        try:
            thread.start()
        except RuntimeError:
            # No thread to be had: better milliseconds of the reactor's
            # time than a command left stopped.
            f(*args)
            return
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        if not self._watching:
            add = getattr(self._reactor, "addSystemEventTrigger", None)
            if add is not None:
                self._watching = True
                add("during", "shutdown", self.join)

    def join(self) -> None:
        """
        Wait, L{SHUTDOWN_WAIT} seconds at most, for the kills under way;
        any later one runs at once, in the caller's thread.
        """
        self._shutDown = True
        deadline = time.monotonic() + self.SHUTDOWN_WAIT
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
