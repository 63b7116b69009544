# -*- test-case-name: tests.test_amqp -*-
"""
L{BrokerConnection}: pika's Twisted protocol with what it leaves out for
L{twisted_smtpd.handlers.amqp.AMQPHandler}: the reason a connection ended,
fit for one log line.
"""

from __future__ import annotations

from typing import Any

import pika
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from twisted_smtpd.handlers._envelope import sanitise


class BrokerConnection(TwistedProtocolConnection):  # type: ignore[misc]
    """
    One connection to the broker.

    Inbound data pika cannot parse ends the connection.

    pika's Twisted adapter reports every connection that ends, during
    the handshake or after, without its cause (the broker's
    C{Connection.Close} code and text, a missed heartbeat, ...):
    L{problem} keeps it.

    @ivar problem: Why the connection ended or is ending, sanitised, or
        C{None} while nothing went wrong.
    """

    problem: str | None = None
    _dropped = False

    def drop(self, problem: str) -> None:
        """
        End the connection now, without a C{Connection.Close}, for
        C{problem} (kept unless a cause is already known).
        """
        if self.problem is None:
            self.problem = problem
        self._dropped = True
        if self.transport is not None:
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        """
        Hand C{data} to pika; data it cannot parse ends the connection.
        """
        if self._dropped:
            return
        try:
            super().dataReceived(data)
        except Exception as e:
            self.drop(f"unreadable data from the broker ({sanitise(type(e).__name__)})")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Keep why the connection ended, then let pika fail or close it.
        """
        if self.problem is None:
            # Why pika ended the connection itself (the broker's
            # Connection.Close, a missed heartbeat): its Twisted adapter
            # replaces it with ConnectionDone below.
            pending = getattr(self._impl, "_error", None)
            cause = pending if isinstance(pending, Exception) else reason.value
            self.problem = describeFailure(cause)
        super().connectionLost(reason)


def describeFailure(error: object) -> str:
    """
    A short, safe account of why a connection, a channel or an AMQP method
    failed, naming the broker's reply code and text when it sent some.
    """
    if isinstance(error, pika.exceptions.ConnectionClosedByBroker):
        return f"closed by the broker: {_reply(error)}"
    if isinstance(error, pika.exceptions.ChannelClosedByBroker):
        return f"channel closed by the broker: {_reply(error)}"
    if isinstance(error, pika.exceptions.AMQPHeartbeatTimeout):
        return "no heartbeat from the broker"
    if isinstance(error, ConnectionDone):
        return "the broker closed the connection"
    if isinstance(error, ConnectionLost):
        return "the connection to the broker was lost"
    return sanitise(str(error)) or sanitise(type(error).__name__)


def _reply(error: Any) -> str:
    """
    The reply code and text of a pika C{ConnectionClosed} or
    C{ChannelClosed}, sanitised.
    """
    return sanitise(f"{error.reply_code} {error.reply_text}")
