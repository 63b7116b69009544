# -*- test-case-name: tests.test_mbox -*-
"""
The dot lock of an mbox: the file C{<mbox>.lock}, made with C{O_EXCL}, that
mail programs (procmail, mutt, Postfix's C{local}, Emacs's C{movemail})
take before they touch the mailbox, some of them without any kernel lock.
Used by L{MboxHandler <twisted_smtpd.handlers.MboxHandler>}, in a pool
thread.

Two processes finding one stale lock at once may both take it, as with
Postfix's C{local}: their C{fcntl} and C{flock} locks, taken next, still
keep their appends apart.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable

_O_TMPFILE: int = getattr(os, "O_TMPFILE", 0)

#: Seconds after which a dot lock is taken for one its holder left behind
#: (it was killed) and removed: Postfix's C{stale_lock_time}.
STALE_LOCK_SECONDS = 500.0

# The dot locks this process holds, by path, each with the number of its
# takings not yet released (one released as another thread takes it anew
# counts both): a lock with this process's pid in its mark that is not
# among them was left by a killed predecessor.
_held: collections.Counter[str] = collections.Counter()
_heldLock = threading.Lock()

# Seconds between two attempts at a dot lock another program holds.
_POLL = 0.1


def takeDotLock(
    path: str, deadline: float, locked: Callable[[], OSError], now: Callable[[], float] = time.time
) -> str:
    """
    Make the dot lock of the mbox at C{path}, trying again while another
    program holds it, until C{deadline} (of C{time.monotonic}); one older
    than L{STALE_LOCK_SECONDS}, or left by a process of this server that is
    gone, is removed first.

    @param locked: Makes the error raised when C{deadline} passes.
    @param now: The wall clock the lock's age is read with.
    @return: The dot lock's path, for L{releaseDotLock}.
    @raise OSError: C{locked()} when C{deadline} passed; any error making
        the lock file but its existence (a directory not writable, a full
        disk), or removing a stale one (a directory there), with its
        C{errno} and a text naming the lock.
    """
    lock = path + ".lock"
    mark = _mark(os.getpid())
    late = False
    while True:
        with _heldLock:
            # Counted as it appears, so that no other thread of this
            # process takes it meanwhile for a predecessor's.
            made = _makeLock(lock, mark)
            if made:
                _held[lock] += 1
        if made:
            return lock
        try:
            # The lock itself, not what it may point to: a symbolic link
            # whose target is missing exists as a lock all the same.
            age = now() - os.lstat(lock).st_mtime
        except FileNotFoundError:
            age = None
        if age is not None and (age > STALE_LOCK_SECONDS or _leftByDeadServer(lock)):
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass
            except OSError as e:
                # A directory, or a lock in a directory this process may
                # not change: never taken, and every append would fail.
                raise _named(e, f"stale dot lock {lock} cannot be removed") from None
            age = None
        remaining = deadline - time.monotonic()
        if age is None:
            # Gone, or removed as stale: tried again at once, but past the
            # deadline only once more, whatever the directory does meanwhile.
            if remaining > 0 or not late:
                late = remaining <= 0
                continue
            raise locked()
        if remaining <= 0:
            raise locked()
        time.sleep(min(_POLL, remaining))


def _makeLock(lock: str, mark: bytes) -> bool:
    """
    Make the dot lock C{lock} holding C{mark}, unless it exists.

    Where the file system has unnamed files (C{O_TMPFILE}, Linux), the mark
    is written into one, which is then linked at the lock's path
    (C{linkat(2)}, which fails if anything is there, as C{O_EXCL} does):
    the lock never exists without its mark, so that a process of this
    server killed while it makes the lock leaves none, rather than an
    empty one the restarted server could not tell from another program's
    (Postfix's C{local} and mutt make theirs empty) and would wait
    L{STALE_LOCK_SECONDS} for.  Elsewhere the lock is made with C{O_EXCL}
    and the mark written into it.

    @return: Whether the lock was made; C{False} if something is at its
        path.
    @raise OSError: Any error making it but its existence, its text naming
        the lock.
    """
    if _O_TMPFILE:
        try:
            fd = os.open(
                os.path.dirname(lock) or ".", os.O_WRONLY | _O_TMPFILE | os.O_CLOEXEC, 0o600
            )
        except OSError:
            # Not on this file system; or an error the named way meets too.
            pass
        else:
            try:
                _writeMark(fd, mark)
                # linkat(2) of the descriptor's /proc entry, followed (os.link
                # passes AT_SYMLINK_FOLLOW only with a directory descriptor,
                # which the absolute path then ignores).
                os.link(f"/proc/self/fd/{fd}", lock, src_dir_fd=fd, follow_symlinks=True)
            except FileExistsError:
                return False
            except OSError:
                # No /proc, or a file system that cannot link it: made by
                # its name instead, which also reports a real error.
                pass
            else:
                return True
            finally:
                os.close(fd)
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    except OSError as e:
        raise _named(e, f"dot lock {lock} cannot be made") from None
    try:
        _writeMark(fd, mark)
    finally:
        os.close(fd)
    return True


def _writeMark(fd: int, mark: bytes) -> None:
    """
    Write C{mark} into the new lock open as C{fd}.  A write that fails (a
    full disk) leaves the lock without its mark: it is then taken for
    stale by its age only.
    """
    with contextlib.suppress(OSError):
        os.write(fd, mark)


def _named(error: OSError, what: str) -> OSError:
    """
    C{error} again, its text led by C{what}, which names the dot lock: the
    log line of the failed append names the mailbox, which is not at
    fault.
    """
    return OSError(error.errno, f"{what}: {error.strerror or error}")


def _mark(pid: int) -> bytes:
    """
    What a dot lock made by the process C{pid} of this server on this host
    holds: its pid first, as liblockfile writes it, then the host and the
    server's name, so that only its own locks are ever taken for those of
    a dead process.
    """
    return f"{pid} {socket.gethostname()} twisted-smtpd\n".encode()


def _leftByDeadServer(lock: str) -> bool:
    """
    Whether C{lock} was made by a process of this server on this host that
    is gone (killed in the middle of an append): such a lock is removed at
    once rather than after L{STALE_LOCK_SECONDS}, so that the server
    restarted after a crash takes mail for its mailbox again.
    """
    try:
        # Without following a link, and without waiting on a named pipe
        # put there: only a regular file can be one of this server's locks.
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        content = os.read(fd, 256)
    except OSError:
        return False
    finally:
        os.close(fd)
    pid = content.partition(b" ")[0]
    if not pid.isdigit() or content != _mark(int(pid)):
        return False
    if int(pid) == os.getpid():
        # This process's number: a lock it holds (another handler of the
        # same mailbox), or one its killed predecessor left with the same
        # number, as a server in a container, process 1 at every start,
        # does.
        with _heldLock:
            return _held[lock] <= 0
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        # Not ours to judge, or a number no process has: kept, until it
        # is stale by its age.
        return False
    return False


def releaseDotLock(lock: str) -> None:
    """
    Remove the dot lock C{lock}, made by L{takeDotLock}.  A failure to
    remove it does not undo the append it guarded: the lock is then taken
    for stale after L{STALE_LOCK_SECONDS}.
    """
    with contextlib.suppress(OSError):
        os.unlink(lock)
    # Only once it is gone: until then it is this process's own.
    with _heldLock:
        _held[lock] -= 1
        if _held[lock] <= 0:
            del _held[lock]
