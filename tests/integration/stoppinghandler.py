# -*- test-case-name: tests.integration.test_stopduringstart -*-
"""
A handler for C{twistd smtpd --handler tests.integration.stoppinghandler:make}
that sends SIGINT or SIGTERM to its own process while it starts: once the
options are parsed, or as the reactor starts, before its signal handlers
are in place (the moment an operator's Ctrl-C, or systemd's SIGTERM right
after a start, may come).
"""

from __future__ import annotations

import os
import signal as _signal

from twisted_smtpd.handlers import SinkHandler


def make(when: str, signal: str = "INT") -> SinkHandler:
    """
    The C{--handler} callable, in the process that parses the options only
    (the parent of C{--workers}, not its workers).

    @param when: C{parse}: at once; C{startup}: as the reactor starts,
        before it installs its signal handlers.
    @param signal: C{INT} or C{TERM}.
    """
    if os.environ.get("TWISTED_SMTPD_INHERITED"):
        return SinkHandler()
    number = _number(signal)
    if when == "parse":
        os.kill(os.getpid(), number)
    elif when == "startup":
        from twisted.internet import reactor

        reactor.addSystemEventTrigger("before", "startup", os.kill, os.getpid(), number)
    else:
        raise ValueError(f"when: expected parse or startup, got {when!r}")
    return SinkHandler()


def _number(name: str) -> int:
    if name not in ("INT", "TERM"):
        raise ValueError(f"signal: expected INT or TERM, got {name!r}")
    return int(getattr(_signal, "SIG" + name))
