# -*- test-case-name: tests.test_processtree -*-
"""
Killing a C{--pipe} command's processes: signals go through pidfds
(Linux), so none reaches a process that took the number of one that
ended; and the kill never waits for a thread of a busy pool.  Real
processes, the real reactor.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import subprocess
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SkipTest, TestCase

from tests.test_handlers import feed, makeSession
from tests.test_pipe import BODY
from twisted_smtpd import SMTPError
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import _processtree
from twisted_smtpd.handlers._piperun import KillThreads
from twisted_smtpd.handlers.pipe import PipeHandler

#: Seconds to wait for a command to start, or for its verdict.
WAIT = 15.0

_PIDFDS = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")


def state(pid: int) -> str | None:
    """
    The state letter of process C{pid} in C{/proc} (C{"T"} stopped,
    C{"Z"} zombie, ...), or C{None} once it is gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


class KillTreeTests(TestCase):
    """
    L{PipeHandler} killing real commands at their time limit.
    """

    def setUp(self) -> None:
        if not os.path.isdir("/proc/self"):
            raise SkipTest("the processes below a command are found in /proc (Linux)")
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.pidFile = os.path.join(self.directory, "pid")
        self.signalsSent: list[tuple[str, int, int]] = []

    def record(self) -> None:
        """
        Record every C{os.kill} and C{pidfd_send_signal} made from now on,
        passing each on.
        """
        realKill = os.kill
        realPidfdSend = getattr(signal, "pidfd_send_signal", None)

        def kill(pid: int, signum: int) -> None:
            self.signalsSent.append(("kill", pid, signum))
            realKill(pid, signum)

        def pidfdSend(fd: int, signum: int, *args: Any) -> None:
            self.signalsSent.append(("pidfd", fd, signum))
            assert realPidfdSend is not None
            realPidfdSend(fd, signum, *args)

        self.patch(os, "kill", kill)
        if realPidfdSend is not None:
            self.patch(signal, "pidfd_send_signal", pidfdSend)

    def sent(self, how: str, *signums: int) -> list[int]:
        return [signum for kind, _, signum in self.signalsSent if kind == how and signum in signums]

    def leftover(self, pid: int) -> None:
        """
        Kill C{pid} at cleanup if the test left it running.
        """

        def kill() -> None:
            if state(pid) not in (None, "Z"):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

        self.addCleanup(kill)

    async def pids(self) -> list[int]:
        """
        The numbers the command wrote into C{pidFile}, one a line.
        """
        deadline = time.monotonic() + WAIT
        while not os.path.exists(self.pidFile):
            self.assertLess(time.monotonic(), deadline, "the command never started")
            await deferLater(reactor, 0.02, lambda: None)
        with open(self.pidFile) as f:
            pids = [int(line) for line in f.read().split()]
        for pid in pids:
            self.leftover(pid)
        return pids

    async def assertGone(self, *pids: int) -> None:
        deadline = time.monotonic() + WAIT
        while any(state(pid) not in (None, "Z") for pid in pids):
            self.assertLess(time.monotonic(), deadline, f"still running: {pids}")
            await deferLater(reactor, 0.02, lambda: None)

    def deliver(self, script: str, **kwargs: Any) -> Deferred[str]:
        """
        Run C{sh -c script}, C{$OUT} the pid file written with C{mv}, past
        a time limit of two seconds (time for the shell to write it first).
        """
        handler = PipeHandler(
            ["sh", "-c", script],
            env={"OUT": self.pidFile, "TMP": self.pidFile + ".tmp"},
            timeout=2.0,
            reactor=reactor,
            **kwargs,
        )
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, BODY)
        return d

    async def assertTimedOut(self, d: Deferred[str]) -> None:
        d.addTimeout(WAIT, reactor)
        with self.assertRaises(SMTPError) as caught:
            await d
        self.assertEqual(caught.exception.message, "Error: delivery command timed out")

    async def test_killThroughPidfds(self) -> None:
        """
        Where Linux has pidfds, the command and the process it started are
        stopped and killed through pidfds, never by number (C{kill(2)}):
        no signal can reach a process that took one of their numbers.
        """
        if not _PIDFDS:
            raise SkipTest("no pidfds here (Python 3.9+ on Linux 5.3+)")
        self.record()
        d = self.deliver('sleep 60 & echo "$$ $!" > "$TMP"; mv "$TMP" "$OUT"; wait')
        command, child = await self.pids()
        await self.assertTimedOut(d)
        await self.assertGone(command, child)
        byPidfd = self.sent("pidfd", signal.SIGSTOP, signal.SIGKILL)
        self.assertEqual(
            (sorted(byPidfd), self.sent("kill", signal.SIGSTOP, signal.SIGKILL)),
            (sorted([signal.SIGSTOP] * 3 + [signal.SIGKILL] * 2), []),
        )

    async def test_killWithoutPidfds(self) -> None:
        """
        Without pidfds (an older kernel), the command and the process it
        started are still stopped and killed, by number.
        """
        self.record()
        self.patch(_processtree, "_pidfdsWork", False)
        d = self.deliver('sleep 60 & echo "$$ $!" > "$TMP"; mv "$TMP" "$OUT"; wait')
        command, child = await self.pids()
        await self.assertTimedOut(d)
        await self.assertGone(command, child)
        self.assertEqual(self.sent("pidfd", signal.SIGSTOP, signal.SIGKILL), [])
        self.assertIn(signal.SIGKILL, self.sent("kill", signal.SIGKILL))

    async def test_reusedNumberUntouched(self) -> None:
        """
        A process that the walk of C{/proc} lists below the command but
        that is not (the descendant seen ended, and an unrelated process
        took its number before it was signalled) is neither stopped nor
        killed.
        """
        bystander = subprocess.Popen(["sleep", "60"])
        self.addCleanup(bystander.wait)
        self.leftover(bystander.pid)
        real = _processtree.childrenByParent

        def stale() -> dict[int, list[int]]:
            tree = real()
            with open(self.pidFile) as f:
                command = int(f.read())
            tree.setdefault(command, []).append(bystander.pid)
            return tree

        self.patch(_processtree, "childrenByParent", stale)
        d = self.deliver('echo "$$" > "$TMP"; mv "$TMP" "$OUT"; exec sleep 60')
        (command,) = await self.pids()
        await self.assertTimedOut(d)
        await self.assertGone(command)
        self.assertEqual(
            (bystander.poll(), state(bystander.pid)), (None, "S"), "the bystander was signalled"
        )

    async def test_busyPoolDoesNotHoldKill(self) -> None:
        """
        A command past its time limit is killed and answered even while
        every thread of the handler's pool is busy (spool writes to a disk
        that hangs): the kill runs in a thread of its own.
        """
        pool = ThreadPool(1, 1, name="busy")
        pool.start()
        release = threading.Event()
        self.addCleanup(pool.stop)
        self.addCleanup(release.set)
        d = self.deliver('echo "$$" > "$TMP"; mv "$TMP" "$OUT"; exec sleep 60', threadpool=pool)
        (command,) = await self.pids()
        pool.callInThread(release.wait, WAIT * 2)
        await self.assertTimedOut(d)
        await self.assertGone(command)

    async def test_noDescriptorForKill(self) -> None:
        """
        A command past its time limit whose pidfd cannot be duplicated for
        the kill's thread (the server is out of file descriptors: C{EMFILE})
        is still killed, by number, and answered 451: it is not left
        stopped for ever, its client waiting without end.
        """
        if not _PIDFDS:
            raise SkipTest("no pidfds here (Python 3.9+ on Linux 5.3+)")

        def duplicate(process: _processtree.Process) -> _processtree.Process:
            raise OSError(errno.EMFILE, "Too many open files")

        self.patch(_processtree.Process, "duplicate", duplicate)
        d = self.deliver('echo "$$" > "$TMP"; mv "$TMP" "$OUT"; exec sleep 60')
        (command,) = await self.pids()
        await self.assertTimedOut(d)
        await self.assertGone(command)

    async def test_moreProcessesThanDescriptors(self) -> None:
        """
        A command that forked more processes than the server has file
        descriptors left has every one of them killed: the kill holds
        pidfds for the first L{_processtree.PIDFD_BUDGET} only and signals
        the others by number, rather than take every descriptor and then
        fail to read C{/proc} for the rest, leaving them running.
        """
        if not _PIDFDS:
            raise SkipTest("no pidfds here (Python 3.9+ on Linux 5.3+)")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        # 100 descriptors free (and none open above the limit, which the
        # spawn of the command may use); 100 processes more than that.
        names = [int(name) for name in os.listdir("/proc/self/fd")]
        limit = max(max(names) + 1, len(names) + 100)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        count = limit - len(names) + 100
        d = self.deliver(
            f'for i in $(seq {count}); do sleep 60 & echo "$!" >> "$TMP"; done;'
            ' echo "$$" >> "$TMP"; mv "$TMP" "$OUT"; wait'
        )
        pids = await self.pids()
        self.assertEqual(len(pids), count + 1)
        await self.assertTimedOut(d)
        await self.assertGone(*pids)


class ProcessHandleTests(TestCase):
    """
    L{_processtree.Process} and L{_processtree.adopt} on real processes.
    """

    def setUp(self) -> None:
        if not _PIDFDS or _processtree.openPidfd(os.getpid()) is None:
            raise SkipTest("no pidfds here (Python 3.9+ on Linux 5.3+)")

    def test_reapedProcessNotSignalledByNumber(self) -> None:
        """
        Once the process a handle holds is reaped, a signal through the
        handle fails with C{ProcessLookupError} and is never sent to its
        number, which another process may have taken.
        """
        child = subprocess.Popen(["true"])
        process = _processtree.handle(child.pid)
        self.addCleanup(process.close)
        child.wait()
        numbers: list[int] = []
        self.patch(os, "kill", lambda pid, signum: numbers.append(pid))
        self.assertFalse(process.alive())
        self.assertRaises(ProcessLookupError, process.send, signal.SIGKILL)
        self.assertEqual(numbers, [])

    def test_adoptChecksParent(self) -> None:
        """
        L{_processtree.adopt} holds a child of the parent given, and
        refuses a process whose parent is another.
        """
        child = subprocess.Popen(["sleep", "60"])
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        ours = _processtree.handle(os.getpid())
        self.addCleanup(ours.close)
        adopted = _processtree.adopt(child.pid, ours)
        assert adopted is not None
        self.addCleanup(adopted.close)
        self.assertIsNotNone(adopted.fd)
        self.assertIsNone(_processtree.adopt(child.pid, _processtree.Process(1)))
        self.assertIsNone(_processtree.adopt(2**22 + 12345, ours))


class TriggerReactor:
    """
    Records the system event triggers added.
    """

    def __init__(self) -> None:
        self.triggers: list[tuple[str, str, Any]] = []

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        self.triggers.append((phase, event, f))


class KillThreadsTests(TestCase):
    """
    L{KillThreads}: each kill in a thread of its own, awaited at shutdown.
    """

    def test_shutdownWaitsForKills(self) -> None:
        """
        The reactor's shutdown waits for a kill still under way: C{twistd}
        ends by sending itself the signal that stopped it, and a command
        whose kill had not finished would be left stopped for ever.
        """
        reactor = TriggerReactor()
        threads = KillThreads(reactor)
        proceed = threading.Event()
        done: list[bool] = []

        def kill() -> None:
            done.append(proceed.wait(WAIT))

        threads.start(kill)
        self.assertEqual([(p, e) for p, e, _ in reactor.triggers], [("during", "shutdown")])
        timer = threading.Timer(0.2, proceed.set)
        timer.start()
        self.addCleanup(timer.join)
        reactor.triggers[0][2]()
        self.assertEqual(done, [True])

    def test_afterShutdownAtOnce(self) -> None:
        """
        A kill started once the shutdown's wait is over runs at once, in
        the caller's thread; one trigger is added however many kills run.
        """
        reactor = TriggerReactor()
        threads = KillThreads(reactor)
        callers: list[threading.Thread] = []
        threads.start(lambda: callers.append(threading.current_thread()))
        threads.start(lambda: callers.append(threading.current_thread()))
        self.assertEqual(len(reactor.triggers), 1)
        reactor.triggers[0][2]()
        threads.start(lambda: callers.append(threading.current_thread()))
        self.assertEqual(len(callers), 3)
        self.assertNotIn(threading.current_thread(), callers[:2])
        self.assertIs(callers[2], threading.current_thread())
