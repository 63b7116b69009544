# -*- test-case-name: tests.test_maildir -*-
"""
C{syncfs(2)} from the C library, where it can be trusted: the one flush
per commit cycle of L{MaildirHandler <twisted_smtpd.handlers.MaildirHandler>}
(L{twisted_smtpd.handlers._maildirdisk}).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable


def loadSyncfs(
    platform: str = sys.platform, release: str | None = None
) -> Callable[[int], None] | None:
    """
    C{syncfs(2)} from the C library, or C{None} where it is missing or where
    it does not report write-back errors (Linux before 5.8), so that an
    C{fsync} per file must be used instead.

    @param platform: C{sys.platform}.
    @param release: The kernel release, C{os.uname().release} by default.
    """
    if not platform.startswith("linux"):
        return None
    if release is None:
        release = os.uname().release
    try:
        major, minor = (int(part) for part in release.split(".")[:2])
    except ValueError:
        return None
    if (major, minor) < (5, 8):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        # ctypes releases the GIL for the call.
        if function(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return syncfs
