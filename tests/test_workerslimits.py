"""
Tests for the bounds of C{twistd smtpd --workers N}: how many workers, and
the open files their parent needs for them, checked before anything is
bound or started.
"""

from __future__ import annotations

import errno
import io
import signal
import sys
from typing import Any, NoReturn

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from tests.test_deadlines import LogCatcher
from tests.test_workers import _exited, _ProcessReactor
from twisted_smtpd._twistd import workerlisteners
from twisted_smtpd._twistd.tap import Options
from twisted_smtpd._twistd.workerlisteners import MAX_WORKERS, checkWorkers
from twisted_smtpd._twistd.workers import WorkerPool
from twisted_smtpd._twistd.workerside import runWorker


class CountTests(SynchronousTestCase):
    """
    C{--workers} above L{MAX_WORKERS} is refused with one line.
    """

    def test_tooManyWorkers(self) -> None:
        """
        C{--workers 100000} (or a number too large for any integer type) is
        refused while the options are parsed, naming the maximum, before a
        socket is bound.
        """
        for value in ["257", "100000", "99999999999999999999"]:
            error = self.assertRaises(
                UsageError,
                Options().parseOptions,
                ["--workers", value, "--sink", "--listen", "tcp:0:interface=127.0.0.1"],
            )
            self.assertEqual(str(error), f"--workers: at most {MAX_WORKERS} workers, got {value}")

    def test_maximumAccepted(self) -> None:
        """
        L{MAX_WORKERS} itself passes the check when the limit holds it.
        """
        checkWorkers(MAX_WORKERS, ["tcp:25"], lambda: 65536)


class OpenFilesTests(SynchronousTestCase):
    """
    The parent of C{--workers} holds one socket per worker for each TCP
    listener and four pipes per worker: a count its open-files limit
    cannot hold is refused with one line at start, not met later as
    C{Too many open files} while sockets are bound or workers started.
    """

    def test_refusedOverLimit(self) -> None:
        """
        200 workers on two TCP listeners need 200 * (2 + 4) + 64 open files:
        refused under a limit of 1024, naming both numbers and the remedy.
        """
        error = self.assertRaises(
            ValueError, checkWorkers, 200, ["tcp:25", "haproxy:tcp:587"], lambda: 1024
        )
        self.assertEqual(
            str(error),
            "200 workers need about 1264 open files in the parent (6 per worker), more"
            " than its limit of 1024; start fewer workers or raise the hard limit"
            " (LimitNOFILE= in a systemd unit, ulimit -Hn)",
        )
        checkWorkers(200, ["tcp:25", "haproxy:tcp:587"], lambda: 1264)

    def test_unixListenerShared(self) -> None:
        """
        A C{unix:} listener is one socket for all workers.
        """
        checkWorkers(100, ["unix:/run/smtpd.sock"], lambda: 100 * 4 + 1 + 64)
        self.assertRaises(
            ValueError, checkWorkers, 100, ["unix:/run/smtpd.sock"], lambda: 100 * 4 + 64
        )

    def test_limitRaisedFirst(self) -> None:
        """
        The check is made against the limit as raised (the soft limit up to
        the hard one), which is raised before the sockets are bound.
        """
        calls = []

        def limit() -> int:
            calls.append(True)
            return 4096

        checkWorkers(256, ["tcp:25"], limit)
        self.assertEqual(calls, [True])

    def test_optionsRefuse(self) -> None:
        """
        Under the options, a limit the workers exceed is one L{UsageError}
        line starting with C{--workers:}.
        """
        self.patch(workerlisteners, "raiseLimit", lambda: 100)
        error = self.assertRaises(
            UsageError,
            Options().parseOptions,
            ["--workers", "10", "--sink", "--listen", "tcp:0:interface=127.0.0.1"],
        )
        self.assertTrue(str(error).startswith("--workers: 10 workers need about 114 open files"))


class _RefusingReactor(_ProcessReactor):
    """
    A L{_ProcessReactor} whose next C{refusals} starts fail as C{fork}
    does under a process limit.
    """

    refusals = 0

    def spawnProcess(self, *args: Any, **kw: Any) -> Any:
        if self.refusals:
            self.refusals -= 1
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return super().spawnProcess(*args, **kw)


class SpawnFailureTests(SynchronousTestCase):
    """
    A worker whose process cannot be made (fork refused by a process or
    memory limit, no descriptor left for its pipes) is tried again like a
    worker that ended at once, with one log line each time.
    """

    def test_startRefused(self) -> None:
        """
        At start, a refused worker does not stop the others from starting
        nor raise out of C{startService} (ending C{twistd} with a traceback
        and its shared certificate left behind); it is started once the
        pause is over.
        """
        log = LogCatcher(self)
        clock = _RefusingReactor()
        clock.refusals = 1
        pool = WorkerPool([], 2, [], reactor=clock)
        pool._spawn(0)
        pool._spawn(1)
        self.assertEqual(sorted(pool.workers), [1])
        self.assertEqual(
            log.matching("could not be started"),
            [
                "worker 0 could not be started (Resource temporarily unavailable);"
                " trying again in 0.5s"
            ],
        )
        clock.advance(0.5)
        self.assertEqual(sorted(pool.workers), [0, 1])

    def test_restartRefused(self) -> None:
        """
        A worker that ended and cannot be started again is tried again
        after a growing pause, never left unstarted for good, and each
        refusal is one log line, no traceback.
        """
        log = LogCatcher(self)
        clock = _RefusingReactor()
        pool = WorkerPool([], 1, [], reactor=clock)
        pool._spawn(0)
        worker, _ = clock.spawned[-1]
        clock.refusals = 3
        worker.processEnded(_exited(None, 9))
        pauses = []
        for _ in range(4):
            (call,) = clock.getDelayedCalls()
            pauses.append(call.getTime() - clock.seconds())
            clock.advance(pauses[-1])
        self.assertEqual(pauses, [0.5, 1.0, 2.0, 4.0])
        self.assertEqual(sorted(pool.workers), [0])
        self.assertEqual(len(log.matching("could not be started")), 3)
        self.assertEqual(log.matching("Unhandled"), [])
        self.assertEqual(clock.getDelayedCalls(), [])


class RunWorkerTests(SynchronousTestCase):
    """
    L{runWorker}: an exception ending a worker's C{twistd} is one line on
    its standard output (the pipe to its parent's log) besides the
    traceback on standard error.
    """

    def streams(self) -> tuple[io.StringIO, io.StringIO]:
        stdout, stderr = io.StringIO(), io.StringIO()
        # A worker keeps the signals from its start: not this process.
        from twisted_smtpd._twistd import workerside
        from twisted_smtpd._twistd.heldsignals import HeldSignals

        self.patch(workerside, "HELD", HeldSignals())
        for number in HeldSignals.numbers:
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        self.patch(sys, "__stdout__", stdout)
        self.patch(sys, "__stderr__", stderr)
        self.patch(sys, "argv", ["-c"])
        return stdout, stderr

    def test_exceptionOneLine(self) -> None:
        """
        The exception is raised on (C{twistd}'s traceback and status 1)
        after one line naming it, bounded in length, on standard output.
        """
        stdout, _ = self.streams()

        def run() -> NoReturn:
            raise RuntimeError("no\nspool " + "x" * 5000)

        self.assertRaises(RuntimeError, runWorker, run)
        (line,) = stdout.getvalue().splitlines()
        self.assertTrue(
            line.startswith("twistd smtpd: worker cannot start: RuntimeError: no spool x")
        )
        self.assertLess(len(line), 1100)
        self.assertEqual(sys.argv[0], "twistd")

    def test_exitPassesSilently(self) -> None:
        """
        C{SystemExit} (a configuration error already said in one line, or
        the end of a worker that ran) adds nothing.
        """
        stdout, _ = self.streams()

        def run() -> NoReturn:
            raise SystemExit(1)

        self.assertRaises(SystemExit, runWorker, run)
        self.assertEqual(stdout.getvalue(), "")
        runWorker(lambda: None)
        self.assertEqual(stdout.getvalue(), "")
