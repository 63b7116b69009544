# -*- test-case-name: tests.test_unixpasswords -*-
"""
The checker of C{--auth unix}: the system's users and their crypt(3)
password hashes, as Twisted's C{unix} checker reads them, verified off the
reactor thread, in the same time for a user that does not exist, and
compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import warnings
from collections.abc import Callable
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

__all__ = ["UnixPasswords", "systemHash"]


def _crypt(password: str, setting: str) -> str | None:
    """
    Python's C{crypt.crypt} (Python 3.12 and earlier; C{--auth unix} is
    refused at start without it): C{None} for a setting it cannot use.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # type: ignore[import-not-found,unused-ignore]
    try:
        result: str | None = crypt.crypt(password, setting)
    except OSError:
        return None
    return result


def systemHash(username: str) -> str | None:
    """
    The password hash of the system user C{username}, as Twisted's C{unix}
    checker finds it (C{/etc/passwd}, else C{/etc/shadow}), or C{None} when
    there is no such user.
    """
    import pwd

    try:
        hashed = pwd.getpwnam(username).pw_passwd
    except KeyError:
        return None
    if hashed not in ("*", "x"):
        return hashed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import spwd  # type: ignore[import-not-found,unused-ignore]
    try:
        shadowed: str = spwd.getspnam(username).sp_pwdp
    except KeyError:
        return None
    return shadowed


def _dummySetting(crypt: Callable[[str, str], str | None]) -> str:
    """
    A hash to verify a password against for a user that does not exist (or
    has no usable hash), so that its refusal takes as long as a wrong
    password: one of the system's own hashes where it can be read (the same
    method and cost as its users'), else a SHA-512 one.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import spwd

            for entry in spwd.getspall():
                if _usable(entry.sp_pwdp):
                    return str(entry.sp_pwdp)
        except (ImportError, OSError):
            pass
    made = crypt(os.urandom(16).hex(), "$6$" + os.urandom(12).hex()[:16])
    return made if made is not None else "$6$x"


def _usable(hashed: str | None) -> bool:
    """
    Whether C{hashed} can match a password: not empty, not locked (C{!},
    C{*}).
    """
    return bool(hashed) and hashed[0] not in "!*" if hashed is not None else False


@implementer(ICredentialsChecker)
class UnixPasswords:
    """
    Check L{IUsernamePassword} against the system's password hashes.

    Twisted's C{unix} checker runs crypt(3) on the reactor thread (tens of
    milliseconds for yescrypt or SHA-512: every session waits), answers at
    once for a user that does not exist (which tells who does) and compares
    with C{==}.  Here the lookup and the hashing run in the reactor's
    thread pool, a password for an unknown user (or a locked one) is hashed
    against a dummy hash all the same, and the result is compared with
    L{hmac.compare_digest}.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        reactor: Any = None,
        threadpool: ThreadPool | None = None,
        lookUp: Callable[[str], str | None] = systemHash,
        crypt: Callable[[str, str], str | None] = _crypt,
    ) -> None:
        """
        @param reactor: The reactor whose thread pool runs the checks (the
            global one by default).
        @param threadpool: The pool, when not the reactor's.
        @param lookUp: Finds a user's hash (L{systemHash}).
        @param crypt: crypt(3).
        """
        self._reactor = reactor
        self._threadpool = threadpool
        self._lookUp = lookUp
        self._crypt = crypt
        # Made now, not at the first unknown user, whose refusal would
        # otherwise take twice as long.
        self._dummy = _dummySetting(crypt)

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes | tuple[()]]:
        """
        The user name (the avatar id) when the password is the user's,
        checked in a thread.

        @return: A L{Deferred} firing with the name, or failing with
            L{UnauthorizedLogin}.
        """
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        threadpool = self._threadpool or reactor.getThreadPool()
        username: bytes = credentials.username
        password: bytes = credentials.password
        d: Deferred[bool] = deferToThreadPool(
            reactor,
            threadpool,
            self.verify,
            username.decode("utf-8", "replace"),
            password.decode("utf-8", "replace"),
        )

        def decided(matched: bool) -> bytes | tuple[()]:
            if not matched:
                raise UnauthorizedLogin()
            return username

        return d.addCallback(decided)

    def verify(self, username: str, password: str) -> bool:
        """
        Whether C{password} is C{username}'s; in the same time whether or
        not the user exists.  Runs in a thread.
        """
        try:
            hashed = self._lookUp(username)
        except (OSError, ValueError):
            hashed = None
        if hashed is None or not _usable(hashed):
            self._crypt(password, self._dummy)
            return False
        result = self._crypt(password, hashed)
        if result is None:
            return False
        return hmac.compare_digest(result.encode("utf-8"), hashed.encode("utf-8"))
