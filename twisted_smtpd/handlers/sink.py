# -*- test-case-name: tests.test_handlers -*-
"""
L{SinkHandler}: accept every message and throw it away, as cheaply as
possible (for benchmarks and load tests).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from twisted_smtpd._core.session import Session
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.interfaces import IMessageStream


def _accepted(byteCount: int) -> None:
    return None


class SinkHandler(BaseHandler):
    """
    Accept everything and discard each body as it arrives; the reply to a
    message is the server's default 250 text.
    """

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[None]:
        """
        Discard the body.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with C{None} once the body
            has ended, or
            failing as the stream does (552 for an oversized message).
        """
        d: Deferred[int] = stream.drain()
        return d.addCallback(_accepted)
