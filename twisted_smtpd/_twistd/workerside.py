# -*- test-case-name: tests.test_workers -*-
"""
The worker's side of C{twistd smtpd --workers N}: it stops when its parent
is gone.

Workers never outlive their parent: each is handed the reading end of a pipe
whose writing end only the parent holds (L{PARENT_PIPE
<twisted_smtpd._twistd.workers.PARENT_PIPE>} names it).  When the parent
dies, even by SIGKILL (the OOM killer), the kernel closes that end, the
worker reads end-of-file (L{ParentWatch}) and stops: it stops accepting at
once, lets its transactions finish within the close timeout, and exits.
Unlike Linux's C{PR_SET_PDEATHSIG}, a pipe works on every POSIX system and
cannot miss a parent that died before the worker started watching.

With C{--metrics}, every worker holds a shared lock on a file in the
directory the workers write their metrics into (L{holdMetricsDirectory})
while it lives.  A parent killed outright cannot remove that directory;
each of its workers, once stopped, releases its lock and removes the
directory if no other worker still holds one (L{removeMetricsDirectory}):
the last worker out removes it, once nothing writes there any more.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from twisted.application.service import Service
from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._serving.logwriter import BufferedLogWriter
from twisted_smtpd._twistd.heldsignals import HELD, keep
from twisted_smtpd._twistd.startcopies import useCopiesFromParent
from twisted_smtpd._twistd.tapconfig import _sameFile as sameFile
from twisted_smtpd._twistd.tapconfig import reason
from twisted_smtpd._twistd.workercert import removeSharedCertificate
from twisted_smtpd._twistd.workers import PARENT_PIPE, WORKER_INDEX
from twisted_smtpd._twistd.workerwatchdog import Heartbeat, heartbeatPipe

#: The file in the workers' metrics directory that every worker holds a
#: shared lock on while it lives; its parent makes it.
METRICS_LOCK = "processes.lock"


def markMetricsDirectory(directory: str) -> None:
    """
    In the parent, which made the metrics directory C{directory}: make its
    lock file, which its workers lock (L{holdMetricsDirectory}).  The
    parent holds no lock itself: its workers learn of its end from the
    pipe from it, and a lock it held would be released only as its other
    descriptors close, after that pipe's.
    """
    with suppress(OSError):
        path = os.path.join(directory, METRICS_LOCK)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


def holdMetricsDirectory(directory: str) -> int | None:
    """
    In a worker: take a shared lock on the lock file its parent made in
    the metrics directory C{directory}, held until the descriptor returned
    is closed or this process ends, however it ends.  A directory without
    that file (not made by a parent for its workers) is never locked, so
    never removed.

    @return: The descriptor holding the lock, or C{None} if it could not
        be taken.
    """
    try:
        fd = os.open(
            os.path.join(directory, METRICS_LOCK), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        )
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def removeMetricsDirectory(directory: str, fd: int) -> bool:
    """
    Release this process's lock on the metrics directory C{directory}
    (L{holdMetricsDirectory}), then remove the directory if no other
    worker holds a lock on it any more: one that still writes there while
    its transactions end.  Called only once the parent is gone.

    Of workers leaving at the same moment at least one finds the others'
    locks gone, since a process that fails to take the lock holds none.

    @return: Whether the directory was removed.
    """
    os.close(fd)
    try:
        probe = os.open(os.path.join(directory, METRICS_LOCK), os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        # Removed already, by the last of the others.
        return False
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    else:
        shutil.rmtree(directory, ignore_errors=True)
        return True
    finally:
        os.close(probe)


#: The longest reason L{runWorker} passes on.
_MAX_REASON = 1000


def runWorker(run: Callable[[], object] | None = None) -> None:
    """
    Run C{twistd} in a worker (the command its parent starts).

    The signals the server handles (L{HELD}) are kept from the first: from
    its start until it runs, none ends it, nor is lost, nor raises
    C{KeyboardInterrupt}.

    An exception that ends it before it serves (its C{--handler} cannot be
    made, say) is written to standard error with its traceback, as
    C{twistd} does; the parent's log, where standard error does not go,
    gets one line saying why besides: it is written to standard output,
    the pipe to the parent, which logs it naming the worker, just before
    its line saying the worker ended.

    @param run: C{twistd}'s entry point (L{twisted.scripts.twistd.run}).
    """
    if run is None:
        from twisted.scripts import twistd

        run = twistd.run
    sys.argv[0] = "twistd"
    # Its parent started it with these signals blocked: one that came since
    # (the terminal's Ctrl-C to its process group, the parent's SIGTERM)
    # waits, and is kept from now on until the worker runs.
    keep(HELD)
    # Before the command line is read: it names the files.
    useCopiesFromParent()
    if parentPipe() is not None:
        keepPipesFromChildren()
    try:
        run()
    except Exception as e:
        text = f"{type(e).__name__}: {reason(e)}"
        if len(text) > _MAX_REASON:
            text = text[:_MAX_REASON] + "..."
        stdout, stderr = sys.__stdout__, sys.__stderr__
        if stdout is not None and not sameFile(stdout, stderr):
            with suppress(OSError, ValueError):
                stdout.write(f"twistd smtpd: worker cannot start: {text}\n")
                stdout.flush()
        raise


def stdoutToStderr() -> None:
    """
    In a worker whose parent is gone: standard output (the pipe to the
    parent) becomes standard error, so that the worker's last lines still
    reach whoever reads that.
    """
    os.dup2(2, 1)


#: The worker's own copy of the pipe from its parent that was its standard
#: input, once moved aside (L{keepPipesFromChildren}).
_readiness: list[int] = []


def keepPipesFromChildren(environ: dict[str, str] | None = None) -> None:
    """
    In a worker, before its handler is made: the processes it starts (a
    handler's command) inherit none of the pipes from its parent but its
    standard output and error.  A copy held by such a process for as long
    as it runs would hide what the parent learns from their ends: that the
    worker is ready (the parent passes SIGHUP only to a worker it saw
    ready), or gone (L{ParentWatch}).

    Standard input, the pipe whose end tells the parent the worker is
    ready (L{closeStandardInput}), moves to a descriptor of its own that
    no process started inherits; standard input becomes C{/dev/null}.
    """
    heartbeat = heartbeatPipe(environ)
    for fd in (parentPipe(environ), heartbeat[0] if heartbeat else None):
        if fd is not None:
            with suppress(OSError):
                os.set_inheritable(fd, False)
    with suppress(OSError):
        kept = os.dup(0)
        _readiness.append(kept)
        null = os.open(os.devnull, os.O_RDONLY)
        if null != 0:
            os.dup2(null, 0)
            os.close(null)


def closeStandardInput() -> None:
    """
    In a worker that is ready: close the pipe from the parent that is its
    standard input (or was, L{keepPipesFromChildren}; standard input
    becomes C{/dev/null}), which tells the parent it is ready.
    """
    while _readiness:
        with suppress(OSError):
            os.close(_readiness.pop())
    fd = os.open(os.devnull, os.O_RDONLY)
    if fd != 0:
        os.dup2(fd, 0)
        os.close(fd)


def parentPipe(environ: dict[str, str] | None = None) -> int | None:
    """
    The descriptor of the pipe from a worker's parent, or C{None} outside a
    worker.
    """
    value = (environ if environ is not None else os.environ).get(PARENT_PIPE, "")
    return int(value) if value.isdigit() else None


def workerName(environ: dict[str, str] | None = None) -> str | None:
    """
    How a worker's log lines name it, as its parent's do: C{"worker 1,
    pid 4242"} (its index from L{WORKER_INDEX}, digits only, and its
    pid), or C{None} outside a worker.
    """
    variables = environ if environ is not None else os.environ
    if PARENT_PIPE not in variables:
        return None
    index = variables.get(WORKER_INDEX, "")
    if index.isdigit() and index.isascii() and len(index) <= 6:
        return f"worker {int(index)}, pid {os.getpid()}"
    return f"worker pid {os.getpid()}"


class _PipeReader(FileDescriptor):
    """
    Reads the pipe from the parent, which writes nothing but
    L{PARENT_STOPPING <twisted_smtpd._twistd.workers.PARENT_STOPPING>}
    when it stops: any end of it means the parent is gone.
    """

    def __init__(self, fd: int, gone: Any, reactor: Any, stopping: Any = None) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._gone = gone
        self._stopping = stopping

    def fileno(self) -> int:
        return self._fd

    def _ended(self) -> bool:
        """
        Whether the pipe has ended: the parent's end is closed.
        """
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if data and self._stopping is not None:
            # All the parent ever writes: it is stopping.
            self._stopping()
        return not data

    def doRead(self) -> Any:
        if self._ended():
            self.stopReading()
            self._gone()
        return None

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor saw the pipe hang up (the parent's end closed) without
        anything to read: the parent is gone.  Or the reactor is shutting
        down and disconnects every reader (a worker stopping on its
        parent's SIGTERM): the pipe is still open, the parent (as a rule)
        still there, and nothing is logged; L{ParentWatch} looks again once
        the reactor has stopped.
        """
        self.stopReading()
        if self._ended():
            self._gone()


class ParentWatch(Service):
    """
    In a worker: stop the reactor (a graceful stop: listeners close at once,
    transactions get the close timeout) when the parent is gone, which the
    pipe from it says by its end.

    @ivar parentGone: Whether the parent was seen gone.
    """

    _log = Logger()

    def __init__(
        self,
        fd: int,
        *,
        reactor: Any = None,
        logToStderr: BufferedLogWriter | None = None,
        sharedCertificate: str | None = None,
        announceReady: Callable[[], object] | None = None,
        metricsDirectory: str | None = None,
        heartbeat: tuple[int, float] | None = None,
        sessions: Callable[[], int] | None = None,
    ) -> None:
        """
        @param fd: The worker's end of the pipe from its parent.
        @param reactor: The reactor (the global one by default).
        @param logToStderr: The worker's log writer, whose standard output
            goes to the parent: once the parent is gone, standard output
            becomes standard error (L{stdoutToStderr}) before the writer
            writes again.
        @param sharedCertificate: The directory of the certificate the
            parent made for its workers (L{SharedCertificate
            <twisted_smtpd._twistd.workercert.SharedCertificate>}), which
            the worker has read: removed once the parent is gone, since a
            parent killed by SIGKILL cannot remove it.
        @param announceReady: Called once the reactor runs, to tell the
            parent the worker is ready (L{closeStandardInput}).
        @param metricsDirectory: The directory the parent made for its
            workers' metrics (C{PROMETHEUS_MULTIPROC_DIR}), locked while
            this worker lives (L{holdMetricsDirectory}): once the parent is
            gone, the last worker to exit removes it
            (L{removeMetricsDirectory}), since a parent killed by SIGKILL
            cannot.
        @param heartbeat: The pipe to the parent for this worker's signs of
            life and their interval (L{heartbeatPipe
            <twisted_smtpd._twistd.workerwatchdog.heartbeatPipe>}): written
            from the time the reactor runs, so that the parent kills this
            worker if its reactor stops running.
        @param sessions: Gives how many sessions the worker holds, told to
            the parent with each sign of life (L{Heartbeat}).
        """
        self._sessions = sessions
        self._heartbeat = heartbeat
        self._metricsDirectory = metricsDirectory
        self._metricsLock: int | None = None
        self._announceReady = announceReady
        self._sharedCertificate = sharedCertificate
        self._fd = fd
        self._reactor = reactor
        self._writer = logToStderr
        self._reader: _PipeReader | None = None
        self.parentGone = False
        #: Whether the parent said it is stopping (L{PARENT_STOPPING
        #: <twisted_smtpd._twistd.workers.PARENT_STOPPING>}).
        self.parentStopping = False

    def startService(self) -> None:
        """
        Watch the pipe.
        """
        super().startService()
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        if self._metricsDirectory is not None:
            self._metricsLock = holdMetricsDirectory(self._metricsDirectory)
        os.set_blocking(self._fd, False)
        self._reader = _PipeReader(self._fd, self._gone, self._reactor, self._parentStops)
        self._reader.startReading()
        if self._sharedCertificate is not None or self._metricsLock is not None:
            # Once the reactor has stopped, not at exit: a worker stopped by
            # a signal ends by that signal again (as twistd does), running
            # no exit handlers.
            self._reactor.addSystemEventTrigger("after", "shutdown", self._stopped)
        # Once the reactor runs, its signal handlers are in place: from then
        # on SIGTERM stops this worker gracefully.  Say so, so that whoever
        # watches the log knows when the worker is ready.
        self._reactor.callWhenRunning(self._ready)

    def _ready(self) -> None:
        self._log.info("worker ready, pid {pid}", pid=os.getpid())
        if self._heartbeat is not None:
            Heartbeat(*self._heartbeat, self._reactor, self._sessions).start()
        if self._announceReady is not None:
            self._announceReady()

    def stopService(self) -> None:
        """
        Go on watching while the worker stops: a parent killed while its
        workers finish their transactions (after it passed SIGTERM on)
        cannot remove what it made for them either.
        """
        super().stopService()

    def _stopped(self) -> None:
        """
        Once the worker's reactor has stopped, and it writes its metrics
        no more: if the
        parent is gone (seen by now, or in the last moments of the stop),
        or stopping (it may die in these last moments, and starts no
        other worker), remove the shared certificate, and the metrics
        directory if this worker is the last to leave it.  A parent still
        running (this worker stopped alone: a SIGTERM sent to it) starts
        another worker in its place, which reads them: they stay.
        """
        if not self.parentGone and not self._parentLeaving():
            return
        if self._sharedCertificate is not None:
            removeSharedCertificate(self._sharedCertificate)
        lock, self._metricsLock = self._metricsLock, None
        if self._metricsDirectory is not None and lock is not None:
            removeMetricsDirectory(self._metricsDirectory, lock)

    def _parentLeaving(self) -> bool:
        """
        Whether the parent is gone or said it is stopping, by now.
        """
        try:
            os.read(self._fd, 1)
        except OSError:
            # Nothing to read: the parent is there.
            return self.parentStopping
        # Its end (gone), or what it writes when it stops.
        return True

    def _parentStops(self) -> None:
        self.parentStopping = True

    def _gone(self) -> None:
        if self.parentGone:
            return
        self.parentGone = True
        if self._writer is not None:
            stdoutToStderr()
        self._log.warn("Parent process gone; this worker stops (pid {pid})", pid=os.getpid())
        if self._sharedCertificate is not None:
            removeSharedCertificate(self._sharedCertificate)
        # The metrics directory goes once this worker's transactions have
        # ended and its reactor stopped (L{_stopped}).
        if self._reactor.running:
            # Already stopping (SIGTERM came first): the stop goes on.
            with suppress(ReactorNotRunning):
                self._reactor.stop()
