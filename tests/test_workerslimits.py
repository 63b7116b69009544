"""
Tests for the bounds of C{twistd smtpd --workers N}: how many workers, and
the open files their parent needs for them, checked before anything is
bound or started.
"""

from __future__ import annotations

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._twistd import workers
from twisted_smtpd._twistd.tap import Options
from twisted_smtpd._twistd.workers import MAX_WORKERS, checkWorkers


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
    listener and three pipes per worker: a count its open-files limit
    cannot hold is refused with one line at start, not met later as
    C{Too many open files} while sockets are bound or workers started.
    """

    def test_refusedOverLimit(self) -> None:
        """
        200 workers on two TCP listeners need 200 * (2 + 3) + 64 open files:
        refused under a limit of 1024, naming both numbers and the remedy.
        """
        error = self.assertRaises(
            ValueError, checkWorkers, 200, ["tcp:25", "haproxy:tcp:587"], lambda: 1024
        )
        self.assertEqual(
            str(error),
            "200 workers need about 1064 open files in the parent (5 per worker), more"
            " than its limit of 1024; start fewer workers or raise the hard limit"
            " (LimitNOFILE= in a systemd unit, ulimit -Hn)",
        )
        checkWorkers(200, ["tcp:25", "haproxy:tcp:587"], lambda: 1064)

    def test_unixListenerShared(self) -> None:
        """
        A C{unix:} listener is one socket for all workers.
        """
        checkWorkers(100, ["unix:/run/smtpd.sock"], lambda: 100 * 3 + 1 + 64)
        self.assertRaises(
            ValueError, checkWorkers, 100, ["unix:/run/smtpd.sock"], lambda: 100 * 3 + 64
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
        self.patch(workers, "raiseLimit", lambda: 100)
        error = self.assertRaises(
            UsageError,
            Options().parseOptions,
            ["--workers", "10", "--sink", "--listen", "tcp:0:interface=127.0.0.1"],
        )
        self.assertTrue(str(error).startswith("--workers: 10 workers need about 104 open files"))
