# -*- test-case-name: tests.test_maildirlinks -*-
"""
The per-recipient Maildirs below the root of a L{MaildirHandler
<twisted_smtpd.handlers.MaildirHandler>} with C{perRecipient}, reached
without following a symbolic link; used in a pool thread.

The root is opened as the operator named it (a symbolic link there, or
above it, is followed: the operator's choice), and every directory below it
(C{domains/}, the domain, the local part, C{tmp/} and C{new/}) one at a time
from its parent's descriptor with C{O_NOFOLLOW}, made there with
C{mkdirat(2)} when missing.  The root's own C{tmp/}, where each message is
written before it is linked into the recipients' C{new/}, is opened with
C{O_NOFOLLOW} too, and held open from the creation of the message's file
to its removal (L{createBelow}).  A directory that a user able to write below
the root (the owner of a mailbox, or anyone who may write into C{domains/})
replaced by a link to C{/etc}, say, is thus never written through, whichever
user the server runs as: the delivery fails with C{ELOOP} naming the link,
as Postfix's C{safe_open} refuses to follow a link it does not trust.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted_smtpd.handlers._maildirdelivery import Delivery

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW_DIRECTORY = _DIRECTORY | os.O_NOFOLLOW

#: The flags a recipient's copy of a message is created with in its
#: C{tmp/}: a new file, never an existing one nor a link's target.
CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

#: What the log line says of a symbolic link found below the root.
LINK_REFUSED = "symbolic link not followed"


def linkRefused(path: str) -> OSError:
    """
    The error of a directory below the root found to be a symbolic link at
    C{path}.
    """
    return OSError(errno.ELOOP, LINK_REFUSED, path)


def _components(path: str, root: str) -> list[str]:
    """
    The names leading from C{root} down to C{path}, a directory below it
    (none for C{root} itself).

    @raise ValueError: If C{path} is not below C{root}.
    """
    if path == root:
        return []
    prefix = os.path.join(root, "")
    if not path.startswith(prefix):
        raise ValueError(f"{path!r} is not below {root!r}")
    return path[len(prefix) :].split("/")


def _step(parent: int | None, name: str, path: str) -> int:
    """
    Open the directory C{name} in the directory open as C{parent} (with
    C{None}, C{name} is a path, whose last component alone is not
    followed), not following a symbolic link.

    @param path: Its full path, which an error names.
    @raise OSError: C{ELOOP} (L{linkRefused}) if C{name} is a symbolic
        link; the system's error otherwise (C{ENOENT}, C{ENOTDIR} for a
        file).
    """
    try:
        return os.open(name, _NOFOLLOW_DIRECTORY, dir_fd=parent)
    except OSError as e:
        # Linux answers ENOTDIR for a link opened with O_DIRECTORY and
        # O_NOFOLLOW, other systems ELOOP: tell a link from a file.
        isLink = False
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            with contextlib.suppress(OSError):
                mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                isLink = stat.S_ISLNK(mode)
        if isLink:
            raise linkRefused(path) from None
        e.filename = path
        raise


def openBelow(path: str, root: str) -> int:
    """
    A descriptor of the directory C{path}, C{root} or below it, reached
    from C{root} without following a symbolic link below it: the first
    directory below C{root} opened by its path (C{root} followed as the
    operator named it), each one further from its parent's descriptor.

    @raise OSError: As L{_step} for the first directory that cannot be
        opened so.
    """
    names = _components(path, root)
    if not names:
        return os.open(root, _DIRECTORY)
    # The first directory below the root opened by its path, in one
    # open(2): the root followed as the operator named it, not that one.
    reached = os.path.join(root, names[0])
    fd = _step(None, reached, reached)
    try:
        for name in names[1:]:
            reached = os.path.join(reached, name)
            child = _step(fd, name, reached)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def openChild(root: str, name: str) -> int:
    """
    A descriptor of the directory C{name} in C{root} (the root's own
    C{tmp/}): C{root} reached as the operator named it, C{name} without
    following a symbolic link, in one C{open(2)}.

    @raise OSError: As L{_step}: C{ELOOP} (L{linkRefused}) naming
        C{root/name} if it is a symbolic link.
    """
    path = os.path.join(root, name)
    return _step(None, path, path)


def _make(parent: int, name: str, path: str) -> bool:
    """
    Make the directory C{name} (mode 0700) in the directory open as
    C{parent}, unless something is there already (C{mkdir} follows no
    link).

    @param path: Its full path, which an error names.
    @return: Whether it was made.
    """
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:
        return False
    except OSError as e:
        e.filename = path
        raise
    return True


def openNewBelow(target: str, root: str) -> tuple[int, list[str]]:
    """
    A descriptor of the C{new/} directory of the Maildir C{target} below
    C{root}, reached in one walk down from C{root}: C{root/<first name>}
    opened as one path (C{root} as the operator named it), each directory
    below from its parent without following a symbolic link.

    What is missing on the way is made (mode 0700) in its parent with
    C{mkdirat(2)}: a missing C{new/} makes C{tmp/}, C{new/} and C{cur/}
    (those of them missing), as Postfix's C{local(8)} makes a Maildir's
    directories only when the delivery into it finds them missing.  A
    Maildir whose C{new/} is there is not looked at further.

    @return: The descriptor, and the directories whose entries changed, to
        be fsynced.
    @raise OSError: C{ELOOP} (L{linkRefused}) naming the first directory on
        the way that is a symbolic link.
    """
    changed: list[str] = []
    parent: int | None = None  # None: the root, reached by its path.
    reached = root
    try:
        for name in [*_components(target, root), "new"]:
            above, reached = reached, os.path.join(reached, name)
            try:
                child = _step(parent, reached if parent is None else name, reached)
            except FileNotFoundError:
                if parent is None:
                    parent = os.open(root, _DIRECTORY)
                subs = ("tmp", "new", "cur") if name == "new" else (name,)
                made = False
                for sub in subs:
                    made = _make(parent, sub, os.path.join(above, sub)) or made
                if made:
                    changed.append(above)
                child = _step(parent, name, reached)
            if parent is not None:
                os.close(parent)
            parent = child
    except BaseException:
        if parent is not None:
            os.close(parent)
        raise
    assert parent is not None
    return parent, changed


def openTmpBelow(target: str, root: str) -> int:
    """
    A descriptor of the C{tmp/} directory of the Maildir C{target} below
    C{root} (where a copy is written when no hard link can be made), made
    there if missing, reached without following a symbolic link below
    C{root}.

    @raise OSError: As L{openBelow}.
    """
    tmp = os.path.join(target, "tmp")
    try:
        return openBelow(tmp, root)
    except FileNotFoundError:
        pass
    fd = openBelow(target, root)
    try:
        _make(fd, "tmp", tmp)
        return _step(fd, "tmp", tmp)
    finally:
        os.close(fd)


def createBelow(delivery: Delivery) -> int:
    """
    Create the tmp file of a message for per-recipient Maildirs in the
    root's C{tmp/}, that directory reached without following a symbolic
    link (L{openChild}) and held open as the message's C{tmpFd} until the
    file is removed (L{removeBelow}): its links into the recipients'
    C{new/}, its copies and its removal go through it, never through a
    link put in its place meanwhile.

    @raise OSError: C{ELOOP} naming C{tmp/} if it is a symbolic link.
    """
    directory = openChild(delivery.handler.path, "tmp")
    try:
        fd = os.open(delivery.unique, CREATE, 0o600, dir_fd=directory)
    except BaseException:
        os.close(directory)
        raise
    delivery.tmpFd = directory
    return fd


def removeBelow(delivery: Delivery) -> None:
    """
    Remove the tmp file of a message for per-recipient Maildirs, if it was
    created, through the directory it was created in, and close that.
    """
    directory, delivery.tmpFd = delivery.tmpFd, None
    if directory is None:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(delivery.unique, dir_fd=directory)
    finally:
        os.close(directory)
