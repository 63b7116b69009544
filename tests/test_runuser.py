"""
Tests for L{twisted_smtpd._twistd.runuser}: the options of C{twistd
--uid/--gid smtpd} make and check files as the user the server runs as.
"""

from __future__ import annotations

import os
import pwd
import shutil
from typing import Any

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.integration.nexthops import requireRoot
from twisted_smtpd._twistd.runuser import asRunUser, runIdentity

NOBODY = 65534


class _Config(dict[str, Any]):
    """
    The options of C{smtpd}, with C{twistd}'s own as C{parent}.
    """

    def __init__(self, **parent: Any) -> None:
        super().__init__()
        self.parent = parent


def _unknownUid() -> int:
    """
    A uid no user has.
    """
    uid = 54321
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


class RunIdentityTests(SynchronousTestCase):
    """
    L{runIdentity} and L{asRunUser}.
    """

    def test_nothingGiven(self) -> None:
        """
        Without C{--uid} and C{--gid} (or without C{twistd}) nothing
        changes.
        """
        self.assertEqual(runIdentity(_Config(uid=None, gid=None)), (None, None, []))
        self.assertEqual(runIdentity({}), (None, None, []))
        before = (os.geteuid(), os.getegid(), os.getgroups())
        with asRunUser(_Config(uid=None, gid=None)):
            self.assertEqual((os.geteuid(), os.getegid(), os.getgroups()), before)

    def test_userGroupDefault(self) -> None:
        """
        C{--uid} alone means the group of that user, as C{twistd} says.
        """
        requireRoot(self, "switching to another user")
        uid, gid, groups = runIdentity(_Config(uid=NOBODY, gid=None))
        self.assertEqual((uid, gid), (NOBODY, pwd.getpwuid(NOBODY).pw_gid))
        self.assertIn(gid, groups)

    def test_switchedAndBack(self) -> None:
        """
        Inside L{asRunUser} the effective user and group are those given;
        after it, root's again, even when the block raised.
        """
        requireRoot(self, "switching to another user")
        before = (os.geteuid(), os.getegid(), os.getgroups())
        with self.assertRaises(ZeroDivisionError), asRunUser(_Config(uid=NOBODY, gid=NOBODY)):
            self.assertEqual((os.geteuid(), os.getegid()), (NOBODY, NOBODY))
            self.assertNotIn(0, os.getgroups())
            1 / 0  # noqa: B018
        self.assertEqual((os.geteuid(), os.getegid(), os.getgroups()), before)

    def test_unknownUid(self) -> None:
        """
        A C{--uid} no user has is one line (C{twistd} would end with a
        traceback looking up the user's groups).
        """
        requireRoot(self, "switching to another user")
        uid = _unknownUid()
        with self.assertRaises(usage.UsageError) as caught:
            runIdentity(_Config(uid=uid, gid=None))
        self.assertEqual(str(caught.exception), f"--uid {uid}: no user has this uid")


class WorkersMetricsTests(SynchronousTestCase):
    """
    The metrics directory the parent of C{--workers} makes belongs to the
    user C{twistd --uid} runs its workers as.
    """

    def test_metricsDirectoryOwned(self) -> None:
        """
        The directory and its lock file are that user's, so that the
        workers, running as that user, write their metrics there and lock
        the file.
        """
        requireRoot(self, "switching to another user")
        from twisted_smtpd._serving.metrics import MULTIPROC_ENV
        from twisted_smtpd._twistd.tap import Options, makeService
        from twisted_smtpd._twistd.workerside import METRICS_LOCK

        config = Options()
        config.parseOptions(
            [
                "--workers",
                "2",
                "--sink",
                "--disable",
                "STARTTLS",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--metrics",
                "tcp:0:interface=127.0.0.1",
            ]
        )
        listeners = config["workerListeners"]
        self.addCleanup(lambda: [s.close() for spec in listeners for s in spec.sockets])
        config.parent = {"uid": NOBODY, "gid": NOBODY}
        previous = os.environ.get(MULTIPROC_ENV)
        makeService(config)
        directory = os.environ[MULTIPROC_ENV]
        self.addCleanup(shutil.rmtree, directory, True)
        if previous is None:
            self.addCleanup(os.environ.pop, MULTIPROC_ENV, None)
        else:
            self.addCleanup(os.environ.__setitem__, MULTIPROC_ENV, previous)
        for path in (directory, os.path.join(directory, METRICS_LOCK)):
            status = os.lstat(path)
            self.assertEqual((status.st_uid, status.st_gid), (NOBODY, NOBODY), path)
