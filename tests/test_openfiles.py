"""
Tests for L{twisted_smtpd._twistd.openfiles}: the soft limit on open files
raised to the hard one at start, and the warning for a C{--max-clients}
the limit cannot hold.
"""

from __future__ import annotations

import resource

from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._twistd import openfiles
from twisted_smtpd._twistd.openfiles import (
    CEILING,
    LOW,
    RESERVE,
    STARTED_WITH,
    checkOpenFiles,
    clientsWarning,
    raiseLimit,
    startingLimit,
)
from twisted_smtpd._twistd.workerlisteners import INHERITED


class Limits:
    """
    A process's C{RLIMIT_NOFILE}, for L{raiseLimit} to read and set.
    """

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.limits = (soft, hard)
        self.refuse = refuse

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.limits

    def set(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if self.refuse:
            raise ValueError("not allowed")
        self.limits = limits


class RaiseLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        # What raiseLimit notes of the fake limits stays in these tests.
        self.patch(openfiles, "_raisedFrom", None)
        self.lines: list[str] = []

        def observe(event: LogEvent) -> None:
            self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def test_raisedToHard(self) -> None:
        """
        A soft limit under the hard one is raised to it, in one log line.
        """
        limits = Limits(1024, 20000)
        self.assertEqual(raiseLimit(limits.get, limits.set), 20000)
        self.assertEqual(limits.limits, (20000, 20000))
        self.assertEqual(self.lines, ["open files: limit raised from 1024 to 20000"])

    def test_ceiling(self) -> None:
        """
        An unlimited or huge hard limit (systemd's 524288) gives a soft
        limit of L{CEILING}.
        """
        for hard in (resource.RLIM_INFINITY, 524288):
            limits = Limits(1024, hard)
            self.assertEqual(raiseLimit(limits.get, limits.set), CEILING)
            self.assertEqual(limits.limits, (CEILING, hard))

    def test_alreadyHigh(self) -> None:
        """
        A soft limit at the hard one (or unlimited) is left, unlogged.
        """
        for soft, hard, now in [
            (20000, 20000, 20000),
            (resource.RLIM_INFINITY, resource.RLIM_INFINITY, CEILING),
            (CEILING * 2, CEILING * 4, CEILING * 2),
        ]:
            limits = Limits(soft, hard)
            self.assertEqual(raiseLimit(limits.get, limits.set), now)
            self.assertEqual(limits.limits, (soft, hard))
        self.assertEqual(self.lines, [])

    def test_refused(self) -> None:
        """
        A limit that cannot be raised stays, with one warning.
        """
        limits = Limits(1024, 4096, refuse=True)
        self.assertEqual(raiseLimit(limits.get, limits.set), 1024)
        self.assertEqual(
            self.lines, ["open files: cannot raise the limit from 1024 to 4096: not allowed"]
        )

    def test_thisProcess(self) -> None:
        """
        With the real limits, the soft limit ends at the hard one or at
        L{CEILING}.
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        now = raiseLimit()
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], now)
        wanted = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)
        self.assertEqual(now, CEILING if soft == resource.RLIM_INFINITY else max(soft, wanted))


class StartingLimitTests(SynchronousTestCase):
    """
    The limit the server was started with, handed to its workers in
    L{STARTED_WITH}.
    """

    def test_notedWhenRaised(self) -> None:
        """
        L{checkOpenFiles} notes the limit it raised, replacing a value the
        process was started with; it removes one when it raised none.
        """
        self.patch(openfiles, "_raisedFrom", None)
        environ = {STARTED_WITH: "12"}
        checkOpenFiles(100, Limits(1024, 20000).get, Limits(1024, 20000).set, environ)
        self.assertEqual(environ, {STARTED_WITH: "1024"})
        self.patch(openfiles, "_raisedFrom", None)
        limits = Limits(20000, 20000)
        checkOpenFiles(100, limits.get, limits.set, environ)
        self.assertEqual(environ, {})

    def test_notedWhenRaisedEarlier(self) -> None:
        """
        The limit noted is the one from before the first raise, even when
        that was earlier than L{checkOpenFiles} (C{--workers} raises it at
        option parsing, before it binds its sockets).
        """
        self.patch(openfiles, "_raisedFrom", None)
        limits = Limits(1024, 20000)
        raiseLimit(limits.get, limits.set)
        environ: dict[str, str] = {}
        checkOpenFiles(100, limits.get, limits.set, environ)
        self.assertEqual(environ, {STARTED_WITH: "1024"})

    def test_ownEnvironmentIgnored(self) -> None:
        """
        Outside a worker, L{STARTED_WITH} is not the server's: the limit in
        force is.
        """
        for value in ["12", "0", "\u00b2", "x"]:
            self.assertEqual(startingLimit({STARTED_WITH: value}, Limits(1024, 20000).get), 1024)

    def test_worker(self) -> None:
        """
        A worker takes its parent's L{STARTED_WITH}; one that is not a
        number in ASCII digits is ignored.
        """
        get = Limits(20000, 20000).get
        self.assertEqual(startingLimit({INHERITED: "", STARTED_WITH: "1024"}, get), 1024)
        for value in ["\u00b2", "-1", "", "1e3"]:
            self.assertEqual(startingLimit({INHERITED: "", STARTED_WITH: value}, get), 20000)
        self.assertEqual(startingLimit({INHERITED: ""}, get), 20000)


class WarningTests(SynchronousTestCase):
    def test_maxClientsWithinLimit(self) -> None:
        """
        No warning for a --max-clients the descriptors can hold.
        """
        self.assertIsNone(clientsWarning(500, 1024))
        self.assertIsNone(clientsWarning(1024 - RESERVE, 1024))

    def test_maxClientsOverLimit(self) -> None:
        """
        A --max-clients past the limit less L{RESERVE} is warned of, with
        the value to set.
        """
        warning = clientsWarning(2000, 1024)
        assert warning is not None
        self.assertIn("--max-clients 2000 with a limit of 1024 open files", warning)
        self.assertIn(f"set --max-clients {1024 - RESERVE} or less", warning)

    def test_limitUnderReserve(self) -> None:
        """
        Under a limit of L{RESERVE} or less, the warning says to raise the
        hard limit, never to set C{--max-clients 0}, which would remove the
        limit on clients altogether.
        """
        for maxClients in (0, 10):
            warning = clientsWarning(maxClients, RESERVE)
            assert warning is not None
            self.assertNotIn("--max-clients 0", warning)
            self.assertIn("; raise the hard limit (LimitNOFILE=", warning)

    def test_noMaxClients(self) -> None:
        """
        No --max-clients is warned of under a limit lower than L{LOW} only.
        """
        warning = clientsWarning(0, 1024)
        assert warning is not None
        self.assertIn("no --max-clients with a limit of 1024 open files", warning)
        self.assertIsNone(clientsWarning(0, LOW))
