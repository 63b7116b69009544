# -*- test-case-name: tests.test_protocol -*-
"""
Flow control between a session's connection and the handler reading a
message body (the reasons to stop reading, and the producer a message stream
pauses), and the way replies are written.
"""

from __future__ import annotations

import os
import socket as _socket
import weakref
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import tcp
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted_smtpd._serving.deadlines import Times

#: Reasons to stop reading from the client, as bits.
PAUSE_HOOK = 1  # a hook has not answered; replies must stay in order
PAUSE_STREAM = 2  # the handler reads the message body slower than it comes
PAUSE_WRITE = 4  # the client does not read its replies

_log = Logger()


class Pausable(Protocol):
    """
    What L{StreamUpstream} drives: the session's reading switch, and the
    message it now reads.
    """

    @property
    def receiver(self) -> object: ...

    times: Times

    @property
    def pauses(self) -> int: ...

    @property
    def clock(self) -> IReactorTime: ...

    def setPause(self, reason: int, paused: bool) -> None: ...


@implementer(IPushProducer)
class StreamUpstream:
    """
    What a L{MessageStream} pauses when its consumer cannot keep up: reading
    from the session's connection.
    """

    def __init__(self, protocol: Pausable) -> None:
        self._protocol = protocol
        self._receiver: weakref.ref[object] | None = None

    def carries(self, receiver: object) -> None:
        """
        Name the message (its receiver) whose body the stream carries.  Once
        the session reads another message, or none, this stream's calls are
        ignored, so that a slow consumer of a finished message cannot resume
        the reading the next message's stream paused.

        The receiver is held weakly: it holds the stream, which holds this
        object, and a cycle would leave every message's objects to the
        garbage collector.
        """
        self._receiver = weakref.ref(receiver)

    def _setPause(self, paused: bool) -> None:
        protocol = self._protocol
        receiver = None if self._receiver is None else self._receiver()
        if receiver is not None and protocol.receiver is receiver:
            if paused != bool(protocol.pauses & PAUSE_STREAM):
                # The handler stops or starts reading again: the time it
                # keeps the client waiting is bounded (handlerTimeout).
                from twisted_smtpd._serving import deadlines

                deadlines.streamPaused(protocol, paused)
            protocol.setPause(PAUSE_STREAM, paused)

    def pauseProducing(self) -> None:
        """
        Stop reading from the client.
        """
        self._setPause(True)

    def resumeProducing(self) -> None:
        """
        Read from the client again.
        """
        self._setPause(False)

    def stopProducing(self) -> None:
        """
        The stream wants no more flow control.
        """
        self._setPause(False)


def socketUnder(transport: Any) -> Any:
    """
    The connection under C{transport}, through the PROXY and TLS layers a
    listener may put in between, or L{None} when there is none (a test
    transport).  A UNIX socket's connection is one too: Twisted's
    C{unix.Server} is a C{tcp.Server}.
    """
    for _ in range(4):
        if isinstance(transport, tcp.Connection):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def noDelay(socket: Any) -> None:
    """
    Turn Nagle's algorithm off on C{socket} (L{socketUnder}) when it is a
    TCP one: replies are small, the client waits for each, and one written
    while an earlier one is not yet acknowledged would otherwise wait for
    the client's delayed acknowledgement (40 ms on Linux).
    """
    if socket is not None and socket.socket.family in (_socket.AF_INET, _socket.AF_INET6):
        socket.setTcpNoDelay(True)


def giveUpUnreadAfter(socket: Any, seconds: float) -> None:
    """
    Have the kernel reset the TCP connection C{socket} (L{socketUnder}) once
    what it sends has gone unread for C{seconds} (C{TCP_USER_TIMEOUT}, where
    the system has it), before a close after a refusal.  Closed with replies
    its client does not read still in the kernel's send buffer, the
    connection would otherwise linger there, out of the server's sight,
    for as long as the client keeps its window shut.
    """
    option = getattr(_socket, "TCP_USER_TIMEOUT", None)
    if option is None or socket is None:
        return
    if socket.socket.family in (_socket.AF_INET, _socket.AF_INET6):
        with suppress(OSError):
            socket.socket.setsockopt(_socket.IPPROTO_TCP, option, int(seconds * 1000))


def lostIfReset(socket: Any) -> bool:
    """
    End the connection C{socket} (L{socketUnder}) as the reactor would had
    it read the error, when the client reset it (or it failed otherwise:
    C{SO_ERROR}), and tell whether it did.

    A session that stopped reading (a hook has not answered while commands
    wait behind it, a handler reads the body slowly, a client's FIN came
    first) is out of the reactor's sight: a reset would be seen only once
    it reads again, and the session would keep its place under
    C{maxClients} and C{maxClientsPerIP}, and its memory, until then.  The
    deadlines' timer asks here instead, once a second, for sessions that
    wait.  A FIN is no error: a half-closed client still gets its replies.
    """
    if socket is None or not socket.connected or socket.disconnecting:
        return False
    try:
        error = socket.socket.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
    except OSError:
        return False
    if not error:
        return False
    socket.connectionLost(Failure(ConnectionLost(os.strerror(error))))
    return True


#: What Twisted reads from a connection at a time.
READ_SIZE: int = tcp.Connection.bufferSize
#: What a session reads at a time while a message body arrives faster than
#: that: fewer reads (and fewer turns of the reactor, each with its system
#: call and its Python) per mebibyte.  Four reads of Twisted's size, not
#: more: larger reads measured no faster (C{docs/performance.md}).
BODY_READ_SIZE = 4 * READ_SIZE


def readLarger(socket: Any) -> None:
    """
    A read of message body filled Twisted's read buffer (L{READ_SIZE}): the
    client sends faster than the session reads, so read L{BODY_READ_SIZE} at
    a time from now on, until L{readNormal}.

    @param socket: The connection under the session's transport
        (L{socketUnder}), or L{None}.
    """
    if socket is not None:
        socket.bufferSize = BODY_READ_SIZE


def readNormal(socket: Any) -> None:
    """
    The message body ended: read at Twisted's size again, so that a command
    costs no larger allocation.
    """
    if socket is not None and socket.bufferSize != READ_SIZE:
        socket.bufferSize = READ_SIZE


class TurnWriter:
    """
    Replies on plain TCP connections, held until the end of the reactor's
    turn and then sent together, one C{send(2)} per connection.

    A busy server handles many connections in one turn of the reactor.  Sent
    as each is made, every reply wakes the client anew; on a virtual machine
    a wake-up of an idle vCPU is the costliest part of a small send.  Sent
    together, the first reply wakes the client and the rest find it running:
    under 50 sessions of small messages a send then takes less than half as
    long (C{docs/performance.md}).  The delayed call costs about 2 µs a
    turn, which is why a server's only session sends at once.

    The replies wait in the reactor thread, for at most the rest of the turn
    they were made in: a delayed call of no delay (on the connection's
    reactor) runs before the reactor next waits for events.  A server
    (L{SMTPServerFactory}) has one.

    Connections whose session ended close at the end of the turn too
    (L{closeAtEnd}), after their last replies.
    """

    def __init__(self) -> None:
        self._waiting: dict[Any, list[bytes]] = {}
        self._closing: list[tuple[Any, bool]] = []
        self._scheduled = False

    def add(self, socket: Any, data: bytes) -> None:
        """
        Send C{data} on C{socket} (a plain TCP connection with nothing
        queued) at the end of the turn, after what it already holds here.
        """
        queued = self._waiting.get(socket)
        if queued is not None:
            queued.append(data)
            return
        self._waiting[socket] = [data]
        if not self._scheduled:
            self._scheduled = True
            socket.reactor.callLater(0, self.sendAll)

    def closeAtEnd(self, socket: Any, half: bool = False) -> None:
        """
        Close C{socket} (a plain TCP connection whose session ended and
        whose producer is unregistered) at the end of the turn, after the
        replies held for it (L{closeNow}).

        @param half: Shut only its sending side, once the replies are sent
            (a lingering close: L{lingering
            <twisted_smtpd._serving.lingering>}).
        """
        self._closing.append((socket, half))
        if not self._scheduled:
            self._scheduled = True
            socket.reactor.callLater(0, self.sendAll)

    def sendAll(self) -> None:
        """
        Send every connection's held replies, then close the connections
        whose sessions ended.
        """
        self._scheduled = False
        waiting, self._waiting = self._waiting, {}
        for socket, chunks in waiting.items():
            try:
                _send(socket, chunks)
            except Exception:
                # One connection's failure leaves the others' replies to go.
                _log.failure("Sending replies on {connection!r} failed", connection=socket)
        if self._closing:
            closing, self._closing = self._closing, []
            for socket, half in closing:
                try:
                    closeNow(socket, half)
                except Exception:
                    _log.failure("Closing {connection!r} failed", connection=socket)

    def sendNow(self, socket: Any) -> None:
        """
        Send what C{socket} holds here now: before the connection changes
        (STARTTLS) or closes.  L{None} (no TCP connection) holds nothing.
        """
        chunks = self._waiting.pop(socket, None)
        if chunks is not None:
            _send(socket, chunks)

    def drop(self, socket: Any) -> None:
        """
        Forget what C{socket} holds here (L{None}: nothing): the connection
        is dropped.
        """
        self._waiting.pop(socket, None)

    def holds(self, socket: Any) -> bool:
        """
        Whether replies for C{socket} wait here.
        """
        return socket in self._waiting


def closeNow(socket: Any, half: bool = False) -> None:
    """
    Close the plain TCP connection C{socket} now when it holds nothing to
    send, as the reactor would once its buffer emptied after
    C{loseConnection}: it stops reading, shuts the socket down and tells
    the protocol (C{connectionLost} with L{ConnectionDone
    <twisted.internet.error.ConnectionDone>}).  Closed here, the connection
    costs no turn of the reactor waiting for it to be writable, and two
    C{epoll_ctl} calls fewer.  A connection that still holds bytes (a client
    that does not read) is left to C{loseConnection}; one that is already
    lost, closing or aborted is left alone.

    @param half: Shut only the sending side, once what the connection holds
        is sent (C{loseWriteConnection}): a lingering close.
    """
    if not socket.connected or socket.disconnecting or socket._aborting:
        return
    if half:
        socket.loseWriteConnection()
        return
    if socket.dataBuffer or socket._tempDataBuffer or socket.producer is not None:
        socket.loseConnection()
        return
    socket.connectionLost(connectionDone)


def _send(socket: Any, chunks: list[bytes]) -> None:
    """
    Write C{chunks} to the plain TCP connection C{socket}: to its socket
    when the connection queues nothing, the rest (or everything) queued on
    the connection, in order.
    """
    if not socket.connected:
        return
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if socket.dataBuffer or socket._tempDataBuffer:
        socket.write(data)
        return
    try:
        sent = socket.socket.send(data)
    except OSError:
        # The connection finds the error on its next write.
        sent = 0
    if sent != len(data):
        socket.write(data[sent:])


def writeThrough(
    transport: Any,
    data: bytes,
    socket: Any,
    more: bool = False,
    writer: TurnWriter | None = None,
    alone: bool = False,
) -> bool:
    """
    Send C{data} over the TCP connection under C{transport}: on plain TCP
    (C{transport} is the connection itself; a session behind a PROXY wrapper
    straight over it passes the connection) at the end of the reactor's
    turn, through C{writer}; now through TLS or another layer; queued
    behind what the connection holds when it holds anything.

    Through TLS or another layer, C{transport.write} encodes the bytes into
    the connection's buffer, which is then written at once, also behind
    bytes the connection already holds (the session tickets of a TLS 1.3
    handshake that just ended).  Either way
    the reactor is spared two epoll updates and a wake-up per reply.  Where
    no half-close is told (TLS), sending at once also keeps a reply from
    being lost to a FIN the client sent right behind its command: read
    before the reply had left, the FIN would end the connection with the
    reply still queued.  On plain TCP the FIN is read in a later turn, after
    the turn's replies left.

    @param socket: The connection under C{transport} (L{socketUnder}), or
        L{None}: then everything goes through C{transport.write}.
    @param more: More replies follow at once (C{data} is a full batch of
        replies to pipelined commands): over TLS they wait in the TLS layer
        for the rest of the run, to leave in one record and one send.
        Without TLS the socket takes them now, so that a client that does
        not read fills the kernel's buffer before the server's.
    @param writer: Where replies on plain TCP wait for the end of the turn
        (the server's); L{None} sends them now.
    @param alone: The connection is the server's only one: a reply on plain
        TCP leaves now (after what C{writer} holds for it), as no other
        would join it at the end of the turn.
    @return: Whether the TLS layer holds C{data} (C{more} was given): then
        the caller must call again with C{more} false (with the rest of the
        run, or C{b""}) before it reads any further, or the replies may not
        leave before a FIN read next ends the session.
    """
    if socket is None or not socket.connected or socket.disconnecting:
        if writer is not None and socket is not None and writer.holds(socket):
            writer.add(socket, data)
        else:
            transport.write(data)
        return False
    if transport is socket and not socket.TLS:
        if socket.dataBuffer or socket._tempDataBuffer:
            # Behind what the connection holds; a FIN is read as a
            # half-close, after the replies leave.
            if writer is not None and writer.holds(socket):
                writer.add(socket, data)
            else:
                transport.write(data)
            return False
        if writer is None or more or alone:
            if writer is not None and writer._waiting:
                writer.sendNow(socket)
            _send(socket, [data])
        else:
            writer.add(socket, data)
        return False
    transport.write(data)
    # Twisted's TLS layer holds small writes until the reactor's next turn:
    # this write needs none to join it (the session sends its replies in
    # batches), so it goes down at once.
    layer = socket.protocol if socket.TLS else transport
    aggregator = getattr(layer, "_aggregator", None)
    if aggregator is not None:
        if more:
            return True
        aggregator.flush()
    if (socket.dataBuffer or socket._tempDataBuffer) and not socket.producerPaused:
        # What the socket does not take stays queued for the reactor; an
        # error is the reactor's to find on its next write.
        socket.doWrite()
    return False
