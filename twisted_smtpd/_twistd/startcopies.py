# -*- test-case-name: tests.test_startcopies -*-
"""
The files the parent of C{twistd smtpd --workers} read at start, handed to
its workers.

The parent reads the certificates, keys and configuration file as root,
before C{twistd --uid} switches users; its workers start after the switch,
and again whenever one must be replaced, as that user.  A key only root may
read (Debian's C{/etc/ssl/private}), or a file removed since the start,
would make every worker fail its start, again and again.  So the parent
writes what it read (L{keptReads <twisted_smtpd._core.files.keptReads>})
into an anonymous file, whose descriptor each worker inherits
(L{START_COPIES} names it); the worker reads it at once and closes it
(L{useCopiesFromParent}), reads from it the files it cannot open itself
while it starts, and forgets them once it runs.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Mapping, MutableMapping
from contextlib import suppress

from twisted_smtpd._core.files import useStartCopies

#: The environment variable naming the descriptor of a worker's copies.
START_COPIES = "TWISTED_SMTPD_START_COPIES"


def copiesFile(copies: Mapping[str, bytes]) -> int:
    """
    An anonymous file holding C{copies}: in memory (C{memfd_create}) where
    the system has it, else a temporary file removed at once.

    @return: Its descriptor, close-on-exec (handed to a worker by placing
        it among the worker's descriptors).
    """
    data = json.dumps(
        {path: base64.b64encode(content).decode("ascii") for path, content in copies.items()}
    ).encode("ascii")
    try:
        fd = os.memfd_create("twisted-smtpd-start-copies", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd, path = tempfile.mkstemp(prefix="twisted-smtpd-start-copies-")
        os.unlink(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def useCopiesFromParent(environ: MutableMapping[str, str] | None = None) -> None:
    """
    In a worker: read the copies its parent handed it, if any, and close
    their descriptor, so that the processes the worker starts (a handler's
    command) never inherit it.
    """
    if environ is None:
        environ = os.environ
    value = environ.pop(START_COPIES, None)
    if value is None or not value.isdigit():
        return
    fd = int(value)
    try:
        size = os.fstat(fd).st_size
        chunks = []
        offset = 0
        while offset < size:
            # At its own offset: the descriptor's position is shared with
            # the parent and every other worker.
            chunk = os.pread(fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
    except OSError:
        return
    finally:
        with suppress(OSError):
            os.close(fd)
    copies = json.loads(b"".join(chunks))
    useStartCopies({path: base64.b64decode(text) for path, text in copies.items()})
