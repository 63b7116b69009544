# -*- test-case-name: tests.test_unixpasswords -*-
"""
The checker of C{--auth unix}: crypt(3) off the reactor thread, a user that
does not exist hashed against a dummy hash all the same, and the hashes
compared in constant time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.trial.unittest import SynchronousTestCase

from tests.test_authunix import _hasModules, _parse
from twisted_smtpd._twistd.unixpasswords import UnixPasswords, _crypt

#: A SHA-512 crypt(3) hash of "secret".
_SECRET = "$6$saltsalt$"


class _Pool:
    """
    A thread pool that runs nothing until told to.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[bool, object], None], Callable[..., object], Any]] = []

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, object], None], f: Callable[..., object], *a: Any
    ) -> None:
        self.pending.append((onResult, f, a))

    def run(self) -> None:
        while self.pending:
            onResult, f, a = self.pending.pop(0)
            onResult(True, f(*a))


class _Reactor:
    def callFromThread(self, f: Callable[..., object], *a: Any) -> None:
        f(*a)


class UnixPasswordsTests(SynchronousTestCase):
    """
    L{UnixPasswords}, with the system's users stood in for.
    """

    def setUp(self) -> None:
        self.hashes: dict[str, str] = {}
        self.crypted: list[tuple[str, str]] = []
        self.pool = _Pool()
        self.checker = UnixPasswords(
            _Reactor(),
            self.pool,
            self.hashes.get,
            self.crypt,  # type: ignore[arg-type]
        )
        del self.crypted[:]

    def crypt(self, password: str, setting: str) -> str | None:
        self.crypted.append((password, setting))
        if password == "secret" and setting.startswith(_SECRET):
            return _SECRET + "right"
        return _SECRET + "wrong"

    def login(self, username: bytes, password: bytes) -> object:
        d = self.checker.requestAvatarId(UsernamePassword(username, password))
        self.assertNoResult(d)
        self.assertEqual(self.crypted, [])
        self.pool.run()
        return self.successResultOf(d.addErrback(lambda f: f.value))

    def test_inThreadPool(self) -> None:
        """
        Nothing is hashed on the reactor thread: the check waits for the
        thread pool, and the right password logs the user in.
        """
        self.hashes["alice"] = _SECRET + "right"
        self.assertEqual(self.login(b"alice", b"secret"), b"alice")

    def test_wrongPassword(self) -> None:
        """
        A wrong password is refused.
        """
        self.hashes["alice"] = _SECRET + "right"
        self.assertIsInstance(self.login(b"alice", b"guess"), UnauthorizedLogin)
        self.assertEqual(self.crypted, [("guess", _SECRET + "right")])

    def test_unknownUserHashed(self) -> None:
        """
        A user that does not exist is refused after hashing the password
        all the same, as a wrong password is: the time taken does not tell
        who exists.
        """
        self.hashes["alice"] = _SECRET + "right"
        self.assertIsInstance(self.login(b"nobody-here", b"secret"), UnauthorizedLogin)
        self.assertEqual(len(self.crypted), 1)
        self.assertEqual(self.crypted[0][0], "secret")

    def test_lockedUserHashed(self) -> None:
        """
        A locked account (C{!} or C{*} before or instead of its hash) is
        refused after hashing against the dummy hash, never its own.
        """
        for locked in ("!" + _SECRET + "right", "*", ""):
            self.hashes["alice"] = locked
            del self.crypted[:]
            self.assertIsInstance(self.login(b"alice", b"secret"), UnauthorizedLogin)
            self.assertEqual(len(self.crypted), 1)
            self.assertNotEqual(self.crypted[0][1], locked)

    def test_realCrypt(self) -> None:
        """
        With Python's crypt(3), a SHA-512 hash is verified.
        """
        if not _hasModules():
            raise self.skipTest("no crypt module (Python 3.13 and later)")
        hashed = _crypt("secret", "$6$saltsalt")
        assert hashed is not None
        checker = UnixPasswords(_Reactor(), self.pool, {"alice": hashed}.get)  # type: ignore[arg-type]
        d = checker.requestAvatarId(UsernamePassword(b"alice", b"secret"))
        wrong = checker.requestAvatarId(UsernamePassword(b"alice", b"secre"))
        self.pool.run()
        self.assertEqual(self.successResultOf(d), b"alice")
        self.failureResultOf(wrong, UnauthorizedLogin)


class TapTests(SynchronousTestCase):
    def test_authUnix(self) -> None:
        """
        C{twistd smtpd --auth unix} checks with L{UnixPasswords}, not
        Twisted's C{unix} checker, which hashes on the reactor thread and
        answers at once for users that do not exist.
        """
        if not _hasModules():
            raise self.skipTest("--auth unix is refused without crypt and spwd")
        if sys.platform != "linux":
            raise self.skipTest("shadow passwords")
        checkers = _parse()["credCheckers"]
        self.assertEqual(len(checkers), 1)
        self.assertIsInstance(checkers[0], UnixPasswords)
