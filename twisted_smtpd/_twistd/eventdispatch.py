# -*- test-case-name: tests.test_eventdispatch -*-
"""
The reactor's calls for I/O events, without a legacy log context per call.

Twisted's reactors hand every I/O event (a read, a write, an accepted
connection) to C{twisted.python.log.callWithLogger}, which makes a legacy
log context for the call (C{{"system": <the connection's log prefix>}}): a
thread-local lookup, two dictionary copies and about ten Python calls, some
2 µs per event.  A message of W2 is four events, and the context costs about
a tenth of the server's CPU per message (C{docs/performance.md}).

Only legacy log calls (C{twisted.python.log.msg} and C{err}) made during an
event read that context; C{twisted.logger} events, twisted-smtpd's own lines
among them, never do.  C{twistd smtpd} therefore calls the event's function
directly (L{callWithoutContext}): a failure that escapes it is still logged
with the selectable's log prefix as its system, as before, and the other
events of the reactor's turn still run.  Legacy lines logged from inside an
event (Twisted's C{Unhandled Error} of a protocol method that raised, its
C{Could not accept new connection}) show C{[-]} instead of the connection's
prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python import log as _legacy

#: Twisted's own C{callWithLogger}, which L{withoutContext} replaces.
withContext: Callable[..., Any] = _legacy.callWithLogger


def callWithoutContext(logger: Any, func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """
    Call C{func(*args, **kw)}, as C{callWithLogger} does but without a log
    context: what it raises (but C{KeyboardInterrupt}) is logged with
    C{logger}'s log prefix as the system, and C{None} returned.
    """
    try:
        return func(*args, **kw)
    except KeyboardInterrupt:
        raise
    except BaseException:
        try:
            system = logger.logPrefix()
        except KeyboardInterrupt:
            raise
        except BaseException:
            system = "(buggy logPrefix method)"
        _legacy.err(system=system)  # type: ignore[no-untyped-call]
        return None


def withoutContext() -> None:
    """
    Have the reactor dispatch I/O events through L{callWithoutContext}, for
    the rest of the process.
    """
    _legacy.callWithLogger = callWithoutContext
