"""
C{twistd smtpd --workers N} whose workers cannot start: the reason is in
the parent's log, once per attempt.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import TwistdServer
from twisted_smtpd.handlers import BaseHandler

#: The handler that fails in workers: C{--handler} takes this.
FAILING = "tests.integration.test_workersstart:failInWorkers"


def failInWorkers() -> BaseHandler:
    """
    A handler factory that works in the parent and raises in its workers,
    as one whose resources (a database, a file) went away may.
    """
    if os.environ.get("TWISTED_SMTPD_INHERITED"):
        raise RuntimeError("the spool database\nis gone \x1b[2J")
    return BaseHandler()


class WorkerStartFailureTests(SynchronousTestCase):
    def test_exceptionReasonInLog(self) -> None:
        """
        A worker ended by an exception while it starts (its handler cannot
        be made: a usage error in the worker) says why in the parent's log
        file, in one line naming it and sanitised, before each of the
        parent's lines saying it ended; not only on standard error, which
        the log file does not hold.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "smtpd.log")
        server = TwistdServer(
            ["--workers", "2", "--no-reverse-lookup", "--handler", FAILING],
            directory,
            logfile=path,
        )
        self.addCleanup(server.kill)
        server.start()
        server.waitForLog("worker 0 ended (pid ", count=2)
        server.stop()
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        reason = (
            f"worker 0: twistd smtpd: --handler {FAILING!r}: failInWorkers() raised"
            " RuntimeError: the spool database is gone \\x1b[2J; see --help"
        )
        ends = [
            i
            for i, line in enumerate(lines)
            if "worker 0 ended (pid " in line and ", exit status 1); restarting in" in line
        ]
        reasons = [i for i, line in enumerate(lines) if line.endswith(reason)]
        self.assertGreaterEqual(len(ends), 2, "\n".join(lines))
        # One reason line before each end, in the log file.
        self.assertEqual(
            [sum(1 for r in reasons if r < end) for end in ends],
            list(range(1, len(ends) + 1)),
            "\n".join(lines),
        )
        self.assertFalse(any("\x1b" in line for line in lines))
