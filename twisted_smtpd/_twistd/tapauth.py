# -*- test-case-name: tests.test_configerrors -*-
"""
The checks of C{twistd smtpd --auth}: each checker's description
(C{memory:}, C{file:}, C{unix}) refused at start where no login could
succeed, AUTH offered where a flag needs it, and the users of
C{memory:} stored as AUTH carries them.

Without C{--auth}, nothing here loads C{twisted.cred} nor the checkers'
modules.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from twisted.python import usage

from twisted_smtpd._core.files import openRegular
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.printable import printable
from twisted_smtpd._serving.authmechanisms import decidableMechanisms, ownsOnAuth
from twisted_smtpd._twistd.tapconfig import reason

if TYPE_CHECKING:
    from twisted.cred.checkers import ICredentialsChecker


def bytesUsers(checkers: Sequence[object]) -> None:
    """
    Store the users of C{--auth memory:...} checkers as bytes, as the
    credentials of AUTH carry them.
    """
    if not checkers:
        return
    from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse

    for checker in checkers:
        if isinstance(checker, InMemoryUsernamePasswordDatabaseDontUse):
            checker.users = {
                (k.encode("utf-8") if isinstance(k, str) else k): (
                    v.encode("utf-8") if isinstance(v, str) else v
                )
                for k, v in checker.users.items()
            }


def checkAuth(description: str) -> None:
    """
    Refuse C{--auth} descriptions that would start a server nobody can log
    in to: C{memory:} without users, or with a user whose password is
    empty (or whom anyone could log in as, with CRAM-MD5), C{file:} naming
    a file that cannot be read or is not a regular file (a named pipe
    would block every login).

    @raise usage.UsageError: Naming the description and why.
    """
    kind, _, argument = description.partition(":")
    kind = kind.strip().lower()
    if kind == "memory" and not _encodes(argument):
        # AUTH compares UTF-8 bytes; not repeated, it holds passwords.
        raise usage.UsageError("--auth memory:...: not UTF-8 text (a byte of it is not UTF-8)")
    if kind == "memory":
        parts = argument.split(":")
        if not argument or len(parts) % 2 or not all(parts[::2]):
            # Not repeated: the description holds passwords, and this line
            # goes to the terminal and the service's log.
            fields = len(parts) if argument else 0
            raise usage.UsageError(
                f"--auth memory:...: {fields} field{'' if fields == 1 else 's'}, expected"
                " memory:USER:PASSWORD[:USER:PASSWORD...] with no empty user name"
            )
        for user, password in zip(parts[::2], parts[1::2], strict=True):
            if not password:
                # PLAIN and LOGIN refuse an empty password (RFC 4616); an
                # HMAC keyed with nothing (CRAM-MD5) anyone can make.
                raise usage.UsageError(
                    f"--auth memory:...: user {printable(user)!r} has an empty password"
                    " (PLAIN and LOGIN take none, and CRAM-MD5 would log in anyone who"
                    " knows the name)"
                )
    elif kind == "file":
        from twisted_smtpd._twistd.passwordfile import fileProblems

        try:
            with os.fdopen(openRegular(argument), "rb") as f:
                problems = list(fileProblems(f))
        except (OSError, ValueError) as e:
            raise usage.UsageError(f"--auth {description!r}: {reason(e)}") from None
        if problems:
            # The line number and the problem, never the line: it holds a
            # password.
            number, problem = problems[0]
            more = f" (and {len(problems) - 1} more line(s))" if len(problems) > 1 else ""
            raise usage.UsageError(f"--auth {description!r}: line {number}: {problem}{more}")


#: The shadow password database C{--auth unix} reads.
SHADOW = "/etc/shadow"


def unixPasswordsProblem(
    asRunUser: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
) -> str | None:
    """
    Why Twisted's C{unix} checker (C{--auth unix}) could not check any
    password here, or L{None}: it needs Python's C{crypt} and C{spwd}
    modules (removed in Python 3.13), and, for the shadow passwords of
    every current system, to read C{/etc/shadow}, which only root (or the
    group C{shadow}) may.  Either way every login would fail as if the
    password were wrong.

    @param asRunUser: Makes the process the user the server runs as
        (C{twistd --uid}), who must be able to read them.
    """
    with warnings.catch_warnings():
        # Both are deprecated before their removal.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # noqa: F401
            import spwd  # noqa: F401
        except ImportError:
            return (
                "this Python has no crypt and spwd modules (removed in Python 3.13), so no"
                " password could be checked; use --auth file:PATH or a handler's onAuth"
            )
    try:
        with asRunUser():
            # Opened, not looked up: a lookup of a user the system's own
            # name service makes up (systemd's root and nobody) succeeds
            # without the file.
            os.close(os.open(SHADOW, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except FileNotFoundError:
        pass
    except OSError as e:
        return (
            f"cannot read the shadow passwords ({reason(e)}), so no password could be checked;"
            " under twistd --uid, that user must be able to (group shadow)"
        )
    return None


def _encodes(text: str) -> bool:
    """
    Whether C{text} encodes as UTF-8 (it holds no lone surrogate, as a byte
    of the command line that is not UTF-8 becomes).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def checkAuthOffered(
    checkers: Sequence[ICredentialsChecker], options: ServerOptions, handler: object
) -> None:
    """
    Refuse C{--auth} checkers with which the server would offer no AUTH
    mechanism (C{--disable AUTH}, or C{--auth-methods} naming only
    mechanisms nothing can decide, see L{decidableMechanisms}): AUTH would
    then be neither offered nor required, and mail taken from anyone.

    @param handler: The delivery handler, whose own C{onAuth} decides
        XOAUTH2.
    @raise usage.UsageError: Saying why no mechanism is left.
    """
    if not checkers:
        return
    from twisted_smtpd._serving.cred import portalFromCheckers

    if "AUTH" in options.disabledCommands:
        raise usage.UsageError("--auth and --disable AUTH exclude each other")
    methods = options.authMethods
    if not methods:
        raise usage.UsageError("--auth needs at least one mechanism in --auth-methods")
    if not decidableMechanisms(methods, portalFromCheckers(checkers), ownsOnAuth(handler)):
        raise usage.UsageError(
            f"--auth-methods {','.join(methods)}: the --auth checkers can decide"
            " none of them, so mail would be taken without AUTH (XOAUTH2 needs a --handler"
            " with onAuth, CRAM-MD5 a checker holding plain passwords, such as memory: or file:)"
        )


def checkAuthOptional(
    checkers: Sequence[ICredentialsChecker], options: ServerOptions, handler: object
) -> None:
    """
    Refuse C{--auth-optional} when the server offers no AUTH: neither
    C{--auth} checkers nor a C{--handler} whose own C{onAuth} decides it
    (or C{--disable AUTH}).  It would change nothing, and an operator who
    gives it most likely forgot C{--auth}: the server would start taking
    mail from anyone, with no AUTH to offer.  With checkers,
    L{checkAuthOffered} has already made sure AUTH is offered.

    @param handler: The delivery handler.
    @raise usage.UsageError: Saying what it needs.
    """
    if not options.authOptional or checkers:
        return
    methods = () if "AUTH" in options.disabledCommands else options.authMethods
    if not decidableMechanisms(methods, None, ownsOnAuth(handler)):
        raise usage.UsageError(
            "--auth-optional needs AUTH to be offered: --auth, or a --handler"
            " whose onAuth decides it"
        )
