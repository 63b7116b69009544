# -*- test-case-name: tests.test_runuser -*-
"""
The user C{twistd --uid/--gid} runs C{twistd smtpd} as.

Started as root with C{--uid} or C{--gid}, C{twistd} parses the options and
binds the ports as root, then switches to that user and group before the
server starts.  What the start makes for the server's own use (the
Maildir's directories, the mbox file, the log file, the metrics directory
of C{--workers}) belongs to that user, and the checks of files the server
writes or reads again later (C{--pipe-spool}, C{--auth file:}) are that
user's: L{asRunUser} runs them with its identity, as Postfix's C{local}
delivers as the user it runs as.  The certificate files are read as root,
before the switch, as Postfix's C{smtpd} reads them.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.python import usage


def runIdentity(config: Any) -> tuple[int | None, int | None, list[int]]:
    """
    The user, group and supplementary groups C{twistd} switches to once
    the ports are bound, as C{twistd} computes them: C{--gid} defaults to
    the group of C{--uid}'s user, whose groups are the supplementary ones.

    @param config: The options of C{smtpd}, whose C{parent} holds
        C{twistd}'s own.
    @return: C{(uid, gid, groups)}; C{(None, None, [])} when the process
        is not root or no C{--uid}/C{--gid} is given (nothing changes).
    @raise usage.UsageError: C{--uid} names no user (C{twistd} would end
        with a traceback looking up its groups).
    """
    parent: Any = getattr(config, "parent", None) or {}
    uid, gid = parent.get("uid"), parent.get("gid")
    if os.geteuid() != 0 or (uid is None and gid is None):
        return None, None, []
    if uid is None:
        return None, gid, []
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise usage.UsageError(f"--uid {uid}: no user has this uid") from None
    if gid is None:
        gid = entry.pw_gid
    return uid, gid, os.getgrouplist(entry.pw_name, gid)


@contextmanager
def asRunUser(config: Any) -> Iterator[None]:
    """
    Run the block with the effective user, group and supplementary groups
    C{twistd} will switch to (L{runIdentity}), then go back to root's: the
    files and directories it makes are that user's, and its checks (an
    C{open}, C{os.access} with C{effective_ids}) are that user's.  Nothing
    changes when the process is not root or neither C{--uid} nor C{--gid}
    is given.

    @param config: The options of C{smtpd}.
    @raise usage.UsageError: C{--uid} names no user.
    """
    uid, gid, groups = runIdentity(config)
    if uid is None and gid is None:
        yield
        return
    savedGid, savedGroups = os.getegid(), os.getgroups()
    if uid is not None:
        os.setgroups(groups)
    if gid is not None:
        os.setegid(gid)
    if uid is not None:
        os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(savedGid)
        os.setgroups(savedGroups)


__all__ = ["asRunUser", "runIdentity"]
