"""
Tests for L{twisted_smtpd._twistd.runuser}: the options of C{twistd
--uid/--gid smtpd} make and check files as the user the server runs as.
"""

from __future__ import annotations

import os
import pwd
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
