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
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from twisted.application.service import Service
from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._serving.logwriter import BufferedLogWriter
from twisted_smtpd._twistd.workercert import removeSharedCertificate
from twisted_smtpd._twistd.workers import PARENT_PIPE


def stdoutToStderr() -> None:
    """
    In a worker whose parent is gone: standard output (the pipe to the
    parent) becomes standard error, so that the worker's last lines still
    reach whoever reads that.
    """
    os.dup2(2, 1)


def closeStandardInput() -> None:
    """
    In a worker that is ready: close the pipe from the parent that is its
    standard input (standard input becomes C{/dev/null}), which tells the
    parent it is ready.
    """
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


class _PipeReader(FileDescriptor):
    """
    Reads the pipe from the parent, which never writes: any end of it means
    the parent is gone.
    """

    def __init__(self, fd: int, gone: Any, reactor: Any) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._gone = gone

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> Any:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self.stopReading()
            self._gone()
        return None

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor saw the pipe hang up (the parent's end closed) without
        anything to read: the parent is gone.
        """
        self.stopReading()
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
        """
        self._announceReady = announceReady
        self._sharedCertificate = sharedCertificate
        self._fd = fd
        self._reactor = reactor
        self._writer = logToStderr
        self._reader: _PipeReader | None = None
        self.parentGone = False

    def startService(self) -> None:
        """
        Watch the pipe.
        """
        super().startService()
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        os.set_blocking(self._fd, False)
        self._reader = _PipeReader(self._fd, self._gone, self._reactor)
        self._reader.startReading()
        # Once the reactor runs, its signal handlers are in place: from then
        # on SIGTERM stops this worker gracefully.  Say so, so that whoever
        # watches the log knows when the worker is ready.
        self._reactor.callWhenRunning(self._ready)

    def _ready(self) -> None:
        self._log.info("worker ready, pid {pid}", pid=os.getpid())
        if self._announceReady is not None:
            self._announceReady()

    def stopService(self) -> None:
        """
        Stop watching.
        """
        super().stopService()
        if self._reader is not None:
            self._reader.stopReading()
            self._reader = None

    def _gone(self) -> None:
        if self.parentGone:
            return
        self.parentGone = True
        if self._writer is not None:
            stdoutToStderr()
        self._log.warn("Parent process gone; this worker stops (pid {pid})", pid=os.getpid())
        if self._sharedCertificate is not None:
            removeSharedCertificate(self._sharedCertificate)
        if self._reactor.running:
            # Already stopping (SIGTERM came first): the stop goes on.
            with suppress(ReactorNotRunning):
                self._reactor.stop()
