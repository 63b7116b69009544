# -*- test-case-name: tests.test_unixlockleft -*-
"""
The directories and files a start of C{twistd smtpd} makes for its
delivery (the Maildir and its C{tmp}, C{new} and C{cur}, the mbox file)
while its options are read, before it knows it will start: a start that
ends with its one line (L{exitWithError
<twisted_smtpd._twistd.tapconfig.exitWithError>}) removes those still
empty, so that it leaves nothing behind.  What existed before the start
is never touched.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable

__all__ = ["absentPaths", "remember", "removeMade"]

#: What this start made, in the order it was made: one list of paths per
#: L{remember}.
_MADE: list[list[str]] = []


def absentPaths(path: str, children: Iterable[str] = ()) -> list[str]:
    """
    What making C{path} (and C{children} inside it) would make: the
    directories above it that do not exist, outermost first, C{path}
    itself and the children that do not exist.
    """
    path = os.path.abspath(path)
    chain = []
    current = path
    while not os.path.lexists(current):
        chain.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    chain.reverse()
    inside = [os.path.join(path, child) for child in children]
    return chain + [child for child in inside if not os.path.lexists(child)]


def remember(paths: Iterable[str]) -> None:
    """
    Record C{paths}, found absent by L{absentPaths} before one thing (a
    Maildir, an mbox file) was made, as made by this start; those not made
    after all are passed over when removing.
    """
    group = list(paths)
    if group:
        _MADE.append(group)


def _holdsAnything(group: list[str]) -> bool:
    """
    Whether what C{group} made holds anything now: a file in one of its
    directories, or its file not empty.
    """
    for path in group:
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            if info.st_size:
                return True
        elif not stat.S_ISDIR(info.st_mode) or any(files for _, _, files in os.walk(path)):
            return True
    return False


def removeMade() -> None:
    """
    Remove what this start made (L{remember}), the innermost first, when
    it still holds nothing (L{_holdsAnything}): a Maildir that holds a
    message is kept whole, not left without its empty C{cur}.
    """
    while _MADE:
        group = _MADE.pop()
        if _holdsAnything(group):
            continue
        for path in reversed(group):
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    os.rmdir(path)
                else:
                    os.remove(path)
