# -*- test-case-name: tests.test_dotlock -*-
"""
Tests for the mbox dot lock against what another user of the mail
directory may leave at C{<mbox>.lock}: a symbolic link, a named pipe, a
forged mark.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.disklog import DiskErrorLog
from tests.test_handlers import ImmediateReactor, ManualThreadPool, feed, makeSession
from twisted_smtpd import SMTPError
from twisted_smtpd._core.session import Address, Envelope
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import _dotlock
from twisted_smtpd.handlers._dotlock import takeDotLock
from twisted_smtpd.handlers.mbox import MboxHandler


class Locked(OSError):
    """
    The error a test's C{takeDotLock} raises when its deadline passes.
    """


def locked() -> OSError:
    return Locked(errno.EAGAIN, "locked")


class HostileDotLockTests(SynchronousTestCase):
    """
    Whatever sits at the dot lock's path, taking it ends by its deadline.
    """

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "mbox")
        self.lock = self.path + ".lock"
        self.threads: list[threading.Thread] = []
        # Registered first, run last: after the cleanups that let a thread
        # still waiting on the lock go.
        self.addCleanup(self.joinThreads)

    def joinThreads(self) -> None:
        for thread in self.threads:
            thread.join(10)

    def take(self, seconds: float = 0.2) -> BaseException | str | None:
        """
        Take the dot lock in a thread, with C{seconds} to wait, and wait up
        to 10 s for the outcome.

        @return: The error raised, the lock's path, or C{None} when the
            thread was still at it after 10 s.
        """
        outcome: list[BaseException | str] = []

        def run() -> None:
            try:
                outcome.append(takeDotLock(self.path, time.monotonic() + seconds, locked))
            except BaseException as e:
                outcome.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)
        thread.join(10)
        return outcome[0] if outcome else None

    def test_danglingSymlink(self) -> None:
        """
        A symbolic link to nothing at the lock's path is a lock held: the
        taking waits and fails at its deadline, rather than spinning in its
        thread without end.
        """
        os.symlink(os.path.join(os.path.dirname(self.path), "missing"), self.lock)
        # On failure the thread spins on; the link removed, it takes the
        # lock and stops.
        self.addCleanup(os.unlink, self.lock)
        outcome = self.take()
        self.assertIsInstance(outcome, Locked)
        self.assertTrue(os.path.islink(self.lock))

    def test_staleDanglingSymlink(self) -> None:
        """
        A symbolic link to nothing older than 500 s is a stale lock: the
        link is removed (its target never touched) and the lock taken.
        """
        os.symlink("missing", self.lock)
        old = time.time() - 501
        os.utime(self.lock, (old, old), follow_symlinks=False)
        self.addCleanup(lambda: os.path.lexists(self.lock) and os.unlink(self.lock))
        self.assertEqual(self.take(), self.lock)
        self.assertFalse(os.path.islink(self.lock))

    def test_staleLockTakenAtDeadline(self) -> None:
        """
        A stale lock found when the deadline has just passed (the wait for
        the server's own appends took it) is still removed and the lock
        taken: the bound on retries does not cost that append.
        """
        with open(self.lock, "xb"):
            pass
        old = time.time() - 501
        os.utime(self.lock, (old, old))
        self.assertEqual(takeDotLock(self.path, time.monotonic() - 1, locked), self.lock)

    def test_namedPipe(self) -> None:
        """
        A named pipe at the lock's path is a lock held: reading it for a
        mark of this server does not wait for a writer without end.
        """
        os.mkfifo(self.lock)

        def unblock() -> None:
            # On failure the thread waits in open(); a writer lets it go.
            try:
                fd = os.open(self.lock, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return
            os.close(fd)

        self.addCleanup(unblock)
        outcome = self.take()
        self.assertIsInstance(outcome, Locked)

    def test_symlinkToMark(self) -> None:
        """
        A symbolic link to a file holding the mark of a dead process of
        this server is not a lock this server made: it is kept until it is
        stale by its age.
        """
        target = os.path.abspath(os.path.join(os.path.dirname(self.path), "target"))
        with open(target, "wb") as f:
            f.write(f"999999 {socket.gethostname()} twisted-smtpd\n".encode())
        os.symlink(target, self.lock)
        self.assertIsInstance(self.take(), Locked)
        self.assertTrue(os.path.islink(self.lock))


class ForgedMarkTests(SynchronousTestCase):
    """
    A dot lock whose mark names a process number no process can have.
    """

    def test_pidTooLarge(self) -> None:
        """
        The mark of this server with a pid too large for the system is
        another program's lock, kept: the message is answered 451 at the
        lock's timeout with one log line, not a traceback.
        """
        log = DiskErrorLog(self)
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "mbox")
        with open(path + ".lock", "xb") as f:
            f.write(f"{'9' * 30} {socket.gethostname()} twisted-smtpd\n".encode())
        pool = ManualThreadPool()
        handler = MboxHandler(
            path,
            reactor=ImmediateReactor(),
            threadpool=pool,  # type: ignore[arg-type]
            lockTimeout=0.05,
        )
        stream = MessageStream()
        session = makeSession(envelope=Envelope(mailFrom=Address("alice@example.com")))
        d = handler.onData(stream, session)
        feed(stream, b"Subject: x\r\n\r\nbody\r\n", chunkSize=7)
        pool.runAll()
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual(error.code, 451)
        log.assertLines(1, "Appending to ", "its dot lock")
        self.assertTrue(os.path.exists(path + ".lock"))


class UnusableDotLockTests(SynchronousTestCase):
    """
    A dot lock that cannot be made, or a stale one that cannot be removed:
    the message is answered 451 (452 for a full disk) with one error line
    naming the lock, not only the mailbox, which is not at fault.
    """

    def deliver(self, path: str) -> SMTPError:
        pool = ManualThreadPool()
        handler = MboxHandler(
            path,
            reactor=ImmediateReactor(),
            threadpool=pool,  # type: ignore[arg-type]
            lockTimeout=0.05,
        )
        stream = MessageStream()
        session = makeSession(envelope=Envelope(mailFrom=Address("alice@example.com")))
        d = handler.onData(stream, session)
        feed(stream, b"Subject: x\r\n\r\nbody\r\n", chunkSize=7)
        pool.runAll()
        return self.failureResultOf(d, SMTPError).value

    def test_staleDirectory(self) -> None:
        """
        A directory at the lock's path, older than 500 s, cannot be removed
        as a stale lock: the line says so, naming it and C{EISDIR}.
        """
        log = DiskErrorLog(self)
        directory = os.path.abspath(self.mktemp())
        path = os.path.join(directory, "mbox")
        os.makedirs(path + ".lock")
        old = time.time() - 501
        os.utime(path + ".lock", (old, old))
        self.assertEqual(self.deliver(path).code, 451)
        log.assertLines(
            1,
            f"Appending to {path} failed: stale dot lock {path}.lock"
            " cannot be removed: Is a directory (EISDIR)",
        )

    def test_cannotBeMade(self) -> None:
        """
        A lock that cannot be made for a reason other than its existence
        (here a full disk) is named in the line, with the system's error,
        and the reply is the one for that error.
        """
        log = DiskErrorLog(self)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "mbox")
        realOpen = os.open

        def fullDisk(name: str, flags: int, *args: object, **kwargs: object) -> int:
            # The lock, by its name or as an unnamed file in its directory
            # (open for writing only: the message's spool is read back).
            if name == path + ".lock" or (name == directory and flags & os.O_WRONLY):
                raise OSError(errno.ENOSPC, "No space left on device", name)
            return realOpen(name, flags, *args, **kwargs)  # type: ignore[arg-type]

        self.patch(os, "open", fullDisk)
        error = self.deliver(path)
        self.assertEqual((error.code, error.enhanced), (452, "4.3.1"))
        log.assertLines(
            1,
            f"Appending to {path} failed: dot lock {path}.lock"
            " cannot be made: No space left on device (ENOSPC)",
        )


class Killed(BaseException):
    """
    The death of the process (C{SIGKILL}) at a chosen point.
    """


class KilledWhileLockingTests(SynchronousTestCase):
    """
    The server killed in the middle of making its dot lock.
    """

    def test_noLockWithoutMark(self) -> None:
        """
        A process of this server killed while it writes its mark into a new
        dot lock leaves no lock behind: an empty lock, which the restarted
        server could not tell from another program's, would keep the
        mailbox refused for 500 s.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "mbox")
        realWrite = os.write

        def dies(fd: int, data: bytes) -> int:
            if data.endswith(b"twisted-smtpd\n"):
                raise Killed()
            return realWrite(fd, data)

        os.write = dies  # type: ignore[assignment]
        try:
            self.assertRaises(Killed, takeDotLock, path, time.monotonic() + 1, locked)
        finally:
            os.write = realWrite
        self.assertEqual(os.listdir(directory), [])

    def assertLockHoldsMark(self) -> None:
        """
        A dot lock taken holds this process's mark, mode 0600, and a second
        taking waits for it.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "mbox")
        lock = takeDotLock(path, time.monotonic() + 1, locked)
        self.addCleanup(_dotlock.releaseDotLock, lock)
        with open(lock, "rb") as f:
            mark = f"{os.getpid()} {socket.gethostname()} twisted-smtpd\n"
            self.assertEqual(f.read(), mark.encode())
        self.assertEqual(os.stat(lock).st_mode & 0o777, 0o600)
        self.assertRaises(Locked, takeDotLock, path, time.monotonic() + 0.05, locked)
        self.assertEqual(os.listdir(directory), ["mbox.lock"])

    def test_lockHoldsMark(self) -> None:
        """
        A dot lock this server made holds its mark, whole, from the moment
        it exists.
        """
        self.assertLockHoldsMark()

    def test_withoutUnnamedFiles(self) -> None:
        """
        Where the system has no unnamed files, the lock is made by its name,
        its mark written after.
        """
        self.patch(_dotlock, "_O_TMPFILE", 0)
        self.assertLockHoldsMark()

    def test_unnamedFileNotLinked(self) -> None:
        """
        Where an unnamed file cannot be linked (no C{/proc}), the lock is
        made by its name.
        """
        realLink = os.link

        def noProc(source: str, *args: Any, **kwargs: Any) -> None:
            if source.startswith("/proc/"):
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", source)
            realLink(source, *args, **kwargs)

        self.patch(os, "link", noProc)
        self.assertLockHoldsMark()


class SamePidTests(SynchronousTestCase):
    """
    The server restarted with the pid its killed predecessor had, as in a
    container, where the server is process 1 (or another small number)
    every time it starts.
    """

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.path = os.path.join(directory, "mbox")
        self.mark = f"{os.getpid()} {socket.gethostname()} twisted-smtpd\n".encode()

    def test_predecessorsLockRemoved(self) -> None:
        """
        A dot lock with this process's own mark that this process does not
        hold was left by a killed predecessor with the same pid: it is
        removed at once and the lock taken, not waited for 500 s.
        """
        with open(self.path + ".lock", "xb") as f:
            f.write(self.mark)
        lock = takeDotLock(self.path, time.monotonic() + 0.05, locked)
        self.assertEqual(lock, self.path + ".lock")

    def test_ownLockKept(self) -> None:
        """
        A dot lock this process holds (another handler of the same mailbox
        in it) is not taken for a predecessor's: a second taking waits for
        it, and takes it once released.
        """
        lock = takeDotLock(self.path, time.monotonic() + 1, locked)
        self.assertRaises(Locked, takeDotLock, self.path, time.monotonic() + 0.05, locked)
        _dotlock.releaseDotLock(lock)
        self.assertEqual(takeDotLock(self.path, time.monotonic() + 1, locked), lock)
        _dotlock.releaseDotLock(lock)
