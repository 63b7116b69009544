# -*- test-case-name: tests.test_lingering -*-
"""
The lingering close: after the last reply of a session the server ends
while its client may still be sending (a refusal that closes: a BDAT chunk
too large to drop, C{421} for too many errors, a deadline), only the
sending side is shut (C{shutdown(SHUT_WR)}), and what the client still
sends is read and dropped until it closes its side, falls silent, or a
bound is reached; then the connection closes.

A socket closed with octets unread, or that gets more after its close, is
reset by the kernel.  A client still writing then sees its write fail
(C{EPIPE}, C{ECONNRESET}), and one that takes that for a lost connection
never reads the reply sent before the reset (Dovecot's LMTP proxy answered
C{451 4.4.0 Proxy failed (connection lost)} to a 552, and retried); a
client whose stack drops what it received when the reset comes (Windows
does; Linux keeps it readable) loses the reply even if it reads.  Apache
(C{lingering_close}) and nginx (C{lingering_close}, C{lingering_time},
C{lingering_timeout}) close this way for the same reason.

The bounds, and why:

  - silence: L{LINGER_SILENCE} seconds with nothing read (Apache waits 2
    s per read, nginx's C{lingering_timeout} is 5 s): a client that read
    its reply closes at once, and one still sending sends without pause;
  - time: the close's grace (L{CLOSE_GRACE
    <twisted_smtpd._serving.deadlines.CLOSE_GRACE>}, 5 s) from the start
    of the close, the bound every close already had, so that a lingering
    connection keeps its place under C{maxClients} and C{maxClientsPerIp}
    (its socket is open) no longer than a close without it did, whether
    or not its client reads;
  - octets: L{LINGER_BYTES}, so that a client sending as fast as the
    server reads (over the loopback or a fast network, gigabytes in the
    grace's five seconds) costs a bounded amount of reading.

Reaching one closes the connection (a reset, if the client still sends)
with one line at debug level; a client that closes its side ends the
lingering at once, with no line.  A server that stops does not linger,
and ends the lingering of its connections (L{stop}).

On plain connections (TCP, UNIX sockets, a PROXY header's connection),
and over TLS (STARTTLS, or implicit TLS straight over TCP), where the
server's close_notify goes first (L{closeAfterCloseNotify
<twisted_smtpd._serving.tls.closeAfterCloseNotify>}) and what follows is
dropped undecrypted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_smtpd._serving.flow import readLarger, socketUnder
from twisted_smtpd._serving.logging import NAMESPACE, clientAddress

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from twisted_smtpd._core.options import ServerOptions
    from twisted_smtpd._core.session import Session
    from twisted_smtpd._serving.deadlines import Times

_sessionLog = Logger(namespace=NAMESPACE)

#: Seconds of silence from the client that end a lingering close.
LINGER_SILENCE = 2.0
#: Octets read and dropped in a lingering close, at most: 256 MiB, four
#: times what a refused BDAT chunk is read past the size limit at least
#: (L{DROP_SLACK <twisted_smtpd._serving.transaction.DROP_SLACK>}), so
#: that a client that writes the rest of a large chunk before it reads
#: gets its reply, while one that never stops costs no more reading than
#: a few refused chunks already may.
LINGER_BYTES = 256 * 2**20


class Closing(Protocol):
    """
    A session whose close lingers, as this module sees it.
    """

    times: Times
    session: Session

    @property
    def options(self) -> ServerOptions: ...

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def transport(self) -> Any: ...


def plainConnection(socket: Any, transport: object, plainTCP: bool) -> bool:
    """
    Whether a session's close may linger on its connection: C{socket}
    (L{socketUnder}) is a plain one (TCP or UNIX, no TLS), the session's
    C{transport} itself or under a PROXY wrapper straight over it
    (C{plainTCP}).
    """
    return socket is not None and not socket.TLS and (plainTCP or transport is socket)


@implementer(IProtocol, IHalfCloseableProtocol)
class Lingering:
    """
    What reads a connection whose session ended, from its close on: the
    protocol of the connection in place of the session (or the PROXY
    wrapper over it), which is told of the end (C{connectionLost}) as
    before.

    @ivar dropped: Octets read and dropped.
    """

    def __init__(self, p: Closing, socket: Any, closer: Any = None) -> None:
        self.session = p
        self.socket = socket
        #: What closes the connection: itself, or, under TLS started on it,
        #: what bypasses the TLS layer.
        self.closer: Any = socket if closer is None else closer
        self.below: Any = socket.protocol
        self.dropped = 0

    def makeConnection(self, transport: object) -> None:
        """Never called: the connection is made already."""

    def connectionMade(self) -> None:
        """Never called: the connection is made already."""

    def dataReceived(self, data: bytes) -> None:
        """
        Drop C{data}: nothing the client sends after the close is parsed or
        answered.  Past L{LINGER_BYTES}, the lingering ends.
        """
        p = self.session
        p.times.lastActivity = p.clock.seconds()
        self.dropped += len(data)
        if self.dropped > LINGER_BYTES:
            cut(p, f"octet limit ({LINGER_BYTES})")

    def writeConnectionLost(self) -> None:
        """
        The last replies are sent and the sending side shut: the silence
        counts from now on.
        """
        p = self.session
        p.times.lingerSince = p.times.lastActivity = p.clock.seconds()

    def readConnectionLost(self) -> None:
        """
        The client closed its side: the connection closes now (once the
        last replies are sent, when they are not yet).
        """
        self.closer.loseConnection()

    def loseConnection(self) -> None:
        """
        Close now (or once the last replies are sent): what a connection
        Twisted's C{startTLS} put TLS on asks of its protocol.
        """
        self.closer.loseConnection()

    def write(self, data: bytes) -> None:
        """
        Nothing more is sent: the sending side is shut.
        """

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """
        Nothing more is sent: the sending side is shut.
        """

    def connectionLost(self, reason: Failure) -> None:
        """
        The connection is gone: the session (or the wrapper over it) is told.
        """
        self.below.connectionLost(reason)


def begin(p: Closing, socket: Any, closer: Any = None) -> None:
    """
    Read and drop what the client of C{p} sends on the connection C{socket}
    from now on, the session ending (L{Lingering}).  Its sending side is
    shut once the replies are sent (C{loseWriteConnection}: at the end of
    the turn, L{TurnWriter.closeAtEnd
    <twisted_smtpd._serving.flow.TurnWriter.closeAtEnd>}, or after the
    server's close_notify, L{closeAfterCloseNotify
    <twisted_smtpd._serving.tls.closeAfterCloseNotify>}).

    @param closer: What closes the connection, when not C{socket} itself
        (what bypasses the TLS layer of a connection that began TLS).
    """
    socket.protocol = Lingering(p, socket, closer)
    # Larger reads: fewer of them for what is only dropped.
    readLarger(socket)
    socket.startReading()


def lingers(p: Closing) -> bool:
    """
    Whether the close of C{p} lingers (L{begin}), its connection still open.
    """
    return _lingering(p) is not None


def _lingering(p: Closing) -> Lingering | None:
    socket = socketUnder(p.transport)
    protocol = None if socket is None else getattr(socket, "protocol", None)
    if isinstance(protocol, Lingering) and socket.connected and not socket.disconnecting:
        return protocol
    return None


def cut(p: Closing, bound: str) -> bool:
    """
    End the lingering close of C{p} for C{bound} reached: one line at
    debug level, and the connection closes now (a reset, when the client
    still sends).

    @return: Whether C{p}'s close was lingering (and now ends).
    """
    protocol = _lingering(p)
    if protocol is None:
        return False
    if p.session.remoteAddress[0] not in p.options.ignoredHosts:
        _sessionLog.debug(
            "{session} {client} lingering close cut: {bound} reached ({octets} octets dropped)",
            session=p.session.id,
            client=clientAddress(p.session.remoteAddress),
            bound=bound,
            octets=protocol.dropped,
        )
    protocol.closer.abortConnection()
    return True


def stop(p: Closing) -> None:
    """
    The server stops: end the lingering close of C{p} now, or, when its
    last replies are not all sent yet, close once they are (as a close
    that does not linger).
    """
    protocol = _lingering(p)
    if protocol is None:
        return
    if p.times.lingerSince is None:
        protocol.closer.loseConnection()
    else:
        protocol.closer.abortConnection()
