# -*- test-case-name: tests.test_passwordfile -*-
"""
The checker of C{--auth file:PATH}: Twisted's L{FilePasswordDB}, which
reads its file again at each login (a password changed is in force at
once), with the file opened as the server's other files are at start,
and its C{USER:PASSWORD} lines read strictly (L{lineProblem}).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from twisted.cred.checkers import FilePasswordDB

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.files import openRegular

__all__ = ["PasswordFile", "fileProblems", "lineProblem"]

#: How the hashes of crypt(3) (C{$6$...}, C{$2b$...}, C{$y$...}, ...),
#: passlib (C{$pbkdf2-sha256$...}) and Dovecot or LDAP (C{{SHA512-CRYPT}...},
#: C{{SSHA}...}) begin.
_HASH = re.compile(
    rb"\$(?:1|2[abxy]?|5|6|7|y|gy|sha1|md5|argon2(?:i|d|id)|scrypt|pbkdf2(?:-[a-z0-9]+)?)\$"
    rb"|\{[A-Za-z0-9._-]+\}"
)


def lineProblem(line: bytes) -> str | None:
    """
    What makes one line of the file (trailing white space already removed,
    as L{FilePasswordDB} removes it) unfit to log anyone in, or C{None}.
    Blank lines and comments (C{#}) are not entries and have none.

    The file holds plain C{USER:PASSWORD} lines.  Twisted's reading takes
    the password up to a second colon, a hash as the password it stands
    for, and an empty password as one; each would let in who should not
    get in: anyone knowing a truncated password, anyone holding the hash,
    and anyone knowing the name (CRAM-MD5 keyed with nothing).
    """
    if not line or line.startswith(b"#"):
        return None
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


def fileProblems(lines: Iterable[bytes]) -> Iterator[tuple[int, str]]:
    """
    The line numbers (from 1) and problems (L{lineProblem}) of C{lines}.
    """
    for number, line in enumerate(lines, 1):
        problem = lineProblem(line.rstrip())
        if problem is not None:
            yield number, problem


class PasswordFile(FilePasswordDB):
    """
    A L{FilePasswordDB} whose file, when a login cannot read it (removed,
    replaced by a directory or a named pipe, no longer readable), fails
    that login with C{454 4.7.0 Temporary authentication failure} (RFC
    4954 section 6, as Postfix answers when its SASL database cannot be
    read) and one error line naming the file, instead of 535: the client's
    credentials were not judged, and it should try again later rather
    than take its password for wrong.  A named pipe put in its place is
    refused without waiting on it (L{openRegular}), so that it cannot
    block the server.

    A line with a problem (L{lineProblem}), refused at start, may still be
    written later: it logs nobody in, and one error line per change of the
    file names its number and the problem (never its text, which holds a
    password).
    """

    _reported: tuple[int, int, int] | None = None

    def _loadCredentials(self) -> Iterable[tuple[bytes, bytes]]:
        """
        The file's users and passwords, once it is known to be a regular
        file that can be opened; lines with a problem left out.

        @raise SMTPError: 454 4.7.0, when it cannot be.
        """
        try:
            fd = openRegular(self.filename)
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self._log.error(
                "--auth file: cannot read {path!r}: {why}; AUTH answered 454 until it can",
                path=self.filename,
                why=why,
            )
            reply = catalogue.AUTH_TEMPORARY_FAILURE
            raise SMTPError(reply.code, "\n".join(reply.lines), reply.enhanced) from None
        return self._entries(os.fdopen(fd, "rb"))

    def _entries(self, file: BinaryIO) -> list[tuple[bytes, bytes]]:
        """
        The users and passwords of C{file}'s lines, read as
        L{FilePasswordDB} reads them (trailing white space removed), without
        the lines with a problem: logged, once for each change of the file.
        The whole file is read, whichever user logs in: a known user's
        login takes as long as an unknown one's, and every line with a
        problem is reported.
        """
        entries = []
        with file:
            status = os.fstat(file.fileno())
            version = (status.st_ino, status.st_mtime_ns, status.st_size)
            report = version != self._reported
            self._reported = version
            for number, line in enumerate(file, 1):
                line = line.rstrip()
                problem = lineProblem(line)
                if problem is not None:
                    if report:
                        self._log.error(
                            "--auth file: {path!r} line {line}: {problem}; it logs nobody in",
                            path=self.filename,
                            line=number,
                            problem=problem,
                        )
                    continue
                if not line or line.startswith(b"#"):
                    continue
                user, _, password = line.partition(b":")
                entries.append(((user if self.caseSensitive else user.lower()), password))
        return entries
