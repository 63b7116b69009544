"""
C{twistd smtpd --auth unix}: refused at start, in one line, where Twisted's
C{unix} checker could not check any password (every login would fail as if
the password were wrong): without Python's C{crypt} and C{spwd} modules
(Python 3.13 and later), or when the user the server runs as cannot read
the shadow passwords.
"""

from __future__ import annotations

import os
import sys
import warnings

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.integration.nexthops import requireRoot
from tests.test_runuser import _Config
from twisted_smtpd._twistd import tapauth
from twisted_smtpd._twistd.runuser import asRunUser
from twisted_smtpd._twistd.tap import Options

NOBODY = 65534


def _hasModules() -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # noqa: F401
            import spwd  # noqa: F401
        except ImportError:
            return False
    return True


def _parse() -> Options:
    config = Options()
    config.parseOptions(["--sink", "--allow-insecure-auth", "--auth", "unix"])
    return config


class AuthUnixTests(SynchronousTestCase):
    def shadow(self, mode: int) -> str:
        """
        Stand in a file of C{mode} for C{/etc/shadow}.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        os.chmod(directory, 0o755)
        path = os.path.join(directory, "shadow")
        with open(path, "w") as f:
            f.write("root:!*:1::::::\n")
        os.chmod(path, mode)
        self.patch(tapauth, "SHADOW", path)
        return path

    def test_withoutModules(self) -> None:
        """
        Without C{crypt} and C{spwd}, the start is refused naming them.
        """
        self.shadow(0o644)
        previous = sys.modules.get("spwd")
        sys.modules["spwd"] = None  # type: ignore[assignment]
        if previous is None:
            self.addCleanup(sys.modules.pop, "spwd", None)
        else:
            self.addCleanup(sys.modules.__setitem__, "spwd", previous)
        e = self.assertRaises(usage.UsageError, _parse)
        self.assertIn("--auth 'unix': this Python has no crypt and spwd modules", str(e))

    def test_readable(self) -> None:
        """
        With the modules and the shadow passwords readable, C{--auth unix}
        is taken.
        """
        self.shadow(0o644)
        if _hasModules():
            self.assertEqual(len(_parse()["credCheckers"]), 1)
        else:
            self.assertRaises(usage.UsageError, _parse)

    def test_runUserCannotRead(self) -> None:
        """
        Under C{twistd --uid}, shadow passwords that user cannot read refuse
        the start, naming the file.
        """
        requireRoot(self, "switching to another user")
        path = self.shadow(0o600)
        nobody = _Config(uid=NOBODY, gid=NOBODY)
        problem = tapauth.unixPasswordsProblem(lambda: asRunUser(nobody))
        if not _hasModules():
            # Refused before the file is looked at (Python 3.13).
            self.assertIn("no crypt and spwd modules", str(problem))
            return
        self.assertEqual(
            problem,
            f"cannot read the shadow passwords (Permission denied: {path}), so no password"
            " could be checked; under twistd --uid, that user must be able to (group shadow)",
        )
        self.assertIsNone(tapauth.unixPasswordsProblem())
