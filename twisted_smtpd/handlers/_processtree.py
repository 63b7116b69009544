# -*- test-case-name: tests.test_processtree -*-
"""
Stop a process's descendants, so that killing a command kills what it
started too (a C{sh -c} script's programs, a wrapper's deliverer).

Linux only (C{/proc}); elsewhere nothing is found.  Each walk reads
C{/proc/PID/stat} for every process on the system (about 15 microseconds
each), so L{killTree} runs in a thread, never on the reactor's.

A process found in C{/proc} is held by a pidfd (C{pidfd_open}, Linux 5.3)
before it is signalled, and only once C{/proc} still names its parent as
the process it was found under while both are alive: a signal sent
through a pidfd reaches that process or none, never another that took
its number after it ended and was reaped.  Where pidfds are missing (an
older kernel, another system) the parent is checked the same way and the
signal goes by number, as C{kill(2)} does, with the window that leaves;
so do they past the L{PIDFD_BUDGET} first processes of one kill, so that a
command that forked thousands cannot take every file descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Callable

import attrs

#: Walks of the tree after the first, for children forked while it was
#: being stopped.
_ROUNDS = 3

#: The most pidfds one kill holds at once: past them, the processes below
#: are signalled by number, as without pidfds.  A command that forked more
#: processes than the server has file descriptors left would otherwise
#: take every one of them, and the reading of C{/proc} that finds the rest
#: would fail: those would be left running.
PIDFD_BUDGET = 64

#: Whether pidfds may be tried: false once the kernel said it has none.
_pidfdsWork = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")


@attrs.define
class Process:
    """
    A process to signal: its number, and a pidfd holding it when pidfds
    are available.

    @ivar pid: The process's number.
    @ivar fd: A pidfd for it, or C{None}: signals then go by number.
    """

    pid: int
    fd: int | None = None

    def send(self, signum: int) -> None:
        """
        Send C{signum}: through the pidfd when there is one, so that it can
        reach no other process.

        @raise OSError: C{ProcessLookupError} once the process was reaped
            (or, by number, is gone), C{PermissionError} when it may not be
            signalled.
        """
        if self.fd is not None:
            signal.pidfd_send_signal(self.fd, signum)
        else:
            os.kill(self.pid, signum)

    def alive(self) -> bool:
        """
        Whether the process has not been reaped yet (a zombie is alive):
        its number cannot have been taken by another.
        """
        try:
            self.send(0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True

    def duplicate(self) -> Process:
        """
        Another handle on the same process, with a pidfd of its own that
        its user closes (L{close}).
        """
        return Process(self.pid, os.dup(self.fd) if self.fd is not None else None)

    def close(self) -> None:
        """
        Close the pidfd, if any.
        """
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def openPidfd(pid: int) -> int | None:
    """
    A pidfd for process C{pid}, or C{None} when pidfds are unavailable or
    none can be opened now (C{EMFILE}, ...).

    @raise ProcessLookupError: No process C{pid} exists.
    """
    global _pidfdsWork
    if not _pidfdsWork:
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EPERM):
            # No pidfd_open in this kernel, or a seccomp filter refuses it.
            _pidfdsWork = False
        return None


def handle(pid: int) -> Process:
    """
    A handle on C{pid}, a child of ours not reaped yet (so C{pid} is
    still its number), holding a pidfd when pidfds are available.

    @raise ProcessLookupError: No process C{pid} exists.
    """
    return Process(pid, openPidfd(pid))


def parentOf(pid: int) -> int | None:
    """
    The parent of process C{pid} in C{/proc/PID/stat}, or C{None}.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # "PID (COMM) STATE PPID ...": COMM may hold ")".
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def childrenByParent() -> dict[int, list[int]]:
    """
    Every process's children, from C{/proc/PID/stat}; empty without
    C{/proc}.
    """
    tree: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return tree
    for name in names:
        if not name.isdigit():
            continue
        parent = parentOf(int(name))
        if parent is not None:
            tree.setdefault(parent, []).append(int(name))
    return tree


def adopt(pid: int, parent: Process, pidfd: bool = True) -> Process | None:
    """
    A handle on C{pid} if it is still a child of C{parent}, which a walk of
    C{/proc} said it was: between that walk and now it may have ended and
    its number gone to an unrelated process.

    The pidfd is opened first, then C{/proc} read, then both processes
    checked alive: a process not reaped keeps its number, so the C{/proc}
    entry read was the pidfd's process's, and its parent was C{parent}.

    @param pidfd: Whether to hold the process by a pidfd; if not, its
        signals go by number.
    @return: The handle, or C{None} (gone, or no longer below C{parent}).
    """
    try:
        fd = openPidfd(pid) if pidfd else None
    except ProcessLookupError:
        return None
    process = Process(pid, fd)
    if parentOf(pid) == parent.pid and process.alive() and parent.alive():
        return process
    process.close()
    return None


def stopDescendants(root: Process, stopped: list[Process]) -> list[Process]:
    """
    Stop (C{SIGSTOP}) C{root} and every process below it, so that none of
    them forks again, nor exits and leaves its children to init.

    @param stopped: Where each descendant stopped is appended as soon as
        it is, so that it is known even if the walk fails after.
    @return: C{stopped}: handles on the descendants stopped, C{root}
        excluded; their user closes them (L{Process.close}).
    """
    with contextlib.suppress(OSError):
        root.send(signal.SIGSTOP)
    seen = {root.pid}
    held = 0
    for _ in range(1 + _ROUNDS):
        tree = childrenByParent()
        pending = [root, *stopped]
        new = False
        while pending:
            parent = pending.pop()
            for pid in tree.get(parent.pid, []):
                if pid in seen:
                    continue
                seen.add(pid)
                child = adopt(pid, parent, pidfd=held < PIDFD_BUDGET)
                if child is None:
                    continue
                if child.fd is not None:
                    held += 1
                new = True
                with contextlib.suppress(OSError):
                    child.send(signal.SIGSTOP)
                stopped.append(child)
                pending.append(child)
        if not new:
            break
    return stopped


def kill(processes: list[Process]) -> None:
    """
    Kill (C{SIGKILL}) each of C{processes}; one already gone is skipped.
    """
    for process in processes:
        with contextlib.suppress(OSError):
            process.send(signal.SIGKILL)


def killTree(root: Process | None, killRoot: Callable[[], object]) -> None:
    """
    Stop every process below C{root}, kill C{root} with C{killRoot}, then
    kill the processes stopped; made to run in a thread.  Every pidfd,
    C{root}'s included, is closed at the end.

    C{root}, a child of ours, is expected stopped already: it can then
    neither exit, leaving its children to init, nor be reaped and its
    number reused while this runs.

    @param root: The process, or C{None} (gone): only C{killRoot} is called.
    @param killRoot: Kills C{root}; whatever it raises is ignored, the
        processes below it are killed all the same, never left stopped.
    """
    below: list[Process] = []
    try:
        if root is not None:
            with contextlib.suppress(Exception):
                stopDescendants(root, below)
        with contextlib.suppress(Exception):
            killRoot()
        kill(below)
    finally:
        for process in below:
            process.close()
        if root is not None:
            root.close()
