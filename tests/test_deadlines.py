"""
Tests for the deadlines of a session (L{twisted_smtpd._serving.deadlines}): TLS
handshakes, replies left unread, the bound on a polite close, the minimum
data rate, and the limits per client address at connection time.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from tests import replies
from tests.test_protocol import RecordingHandler, connect, take, transaction
from twisted_smtpd._core.address import Address
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Session
from twisted_smtpd._serving.deadlines import CLOSE_GRACE, pendingBytes
from twisted_smtpd._serving.limits import ClientLimits
from twisted_smtpd._serving.logging import SessionLogger
from twisted_smtpd._serving.protocol import SMTPProtocol
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

TOO_SLOW = b"421 4.4.2 Error: data transfer too slow\r\n"
TOO_MANY_FROM_ADDRESS = (
    b"421 4.7.0 Error: too many connections from your address, try again later\r\n"
)
CONNECTION_RATE = (
    b"421 4.7.0 Error: too many connections from your address recently, try again later\r\n"
)


class LogCatcher:
    """
    Collect the text of every log event while installed.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self)
        case.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: LogEvent) -> None:
        self.lines.append(formatEvent(event))

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


class BufferedTransport(StringTransport):
    """
    A L{StringTransport} with the send buffer attributes of a TCP transport.
    """

    dataBuffer = b""
    offset = 0
    _tempDataLen = 0


def factoryFor(clock: Clock, **options: Any) -> SMTPServerFactory:
    options.setdefault("name", "mx.example.com")
    options.setdefault("disableReverseLookup", True)
    return SMTPServerFactory(RecordingHandler(), ServerOptions(**options), reactor=clock)


def connectFrom(
    factory: SMTPServerFactory, host: str, tls: bool = False
) -> tuple[SMTPProtocol, StringTransport]:
    proto = factory.buildProtocol(None)  # type: ignore[arg-type]
    transport = StringTransport(
        peerAddress=IPv4Address("TCP", host, 40000),
        hostAddress=IPv4Address("TCP", "192.0.2.1", 25),
    )
    if tls:
        directlyProvides(transport, ISSLTransport)
    proto.makeConnection(transport)
    return proto, transport


class TLSHandshakeTimeoutTests(SynchronousTestCase):
    def test_implicitTLSHandshakeStalls(self) -> None:
        """
        A client of an implicit TLS listener that never finishes the
        handshake is aborted after tlsHandshakeTimeout, and its slot is
        given back.
        """
        clock = Clock()
        log = LogCatcher(self)
        factory = factoryFor(clock, maxClients=1)
        proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
        clock.advance(29)
        self.assertFalse(transport.disconnected)
        clock.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(len(log.matching("192.0.2.7 TLS handshake timeout (30 s)")), 1)
        proto.connectionLost()
        self.assertEqual(factory.connections, set())
        self.assertEqual(log.matching("TLS handshake failed"), [])

    def test_failedHandshakeLogged(self) -> None:
        """
        A connection that ends in the middle of the TLS handshake leaves one
        line with the client and OpenSSL's reason, or what ended it.
        """
        from OpenSSL import SSL
        from twisted.internet.error import ConnectionDone, ConnectionLost
        from twisted.python.failure import Failure

        cases = [
            (SSL.Error([("SSL routines", "", "wrong version number")]), "wrong version number"),
            (ConnectionDone(), "connection closed"),
            (ConnectionLost(), "connection lost"),
        ]
        for error, why in cases:
            log = LogCatcher(self)
            factory = factoryFor(Clock())
            proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
            proto.connectionLost(Failure(error))
            sid = proto.session.id
            self.assertEqual(
                log.matching("TLS handshake failed"),
                [f"{sid} 192.0.2.7 TLS handshake failed: {why}"],
            )

    def test_failedHandshakeBeginsNoSession(self) -> None:
        """
        An implicit TLS connection whose handshake fails or times out never
        began a session: no C{close} event and no C{onClose} follow its one
        line, as none follow a refusal; its only event is C{tlsfailed}.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        clock = Clock()
        factory = factoryFor(clock)
        events: list[str] = []
        factory.addObserver(lambda event, session, data: events.append(event))
        failed, _ = connectFrom(factory, "192.0.2.7", tls=True)
        failed.connectionLost(Failure(ConnectionLost()))
        stalled, _ = connectFrom(factory, "192.0.2.8", tls=True)
        clock.advance(30)
        stalled.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(events, ["tlsfailed", "tlsfailed"])
        handler = factory.handler
        assert isinstance(handler, RecordingHandler)
        self.assertEqual(handler.closed, [])
        self.assertEqual(factory.connections, set())

    def test_failedHandshakeOfIgnoredHost(self) -> None:
        """
        A client of C{ignoredHosts} (a health check opening the implicit
        TLS port and closing it) leaves no line when its connection ends in
        the handshake; other clients still do.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        log = LogCatcher(self)
        factory = factoryFor(Clock(), ignoredHosts=("192.0.2.7",))
        for host in ["192.0.2.7", "192.0.2.8"]:
            proto, transport = connectFrom(factory, host, tls=True)
            proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(
            [line.split(" ", 1)[1] for line in log.matching("TLS handshake failed")],
            ["192.0.2.8 TLS handshake failed: connection lost"],
        )

    def test_handshakeTimeoutOption(self) -> None:
        """
        tlsHandshakeTimeout sets the deadline; the socket timeout does not
        apply while the handshake runs.
        """
        clock = Clock()
        factory = factoryFor(clock, tlsHandshakeTimeout=5, socketTimeout=2)
        proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
        clock.advance(4.5)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.5)
        self.assertTrue(transport.disconnected)

    def test_finishedHandshakeEndsTheDeadline(self) -> None:
        """
        Once the handshake is done only the socket timeout applies.
        """
        clock = Clock()
        factory = factoryFor(clock, tlsHandshakeTimeout=5, socketTimeout=60)
        proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
        clock.advance(1)
        proto.handshakeCompleted()
        self.assertTrue(transport.value().startswith(b"220 "))
        clock.advance(30)
        self.assertFalse(transport.disconnecting)
        clock.advance(30)
        self.assertTrue(transport.value().endswith(replies.TIMEOUT))


class UnreadRepliesTests(SynchronousTestCase):
    def test_writeStallTimesOut(self) -> None:
        """
        A client that stops reading its replies (the transport pauses the
        session) gets 421 after socketTimeout, and is aborted when the 421
        cannot leave within CLOSE_GRACE either.
        """
        log = LogCatcher(self)
        proto, transport, clock, factory = connect(socketTimeout=60)
        proto.pauseProducing()
        clock.advance(59)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.value().endswith(replies.TIMEOUT))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        self.assertEqual(len(log.matching("192.0.2.7 write timeout: replies unread (60 s)")), 1)
        clock.advance(CLOSE_GRACE)
        self.assertTrue(transport.disconnected)
        self.assertEqual(len(log.matching("192.0.2.7 close not done after 5 s")), 1)

    def test_readingRestartsTheTimeout(self) -> None:
        """
        When the client catches up with its replies, the timeout starts again.
        """
        proto, transport, clock, factory = connect(socketTimeout=60)
        proto.pauseProducing()
        clock.advance(50)
        proto.resumeProducing()
        proto.pauseProducing()
        clock.advance(50)
        self.assertFalse(transport.disconnecting)
        clock.advance(10)
        self.assertTrue(transport.disconnecting)

    def test_progressRestartsTheTimeout(self) -> None:
        """
        A client that reads slowly, but reads, makes the send buffer shrink:
        that is progress, not a stall.
        """
        clock = Clock()
        factory = factoryFor(clock, socketTimeout=10)
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = BufferedTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 1))
        proto.makeConnection(transport)
        transport.dataBuffer = b"x" * 100_000
        proto.pauseProducing()
        for _ in range(5):
            clock.pump([1.0] * 8)
            transport.offset += 1000
        self.assertFalse(transport.disconnecting)
        # The last progress is seen by the sweep at 41 s.
        clock.pump([1.0] * 9)
        self.assertFalse(transport.disconnecting)
        clock.pump([1.0] * 2)
        self.assertTrue(transport.disconnecting)

    def test_pendingBytes(self) -> None:
        """
        pendingBytes reads a TCP transport's buffer through wrappers.
        """

        class Wrapper:
            def __init__(self, transport: object) -> None:
                self.transport = transport

        t = BufferedTransport()
        t.dataBuffer = b"x" * 10
        t.offset = 3
        t._tempDataLen = 5
        self.assertEqual(pendingBytes(Wrapper(Wrapper(t))), 12)
        self.assertIsNone(pendingBytes(StringTransport()))


class PausingTransport(StringTransport):
    """
    A L{StringTransport} whose send buffer is full beyond C{limit} bytes:
    then it pauses its producer, as a TCP transport does.
    """

    limit = 2000

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.limit and self.producer is not None:
            self.producer.pauseProducing()


class PipelinedFloodTests(SynchronousTestCase):
    def test_unreadRepliesBounded(self) -> None:
        """
        A client pipelining many commands without reading its replies gets
        only a batch of replies beyond a full send buffer: the commands
        behind wait, unread, until it reads; then they are answered.
        """
        clock = Clock()
        factory = factoryFor(clock, maxJunkCommands=0)
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = PausingTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 1))
        proto.makeConnection(transport)
        take(transport)
        proto.dataReceived(b"NOOP\r\n" * 1000)
        written = transport.value().count(b"\r\n")
        self.assertLess(written, 300)
        self.assertEqual(transport.producerState, "paused")
        transport.clear()
        transport.limit = 10**9
        proto.resumeProducing()
        self.assertEqual(written + transport.value().count(b"\r\n"), 1000)


class LineDeadlineTests(SynchronousTestCase):
    """
    A command line must arrive whole within C{socketTimeout} of its first
    octet: a client trickling it, an octet at a time, does not hold the
    session (Postfix's C{smtpd_per_record_deadline}).
    """

    def trickle(self, proto: SMTPProtocol, clock: Clock, data: bytes, every: float) -> None:
        for octet in data:
            proto.dataReceived(bytes([octet]))
            clock.advance(every)

    def test_trickledLineCut(self) -> None:
        """
        A line whose octets come every 10 s without its end is answered 421
        and closed 60 s after its first octet, with one log line.
        """
        log = LogCatcher(self)
        proto, transport, clock, factory = connect(socketTimeout=60)
        self.trickle(proto, clock, b"EHLO aaaaa", 10)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.value().endswith(replies.TIMEOUT), transport.value())
        self.assertEqual(len(log.matching("timeout: command line incomplete (60 s)")), 1)

    def test_wholeLinesRestartTheDeadline(self) -> None:
        """
        Lines that each arrive whole within the timeout, however slowly,
        keep the session: the deadline runs from each line's first octet.
        """
        proto, transport, clock, factory = connect(socketTimeout=60)
        for _ in range(3):
            self.trickle(proto, clock, b"NOOP\r\n", 9)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value().count(b"250 2.0.0 OK"), 3)

    def test_trickledAuthAnswerCut(self) -> None:
        """
        The same for an answer to an AUTH challenge.
        """
        from tests.test_auth import PasswordHandler

        proto, transport, clock, factory = connect(
            PasswordHandler(), socketTimeout=60, allowInsecureAuth=True, authMethods=["LOGIN"]
        )
        proto.dataReceived(b"EHLO c\r\nAUTH LOGIN\r\n")
        self.assertIn(b"334 ", transport.value())
        self.trickle(proto, clock, b"dXNlcm5hbWU=", 6)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.value().endswith(replies.TIMEOUT))

    def test_trickledRestOfLongLineCut(self) -> None:
        """
        The rest of a line refused as too long, trickled, is cut as well.
        """
        proto, transport, clock, factory = connect(socketTimeout=60)
        proto.dataReceived(b"NOOP " + b"x" * 20000)
        self.assertIn(b"500 ", transport.value())
        self.trickle(proto, clock, b"y" * 7, 10)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.value().endswith(replies.TIMEOUT))


class CloseBoundTests(SynchronousTestCase):
    def test_idleTimeoutAborts(self) -> None:
        """
        A timed-out client whose connection does not close after the 421 is
        aborted CLOSE_GRACE seconds later.
        """
        proto, transport, clock, factory = connect(socketTimeout=60)
        clock.advance(60)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        clock.advance(CLOSE_GRACE)
        self.assertTrue(transport.disconnected)

    def test_closeTimeoutAborts(self) -> None:
        """
        After closeTimeout, a session that cannot even take its 421 is
        aborted: close() always ends.
        """
        proto, transport, clock, factory = connect(closeTimeout=2)
        transaction(proto, transport)
        proto.pauseProducing()
        d = factory.close()
        clock.advance(2)
        self.assertTrue(transport.value().endswith(replies.SHUTDOWN))
        self.assertFalse(transport.disconnected)
        clock.advance(CLOSE_GRACE)
        self.assertTrue(transport.disconnected)
        proto.connectionLost()
        self.successResultOf(d)

    def test_closeAbortsHandshakes(self) -> None:
        """
        close() aborts at once the sessions in the middle of a TLS handshake:
        no 421 can reach them, and they must not hold the close up.
        """
        clock = Clock()
        factory = factoryFor(clock)
        proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
        d = factory.close()
        self.assertTrue(transport.disconnected)
        proto.connectionLost()
        self.successResultOf(d)


class ShutdownLogTests(SynchronousTestCase):
    """
    A session cut by a stopping server leaves one log line when a
    transaction was cut; an idle one, closed at once, none.
    """

    CUT = "shutdown: transaction cut after the close timeout"

    def test_transactionCutLogged(self) -> None:
        """
        A session whose message is still coming when C{closeTimeout} is over
        gets 421 and leaves one line naming the session, the client and the
        timeout.
        """
        log = LogCatcher(self)
        proto, transport, clock, factory = connect(closeTimeout=30)
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\nSubject: cut\r\n\r\npart")
        take(transport)
        factory.close()
        self.assertEqual(log.matching(self.CUT), [])
        clock.advance(30)
        self.assertEqual(take(transport), replies.SHUTDOWN)
        self.assertEqual(
            log.matching(self.CUT), [f"{proto.session.id} 192.0.2.7 {self.CUT} (30 s)"]
        )

    def test_idleAndFinishedNotLogged(self) -> None:
        """
        An idle session closed at once, and one whose transaction ended
        within C{closeTimeout}, leave no such line.
        """
        log = LogCatcher(self)
        clock = Clock()
        idle, idleTransport, _, factory = connect(clock=clock, closeTimeout=30)
        busy, busyTransport = connectFrom(factory, "192.0.2.8")
        transaction(busy, busyTransport)
        factory.close()
        self.assertTrue(idleTransport.value().endswith(replies.SHUTDOWN))
        busy.dataReceived(b"DATA\r\nSubject: done\r\n\r\nbody\r\n.\r\n")
        self.assertTrue(busyTransport.value().endswith(replies.SHUTDOWN))
        clock.advance(30)
        self.assertEqual(log.matching("shutdown"), [])


class MessageTimeoutTests(SynchronousTestCase):
    """
    A client silent for C{socketTimeout} in the middle of a message: its
    one log line says the message was dropped and how much of it had come
    (Postfix: C{timeout after DATA (N bytes)}).
    """

    def silent(self, *lines: bytes) -> tuple[list[str], SMTPProtocol, RecordingHandler]:
        log = LogCatcher(self)
        handler = RecordingHandler()
        proto, transport, clock, factory = connect(handler, socketTimeout=60)
        transaction(proto, transport)
        for line in lines:
            proto.dataReceived(line)
        take(transport)
        for _ in range(61):
            clock.advance(1)
        self.assertEqual(take(transport), replies.TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(handler.messages, [])
        return log.matching(f"{proto.session.id} "), proto, handler

    def test_silentInData(self) -> None:
        """
        Silent after part of a DATA body: 421, the message dropped, and one
        line naming DATA and the octets received.
        """
        lines, proto, handler = self.silent(b"DATA\r\n", b"Subject: half\r\n")
        self.assertEqual(
            lines,
            [
                f"{proto.session.id} 192.0.2.7 timeout during DATA after 15 bytes (60 s):"
                " message dropped"
            ],
        )

    def test_silentBetweenChunks(self) -> None:
        """
        Silent between two BDAT chunks of a message: the same, naming BDAT.
        """
        lines, proto, handler = self.silent(b"BDAT 3\r\nabc")
        self.assertEqual(
            lines,
            [
                f"{proto.session.id} 192.0.2.7 timeout during BDAT after 3 bytes (60 s):"
                " message dropped"
            ],
        )

    def test_silentOutsideMessage(self) -> None:
        """
        Silent with no message in progress: the plain timeout line.
        """
        lines, proto, handler = self.silent()
        self.assertEqual(lines, [f"{proto.session.id} 192.0.2.7 timeout (60 s)"])


class MinDataRateTests(SynchronousTestCase):
    def test_slowTransferCut(self) -> None:
        """
        A DATA transfer bringing less than minDataRate is cut with 421, the
        message is dropped and the cut is logged.
        """
        log = LogCatcher(self)
        handler = RecordingHandler()
        proto, transport, clock, factory = connect(
            handler, socketTimeout=60, minDataRate=(1000, 10)
        )
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        take(transport)
        for _ in range(20):
            proto.dataReceived(b"x" * 40)
            clock.advance(1)
        self.assertEqual(take(transport), TOO_SLOW)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(handler.messages, [])
        self.assertEqual(len(log.matching("192.0.2.7 data rate below 1000 bytes per 10 s")), 1)

    def test_slowTransferOneLogLine(self) -> None:
        """
        The cut leaves one log line, its own, as the other deadlines do:
        no C{reject} line (nor event) besides it.
        """
        log = LogCatcher(self)
        proto, transport, clock, factory = connect(socketTimeout=60, minDataRate=(1000, 10))
        events: list[str] = []
        factory.addObserver(lambda event, session, data: events.append(event))
        factory.addObserver(SessionLogger())
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        while not transport.disconnecting:
            proto.dataReceived(b"x" * 40)
            clock.advance(1)
        self.assertEqual(take(transport)[-len(TOO_SLOW) :], TOO_SLOW)
        self.assertNotIn("reject", events)
        self.assertEqual(
            log.matching(f"{proto.session.id} "),
            [
                f"{proto.session.id} 192.0.2.7 data rate below 1000 bytes per 10 s"
                " (400 bytes): connection closed"
            ],
        )

    def test_fastTransferPasses(self) -> None:
        """
        A transfer at the minimum rate goes on.
        """
        handler = RecordingHandler()
        proto, transport, clock, factory = connect(handler, minDataRate=(1000, 10))
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        for _ in range(30):
            proto.dataReceived(b"x" * 100 + b"\r\n")
            clock.advance(1)
        proto.dataReceived(b".\r\n")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(handler.messages), 1)

    def test_bdatChunksTrickledCut(self) -> None:
        """
        A BDAT message is measured from its first chunk to its last, the
        time between chunks included: one-octet chunks, one a second, are
        cut with 421, the message dropped and the cut logged.
        """
        log = LogCatcher(self)
        handler = RecordingHandler()
        proto, transport, clock, factory = connect(
            handler, socketTimeout=60, minDataRate=(1000, 10)
        )
        transaction(proto, transport)
        for _ in range(20):
            proto.dataReceived(b"BDAT 1\r\nx")
            clock.advance(1)
        out = take(transport)
        self.assertTrue(out.endswith(b"250 2.0.0 OK: 10 octets received\r\n" + TOO_SLOW), out)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(handler.messages, [])
        self.assertEqual(len(log.matching("192.0.2.7 data rate below 1000 bytes per 10 s")), 1)

    def test_silenceBetweenBdatChunksCounts(self) -> None:
        """
        A big first chunk does not buy silence: a whole window without
        chunks after it is below the rate, though within socketTimeout.
        """
        proto, transport, clock, factory = connect(socketTimeout=60, minDataRate=(1000, 10))
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 5000\r\n" + b"x" * 5000)
        clock.advance(1)
        self.assertFalse(transport.disconnecting)
        take(transport)
        clock.pump([1] * 25)
        self.assertEqual(take(transport), TOO_SLOW)
        self.assertTrue(transport.disconnecting)

    def test_bdatChunksAtRatePass(self) -> None:
        """
        Chunks bringing the minimum rate between them go on, however long
        the message, on a clock at a realistic time: the first window
        starts with the first chunk.
        """
        handler = RecordingHandler()
        clock = Clock()
        clock.advance(1_800_000_000)
        proto, transport, clock, factory = connect(
            handler, clock=clock, socketTimeout=60, minDataRate=(1000, 10)
        )
        transaction(proto, transport)
        for _ in range(30):
            proto.dataReceived(b"BDAT 120\r\n" + b"x" * 120)
            clock.advance(1)
        proto.dataReceived(b"BDAT 0 LAST\r\n")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(handler.messages), 1)
        self.assertEqual(len(handler.messages[0][2]), 3600)

    def test_refusedChunkTrickledCut(self) -> None:
        """
        The octets of a refused BDAT chunk, read and dropped, are held to
        the rate too: a huge chunk refused before MAIL cannot keep the
        connection by sending an octet a second.
        """
        proto, transport, clock, factory = connect(socketTimeout=60, minDataRate=(1000, 10))
        take(transport)
        proto.dataReceived(b"EHLO c\r\nBDAT 15000000\r\n")
        take(transport)
        for _ in range(20):
            proto.dataReceived(b"x")
            clock.advance(1)
        self.assertEqual(take(transport), TOO_SLOW)
        self.assertTrue(transport.disconnecting)

    def test_refusedChunkAtRateDropped(self) -> None:
        """
        A refused chunk sent at the rate is dropped and answered; the
        session goes on.
        """
        proto, transport, clock, factory = connect(socketTimeout=60, minDataRate=(1000, 10))
        take(transport)
        proto.dataReceived(b"EHLO c\r\nBDAT 3000\r\n")
        take(transport)
        for _ in range(15):
            proto.dataReceived(b"x" * 200)
            clock.advance(1)
        self.assertEqual(take(transport), replies.NEED_MAIL)
        clock.pump([1] * 20)
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(take(transport), replies.OK)
        self.assertFalse(transport.disconnecting)

    def test_idleBetweenMessagesNotMeasured(self) -> None:
        """
        Time outside a transfer is not measured: after a long pause between
        messages, a new DATA transfer at the rate goes on from its start.
        """
        handler = RecordingHandler()
        proto, transport, clock, factory = connect(
            handler, socketTimeout=60, minDataRate=(1000, 10)
        )
        transaction(proto, transport)
        clock.pump([1] * 50)
        proto.dataReceived(b"DATA\r\n")
        for _ in range(12):
            proto.dataReceived(b"x" * 100 + b"\r\n")
            clock.advance(1)
        proto.dataReceived(b".\r\n")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(handler.messages), 1)

    def test_offByDefault(self) -> None:
        """
        Without minDataRate a slow transfer is only subject to socketTimeout.
        """
        proto, transport, clock, factory = connect(socketTimeout=60)
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        for _ in range(100):
            proto.dataReceived(b"x")
            clock.advance(1)
        self.assertFalse(transport.disconnecting)


class ClientLimitTests(SynchronousTestCase):
    def test_perAddressConcurrency(self) -> None:
        """
        maxClientsPerIp refuses one connection too many from an address with
        421 4.7.0 and a log line; other addresses and later connections are
        served.
        """
        log = LogCatcher(self)
        clock = Clock()
        factory = factoryFor(clock, maxClientsPerIp=2)
        first = [connectFrom(factory, "192.0.2.7") for _ in range(2)]
        proto, transport = connectFrom(factory, "192.0.2.7")
        self.assertEqual(transport.value(), TOO_MANY_FROM_ADDRESS)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            len(log.matching("192.0.2.7 refused: connection limit per client address (2)")), 1
        )
        other, otherTransport = connectFrom(factory, "192.0.2.8")
        self.assertTrue(otherTransport.value().startswith(b"220 "))
        proto.connectionLost()
        first[0][0].connectionLost()
        again, againTransport = connectFrom(factory, "192.0.2.7")
        self.assertTrue(againTransport.value().startswith(b"220 "))
        self.assertEqual(factory.limits.open, {"192.0.2.7": 2, "192.0.2.8": 1})

    def test_connectionRate(self) -> None:
        """
        maxConnectionRate refuses the connections beyond COUNT per SECONDS
        from one address; the next window admits again.
        """
        log = LogCatcher(self)
        clock = Clock()
        factory = factoryFor(clock, maxConnectionRate="3/60")
        for _ in range(3):
            proto, transport = connectFrom(factory, "192.0.2.7")
            self.assertTrue(transport.value().startswith(b"220 "))
            proto.connectionLost()
        proto, transport = connectFrom(factory, "192.0.2.7")
        self.assertEqual(transport.value(), CONNECTION_RATE)
        proto.connectionLost()
        self.assertEqual(
            len(log.matching("192.0.2.7 refused: connection rate limit (3 per 60 s)")), 1
        )
        clock.advance(60)
        proto, transport = connectFrom(factory, "192.0.2.7")
        self.assertTrue(transport.value().startswith(b"220 "))

    def test_exemptNetworks(self) -> None:
        """
        limitExemptions networks are not limited; loopback is not exempt by
        default.
        """
        clock = Clock()
        factory = factoryFor(clock, maxClientsPerIp=1, limitExemptions=["192.0.2.0/24"])
        for _ in range(3):
            proto, transport = connectFrom(factory, "192.0.2.7")
            self.assertTrue(transport.value().startswith(b"220 "))
        connectFrom(factory, "127.0.0.1")
        proto, transport = connectFrom(factory, "127.0.0.1")
        self.assertEqual(transport.value(), TOO_MANY_FROM_ADDRESS)


class ImplicitTLSRefusalTests(SynchronousTestCase):
    """
    A connection to an implicit TLS listener refused at connect for a limit:
    its 421 waits for the handshake.
    """

    def refused(self, clock: Clock) -> tuple[SMTPProtocol, StringTransport, list[str], LogCatcher]:
        log = LogCatcher(self)
        factory = factoryFor(clock, maxClients=1)
        events: list[str] = []
        factory.addObserver(lambda event, session, data: events.append(event))
        connectFrom(factory, "192.0.2.7", tls=True)[0].handshakeCompleted()
        del events[:], log.lines[:]
        proto, transport = connectFrom(factory, "192.0.2.8", tls=True)
        return proto, transport, events, log

    def test_handshakeAfterRefusal(self) -> None:
        """
        A refused client that finishes the handshake reads its 421 and
        nothing more: the session does not begin (no C{secure} or
        C{connect} event, no C{onConnect}, no greeting), and the refusal
        stays its only log line.
        """
        proto, transport, events, log = self.refused(Clock())
        proto.handshakeCompleted()
        self.assertEqual(transport.value(), replies.TOO_MANY_CLIENTS)
        self.assertEqual(events, ["reject"])
        proto.connectionLost()
        self.assertEqual(events, ["reject"])
        self.assertEqual(
            log.matching(proto.session.id),
            [f"{proto.session.id} 192.0.2.8 refused: connection limit (1) reached"],
        )

    def test_handshakeNeverDone(self) -> None:
        """
        A refused client that never does the handshake is aborted after
        L{CLOSE_GRACE} without a second log line.
        """
        clock = Clock()
        proto, transport, events, log = self.refused(clock)
        clock.advance(CLOSE_GRACE)
        self.assertTrue(transport.disconnected)
        self.assertEqual(len(log.matching(proto.session.id)), 1)


class ClientLimitsTableTests(SynchronousTestCase):
    def test_windowsExpire(self) -> None:
        """
        A rate window is forgotten once it is over, at the factory's sweep.
        """
        clock = Clock()
        factory = factoryFor(clock, maxConnectionRate=(5, 10))
        for i in range(3):
            proto, transport = connectFrom(factory, f"192.0.2.{i}")
            proto.connectionLost()
        self.assertEqual(len(factory.limits.windows), 3)
        self.assertEqual(factory.limits.open, {})
        connectFrom(factory, "192.0.2.99")
        clock.pump([1.0] * 11)
        self.assertEqual(factory.limits.windows, {})

    def test_windowsExpireWhenIdle(self) -> None:
        """
        With no connection left, the rate windows are still forgotten once
        over, and then the factory's timer stops: an idle server holds no
        table of the addresses that came, and no timer.
        """
        clock = Clock()
        factory = factoryFor(clock, maxConnectionRate=(5, 10))
        for i in range(3):
            proto, transport = connectFrom(factory, f"192.0.2.{i}")
            proto.connectionLost()
        self.assertEqual(len(factory.limits.windows), 3)
        clock.pump([1.0] * 11)
        self.assertEqual(factory.limits.windows, {})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_closedKeepsNoTimer(self) -> None:
        """
        A closed factory keeps no timer for its rate windows once its last
        session is gone.
        """
        clock = Clock()
        factory = factoryFor(clock, maxConnectionRate=(5, 10))
        proto, transport = connectFrom(factory, "192.0.2.1")
        d = factory.close()
        proto.connectionLost()
        self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_tableBounded(self) -> None:
        """
        The rate table never holds more than maxTracked addresses: the
        oldest window is dropped for a new address.
        """
        limits = ClientLimits(0, (1, 60), (), maxTracked=100)
        for i in range(1000):
            counted, limit = limits.connected(f"10.0.{i // 256}.{i % 256}", float(i) / 100)
            self.assertIsNone(limit)
            limits.disconnected(f"10.0.{i // 256}.{i % 256}")
        self.assertEqual(len(limits.windows), 100)
        self.assertIn("10.0.3.231", limits.windows)
        self.assertEqual(limits.open, {})

    def test_onlyAddressesCounted(self) -> None:
        """
        Clients of a UNIX socket (no IP address) are not limited as if they
        were one client.
        """
        limits = ClientLimits(1, (1, 60), ())
        for _ in range(3):
            self.assertEqual(limits.connected("/run/smtpd.sock", 0), (False, None))
            self.assertEqual(limits.connected("", 0), (False, None))
        self.assertEqual(limits.connected("::1", 0), (True, None))
        self.assertEqual(limits.open, {"::/84": 1})

    def test_inactive(self) -> None:
        """
        With no limit configured nothing is counted.
        """
        limits = ClientLimits(0, None, ())
        self.assertEqual(limits.connected("192.0.2.7", 0), (False, None))
        self.assertEqual(limits.open, {})


HANDLER_TIMEOUT = b"421 4.3.0 Error: timeout waiting for the mail system, try again later\r\n"


class Stuck(BaseHandler):
    """
    A handler whose chosen hook answers with a L{Deferred} fired only by
    the test.
    """

    def __init__(self, hook: str) -> None:
        self.hook = hook
        self.pending: list[Deferred[Any]] = []
        self.closed = 0

    def _stuck(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d

    def onConnect(self, session: Session) -> object:
        return self._stuck() if self.hook == "onConnect" else None

    def onHelo(self, hostname: str, session: Session) -> object:
        return self._stuck() if self.hook == "onHelo" else None

    def onRcptTo(self, address: Address, session: Session) -> object:
        return self._stuck() if self.hook == "onRcptTo" else None

    def onData(self, stream: IMessageStream, session: Session) -> object:
        if self.hook == "onData":
            stream.drain()
        # "unread": the body is never read.
        return self._stuck() if self.hook in ("onData", "unread") else None

    def onClose(self, session: Session) -> object:
        self.closed += 1
        return None


class HandlerTimeoutTests(SynchronousTestCase):
    """
    A hook that does not answer, or a handler that stops reading a message,
    ends the session after C{handlerTimeout}: 421 and one log line.
    """

    def assertTimedOut(
        self, transport: StringTransport, handler: Stuck, log: LogCatcher, what: str
    ) -> None:
        self.assertEqual(take(transport), HANDLER_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        lines = log.matching("handler timeout")
        self.assertEqual(lines, [f"{lines[0].split()[0]} 192.0.2.7 handler timeout: {what} (30 s)"])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_hookTimesOut(self) -> None:
        """
        An C{onRcptTo} that does not answer within C{handlerTimeout} gets its
        RCPT answered 421 and the session closed; its answer, when it comes,
        is not sent.
        """
        log = LogCatcher(self)
        handler = Stuck("onRcptTo")
        proto, transport, clock, _ = connect(handler, handlerTimeout=30, socketTimeout=10)
        take(transport)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n")
        self.assertEqual(take(transport), replies.EHLO_DEFAULT + replies.MAIL_OK)
        clock.advance(29)
        self.assertFalse(transport.disconnecting)
        clock.advance(2)
        self.assertTimedOut(transport, handler, log, "onRcptTo did not answer")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(handler.closed, 1)
        handler.pending[0].callback(None)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_lateFailureIsLogged(self) -> None:
        """
        A hook that fails after its session timed out is logged as failed,
        once, like one that fails after its client left.
        """
        LogCatcher(self)
        handler = Stuck("onHelo")
        proto, transport, clock, _ = connect(handler, handlerTimeout=30)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        clock.advance(31)
        self.assertEqual(take(transport), HANDLER_TIMEOUT)
        handler.pending[0].errback(RuntimeError("database gone"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(transport.value(), b"")

    def test_connectHookTimesOut(self) -> None:
        """
        An C{onConnect} that does not answer gets the client 421 instead of
        the greeting.
        """
        log = LogCatcher(self)
        handler = Stuck("onConnect")
        proto, transport, clock, _ = connect(handler, handlerTimeout=30)
        self.assertEqual(transport.value(), b"")
        clock.advance(31)
        self.assertTimedOut(transport, handler, log, "onConnect did not answer")

    def test_dataTimesOut(self) -> None:
        """
        An C{onData} that does not answer after the end of the body gets its
        message answered 421, not 250; if it accepts the message later, the
        C{message} event says it went unanswered.
        """
        log = LogCatcher(self)
        handler = Stuck("onData")
        proto, transport, clock, factory = connect(handler, handlerTimeout=30)
        messages: list[dict[str, Any]] = []
        factory.addObserver(_MessageEvents(messages))
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(take(transport), replies.START_DATA)
        clock.advance(31)
        self.assertTimedOut(transport, handler, log, "onData did not answer")
        self.assertEqual(messages, [])
        handler.pending[0].callback("OK: queued as X2")
        self.assertEqual(transport.value(), b"")
        self.assertEqual([m["unanswered"] for m in messages], [True])

    def test_lmtpDataTimesOut(self) -> None:
        """
        In LMTP, an C{onData} that does not answer ends the session with a
        421 for each of its recipients (RFC 2033 section 4.2), and one log
        line.
        """
        log = LogCatcher(self)
        handler = Stuck("onData")
        proto, transport, clock, _ = connect(handler, handlerTimeout=30, lmtp=True)
        take(transport)
        proto.dataReceived(
            b"LHLO c\r\nMAIL FROM:<s@example.com>\r\n"
            b"RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            b"DATA\r\nbody\r\n.\r\n"
        )
        self.assertTrue(take(transport).endswith(replies.START_DATA))
        clock.advance(31)
        self.assertEqual(take(transport), HANDLER_TIMEOUT * 2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(log.matching("handler timeout: onData did not answer")), 1)

    def test_coroutineHookTimesOut(self) -> None:
        """
        An C{async def} hook is bounded like a Deferred.
        """
        forever: Deferred[None] = Deferred()

        class Waits(BaseHandler):
            async def onHelo(self, hostname: str, session: Session) -> object:
                await forever
                return None

        log = LogCatcher(self)
        proto, transport, clock, _ = connect(Waits(), handlerTimeout=30)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        clock.advance(31)
        self.assertTimedOut(transport, Stuck(""), log, "onHelo did not answer")

    def test_unreadBodyTimesOut(self) -> None:
        """
        A handler that stops reading a message body (the client is paused)
        ends the session after C{handlerTimeout}; the stream it holds fails.
        """
        log = LogCatcher(self)
        streams: list[IMessageStream] = []

        class Unread(Stuck):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                streams.append(stream)
                return super().onData(stream, session)

        handler = Unread("unread")
        proto, transport, clock, _ = connect(handler, handlerTimeout=30, socketTimeout=10)
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        take(transport)
        for _ in range(5):
            proto.dataReceived(b"x" * 65000 + b"\r\n")
        self.assertEqual(transport.producerState, "paused")
        clock.advance(29)
        self.assertFalse(transport.disconnecting)
        clock.advance(2)
        self.assertTimedOut(transport, handler, log, "onData stopped reading the message")
        failure = self.failureResultOf(streams[0].drain(), SMTPError)
        self.assertEqual(failure.value.code, 421)

    def test_eachWaitHasItsOwnDeadline(self) -> None:
        """
        Hooks that each answer in time are not cut, however long they take
        together.
        """
        handler = Stuck("onRcptTo")
        proto, transport, clock, _ = connect(handler, handlerTimeout=30)
        take(transport)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@example.com>\r\n")
        for n in range(4):
            proto.dataReceived(b"RCPT TO:<r%d@example.com>\r\n" % n)
            clock.advance(20)
            handler.pending[-1].callback(None)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(
            take(transport), replies.EHLO_DEFAULT + replies.MAIL_OK + replies.RCPT_OK * 4
        )

    def test_clientSilenceAfterAnswerIsItsOwn(self) -> None:
        """
        After the hook answers, the client's silence is measured from then,
        by C{socketTimeout}, not by C{handlerTimeout}.
        """
        handler = Stuck("onHelo")
        proto, transport, clock, _ = connect(handler, handlerTimeout=30, socketTimeout=60)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        clock.advance(25)
        handler.pending[0].callback(None)
        clock.advance(50)
        self.assertFalse(transport.disconnecting)
        clock.advance(11)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(take(transport), replies.EHLO_DEFAULT + replies.TIMEOUT)

    def test_unreadRepliesDoNotHoldALateHook(self) -> None:
        """
        A hook that does not answer ends its session after C{handlerTimeout}
        even while the client leaves replies unread and reads them a few
        octets at a time (progress that keeps the write timeout away).
        """
        log = LogCatcher(self)
        handler = Stuck("onRcptTo")
        clock = Clock()
        factory = SMTPServerFactory(
            handler,
            ServerOptions(
                name="mx.example.com",
                disableReverseLookup=True,
                handlerTimeout=30,
                socketTimeout=10,
            ),
            reactor=clock,
        )
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = BufferedTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 1))
        proto.makeConnection(transport)
        take(transport)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n")
        # The replies fill the send buffer: the transport pauses the session.
        transport.dataBuffer = b"x" * 100_000
        proto.pauseProducing()
        for _ in range(6):
            clock.pump([1.0] * 5)
            transport.offset += 10
        self.assertTrue(transport.disconnecting)
        self.assertTrue(take(transport).endswith(HANDLER_TIMEOUT))
        self.assertEqual(len(log.matching("handler timeout: onRcptTo did not answer (30 s)")), 1)
        self.assertEqual(log.matching("write timeout"), [])

    def bdatPaused(self, handler: _UnreadBdat, after: bytes) -> tuple[SMTPProtocol, Clock]:
        """
        A session whose handler does not read its BDAT message: a first
        chunk larger than the stream keeps pauses the reading, and C{after}
        follows it.
        """
        proto, transport, clock, _ = connect(handler, handlerTimeout=30, socketTimeout=10)
        proto.dataReceived(b"EHLO c\r\n")
        handler.answer(None)
        proto.dataReceived(b"MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n")
        proto.dataReceived(b"BDAT 400000\r\n" + b"x" * 400_000 + after)
        self.assertEqual(transport.producerState, "paused")
        take(transport)
        return proto, clock

    def test_hookAnsweringKeepsTheStreamDeadline(self) -> None:
        """
        A hook that runs between two BDAT chunks (an C{onHelo} refusing
        a EHLO) and answers does not end the deadline of a handler that
        stopped reading the message: the session still ends after
        C{handlerTimeout} from when it stopped.
        """
        log = LogCatcher(self)
        handler = _UnreadBdat()
        proto, clock = self.bdatPaused(handler, b"EHLO bad\r\n")
        transport = proto.transport
        assert isinstance(transport, StringTransport)
        clock.advance(5)
        handler.answer(SMTPError(550, "bad name", "5.7.1"))
        self.assertFalse(transport.disconnecting)
        clock.advance(24)
        self.assertFalse(transport.disconnecting)
        clock.advance(2)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(take(transport).endswith(HANDLER_TIMEOUT))
        stopped = log.matching("handler timeout: onData stopped reading the message")
        self.assertEqual(len(stopped), 1)

    def test_streamResumingKeepsTheHookDeadline(self) -> None:
        """
        A handler that reads its BDAT message again does not end the
        deadline of a hook that runs meanwhile (an C{onHelo} that never
        answers a EHLO sent between two chunks).
        """
        log = LogCatcher(self)
        handler = _UnreadBdat()
        proto, clock = self.bdatPaused(handler, b"EHLO c\r\n")
        transport = proto.transport
        assert isinstance(transport, StringTransport)
        clock.advance(5)
        assert handler.stream is not None
        handler.stream.drain().addErrback(lambda f: None)
        clock.advance(24)
        self.assertFalse(transport.disconnecting)
        clock.advance(2)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(take(transport).endswith(HANDLER_TIMEOUT))
        self.assertEqual(len(log.matching("handler timeout: onHelo did not answer")), 1)


class _UnreadBdat(BaseHandler):
    """
    A handler whose C{onHelo} answers when the test says, and whose
    C{onData} never reads the message unless the test does.
    """

    def __init__(self) -> None:
        self.helo: list[Deferred[None]] = []
        self.stream: IMessageStream | None = None

    def answer(self, outcome: Exception | None) -> None:
        d = self.helo.pop(0)
        if outcome is None:
            d.callback(None)
        else:
            d.errback(outcome)

    def onHelo(self, hostname: str, session: Session) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.helo.append(d)
        return d

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[None]:
        self.stream = stream
        return Deferred()


class _MessageEvents:
    events = frozenset({"message"})

    def __init__(self, seen: list[dict[str, Any]]) -> None:
        self.seen = seen

    def __call__(self, event: str, session: Session, data: dict[str, Any]) -> None:
        self.seen.append(data)


class IgnoredHostDeadlineTests(SynchronousTestCase):
    """
    A client of C{ignoredHosts} leaves no log line when it misses a
    deadline (docs/operator.md: its sessions leave no line), but is cut all
    the same; any other client's line stays.
    """

    def _lines(self, ignored: bool, run: Any) -> tuple[list[str], StringTransport]:
        log = LogCatcher(self)
        hosts = ("192.0.2.7",) if ignored else ()
        proto, transport, clock, factory = connect(
            socketTimeout=60, minDataRate=(1000, 10), ignoredHosts=hosts
        )
        run(proto, transport, clock, factory)
        return [line for line in log.lines if proto.session.id in line], transport

    def test_idleTimeoutAndCloseGrace(self) -> None:
        """
        A client silent past the socket timeout, then not closing after its
        421: cut and aborted, without a line.
        """

        def run(proto: SMTPProtocol, transport: StringTransport, clock: Clock, f: Any) -> None:
            clock.advance(60)
            clock.advance(CLOSE_GRACE)

        for ignored, count in [(False, 2), (True, 0)]:
            lines, transport = self._lines(ignored, run)
            self.assertEqual(
                len([line for line in lines if "timeout" in line or "close" in line]), count
            )
            self.assertTrue(transport.value().endswith(replies.TIMEOUT))
            self.assertTrue(transport.disconnected)

    def test_dataRate(self) -> None:
        """
        A message trickled below C{minDataRate}: cut with 421, no line.
        """

        def run(proto: SMTPProtocol, transport: StringTransport, clock: Clock, f: Any) -> None:
            transaction(proto, transport)
            proto.dataReceived(b"DATA\r\n")
            for _ in range(12):
                proto.dataReceived(b"x")
                clock.advance(1)

        for ignored, count in [(False, 1), (True, 0)]:
            lines, transport = self._lines(ignored, run)
            self.assertEqual(len([line for line in lines if "data rate below" in line]), count)
            self.assertTrue(transport.value().endswith(TOO_SLOW))

    def test_handshakeTimeoutAndShutdown(self) -> None:
        """
        An implicit TLS handshake never finished, past its deadline or at
        the server's shutdown: aborted, no line and no C{tlsfailed} event.
        """
        for ignored in [False, True]:
            log = LogCatcher(self)
            clock = Clock()
            factory = factoryFor(clock, ignoredHosts=("192.0.2.7",) if ignored else ())
            events: list[str] = []
            factory.addObserver(_eventNames(events))
            stalled, stalledTransport = connectFrom(factory, "192.0.2.7", tls=True)
            clock.advance(30)
            self.assertTrue(stalledTransport.disconnected)
            stalled.connectionLost()
            stopped, stoppedTransport = connectFrom(factory, "192.0.2.7", tls=True)
            factory.close()
            self.assertTrue(stoppedTransport.disconnected)
            stopped.connectionLost()
            lines = log.matching("TLS handshake")
            self.assertEqual(len(lines), 0 if ignored else 2, lines)
            self.assertEqual(events, [] if ignored else ["tlsfailed"])

    def test_transactionCutAtShutdown(self) -> None:
        """
        A transaction still going on when the close timeout of a stopping
        server is over: cut with 421, no line.
        """
        for ignored, count in [(False, 1), (True, 0)]:
            log = LogCatcher(self)
            hosts = ("192.0.2.7",) if ignored else ()
            proto, transport, clock, factory = connect(closeTimeout=30, ignoredHosts=hosts)
            transaction(proto, transport)
            proto.dataReceived(b"DATA\r\nSubject: cut\r\n\r\npart")
            factory.close()
            clock.advance(30)
            self.assertTrue(transport.value().endswith(replies.SHUTDOWN))
            lines = log.matching(ShutdownLogTests.CUT)
            self.assertEqual(len(lines), count, lines)


def _eventNames(names: list[str]) -> Any:
    """
    An observer of a factory's events that appends their names to C{names}.
    """
    return lambda event, session, data: names.append(event)
