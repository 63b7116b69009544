# -*- test-case-name: tests.test_pipesession -*-
"""
Stop a process's descendants, so that killing a command kills what it
started too (a C{sh -c} script's programs, a wrapper's deliverer).

Linux only (C{/proc}); elsewhere nothing is found.  Each walk reads
C{/proc/PID/stat} for every process on the system (about 15 microseconds
each), so L{killTree} runs in a thread, never on the reactor's.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable

#: Walks of the tree after the first, for children forked while it was
#: being stopped.
_ROUNDS = 3


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
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                # "PID (COMM) STATE PPID ...": COMM may hold ")".
                parent = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(parent, []).append(int(name))
    return tree


def stopDescendants(pid: int) -> list[int]:
    """
    Stop (C{SIGSTOP}) process C{pid} and every process below it, so that
    none of them forks again, nor exits and leaves its children to init.

    @return: The descendants stopped, C{pid} excluded.
    """
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGSTOP)
    stopped: list[int] = []
    seen = {pid}
    for _ in range(1 + _ROUNDS):
        tree = childrenByParent()
        pending = [pid, *stopped]
        new = False
        while pending:
            for child in tree.get(pending.pop(), []):
                if child not in seen:
                    seen.add(child)
                    new = True
                    with contextlib.suppress(OSError):
                        os.kill(child, signal.SIGSTOP)
                    stopped.append(child)
                    pending.append(child)
        if not new:
            break
    return stopped


def kill(pids: list[int]) -> None:
    """
    Kill (C{SIGKILL}) each of C{pids}; one already gone is skipped.
    """
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def killTree(pid: int | None, killRoot: Callable[[], object]) -> None:
    """
    Stop every process below C{pid}, kill C{pid} with C{killRoot}, then
    kill the processes stopped; made to run in a thread.

    C{pid}, a child of ours, is expected stopped already: it can then
    neither exit, leaving its children to init, nor be reaped and its
    number reused while this runs.

    @param pid: The process, or C{None} (gone): only C{killRoot} is called.
    @param killRoot: Kills C{pid}; whatever it raises is ignored, the
        processes below it are killed all the same, never left stopped.
    """
    below = stopDescendants(pid) if pid is not None else []
    with contextlib.suppress(Exception):
        killRoot()
    kill(below)
