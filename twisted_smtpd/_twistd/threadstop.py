# -*- test-case-name: tests.test_threadstop -*-
"""
C{twistd smtpd} ends even when a thread of the reactor's pool never
returns.

The deliveries write and read their files (Maildir, mbox, the spools of
the pipe and webhook deliveries) in the reactor's thread pool, and host
names are looked up there.  A call that never returns (a disk write to an
NFS server gone, a FUSE mount not answering, a name server dropping the
query of C{getaddrinfo}) held the stop for ever: the reactor stops its pool
by joining every thread (C{ThreadPool.stop}), and the interpreter then
joins every thread that is not a daemon.  Once the sessions and the
delivery are closed, no client waits for that call's answer any more (a
message it was writing was not acknowledged).

So the pool's threads are daemon threads, which the interpreter does not
wait for, and the pool's stop waits for them at most
L{THREADS_STOP_TIMEOUT} seconds; one line then names each thread still
busy and where it is, and the process ends without them.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from twisted_smtpd._core.printable import printable

__all__ = ["THREADS_STOP_TIMEOUT", "boundReactorThreads", "boundThreadPoolStop", "busyWhere"]

#: The most seconds the stop of the reactor's thread pool waits for a call
#: under way, once the sessions and the delivery are closed (within the
#: seconds a worker of C{--workers} has to end after that).
THREADS_STOP_TIMEOUT = 3.0

_log = Logger(namespace="twisted_smtpd.shutdown")

#: The directory of Python's standard library (that of C{threading}, as
#: C{sysconfig.get_paths()["stdlib"]} names it), with a trailing separator;
#: found without C{sysconfig}, which a server would otherwise load at start
#: for a line it may never write.
_STDLIB = os.path.join(os.path.dirname(threading.__file__), "")


def _daemonThread(*args: Any, **kwargs: Any) -> threading.Thread:
    """
    A thread the interpreter does not wait for as it exits.
    """
    thread = threading.Thread(*args, **kwargs)
    thread.daemon = True
    return thread


def busyWhere(thread: threading.Thread) -> str:
    """
    Where C{thread} is: its name, and the innermost function it runs that
    is not of Python's standard library (the call stuck, such as a
    delivery's write, rather than C{threading}'s wait), with its file and
    line.
    """
    frame = sys._current_frames().get(thread.ident or -1)
    innermost = frame
    while frame is not None:
        if not frame.f_code.co_filename.startswith(_STDLIB):
            innermost = frame
            break
        frame = frame.f_back
    if innermost is None:
        return thread.name
    code = innermost.f_code
    return f"{thread.name} in {code.co_name} ({code.co_filename}:{innermost.f_lineno})"


def boundThreadPoolStop(pool: ThreadPool, timeout: float = THREADS_STOP_TIMEOUT) -> None:
    """
    Make the threads C{pool} starts from now on daemon threads, and its
    C{stop} wait for them at most C{timeout} seconds, then log one line
    naming each thread still busy (L{busyWhere}) and return.

    Done before the reactor runs, when the pool has started no thread yet.
    """
    pool.threadFactory = _daemonThread  # type: ignore[assignment]
    stop: Callable[[], None] = pool.stop

    def boundedStop() -> None:
        stopper = _daemonThread(target=stop, name=f"{pool.name} stop")
        stopper.start()
        stopper.join(timeout)
        if not stopper.is_alive():
            return
        busy = [thread for thread in list(pool.threads) if thread.is_alive()]
        _log.warn(
            "Stopping without {count} busy thread(s) after {timeout}s (a file system or"
            " name server not answering?): {threads}",
            count=len(busy),
            timeout=f"{timeout:g}",
            threads=printable("; ".join(busyWhere(thread) for thread in busy)),
        )

    pool.stop = boundedStop  # type: ignore[method-assign]


def boundReactorThreads(reactor: Any) -> None:
    """
    L{boundThreadPoolStop} for the thread pool of C{reactor}, if it has
    one (C{twistd smtpd}'s does; a test's fake reactor may not).
    """
    getThreadPool = getattr(reactor, "getThreadPool", None)
    if callable(getThreadPool):
        boundThreadPoolStop(getThreadPool())
