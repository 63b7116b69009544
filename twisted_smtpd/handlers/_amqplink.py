# -*- test-case-name: tests.test_amqp,tests.test_amqplifecycle -*-
"""
L{BrokerLink}: the connection of L{AMQPHandler
<twisted_smtpd.handlers.amqp.AMQPHandler>} to its broker, made at the first
session, its confirmed channel opened and its queue declared, remade after
any loss with pauses doubling from C{firstRetry} to C{maxRetryDelay}, and
closed within C{connectTimeout} seconds.
"""

from __future__ import annotations

import enum
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd.handlers._amqpconnection import (
    BrokerConnection,
    Confirms,
    brokerEndpoint,
    callOpen,
    declare,
    describeFailure,
)
from twisted_smtpd.handlers._envelope import sanitise


class State(enum.Enum):
    """
    Where the connection to the broker stands.
    """

    IDLE = "idle"  # never asked to connect
    CONNECTING = "connecting"
    READY = "ready"
    DOWN = "down"  # waiting before the next attempt
    CLOSED = "closed"  # close() was called


class BrokerLink:
    """
    How L{AMQPHandler <twisted_smtpd.handlers.amqp.AMQPHandler>} connects,
    reconnects and closes; the handler sets the settings below, then
    calls L{_idle}, and its C{start}, C{ready} and C{close} use the rest.
    """

    _log: Logger
    queue: str
    exchange: str
    routingKey: str
    maxMessageSize: int
    _parameters: Any
    _tls: bool
    _trustRoot: Any
    _queueArguments: dict[str, Any]
    _connectTimeout: float
    _firstRetry: float
    _maxRetryDelay: float
    _reactor: Any

    def _idle(self) -> None:
        """
        Start unconnected: the first session, or C{start}, connects.
        """
        self._state = State.IDLE
        self._delay = self._firstRetry
        #: When the connection became ready, and whether a message was
        #: confirmed on it since.
        self._readySince = 0.0
        self._proven = False
        self._connection: BrokerConnection | None = None
        self._channel: Any = None
        self._confirms: Confirms | None = None
        self._redeclaring = False
        self._retry: Any = None
        self._closing: Any = None
        self._shutdown: Deferred[None] | None = None
        self._attempt: Deferred[Any] | None = None
        self._connecting: Deferred[BrokerConnection] | None = None
        self._waiting: list[Deferred[None]] = []
        #: Why the broker blocked the connection, while it does.
        self._blockedBy: str | None = None

    def _connect(self) -> None:
        self._state = State.CONNECTING
        self._retry = None
        self._attempt = Deferred.fromCoroutine(self._open())
        self._attempt.addErrback(self._failed)

    def _endpoint(self) -> Any:
        parameters, timeout = self._parameters, self._connectTimeout
        return brokerEndpoint(self._reactor, parameters, self._tls, self._trustRoot, timeout)

    async def _open(self) -> None:
        parameters = self._parameters
        reactor = self._reactor

        def build() -> BrokerConnection:
            connection = BrokerConnection(parameters, custom_reactor=reactor)
            # What it returns is a message published here.
            connection.maxContent = self.maxMessageSize
            return connection

        factory = Factory.forProtocol(build)
        # One line per attempt, the handler's, not Twisted's two besides.
        factory.noisy = False
        connecting: Deferred[BrokerConnection] = self._endpoint().connect(factory)
        self._connecting = connecting
        try:
            connection = await connecting
        finally:
            self._connecting = None
        self._connection = connection
        if self._state is State.CLOSED:
            # Closed while connecting, by an endpoint that connected all
            # the same: the handshake below fails at once.
            connection.drop("the handler was closed")
        timer = reactor.callLater(
            self._connectTimeout,
            connection.drop,
            f"no AMQP handshake within {self._connectTimeout:g}s",
        )
        try:
            assert connection.ready is not None
            await connection.ready
            channel = await connection.channel()
            await callOpen(channel, "confirm_delivery")
            confirms = Confirms(channel)
            await self._declare(channel)
        finally:
            if timer.active():
                timer.cancel()
        if self._state is State.CLOSED:
            connection.close()
            return
        self._channel = channel
        self._confirms = confirms
        self._state = State.READY
        # The pauses start again from firstRetry once this connection
        # proves good (see _lost), not now: a broker that completes the
        # handshake and then drops every connection is retried less and
        # less often.
        self._readySince = reactor.seconds()
        self._proven = False
        self._log.info("message broker connected: {host}", host=self._parameters.host)
        connection.watchBlocked(self._blocked, self._unblocked)
        assert connection.closed is not None
        connection.closed.addBoth(self._lost)
        channel.on_closed.addBoth(self._channelClosed)
        self._wake()

    def _declare(self, channel: Any) -> Deferred[None]:
        return declare(channel, self.queue, self.exchange, self.routingKey, self._queueArguments)

    def _redeclare(self, channel: Any) -> None:
        """
        The broker returned a message as unroutable on C{channel}: the queue
        declared at connection is gone (deleted, or expired with
        C{x-expires}) or unbound.  Declare and bind it again, one at a time;
        if the broker refuses, it closes the channel and the handler
        reconnects.
        """
        if not self.queue or self._redeclaring or channel is not self._channel:
            return
        if not self.exchange and self.routingKey != self.queue:
            # The default exchange routes to the queue the key names: not
            # the one declared here.
            return
        self._redeclaring = True
        self._log.warn(
            "message broker returned a message as unroutable; declaring queue {queue} again",
            queue=sanitise(self.queue),
        )

        def done(result: object) -> None:
            self._redeclaring = False

        self._declare(channel).addBoth(done)

    def _failed(self, reason: Failure) -> None:
        connection, self._connection = self._connection, None
        # pika fails a handshake with the number of attempts made: the
        # connection knows the cause.
        problem = connection.problem if connection is not None else None
        if connection is not None and connection.transport is not None:
            connection.transport.abortConnection()
        if self._state is State.CLOSED:
            return
        self._log.warn(
            "message broker connection failed: {reason}; again in {delay}s",
            reason=problem or describeFailure(reason.value),
            delay=self._delay,
        )
        self._down()

    def _channelClosed(self, reason: object) -> None:
        connection = self._connection
        if connection is not None and not connection.is_closed:
            if isinstance(reason, BaseException) and connection.problem is None:
                connection.problem = describeFailure(reason)
            self._channel = None
            self._confirms = None
            connection.close()
            # Else a broker not answering would hold it half closed for ever.
            self._closing = self._reactor.callLater(
                self._connectTimeout, connection.drop, "no answer to the close"
            )

    def _blocked(self, reason: str) -> None:
        self._blockedBy = reason
        self._log.warn("message broker blocked the connection: {reason}", reason=reason)

    def _unblocked(self) -> None:
        self._blockedBy = None
        self._log.info("message broker unblocked the connection")

    def _lost(self, reason: object) -> None:
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        self._closing = None
        connection, self._connection = self._connection, None
        self._channel = None
        self._confirms = None
        self._blockedBy = None
        if self._state is State.CLOSED:
            return
        problem = connection.problem if connection is not None else None
        if problem is None:
            problem = describeFailure(reason)
        lasted = self._reactor.seconds() - self._readySince
        if self._proven or lasted >= self._delay:
            self._delay = self._firstRetry
        self._log.warn(
            "message broker connection lost: {reason}; again in {delay}s",
            reason=problem,
            delay=self._delay,
        )
        self._down()

    def _down(self) -> None:
        self._state = State.DOWN
        self._channel = None
        self._confirms = None
        self._wake()
        self._retry = self._reactor.callLater(self._delay, self._connect)
        self._delay = min(self._delay * 2, self._maxRetryDelay)

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _close(self) -> Deferred[None]:
        self._state = State.CLOSED
        self._wake()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._connecting is not None:
            # A TCP connect may last connectTimeout seconds.
            self._connecting.cancel()
        connection, self._connection = self._connection, None
        self._channel = None
        if connection is None:
            return Deferred.fromCoroutine(self._settle())
        closed = connection.closed
        if closed is None or connection.is_closed:
            if connection.transport is not None:
                connection.transport.abortConnection()
            return Deferred.fromCoroutine(self._settle())
        connection.close()
        # A broker that stopped answering would hold the close for ever.
        timer = self._reactor.callLater(
            self._connectTimeout, connection.drop, "no answer to the close"
        )
        d: Deferred[None] = Deferred()

        def done(result: object) -> None:
            if timer.active():
                timer.cancel()
            d.callback(None)

        closed.addBoth(done)
        return d

    async def _settle(self) -> None:
        """Wait for a connection attempt in progress to end."""
        attempt = self._attempt
        if attempt is not None and not attempt.called:
            await attempt
