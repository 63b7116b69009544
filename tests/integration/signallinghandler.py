# -*- test-case-name: tests.integration.test_lifecycle -*-
"""
A handler for C{twistd smtpd --handler tests.integration.signallinghandler:make}
that sends SIGHUP and SIGUSR1 to its own process at a moment a test chooses:
while the options are parsed (before the server starts), or once the
server has stopped and the reactor is about to return.
"""

from __future__ import annotations

import os
import signal

from twisted_smtpd.handlers import SinkHandler


def _send() -> None:
    for number in (signal.SIGHUP, signal.SIGUSR1):
        os.kill(os.getpid(), number)


def make(when: str) -> SinkHandler:
    """
    The C{--handler} callable: C{--handler-option when=parse} signals at
    once, C{when=exit} after the reactor's shutdown (the server stopped).
    """
    if when == "parse":
        _send()
    elif when == "exit":
        from twisted.internet import reactor

        reactor.addSystemEventTrigger("after", "shutdown", _send)
    else:
        raise ValueError(f"when: expected parse or exit, got {when!r}")
    return SinkHandler()
