# -*- test-case-name: tests.test_passwordfile -*-
"""
The checker of C{--auth file:PATH}: Twisted's L{FilePasswordDB}, its file
read again, in a pool thread, whenever it changed (a password changed is in
force at the next login), opened as the server's other files are at start,
and its C{USER:PASSWORD} lines read strictly (L{lineProblem},
L{readEntries}).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from twisted.cred.checkers import FilePasswordDB
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.files import openRegular

__all__ = ["PasswordFile", "fileProblems", "lineProblem", "readEntries"]

_T = TypeVar("_T")

#: How the hashes of crypt(3) (C{$6$...}, C{$2b$...}, C{$y$...}, ...),
#: passlib (C{$pbkdf2-sha256$...}) and Dovecot or LDAP (C{{SHA512-CRYPT}...},
#: C{{SSHA}...}) begin.
_HASH = re.compile(
    rb"\$(?:1|2[abxy]?|5|6|7|y|gy|sha1|md5|argon2(?:i|d|id)|scrypt|pbkdf2(?:-[a-z0-9]+)?)\$"
    rb"|\{[A-Za-z0-9._-]+\}"
)


def lineProblem(line: bytes) -> str | None:
    """
    What makes one line of the file (its line end, LF or CR LF, already
    removed) unfit to log anyone in, or C{None}.  Blank lines and comments
    (C{#}) are not entries and have none.

    The file holds plain C{USER:PASSWORD} lines.  Twisted's reading takes
    the password up to a second colon, a hash as the password it stands
    for, and an empty password as one; each would let in who should not
    get in: anyone knowing a truncated password, anyone holding the hash,
    and anyone knowing the name (CRAM-MD5 keyed with nothing).
    """
    if not line.strip() or line.startswith(b"#"):
        return None
    if line != line.rstrip():
        # Dovecot's passwd-file checks it as part of the password,
        # Twisted's reading without it: which one was meant is unclear.
        return (
            "white space or a CR after the password: remove it (it is unclear whether"
            " it belongs to the password)"
        )
    fields = line.split(b":")
    if len(fields) < 2:
        return "no colon, expected USER:PASSWORD"
    if len(fields) > 2:
        return (
            "more than one colon: a password cannot hold one (only the part before"
            " it would be checked)"
        )
    user, password = fields
    if not user:
        return "empty user name"
    if not password:
        return "empty password (CRAM-MD5 would log in anyone who knows the name)"
    try:
        user.decode("utf-8")
        password.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 (AUTH carries UTF-8 names and passwords)"
    if _HASH.match(password):
        return (
            "the password looks like a hash: the file holds plain passwords, so the"
            " hash itself would be the password"
        )
    return None


def _lineEnd(line: bytes) -> tuple[bytes, bool]:
    """
    C{line} without its line end (LF, or CR LF), and whether that was CR LF.
    """
    if line.endswith(b"\r\n"):
        return line[:-2], True
    return line.removesuffix(b"\n"), False


def readEntries(
    lines: Iterable[bytes], caseSensitive: bool = True
) -> tuple[dict[bytes, bytes], list[tuple[int, str]], int | None]:
    """
    The users and passwords of the file's C{lines}, read strictly.

    A line with a problem (L{lineProblem}) logs nobody in.  A user name
    given on more than one line logs nobody in either, whichever password
    is given: which line was meant is unclear (Dovecot's passwd-file takes
    the first and logs an error, a later line appended to change a password
    would be ignored so).  Lines ending in CR LF (a file written on
    Windows) are read as Dovecot reads them: the CR is part of the line
    end, not of the password.

    @param caseSensitive: Whether user names differing in case are other
        users (else they are lowered).
    @return: The users and passwords; the line numbers (from 1) and
        problems of the lines that log nobody in; and the number of the
        first line ending in CR LF, if any.
    """
    users: dict[bytes, bytes] = {}
    firstLine: dict[bytes, int] = {}
    repeated: set[bytes] = set()
    problems: list[tuple[int, str]] = []
    crlf: int | None = None
    for number, raw in enumerate(lines, 1):
        line, windows = _lineEnd(raw)
        if windows and crlf is None:
            crlf = number
        problem = lineProblem(line)
        if problem is not None:
            problems.append((number, problem))
            continue
        if not line.strip() or line.startswith(b"#"):
            continue
        user, _, password = line.partition(b":")
        if not caseSensitive:
            user = user.lower()
        first = firstLine.setdefault(user, number)
        if first != number:
            repeated.add(user)
            problems.append((number, f"the user name of line {first} again: neither line logs in"))
            continue
        users[user] = password
    for user in repeated:
        del users[user]
    return users, problems, crlf


def fileProblems(lines: Iterable[bytes]) -> Iterator[tuple[int, str]]:
    """
    The line numbers (from 1) and problems of C{lines} (L{readEntries}).
    """
    yield from readEntries(lines)[1]


def _inThread(function: Callable[[], _T]) -> Deferred[_T]:
    from twisted.internet.threads import deferToThread

    return deferToThread(function)


#: What identifies one content of the file: its device, inode, size, and
#: the times of its last change.
_Version = tuple[int, int, int, int, int]


#: What one reading of the file gives: its version and what
#: L{readEntries} reads in it.
_Reading = tuple[_Version, dict[bytes, bytes], list[tuple[int, str]], int | None]


def _version(status: os.stat_result) -> _Version:
    return (
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )


#: The warning, once for each change of the file, of lines ending in CR LF.
CRLF_WARNING = (
    "--auth file: {path!r} line {line} (and maybe others) ends in CR LF, as a file"
    " written on Windows: the CR is read as part of the line end, not of the password"
)


class PasswordFile(FilePasswordDB):
    """
    A L{FilePasswordDB} whose file is read once for each change of it (its
    inode, size or times, checked with one C{stat} at each login), in a
    pool thread: a large file never holds the reactor (100,000 lines took
    80 ms to read).  Logins that arrive while it is read wait for that
    read.

    When a login cannot read it (removed, replaced by a directory or a named
    pipe, no longer readable), that login fails with C{454 4.7.0 Temporary
    authentication failure} (RFC 4954 section 6, as Postfix answers when
    its SASL database cannot be read) and one error line naming the file,
    instead of 535: the client's credentials were not judged, and it should
    try again later rather than take its password for wrong.  A named pipe
    put in its place is refused without waiting on it (L{openRegular}), so
    that it cannot block the server.

    A line with a problem (L{readEntries}), refused at start, may still be
    written later: it logs nobody in, and one error line per change of the
    file names its number and the problem (never its text, which holds a
    password).

    @ivar inThread: Runs a function in a pool thread, its result in a
        L{Deferred} (the reactor's pool by default).
    """

    _log = Logger()
    _reported: _Version | None = None
    _read: _Version | None = None
    _users: dict[bytes, bytes] | None = None
    _waiting: list[Deferred[dict[bytes, bytes]]] | None = None

    def __init__(
        self,
        filename: str,
        inThread: Callable[[Callable[[], Any]], Deferred[Any]] = _inThread,
    ) -> None:
        super().__init__(filename)  # type: ignore[no-untyped-call]
        self.inThread = inThread

    def readNow(self) -> None:
        """
        Read the file at once, on the calling thread: at start, so that its
        lines ending in CR LF are warned of then, and the first login finds
        it read.
        """
        maybeDeferred(self._readFile).addBoth(self._readDone)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        """
        Check C{credentials} against the file's current content.
        """
        username: bytes = credentials.username
        if not self.caseSensitive:
            username = username.lower()

        def check(users: dict[bytes, bytes]) -> Deferred[Any]:
            password = users.get(username)
            if password is None:
                return fail(UnauthorizedLogin())
            checked = maybeDeferred(credentials.checkPassword, password)
            return checked.addCallback(self._cbPasswordMatch, username)

        return self._current().addCallback(check)

    def _current(self) -> Deferred[dict[bytes, bytes]]:
        """
        The users and passwords of the file as it is now: those read before
        if it did not change since, else read again in a pool thread.
        """
        try:
            version: _Version | None = _version(os.stat(self.filename))
        except OSError:
            version = None  # Its reading fails, with its error line.
        if version is not None and version == self._read and self._users is not None:
            return succeed(self._users)
        waiter: Deferred[dict[bytes, bytes]] = Deferred()
        if self._waiting is not None:
            # A read is under way: its result.
            self._waiting.append(waiter)
            return waiter
        self._waiting = [waiter]
        self.inThread(self._readFile).addBoth(self._readDone)
        return waiter

    def _readFile(self) -> _Reading:
        """
        Read the file (in a pool thread), once it is known to be a regular
        file that can be opened.

        @return: Its version and what L{readEntries} reads in it.
        @raise OSError: When it cannot be opened.
        @raise ValueError: When it is not a regular file.
        """
        with os.fdopen(openRegular(self.filename), "rb") as file:
            version = _version(os.fstat(file.fileno()))
            return (version, *readEntries(file, self.caseSensitive))

    def _readDone(self, result: _Reading | Failure) -> None:
        """
        The file was read, or could not be: log what there is to log, on
        the reactor thread, and answer the logins waiting for it.
        """
        waiting, self._waiting = self._waiting or [], None
        if isinstance(result, Failure):
            failure: Failure | SMTPError = result
            error = result.value
            if isinstance(error, (OSError, ValueError)):
                why = error.strerror if isinstance(error, OSError) and error.strerror else error
                self._log.error(
                    "--auth file: cannot read {path!r}: {why}; AUTH answered 454 until it can",
                    path=self.filename,
                    why=str(why),
                )
                reply = catalogue.AUTH_TEMPORARY_FAILURE
                failure = SMTPError(reply.code, "\n".join(reply.lines), reply.enhanced)
            for waiter in waiting:
                waiter.errback(failure)
            return
        version, users, problems, crlf = result
        self._read, self._users = version, users
        if version != self._reported:
            self._reported = version
            for number, problem in problems:
                self._log.error(
                    "--auth file: {path!r} line {line}: {problem}; it logs nobody in",
                    path=self.filename,
                    line=number,
                    problem=problem,
                )
            if crlf is not None:
                self._log.warn(CRLF_WARNING, path=self.filename, line=crlf)
        for waiter in waiting:
            waiter.callback(users)

    def _loadCredentials(self) -> Iterable[tuple[bytes, bytes]]:
        """
        The file's users and passwords, read on the calling thread (for
        L{getUser}; logins read it in a pool thread).

        @raise OSError: When it cannot be opened.
        @raise ValueError: When it is not a regular file.
        """
        return self._readFile()[1].items()
