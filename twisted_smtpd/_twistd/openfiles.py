# -*- test-case-name: tests.test_openfiles -*-
"""
The open-files limit of a C{twistd smtpd} process.

Each connection holds a descriptor, and a process that has none left can
neither accept a client (Twisted then closes it unanswered: C{EMFILE
recovery: Closed socket from ...}) nor open a message's file.  Many systems
start services with a soft limit of 1024 under a much higher hard limit,
leaving it to the programs that need more to raise their own, as Go's
runtime does: at start the soft limit is raised to the hard one (at most
L{CEILING}), and the operator is warned when C{--max-clients} would let the
connections take every descriptor left: when it is higher than the limit
allows, or unset under a limit lower than L{LOW}.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Mapping, MutableMapping

from twisted.logger import Logger

__all__ = [
    "CEILING",
    "LOW",
    "RESERVE",
    "STARTED_WITH",
    "checkOpenFiles",
    "clientsWarning",
    "raiseLimit",
    "startingLimit",
]

_log = Logger(namespace="twisted_smtpd.startup")

#: The highest soft limit set: more connections than one process serves
#: (each worker of C{--workers} has its own), and a bound on what the
#: programs C{--pipe} starts inherit (some close every descriptor up to
#: the limit).
CEILING = 65536

#: A limit under which a server with no C{--max-clients} is warned: a
#: few thousand connections are within reach of a single flooding host.
LOW = 4096

#: Descriptors kept out of the sessions' count: listeners, the log, the
#: reactor, DNS, the files of messages being written, sessions to next hops.
RESERVE = 64

#: The environment variable holding the soft limit the server was started
#: with once it raised it: the workers of C{--workers} inherit it, and the
#: programs C{--pipe} starts run with that limit (L{startingLimit}).
STARTED_WITH = "TWISTED_SMTPD_OPEN_FILES"


#: The soft limit this process had before L{raiseLimit} first raised it
#: (at option parsing for C{--workers}, else at L{checkOpenFiles}), or
#: C{None} while it raised none.
_raisedFrom: int | None = None


def raiseLimit(
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> int:
    """
    Raise the soft limit on open files to the hard limit (at most
    L{CEILING}), logging the change in one line.

    @return: The soft limit now in force.
    """
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    wanted = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError) as e:
            _log.warn(
                "open files: cannot raise the limit from {soft} to {wanted}: {error}",
                soft=soft,
                wanted=wanted,
                error=e,
            )
            return soft
        global _raisedFrom
        if _raisedFrom is None:
            _raisedFrom = soft
        _log.info("open files: limit raised from {soft} to {wanted}", soft=soft, wanted=wanted)
        return wanted
    return CEILING if soft == resource.RLIM_INFINITY else soft


def clientsWarning(maxClients: int, limit: int) -> str | None:
    """
    The warning for a C{--max-clients} (0: no limit) the open-files
    C{limit} cannot hold, or C{None}: none for no limit under a limit of
    L{LOW} or more.
    """
    room = max(limit - RESERVE, 0)
    if (maxClients and maxClients <= room) or (not maxClients and limit >= LOW):
        return None
    clients = f"--max-clients {maxClients}" if maxClients else "no --max-clients"
    # Under RESERVE descriptors no --max-clients is safe: 0 would mean none.
    remedy = f"set --max-clients {room} or less, or raise" if room else "raise"
    return (
        f"open files: {clients} with a limit of {limit} open files: past about {room}"
        f" connections, new clients are closed unanswered and messages cannot be"
        f" written; {remedy} the hard limit (LimitNOFILE= in a systemd unit, ulimit -Hn)"
    )


def checkOpenFiles(
    maxClients: int,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
    environ: MutableMapping[str, str] = os.environ,
) -> None:
    """
    Raise the limit (L{raiseLimit}), noting in L{STARTED_WITH} the one
    this process had before it first raised it, here or earlier (C{--workers}
    raises it at option parsing, before it binds), then log
    L{clientsWarning} if there is one, at warning level.  A process that
    raised none removes L{STARTED_WITH}: a value it was started with is
    never handed on.
    """
    limit = raiseLimit(getrlimit, setrlimit)
    if _raisedFrom is not None and 0 <= _raisedFrom < limit:
        environ[STARTED_WITH] = str(_raisedFrom)
    else:
        environ.pop(STARTED_WITH, None)
    warning = clientsWarning(maxClients, limit)
    if warning is not None:
        _log.warn("{warning}", warning=warning)


def startingLimit(
    environ: Mapping[str, str] = os.environ,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
) -> int:
    """
    The soft limit on open files the server was started with: in a worker
    of C{--workers}, the one its parent noted in L{STARTED_WITH}
    (L{checkOpenFiles}); else, or if it noted none, the one now in force.
    A C{STARTED_WITH} in the server's own environment was not set by a
    parent that raised its limit: ignored.
    """
    from twisted_smtpd._twistd.workerlisteners import INHERITED

    value = environ.get(STARTED_WITH, "") if INHERITED in environ else ""
    if value.isascii() and value.isdigit():
        return int(value)
    return getrlimit(resource.RLIMIT_NOFILE)[0]
