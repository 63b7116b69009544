# -*- test-case-name: tests.test_amqp,tests.integration.test_broker -*-
"""
L{AMQPHandler}: publish every accepted message to RabbitMQ, through pika's
Twisted adapter, and answer 250 only once the broker confirmed it.

Needs the C{amqp} extra: C{pip install 'twisted-smtpd[amqp]'}.
"""

from __future__ import annotations

from typing import Any

try:
    import pika
except ImportError as e:
    # One line naming the extra, for a program importing this module as
    # for --amqp (which reports the missing package from e.name).
    missing = e.name or "pika"
    raise ImportError(
        f"AMQPHandler needs the amqp extra ({missing} is missing):"
        " pip install 'twisted-smtpd[amqp]'",
        name=e.name,
    ) from None
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.optionvalues import handlerSeconds
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd.handlers._amqpconnection import (
    brokerParameters,
    describePublishFailure,
)
from twisted_smtpd.handlers._amqpframes import (
    HEADER_FRAME_OVERHEAD,
    Body,
    checkNames,
    encodedSize,
    headerFrameSize,
    publishProperties,
)
from twisted_smtpd.handlers._amqpframes import (
    SHORT_STRING as SHORT_STRING,  # read from here by twistd's name checks
)
from twisted_smtpd.handlers._amqplink import BrokerLink, State
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers._envelope import envelopeFields, messageId
from twisted_smtpd.handlers.relay import loadTrustRoot
from twisted_smtpd.interfaces import IMessageStream

# RabbitMQ's own default max_message_size since 3.8 (128 MiB); the broker
# refuses larger messages.
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024


class AMQPHandler(BrokerLink, BaseHandler):
    """
    Publish each message to a RabbitMQ broker.

    At the first connection the handler opens a channel in publisher-confirm
    mode and declares C{queue} as a durable queue (with C{queueArguments});
    if C{exchange} is not the default exchange, the queue is bound to it with
    C{routingKey} (with no queue to declare, the exchange is checked to
    exist).  A connection that fails one of these steps is retried as any
    other.  A message the broker returns as unroutable makes the handler
    declare and bind its queue again (it may have been deleted, or have
    expired).  Each message is published with C{delivery_mode} 2
    (persistent), C{mandatory} set, the raw message as the body, and:

      - properties: C{content_type} C{message/rfc822}, C{message_id} (the
        session id and transaction number, as in the 250 reply),
        C{timestamp}, C{app_id} C{twisted-smtpd};
      - headers: C{sender}, C{recipients}, C{clientAddress}, C{clientPort},
        C{helo}, C{user}, C{tls}, C{sessionId}, C{messageId}.

    The client gets 250 only after the broker's confirm (C{basic.ack}).  A
    nack, an unroutable message, a lost connection or no confirm within
    C{confirmTimeout} seconds answers 451, so the client tries again: a
    message may then reach the queue twice (at least once delivery; the
    C{Message-ID} header or the message id let a consumer drop duplicates).
    A message is published only once the connection's send buffer has
    room: a broker that has not read what was sent within C{confirmTimeout}
    seconds has its connection dropped (and what waited unsent with it) and
    the message answered 451.

    The connection is made at the first client connection and remade after
    any loss, with pauses doubling from C{firstRetry} to C{maxRetryDelay}
    seconds; they start again from C{firstRetry} once a connection had a
    message confirmed or lasted as long as the next pause.  While the
    broker is unreachable, MAIL is answered 451 at once.

    The body is gathered in memory (one message per transaction) and
    limited to C{maxMessageSize}: a larger C{SIZE=} at MAIL, or body, is
    refused with 552.

    The properties, envelope included, must fit in one AMQP frame
    (C{frame_max}, negotiated with the broker; 128 KiB with RabbitMQ's
    defaults): a recipient that would take them past it is refused at RCPT
    with C{452 4.5.3} (RFC 5321 section 4.5.3.1.10, the client sends the
    rest in another transaction); about 500 recipients of 256 octets fit.

    @ivar url: The broker's URL.
    """

    _log = Logger()

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "",
        routingKey: str | None = None,
        queue: str = "smtpd",
        queueArguments: dict[str, Any] | None = None,
        caCertificates: str | None = None,
        maxMessageSize: int | None = None,
        confirmTimeout: float = 30.0,
        connectTimeout: float = 10.0,
        firstRetry: float = 0.5,
        maxRetryDelay: float = 30.0,
        reactor: Any = None,
    ) -> None:
        """
        @param url: C{amqp://USER:PASSWORD@HOST:PORT/VHOST}, or C{amqps://}
            for TLS (verified against the system's CAs or
            C{caCertificates}).
        @param exchange: The exchange to publish to (C{""}: the default
            exchange, which routes to the queue named by the routing key).
        @param routingKey: The routing key (C{queue} by default).
        @param queue: The durable queue to declare; C{""} declares none.
        @param queueArguments: Its arguments (C{x-max-length}, ...).
        @param caCertificates: A PEM bundle to verify the broker with.
        @param maxMessageSize: The largest message, in bytes (RabbitMQ's
            default C{max_message_size}, 128 MiB, when C{None}).
        @param confirmTimeout: Seconds to wait for the broker's confirm.
        @param connectTimeout: Seconds a connection attempt may take.
        @param firstRetry: Seconds before the first reconnection attempt.
        @param maxRetryDelay: The longest pause between attempts.
        @param reactor: The reactor (the global one by default).
        @raise ValueError: If C{url} is not an AMQP URL, its port or a
            number of its query is not in ASCII digits (or not finite), a
            value is out of range, a name is longer than 255 octets in UTF-8, or
            C{caCertificates} is given with an C{amqp://} URL.
        """
        self._parameters = brokerParameters(url)
        if caCertificates is not None and not url.startswith("amqps://"):
            # Verified TLS was asked for, and would silently not be used.
            raise ValueError("a CA bundle needs an amqps:// URL")
        if maxMessageSize is None:
            maxMessageSize = DEFAULT_MAX_MESSAGE_SIZE
        if maxMessageSize <= 0:
            raise ValueError(f"maxMessageSize must be positive, got {maxMessageSize!r}")
        handlerSeconds("confirmTimeout", confirmTimeout)
        handlerSeconds("connectTimeout", connectTimeout)
        handlerSeconds("firstRetry", firstRetry)
        handlerSeconds("maxRetryDelay", maxRetryDelay)
        resolvedKey = routingKey if routingKey is not None else queue
        checkNames(exchange, queue, resolvedKey)
        if self._parameters.blocked_connection_timeout is None:
            # A connection the broker blocks for longer than a message may
            # wait for its confirm is dropped, and what it holds with it.
            self._parameters.blocked_connection_timeout = confirmTimeout
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.url = url
        self._tls = url.startswith("amqps://")
        self._trustRoot = loadTrustRoot(caCertificates) if caCertificates is not None else None
        self.exchange = exchange
        self.routingKey = resolvedKey
        self.queue = queue
        self._queueArguments = dict(queueArguments or {})
        self.maxMessageSize = maxMessageSize
        self._confirmTimeout = confirmTimeout
        self._connectTimeout = connectTimeout
        self._firstRetry = firstRetry
        self._maxRetryDelay = maxRetryDelay
        self._reactor = reactor
        self._idle()

    # -- the connection (its workings: BrokerLink) ------------------------------

    @property
    def ready(self) -> bool:
        """
        Whether a confirmed channel to the broker is open.
        """
        return self._state is State.READY and self._channel is not None

    def start(self) -> None:
        """
        Connect now if not connected or connecting (the first session does it
        otherwise).
        """
        if self._state is State.IDLE:
            self._connect()

    def close(self) -> Deferred[None]:
        """
        Close the connection and stop reconnecting; a broker that does not
        answer the close within C{connectTimeout} seconds has its connection
        dropped.  Every call fires once that is done.
        """
        if self._shutdown is None:
            self._shutdown = self._close()
        d: Deferred[None] = Deferred()
        self._shutdown.addBoth(d.callback)
        return d

    # -- the hooks --------------------------------------------------------------

    def onConnect(self, session: Session) -> object:
        """
        Connect to the broker at the first session.
        """
        self.start()
        return None

    async def _available(self) -> bool:
        self.start()
        if self._state is State.CONNECTING and self._delay == self._firstRetry:
            # The first attempt since the last success: worth waiting for.
            d: Deferred[None] = Deferred()
            self._waiting.append(d)
            await d
        return self.ready

    def onMailFrom(self, address: Address, session: Session) -> Deferred[None]:
        """
        Refuse the transaction (451) while the broker is unreachable, and a
        declared C{SIZE} (RFC 1870) over the limit (552).
        """
        return Deferred.fromCoroutine(self._mailFrom(address, session))

    async def _mailFrom(self, address: Address, session: Session) -> None:
        size = address.args.get("SIZE")
        if isinstance(size, str) and size.isdigit() and int(size) > self.maxMessageSize:
            raise SMTPError(552, "Error: message too big for the message broker", "5.3.4")
        if not await self._available():
            self._log.warn("{session} refused MAIL: message broker unavailable", session=session.id)
            raise SMTPError(451, "Error: message broker unavailable, try again later", "4.3.0")
        if self._blockedBy is not None:
            # What would be published now would wait in memory, unread.
            self._log.warn(
                "{session} refused MAIL: message broker blocked ({reason})",
                session=session.id,
                reason=self._blockedBy,
            )
            raise SMTPError(451, "Error: message broker busy, try again later", "4.3.1")

    def onRcptTo(self, address: Address, session: Session) -> None:
        """
        Refuse a recipient that would make the message's properties too
        large for one frame.

        @raise SMTPError: 452 4.5.3.
        """
        if headerFrameSize(session, address) > self._frameMax():
            raise SMTPError(452, "Error: too many recipients", "4.5.3")

    def _frameMax(self) -> int:
        """
        The connection's C{frame_max}: as negotiated with the broker once
        connected, else as asked for.
        """
        connection = self._connection
        if connection is not None:
            return connection.frameMax()
        return int(self._parameters.frame_max)

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[str]:
        """
        Gather the body, publish it, and wait for the broker's confirm.

        @return: A L{Deferred} firing with the 250 text, or failing with a
            451 or 552 L{SMTPError}, or the stream's failure.
        """
        return Deferred.fromCoroutine(self._deliver(stream, session))

    async def _deliver(self, stream: IMessageStream, session: Session) -> str:
        body = Body(self.maxMessageSize)
        piped: Deferred[int] = stream.pipeToFile(body)
        await piped
        data = body.take()
        fields = envelopeFields(session)
        identifier = messageId(session)
        properties = publishProperties(fields, int(self._reactor.seconds()))
        if HEADER_FRAME_OVERHEAD + encodedSize(properties) > self._frameMax():
            # Not checked at RCPT (or the broker lowered frame_max since):
            # such a frame would make the broker close the connection, and
            # every transaction publishing on it would fail.
            self._log.warn(
                "{session} envelope of {count} recipients too large for an AMQP frame",
                session=session.id,
                count=len(fields["recipients"]),
            )
            raise SMTPError(451, "Error: envelope too large for the message broker", "4.3.0")
        connection = self._connection
        stalled = connection is not None and not await connection.drained(
            self._confirmTimeout, self._reactor
        )
        if stalled and connection is not None:
            # What was published waits in memory, unread, and so would this.
            seconds = self._confirmTimeout
            connection.drop(f"the broker did not read what was sent within {seconds:g}s")
        channel, confirms = self._channel, self._confirms
        if stalled or self._state is not State.READY or channel is None or confirms is None:
            self._log.warn(
                "{session} message broker unavailable at the end of DATA", session=session.id
            )
            raise SMTPError(451, "Error: message broker unavailable, try again later", "4.3.0")
        confirmed = confirms.publish(
            channel,
            identifier,
            exchange=self.exchange,
            routing_key=self.routingKey,
            body=data,
            properties=properties,
            mandatory=True,
        )
        del data
        error, timedOut = await confirms.confirmation(
            channel, confirmed, identifier, self._confirmTimeout, self._reactor
        )
        if error is not None:
            problem = "no confirm in time" if timedOut else describePublishFailure(error)
            refused = not timedOut and isinstance(
                error, (pika.exceptions.NackError, pika.exceptions.UnroutableError)
            )
            # Refused or returned, the broker holds nothing; otherwise (the
            # connection lost, no confirm in time) it may hold the message,
            # which the client sends again: as Postfix's smtp says of a
            # connection lost after the end of the data, "message may be
            # sent more than once".
            doubt = (
                ""
                if refused
                else "; the broker may hold it all the same (sent again, it is queued twice)"
            )
            self._log.warn(
                "{session} message {id} not confirmed by the broker: {problem}{doubt}",
                session=session.id,
                id=identifier,
                problem=problem,
                doubt=doubt,
            )
            if isinstance(error, pika.exceptions.UnroutableError):
                self._redeclare(channel)
            verb = "take" if refused else "confirm"
            raise SMTPError(
                451, f"Error: message broker did not {verb} the message ({problem})", "4.3.0"
            )
        self._proven = True
        self._log.info("{session} published {id}", session=session.id, id=identifier)
        return f"OK: queued as {identifier}"
