# -*- test-case-name: tests.test_lingering -*-
"""
Tests for the lingering close (L{twisted_smtpd._serving.lingering}): after
a refusal that ends the session while the client may still be sending,
the server shuts only its sending side, reads and drops what comes until
the client closes, falls silent, or a bound is reached.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_deadlines import LogCatcher
from tests.test_protocol import RecordingHandler
from twisted_smtpd import SMTPError
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving import flow, lingering
from twisted_smtpd._serving.deadlines import CLOSE_GRACE
from twisted_smtpd._serving.lingering import LINGER_SILENCE, Lingering
from twisted_smtpd._serving.protocol import SMTPProtocol
from twisted_smtpd._serving.proxy import ProxyWrappingFactory
from twisted_smtpd._serving.server import SMTPServerFactory

TRANSACTION = b"EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n"
#: A chunk past what a server with a size limit of 1000 reads and drops.
HUGE = b"BDAT 999999999999 LAST\r\n"


class _Socket:
    """
    The kernel's socket under L{_Connection}: it takes all it is given.
    """

    family = socket.AF_UNIX

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)


class _Connection:
    """
    The parts of Twisted's C{tcp.Server} a session and its lingering close
    use, driven by hand: L{shutWrite} is what the reactor does once the
    connection's buffer is empty after C{loseWriteConnection}.
    """

    TLS = False
    connected = True
    disconnecting = False
    producer = None
    producerPaused = False
    _aborting = False
    bufferSize = flow.READ_SIZE

    def __init__(self, clock: Clock, host: str = "192.0.2.7") -> None:
        self.reactor = clock
        self.socket = _Socket()
        self.dataBuffer = b""
        self._tempDataBuffer: list[bytes] = []
        self.reading = True
        self.writeShutting = self.writeShut = False
        self.lost: Failure | None = None
        self.protocol: Any = None
        self.peer = IPv4Address("TCP", host, 40000)

    def sent(self) -> bytes:
        data = b"".join(self.socket.sent + self._tempDataBuffer)
        self.socket.sent, self._tempDataBuffer = [], []
        return data

    def getPeer(self) -> IPv4Address:
        return self.peer

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "192.0.2.1", 25)

    def write(self, data: bytes) -> None:
        self._tempDataBuffer.append(data)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True

    def startReading(self) -> None:
        self.reading = True

    def loseWriteConnection(self) -> None:
        self.writeShutting = True

    def shutWrite(self) -> None:
        self.writeShut = True
        IHalfCloseableProtocol(self.protocol).writeConnectionLost()

    def loseConnection(self) -> None:
        if self.writeShut:
            self.connectionLost(Failure(ConnectionDone()))
        else:
            self.reading = False
            self.disconnecting = True

    def abortConnection(self) -> None:
        self._aborting = True
        self.connectionLost(Failure(ConnectionAborted()))

    def connectionLost(self, reason: Failure) -> None:
        self.connected = False
        self.lost = reason
        self.protocol.connectionLost(reason)

    def receive(self, data: bytes) -> None:
        self.protocol.dataReceived(data)


def connect(**options: Any) -> tuple[SMTPProtocol, _Connection, Clock, SMTPServerFactory]:
    """
    A session over a fake plain TCP connection with a size limit of 1000,
    greeting read.
    """
    clock = Clock()
    options.setdefault("name", "mx.example.com")
    options.setdefault("disableReverseLookup", True)
    options.setdefault("size", 1000)
    factory = SMTPServerFactory(RecordingHandler(), ServerOptions(**options), reactor=clock)
    proto = factory.buildProtocol(None)  # type: ignore[arg-type]
    connection = _Connection(clock)
    connection.protocol = proto
    proto.makeConnection(connection)  # type: ignore[arg-type]
    connection.sent()
    return proto, connection, clock, factory


def refuseHuge(proto: SMTPProtocol, connection: _Connection, clock: Clock) -> bytes:
    """
    A transaction, then a chunk too large to drop: the session closes.

    @return: What the server sent from the chunk on.
    """
    proto.dataReceived(TRANSACTION)
    connection.sent()
    proto.dataReceived(HUGE + b"x" * 100)
    clock.advance(0)
    return connection.sent()


def tick(clock: Clock, seconds: float) -> None:
    """
    Let C{seconds} pass, a tenth at a time, with the deadlines' timer.
    """
    for _ in range(round(seconds * 10)):
        clock.advance(0.1)
        clock.advance(0)


class LingeringCloseTests(SynchronousTestCase):
    """
    A session that ends with a refusal while its client may still be
    sending closes lingering.
    """

    def setUp(self) -> None:
        # The fake connection is the one under the session's transport.
        def under(transport: object) -> Any:
            return transport if isinstance(transport, _Connection) else None

        self.patch(flow, "socketUnder", under)
        self.patch(lingering, "socketUnder", under)

    def test_writeSideShutAfterReply(self) -> None:
        """
        After a chunk too large to drop, the 552 is sent, then only the
        sending side is shut; the connection stays open and reads on,
        in larger reads.
        """
        proto, connection, clock, factory = connect()
        self.assertEqual(refuseHuge(proto, connection, clock), replies.SIZE_EXCEEDED)
        self.assertIsInstance(connection.protocol, Lingering)
        self.assertTrue(connection.writeShutting)
        self.assertTrue(connection.connected)
        self.assertFalse(connection.disconnecting)
        self.assertTrue(connection.reading)
        self.assertEqual(connection.bufferSize, flow.BODY_READ_SIZE)
        connection.shutWrite()
        self.assertIn(proto, factory.connections)

    def test_inputDropped(self) -> None:
        """
        What the client sends after the close is dropped: not parsed, not
        answered, not handed to the handler.
        """
        proto, connection, clock, factory = connect()
        refuseHuge(proto, connection, clock)
        connection.shutWrite()
        connection.receive(b"x" * 5000 + b"\r\nNOOP\r\nRSET\r\nQUIT\r\n")
        connection.receive(b"MAIL FROM:<s@example.com>\r\n")
        tick(clock, 1)
        self.assertEqual(connection.sent(), b"")
        self.assertTrue(connection.connected)
        handler: Any = factory.handler
        self.assertEqual(handler.messages, [])

    def test_clientCloseEnds(self) -> None:
        """
        The client's end of what it sends (a FIN) ends the lingering at
        once: the connection closes cleanly, the session ends and its
        slot is freed, and no line is logged for the lingering.
        """
        catcher = LogCatcher(self)
        proto, connection, clock, factory = connect()
        events: list[str] = []
        factory.addObserver(lambda event, session, data: events.append(event))
        refuseHuge(proto, connection, clock)
        connection.shutWrite()
        connection.receive(b"x" * 100)
        connection.protocol.readConnectionLost()
        assert connection.lost is not None
        self.assertIsInstance(connection.lost.value, ConnectionDone)
        self.assertNotIn(proto, factory.connections)
        self.assertIn("close", events)
        self.assertEqual(catcher.matching("lingering"), [])

    def test_sessionEndsWhenLingeringBegins(self) -> None:
        """
        The session ends when its lingering close begins, not when the
        connection does: the close event and C{onClose} come at once (a
        handler's work for the session, such as a message waiting for its
        turn at a webhook, ends with it), once, while the connection keeps
        its place under the limits until it closes.
        """
        proto, connection, clock, factory = connect()
        events: list[str] = []
        factory.addObserver(lambda event, session, data: events.append(event))
        handler: Any = factory.handler
        refuseHuge(proto, connection, clock)
        self.assertIsInstance(connection.protocol, Lingering)
        self.assertEqual((events.count("close"), len(handler.closed)), (1, 1))
        self.assertIn(proto, factory.connections)
        connection.shutWrite()
        connection.receive(b"x" * 100)
        connection.protocol.readConnectionLost()
        self.assertNotIn(proto, factory.connections)
        self.assertEqual((events.count("close"), len(handler.closed)), (1, 1))

    def test_clientCloseBeforeWriteShut(self) -> None:
        """
        A client that closes its side before the replies are all sent
        (its window shut) has the connection closed once they are.
        """
        proto, connection, clock, factory = connect()
        refuseHuge(proto, connection, clock)
        connection.protocol.readConnectionLost()
        self.assertTrue(connection.disconnecting)
        self.assertIn(proto, factory.connections)

    def test_silenceEnds(self) -> None:
        """
        L{LINGER_SILENCE} seconds without a read end the lingering: the
        connection is aborted, with one line at debug level naming the
        bound; each read starts the silence anew.
        """
        catcher = LogCatcher(self)
        proto, connection, clock, factory = connect()
        refuseHuge(proto, connection, clock)
        connection.shutWrite()
        tick(clock, LINGER_SILENCE - 0.5)
        connection.receive(b"x" * 10)
        tick(clock, LINGER_SILENCE - 0.5)
        self.assertTrue(connection.connected)
        tick(clock, 1.5)
        self.assertFalse(connection.connected)
        assert connection.lost is not None
        self.assertIsInstance(connection.lost.value, ConnectionAborted)
        self.assertNotIn(proto, factory.connections)
        [line] = catcher.matching("lingering close cut")
        self.assertIn("192.0.2.7 lingering close cut: silence (2 s) reached (10 octets", line)
        self.assertEqual(catcher.matching("close not done"), [])

    def test_timeEnds(self) -> None:
        """
        A client that goes on sending is cut off L{CLOSE_GRACE} seconds
        after the close began, as a close that does not linger.
        """
        catcher = LogCatcher(self)
        proto, connection, clock, factory = connect()
        refuseHuge(proto, connection, clock)
        connection.shutWrite()
        for _ in range(int(CLOSE_GRACE) * 2 - 1):
            tick(clock, 0.5)
            connection.receive(b"x" * 1000)
        self.assertTrue(connection.connected)
        tick(clock, 1)
        self.assertFalse(connection.connected)
        [line] = catcher.matching("lingering close cut")
        self.assertIn("lingering close cut: time limit (5 s) reached (9000 octets dropped)", line)

    def test_octetsEnd(self) -> None:
        """
        Past L{LINGER_BYTES} octets dropped, the lingering ends at once.
        """
        self.patch(lingering, "LINGER_BYTES", 3000)
        catcher = LogCatcher(self)
        proto, connection, clock, factory = connect()
        refuseHuge(proto, connection, clock)
        connection.shutWrite()
        connection.receive(b"x" * 3000)
        self.assertTrue(connection.connected)
        connection.receive(b"x")
        self.assertFalse(connection.connected)
        [line] = catcher.matching("lingering close cut")
        self.assertIn("octet limit (3000) reached (3001 octets dropped)", line)

    def test_unreadRepliesBoundedByGrace(self) -> None:
        """
        A client that leaves its replies unread (the sending side is never
        shut) keeps its connection no longer than before: it is aborted
        after L{CLOSE_GRACE} seconds, with the close's own line.
        """
        catcher = LogCatcher(self)
        proto, connection, clock, factory = connect()
        refuseHuge(proto, connection, clock)
        for _ in range(int(CLOSE_GRACE) * 2 - 1):
            tick(clock, 0.5)
            connection.receive(b"x" * 10)
        self.assertTrue(connection.connected)
        tick(clock, 1)
        self.assertFalse(connection.connected)
        self.assertEqual(len(catcher.matching("close not done after 5 s")), 1)
        self.assertEqual(catcher.matching("lingering"), [])

    def test_serverStopEnds(self) -> None:
        """
        A server that stops ends the lingering of its sessions at once:
        the stop is not held up by it.
        """
        proto, connection, clock, factory = connect()
        refuseHuge(proto, connection, clock)
        connection.shutWrite()
        d = factory.close()
        self.assertFalse(connection.connected)
        self.successResultOf(d)

    def test_serverStopBeforeWriteShut(self) -> None:
        """
        A server that stops while the last replies of a lingering close
        are not all sent closes the connection once they are, as a close
        that does not linger.
        """
        proto, connection, clock, factory = connect()
        refuseHuge(proto, connection, clock)
        factory.close()
        self.assertTrue(connection.disconnecting)
        self.assertFalse(connection.reading)

    def test_slotKept(self) -> None:
        """
        A lingering connection keeps its place under C{maxClientsPerIp}:
        its socket is open.
        """
        proto, connection, clock, factory = connect(maxClientsPerIp=1)
        refuseHuge(proto, connection, clock)
        connection.shutWrite()
        other = factory.buildProtocol(None)  # type: ignore[arg-type]
        second = _Connection(clock)
        second.protocol = other
        other.makeConnection(second)  # type: ignore[arg-type]
        self.assertTrue(second.sent().startswith(b"421 4.7.0"))

    def test_tooManyErrorsLingers(self) -> None:
        """
        C{421 4.7.0 Too many errors}, the client still pipelining, closes
        lingering too.
        """
        proto, connection, clock, factory = connect(maxErrors=2)
        proto.dataReceived(b"BOGUS\r\nBOGUS\r\nNOOP\r\n")
        clock.advance(0)
        self.assertTrue(connection.sent().endswith(replies.TOO_MANY_ERRORS))
        self.assertIsInstance(connection.protocol, Lingering)

    def test_quitDoesNotLinger(self) -> None:
        """
        QUIT's 221 closes the connection without lingering: the client
        sends nothing after it.
        """
        proto, connection, clock, factory = connect()
        proto.dataReceived(b"QUIT\r\n")
        clock.advance(0)
        self.assertIs(connection.protocol, proto)
        self.assertFalse(connection.connected)

    def test_clientFinDoesNotLinger(self) -> None:
        """
        A session ended with a refusal after its client shut its side does
        not linger: nothing more can come.
        """
        proto, connection, clock, factory = connect()
        pending: Deferred[None] = Deferred()
        handler: Any = factory.handler
        handler.onMailFrom = lambda address, session: pending
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@example.com>\r\n")
        proto.readConnectionLost()
        pending.errback(SMTPError(421, "Try later", "4.3.0"))
        clock.advance(0)
        self.assertTrue(connection.sent().endswith(b"421 4.3.0 Try later\r\n"))
        self.assertIs(connection.protocol, proto)
        self.assertFalse(connection.connected)

    def test_shutdownDoesNotLinger(self) -> None:
        """
        The 421 of a server that stops does not linger: the stop waits for
        no client.
        """
        proto, connection, clock, factory = connect()
        factory.close()
        clock.advance(0)
        self.assertTrue(connection.sent().startswith(b"421 4.3.2"))
        self.assertIs(connection.protocol, proto)
        self.assertFalse(connection.connected)

    def test_refusedAtConnectDoesNotLinger(self) -> None:
        """
        A connection refused at connect (C{maxClients}) does not linger:
        its client has sent nothing yet.
        """
        proto, connection, clock, factory = connect(maxClients=1)
        other = factory.buildProtocol(None)  # type: ignore[arg-type]
        second = _Connection(clock)
        second.protocol = other
        other.makeConnection(second)  # type: ignore[arg-type]
        self.assertIs(other._socket, second)
        clock.advance(0)
        self.assertIs(second.protocol, other)


class RealConnectionTests(SynchronousTestCase):
    """
    The lingering close on Twisted's own TCP connection (a real socket on
    127.0.0.1, the server's side driven by hand on a
    L{MemoryReactorClock}), plain and behind a PROXY header.
    """

    def _session(self, proxied: bool) -> tuple[tcp.Server, socket.socket, SMTPServerFactory]:
        reactor = MemoryReactorClock()
        options = ServerOptions(
            name="mx.example.com",
            disableReverseLookup=True,
            size=1000,
            useProxy=["127.0.0.0/8"] if proxied else [],
        )
        factory = SMTPServerFactory(RecordingHandler(), options, reactor=reactor)
        listening = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listening.close)
        client = socket.create_connection(listening.getsockname(), timeout=5)
        self.addCleanup(client.close)
        accepted, address = listening.accept()
        accepted.setblocking(False)
        self.addCleanup(accepted.close)
        top: Any = factory
        if proxied:
            top = ProxyWrappingFactory(factory, options.useProxy, reactor)
        protocol = top.buildProtocol(IPv4Address("TCP", *address))
        connection = tcp.Server(accepted, protocol, address, None, 1, reactor)  # type: ignore[arg-type]
        protocol.makeConnection(connection)
        if proxied:
            client.sendall(b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 25\r\n")
            connection.doRead()
        reactor.advance(0)
        self.assertEqual(client.recv(4096), replies.GREETING)
        client.sendall(TRANSACTION)
        connection.doRead()
        reactor.advance(0)
        client.recv(4096)
        return connection, client, factory

    def _lingers(self, proxied: bool) -> None:
        connection, client, factory = self._session(proxied)
        client.sendall(HUGE + b"x" * 5000)
        connection.doRead()
        connection.reactor.advance(0)  # type: ignore[attr-defined]
        # What the reactor does once the connection can write: the replies
        # are sent, the sending side shut.
        connection.doWrite()
        self.assertEqual(client.recv(4096), replies.SIZE_EXCEEDED)
        self.assertEqual(client.recv(4096), b"")
        # The client goes on sending: read and dropped, unanswered.
        client.sendall(b"NOOP\r\n" * 1000)
        connection.doRead()
        self.assertTrue(connection.connected)
        self.assertEqual(len(factory.connections), 1)
        # It closes: so does the connection, cleanly.
        client.shutdown(socket.SHUT_WR)
        self.assertIsNotNone(connection.doRead())
        connection.readConnectionLost(Failure(ConnectionDone()))
        self.assertFalse(connection.connected)
        self.assertEqual(len(factory.connections), 0)

    def test_plain(self) -> None:
        """
        On a plain TCP connection, the 552 is followed by the end of what
        the server sends while the client may go on sending; its close
        ends the connection and the session.
        """
        self._lingers(False)

    def test_proxied(self) -> None:
        """
        Behind a PROXY header, the connection lingers as well, and the
        session behind the wrapper is told of its end.
        """
        self._lingers(True)
