# -*- test-case-name: tests.test_files -*-
"""
Opening the files a configuration names (certificates, keys, CA bundles,
password files, an mbox): regular files only.

A named pipe (FIFO) given by mistake would block the start until something
opens its other end, which may be never; a device such as C{/dev/zero}
never ends; neither can be read again when the certificates are reloaded.
So the file is opened without blocking (C{O_NONBLOCK}, with which opening
a FIFO does not wait) and its type checked on the open descriptor
(C{fstat}), not on the path first: a path swapped for a FIFO between a
check and the opening cannot block the start either.

The parent of C{twistd smtpd --workers} reads these files at start, as
root before C{twistd --uid} switches users; its workers start later, as
that user, and again whenever one is replaced.  So the parent keeps what it
read (L{keepReads}, L{keptReads}) and hands it to each worker, which reads
its own copy of a file it cannot open itself (L{useStartCopies}: a key only
root may read, a file removed since) until it has started
(L{forgetStartCopies}); a reload reads the files again, as the single
process does.

The one module of the core that touches the file system: it imports
nothing of Twisted, so that the server glue, the handlers and C{twistd}
share it.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = [
    "FILE_LIMIT",
    "NotRegularFile",
    "checkReadable",
    "forgetStartCopies",
    "keepReads",
    "keptReads",
    "openRegular",
    "readLimited",
    "readRegular",
    "useStartCopies",
]

#: The largest file read whole (a CA bundle is some hundred KiB).
FILE_LIMIT = 16 * 1024 * 1024


class NotRegularFile(ValueError):
    """
    A path names something other than a regular file.

    @ivar path: The path.
    @ivar kind: What it names instead (C{"a named pipe"}).
    """

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(f"not a regular file ({kind})")
        self.path = path
        self.kind = kind


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a special file"


def openRegular(path: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """
    Open C{path}, refusing anything but a regular file (symbolic links to
    one are followed) without waiting on it.

    @param flags: The C{os.open} flags (C{O_RDONLY}, or C{O_WRONLY |
        O_APPEND | O_CREAT}); C{O_NONBLOCK}, C{O_NOCTTY} and C{O_CLOEXEC}
        are added.
    @param mode: The permissions of a file C{O_CREAT} makes.
    @return: The file descriptor, in blocking mode, close-on-exec.
    @raise NotRegularFile: C{path} names a named pipe, a device, a socket
        or a directory.
    @raise OSError: It cannot be opened.
    """
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        # A named pipe opened for writing with no reader, or a socket.
        try:
            kind = _kind(os.stat(path).st_mode)
        except OSError:
            kind = "a special file"
        raise NotRegularFile(path, kind) from None
    try:
        found = os.fstat(fd).st_mode
        if not stat.S_ISREG(found):
            raise NotRegularFile(path, _kind(found))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def readRegular(path: str, what: str, limit: int = FILE_LIMIT) -> bytes:
    """
    The contents of the regular file C{path}, of at most C{limit} bytes.

    @param what: What the file holds, for the error (C{"certificate"}).
    @raise ValueError: C{"cannot read <what> <path>: <why>"}, for
        something other than a regular file (L{openRegular}) or a file
        larger than C{limit}.
    @raise OSError: If the file cannot be opened or read.
    """
    try:
        data = readLimited(path, limit)
    except NotRegularFile as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from None
    if len(data) > limit:
        raise ValueError(f"cannot read {what} {path}: larger than {limit} bytes")
    return data


#: What this process read while it keeps its reads (L{keepReads}), by path.
_kept: dict[str, bytes] | None = None

#: The files its parent read at start, by path (L{useStartCopies}).
_startCopies: dict[str, bytes] = {}


def readLimited(path: str, limit: int) -> bytes:
    """
    The first C{limit + 1} bytes of the regular file C{path} (the caller
    refuses a longer file).  A file this process cannot open is read from
    the copy its parent handed it at start, if it holds one.

    @raise NotRegularFile: C{path} names something else (L{openRegular}).
    @raise OSError: It cannot be opened or read, and no copy stands in.
    """
    try:
        fd = openRegular(path)
    except OSError:
        copy = _startCopies.get(path)
        if copy is None:
            raise
        return copy[: limit + 1]
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if _kept is not None and len(data) <= limit:
        _kept[path] = data
    return data


def checkReadable(path: str, limit: int = FILE_LIMIT) -> None:
    """
    Check that the regular file C{path} can be read (or has a copy from
    this process's parent), as L{readLimited} would read it.  While reads
    are kept, the file is read whole, so that it is kept too.

    @raise NotRegularFile: C{path} names something else.
    @raise OSError: It cannot be opened, and no copy stands in.
    """
    if _kept is not None:
        readLimited(path, limit)
        return
    try:
        os.close(openRegular(path))
    except OSError:
        if path not in _startCopies:
            raise


def keepReads() -> None:
    """
    From now on, keep every file read through this module (whole and
    within its limit), for L{keptReads}: the parent of C{--workers}, whose
    workers may not be able to read them.
    """
    global _kept
    _kept = {}


def keptReads() -> dict[str, bytes]:
    """
    The files read since L{keepReads}, by path; they are no longer kept
    after this call.
    """
    global _kept
    kept, _kept = _kept or {}, None
    return kept


def useStartCopies(copies: dict[str, bytes]) -> None:
    """
    In a worker: read C{copies} (by path) instead of each file it cannot
    open, until L{forgetStartCopies}.
    """
    _startCopies.clear()
    _startCopies.update(copies)


def forgetStartCopies() -> None:
    """
    In a worker that has started: read the files themselves from now on
    (a reload reads them again, as their user).
    """
    _startCopies.clear()
