# -*- test-case-name: tests.test_workers -*-
"""
One worker process of C{twistd smtpd --workers N}, seen from its parent:
its log lines, its signs of life, its readiness and its end.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

#: The longest sign of life kept while it waits for its end: a session
#: count of up to 16 digits.
_MAX_SIGN = 17

#: The longest piece of a worker's log held back while it waits for the
#: end of its line.
_MAX_PARTIAL = 1 << 20

#: Seconds the pipes to a worker whose process has ended may stay open
#: (held by a process it started) before its parent closes them.
PIPES_DEADLINE = 5.0


class _Worker(ProcessProtocol):
    """
    One worker process, seen from its parent's L{WorkerPool
    <twisted_smtpd._twistd.workers.WorkerPool>} (C{pool}).
    """

    def __init__(self, pool: Any, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ended: Deferred[None] = Deferred()
        #: When it was started (the reactor's time).
        self.started = 0.0
        #: Its process id, once started.
        self.pid: int | None = None
        #: Whether it said it is ready (its reactor runs, its signal
        #: handlers are in place) by closing its standard input.
        self.ready = False
        #: Whether a SIGHUP came before it was ready, to pass on once it is.
        self.hangupPending = False
        #: When it was started, said it is ready or gave a sign of life
        #: (L{Watchdog}), and whether the watchdog killed it.
        self.lastSign = 0.0
        self.killed = False
        #: The descriptor of the pipe it watches (L{PARENT_PIPE
        #: <twisted_smtpd._twistd.workers.PARENT_PIPE>}), once started.
        self.parentPipeFD: int | None = None
        #: The descriptor of its signs of life, if it gives any.
        self.heartbeatFD: int | None = None
        #: How many sessions it said it held at its last sign of life, and
        #: when (the reactor's time); C{None} before its first count.
        self.sessions: int | None = None
        self.sessionsAt = 0.0
        #: The child descriptors that are pipes to this process (its
        #: standard input and output, the pipe it watches, its signs of
        #: life), closed by L{PIPES_DEADLINE} after its end at the latest.
        self.childPipes: list[int] = []
        #: Whether its process ended and was reaped (L{processExited}).
        self.exited = False
        self._pipesDeadline: IDelayedCall | None = None
        self._sign = b""
        self._partial = b""
        self._dropping = False

    def connectionMade(self) -> None:
        """
        Keep the process id at once: a process that ends before
        C{spawnProcess} returns (Twisted reaps it there) has none by then.
        """
        self.pid = getattr(self.transport, "pid", None)

    def outReceived(self, data: bytes) -> None:
        """
        Pass the worker's whole log lines on; the start of a line waits for
        its end (up to L{_MAX_PARTIAL}).
        """
        if self._dropping:
            # The rest of a line too long to pass on, up to its end.
            end = data.find(b"\n") + 1
            if end == 0:
                return
            self._dropping = False
            data = data[end:]
        data = self._partial + data
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        if end:
            self.pool._workerLog(self, data[:end])
        if len(self._partial) >= _MAX_PARTIAL:
            # Never passed on in pieces, each of which could pass for a
            # line of the log (or, in JSON, be no JSON at all).
            self._partial = b""
            self._dropping = True
            self.pool._log.warn(
                "worker {index}: a log line over {limit} octets dropped",
                index=self.index,
                limit=_MAX_PARTIAL,
            )

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == self.heartbeatFD:
            self.lastSign = self.pool.reactor.seconds()
            self._countSessions(data)
        else:
            super().childDataReceived(childFD, data)

    def _countSessions(self, data: bytes) -> None:
        """
        Keep the last session count the worker's signs of life gave (each
        a number and a line end, L{Heartbeat
        <twisted_smtpd._twistd.workerwatchdog.Heartbeat>}); anything else
        is a sign of life and nothing more.
        """
        *lines, rest = (self._sign + data).split(b"\n")
        self._sign = rest if len(rest) < _MAX_SIGN else b""
        for line in reversed(lines):
            if line.isdigit() and len(line) < _MAX_SIGN:
                self.sessions = int(line)
                self.sessionsAt = self.lastSign
                return

    def inConnectionLost(self) -> None:
        """
        The worker closed its standard input: it is ready
        (L{closeStandardInput
        <twisted_smtpd._twistd.workerside.closeStandardInput>}), or gone.
        """
        self.ready = True
        self.lastSign = self.pool.reactor.seconds()
        self.pool._workerReady(self)

    def outConnectionLost(self) -> None:
        """
        The worker's output ended (as a rule, the worker did): its last
        line, unfinished if it died while writing it, is passed on.
        """
        partial, self._partial = self._partial, b""
        if partial and not self._dropping:
            self.pool._workerLog(self, partial, cut=True)

    def processExited(self, reason: Failure) -> None:
        """
        The process ended and was reaped (Twisted calls this at once after
        C{waitpid}): its pid is free from now on, given to the next process
        started on this machine perhaps, so what is kept under it (the
        metrics files) is dealt with now, before this process starts any
        other (L{WorkerPool._workerExited
        <twisted_smtpd._twistd.workers.WorkerPool._workerExited>}).

        L{processEnded} comes once every pipe to the process is closed: as
        a rule at once, but a process it started (a handler's command)
        holds the copies it inherited (its standard output) for as long as
        it runs.  Those are closed after L{PIPES_DEADLINE} seconds, so that
        the worker is started again, and a stop ends, all the same.
        """
        if self.exited:
            return
        self.exited = True
        self.pool._workerExited(self)
        self._pipesDeadline = self.pool.reactor.callLater(PIPES_DEADLINE, self._closePipes)

    def _closePipes(self) -> None:
        self._pipesDeadline = None
        self.pool._log.warn(
            "worker {index} (pid {pid}) ended {deadline}s ago, but a process it started still"
            " holds its pipes; closed them",
            index=self.index,
            pid=self.pid,
            deadline=f"{PIPES_DEADLINE:g}",
        )
        transport = self.transport
        if transport is not None:
            for fd in self.childPipes:
                transport.closeChildFD(fd)

    def processEnded(self, reason: Failure) -> None:
        deadline, self._pipesDeadline = self._pipesDeadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()
        if not self.exited:
            self.exited = True
            self.pool._workerExited(self)
        self.ended.callback(None)
        self.pool._workerEnded(self, reason)
