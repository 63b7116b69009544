# -*- test-case-name: tests.test_amqp -*-
"""
L{BrokerConnection}: pika's Twisted protocol with what it leaves out for
L{twisted_smtpd.handlers.amqp.AMQPHandler}: a bound on the octets held for
an incomplete inbound frame, and the reason a connection ended, fit for
one log line; and L{Confirms}, a message published on a confirmed channel
and the broker's confirm of it, awaited within a deadline.
"""

from __future__ import annotations

from typing import Any

import pika
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_smtpd._smtpclient.clientwire import refuseRenegotiation
from twisted_smtpd.handlers._amqpurl import checkURLNumbers, checkVirtualHost
from twisted_smtpd.handlers._envelope import sanitise

# AMQP 0-9-1 section 4.2.3: a frame is a 7-octet header (type, channel,
# payload size), the payload and one frame-end octet.
_FRAME_HEADER = 7
_FRAME_OVERHEAD = _FRAME_HEADER + 1


@implementer(IPushProducer)
class SendWatch:
    """
    The flow control of a broker connection's transport, which buffers
    whatever is written to it, without bound: registered on it as a
    streaming producer, this is paused while its send buffer is full, that
    is while the broker reads less than is published to it.

    @ivar paused: Whether the send buffer is full now.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.paused = False
        self._waiting: list[Deferred[None]] = []

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if getattr(self._transport, "disconnecting", False):
            # A closing transport that resumes a paused producer waits for
            # it to go before it closes.
            self._transport.unregisterProducer()
        self._wake()

    def stopProducing(self) -> None:
        self.paused = False
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def drained(self) -> Deferred[None]:
        """
        Fire once the send buffer is no longer full (at once if it is not),
        or the connection ended.
        """
        if not self.paused:
            return succeed(None)
        d: Deferred[None] = Deferred(self._waiting.remove)
        self._waiting.append(d)
        return d


class BrokerConnection(TwistedProtocolConnection):  # type: ignore[misc]
    """
    One connection to the broker.

    pika buffers an inbound frame until it is complete, whatever its
    announced size, and never checks it against C{frame_max} (AMQP 0-9-1
    section 4.2.1: a peer must not send larger frames): a frame announcing
    more than the connection's C{frame_max} (as negotiated, or as asked for
    before the broker's C{Connection.Tune}) ends the connection at once, and
    so does inbound data pika cannot parse.

    pika also gathers the body of a message the broker sends (a
    C{Basic.Return}, a C{Basic.Deliver}) in memory up to the size its
    content header announces, which may be 2**64 octets: a content header
    announcing more than L{maxContent} octets ends the connection at once,
    before its body arrives.

    pika's Twisted adapter also reports every connection that ends, during
    the handshake or after, without its cause (the broker's
    C{Connection.Close} code and text, a missed heartbeat, ...):
    L{problem} keeps it.

    @ivar problem: Why the connection ended or is ending, sanitised, or
        C{None} while nothing went wrong.
    @ivar maxContent: The largest message body the broker may send, or
        C{None} for no limit: a message it returns is one the handler
        published, no larger than the handler's C{maxMessageSize}.
    """

    problem: str | None = None
    maxContent: int | None = None
    sending: SendWatch | None = None
    _dropped = False

    def connectionMade(self) -> None:
        """
        Watch the send buffer (L{sending}) of the TCP transport, below TLS
        for C{amqps://}: a TLS transport with a producer registered would
        not close until it went.
        """
        super().connectionMade()
        transport: Any = self.transport
        while isinstance(transport, ProtocolWrapper) and transport.transport is not None:
            transport = transport.transport
        self.sending = SendWatch(transport)
        transport.registerProducer(self.sending, True)

    async def drained(self, seconds: float, clock: Any) -> bool:
        """
        Whether the send buffer is not full, or stops being full within
        C{seconds} (the broker reads again).
        """
        sending = self.sending
        if sending is None or not sending.paused:
            return True
        try:
            await sending.drained().addTimeout(seconds, clock)
        except defer.TimeoutError:
            return False
        return True

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

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown") -> Any:
        """
        Close the connection, unless it is closing already: pika refuses
        a second close, raising C{ConnectionWrongStateError}.

        @return: L{closed}.
        """
        if self._impl.is_closing:
            return self.closed
        return super().close(reply_code, reply_text)

    def watchBlocked(self, blocked: Any, unblocked: Any) -> None:
        """
        Call C{blocked(reason)} when the broker blocks the connection
        (C{Connection.Blocked}: a resource alarm, it reads no more of what
        is published), C{unblocked()} when it lifts the block.
        """
        impl = self._impl

        def onBlocked(connection: Any, frame: Any) -> None:
            blocked(sanitise(str(getattr(frame.method, "reason", "") or "no reason given")))

        impl.add_on_connection_blocked_callback(onBlocked)
        impl.add_on_connection_unblocked_callback(lambda connection, frame: unblocked())

    def frameMax(self) -> int:
        """
        The largest frame the broker may send: C{frame_max} as negotiated
        once the broker tuned the connection, else as asked for.
        """
        return int(self._impl.params.frame_max)

    def dataReceived(self, data: bytes) -> None:
        """
        Hand C{data} to pika, then check what it left unparsed: at most one
        incomplete frame, announcing no more than L{frameMax}.
        """
        if self._dropped:
            return
        try:
            super().dataReceived(data)
        except Exception as e:
            self.drop(f"unreadable data from the broker ({sanitise(type(e).__name__)})")
            return
        # pika's buffer of octets received and not yet parsed.
        pending: bytes = self._impl._frame_buffer
        size = len(pending)
        if size >= _FRAME_HEADER and not pending.startswith(b"AMQP"):
            size = max(size, int.from_bytes(pending[3:_FRAME_HEADER], "big") + _FRAME_OVERHEAD)
        limit = self.frameMax()
        if size > limit:
            self.drop(f"the broker sent a frame of {size} octets, over frame_max {limit}")
            return
        if self.maxContent is not None:
            self._checkContent(self.maxContent)

    def _checkContent(self, limit: int) -> None:
        """
        Drop the connection if a channel is gathering a message body
        announced larger than C{limit} octets.
        """
        channels = getattr(self._impl, "_channels", None) or {}
        for channel in channels.values():
            header = getattr(channel, "_content_assembler", None)
            header = getattr(header, "_header_frame", None)
            size = getattr(header, "body_size", 0)
            if size > limit:
                self.drop(f"the broker sent a message of {size} octets, over {limit}")
                return

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


class Confirms:
    """
    Which message a publisher confirm on one channel is for, where pika's
    Twisted adapter guesses.

    A broker returns an unroutable C{mandatory} message (C{Basic.Return},
    which names no delivery tag) before it acknowledges it, but it may
    acknowledge other messages in between, or all at once (C{multiple}):
    pika hands its one kept return to whichever message the next ack is
    for, so that a message returned could be reported taken, and one taken
    reported returned.  This matches returns by the C{message_id} each
    message is published with instead.

    @ivar awaiting: The message ids published and not yet settled.
    @ivar returned: Those of them the broker returned.
    """

    def __init__(self, channel: Any) -> None:
        """
        @param channel: The confirmed L{TwistedChannel} the messages are
            published on.
        """
        self.awaiting: set[str] = set()
        self.returned: set[str] = set()
        channel.add_on_return_callback(self._returned)

    def _returned(self, message: Any) -> None:
        identifier = message.properties.message_id
        if identifier in self.awaiting:
            self.returned.add(identifier)

    def expect(self, identifier: str) -> None:
        """
        The message with C{identifier} is about to be published.
        """
        self.awaiting.add(identifier)

    @staticmethod
    def abandon(channel: Any, confirmed: Deferred[Any]) -> None:
        """
        Stop waiting for the confirm C{confirmed} of a publish on
        C{channel} (it is cancelled), and make pika forget it too: pika
        keeps every publish awaiting its confirm until one comes or the
        channel closes, so that a broker confirming nothing (a quorum queue
        without its majority) would grow the server's memory by each
        message timed out, for as long as the connection lasts.
        """
        deliveries = getattr(channel, "_deliveries", None)
        if isinstance(deliveries, dict):
            for tag, pending in list(deliveries.items()):
                if pending is confirmed:
                    del deliveries[tag]
                    break
        confirmed.cancel()

    def publish(self, channel: Any, identifier: str, **publish: Any) -> Deferred[Any]:
        """
        Publish the message with C{identifier} on C{channel}: its
        C{basic_publish} with C{publish}.

        @return: pika's L{Deferred} of its confirm, or one failing with
            what C{basic_publish} raised.
        """
        self.expect(identifier)
        try:
            confirmed: Deferred[Any] = channel.basic_publish(**publish)
        except Exception as e:
            confirmed = Deferred()
            confirmed.errback(e)
        return confirmed

    async def confirmation(
        self, channel: Any, confirmed: Deferred[Any], identifier: str, timeout: float, reactor: Any
    ) -> tuple[Exception | None, bool]:
        """
        Wait for C{confirmed}, the confirm of the message with C{identifier}
        published on C{channel}, for at most C{timeout} seconds, then
        abandon it (L{abandon}), and settle it (L{settle}).

        @return: C{None} if the broker took the message, else the error,
            and whether no confirm came within C{timeout}.
        """
        timedOut = []

        def timeOut() -> None:
            timedOut.append(True)
            self.abandon(channel, confirmed)

        timer = reactor.callLater(timeout, timeOut)
        error: Exception | None = None
        try:
            await confirmed
        except Exception as e:
            error = e
        finally:
            if timer.active():
                timer.cancel()
        return self.settle(identifier, error), bool(timedOut)

    def settle(self, identifier: str, error: Exception | None) -> Exception | None:
        """
        How the publish of the message with C{identifier} really ended, once
        pika fired its L{Deferred}: with C{error} (C{None} for an ack), as
        corrected by the returns seen, and forget it.

        @return: C{None} if the broker took the message, else the error.
        """
        self.awaiting.discard(identifier)
        returned = identifier in self.returned
        self.returned.discard(identifier)
        unroutable = isinstance(error, pika.exceptions.UnroutableError)
        if returned and (error is None or unroutable):
            unroutableError: Exception = pika.exceptions.UnroutableError([])
            return unroutableError
        if unroutable and not returned:
            # An ack for this message, given another's return.
            return None
        return error


def brokerParameters(url: str) -> Any:
    """
    pika's parameters for the broker at C{url}.

    @raise ValueError: If C{url} is not an C{amqp://} or C{amqps://} URL,
        a number of it is not in ASCII digits (L{checkURLNumbers}), its
        virtual host holds an unescaped slash (L{checkVirtualHost}), or
        pika refuses it.
    """
    if not url.startswith(("amqp://", "amqps://")):
        raise ValueError(f"not an amqp:// or amqps:// URL: {sanitise(url)!r}")
    checkURLNumbers(url)
    checkVirtualHost(url)
    try:
        return pika.URLParameters(url)
    except Exception as e:
        raise ValueError(f"invalid AMQP URL: {sanitise(str(e))}") from None


def brokerEndpoint(reactor: Any, parameters: Any, tls: bool, trustRoot: Any, timeout: float) -> Any:
    """
    The endpoint connecting to the broker C{parameters} (pika's) names,
    within C{timeout} seconds; over TLS verified against C{trustRoot} (the
    system's CAs if C{None}), renegotiation refused, if C{tls}.
    """
    host, port = parameters.host, parameters.port
    endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tls:
        options = refuseRenegotiation(optionsForClientTLS(host, trustRoot=trustRoot))
        endpoint = wrapClientTLS(options, endpoint)
    return endpoint


def callOpen(channel: Any, name: str, **kwargs: Any) -> Deferred[Any]:
    """
    Call the method C{name} of the pika L{TwistedChannel} C{channel} if the
    channel is open, else fail at once.

    Asked for a method of a channel that is closing (the handler was
    closed, the broker closed the channel, in the middle of the
    handshake), pika's Twisted adapter fails the call at once but keeps the
    L{Deferred} it made for it, and fails that one too when the channel has
    closed: with nothing waiting for it, its error is logged as unhandled
    when it is collected.
    """
    if not channel.is_open:
        return fail(pika.exceptions.ChannelWrongStateError("Channel is closed."))
    method: Any = getattr(channel, name)
    return method(**kwargs)  # type: ignore[no-any-return]


def declare(
    channel: Any, queue: str, exchange: str, routingKey: str, arguments: dict[str, Any]
) -> Deferred[None]:
    """
    Declare the durable C{queue} (with C{arguments}) on C{channel} and bind
    it to C{exchange} with C{routingKey}, or, with no queue, check that the
    exchange exists: publishing to a missing one would close the channel
    under every message.
    """

    async def steps() -> None:
        if queue:
            await callOpen(
                channel, "queue_declare", queue=queue, durable=True, arguments=arguments or None
            )
            if exchange:
                await callOpen(
                    channel, "queue_bind", queue=queue, exchange=exchange, routing_key=routingKey
                )
        elif exchange:
            await callOpen(channel, "exchange_declare", exchange=exchange, passive=True)

    return Deferred.fromCoroutine(steps())


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
    if isinstance(error, pika.exceptions.ConnectionBlockedTimeout):
        return "blocked by the broker for too long"
    if isinstance(error, ConnectionDone):
        return "the broker closed the connection"
    if isinstance(error, ConnectionLost):
        return "the connection to the broker was lost"
    return sanitise(str(error)) or sanitise(type(error).__name__)


def describePublishFailure(error: BaseException) -> str:
    """
    A short, safe name for a publish failure.
    """
    if isinstance(error, pika.exceptions.NackError):
        return "refused by the broker"
    if isinstance(error, pika.exceptions.UnroutableError):
        return "no queue bound"
    return sanitise(type(error).__name__)


def _reply(error: Any) -> str:
    """
    The reply code and text of a pika C{ConnectionClosed} or
    C{ChannelClosed}, sanitised.
    """
    return sanitise(f"{error.reply_code} {error.reply_text}")
