# -*- test-case-name: tests.integration.test_stuckthread -*-
"""
A handler for C{twistd smtpd --handler tests.integration.stuckthreadhandler:make}
that starts, as the reactor runs, a call in the reactor's thread pool that
never returns (as a write to an NFS server gone does not), and logs
C{stuck call running} once it is under way.
"""

from __future__ import annotations

import threading

from twisted.logger import Logger

from twisted_smtpd.handlers import SinkHandler

_log = Logger()


def stuckWrite() -> None:
    """
    Never return (once it has said so, from the reactor's thread).
    """
    from twisted.internet import reactor

    reactor.callFromThread(_log.info, "stuck call running")
    threading.Event().wait()


def make() -> SinkHandler:
    """
    The C{--handler} callable.
    """
    from twisted.internet import reactor

    reactor.callWhenRunning(reactor.callInThread, stuckWrite)
    return SinkHandler()
