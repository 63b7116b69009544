# -*- test-case-name: tests.test_hostileclients -*-
"""
Regression tests for what hostile clients of C{twistd smtpd} on real sockets
showed: the order and naming of an implicit TLS session's lines, and the
line a message cut off by its client leaves.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_deadlines import LogCatcher, connectFrom, factoryFor
from tests.test_protocol import RecordingHandler, connect, transaction
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Session
from twisted_smtpd._serving.deadlines import CLOSE_GRACE
from twisted_smtpd._serving.logging import SessionLogger
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd.interfaces import IMessageStream


def _lookingUp(clock: Clock, **options: Any) -> tuple[SMTPServerFactory, list[Deferred[Any]]]:
    """
    A factory whose reverse lookups answer only when the test fires them.
    """
    options.setdefault("name", "mx.example.com")
    factory = SMTPServerFactory(RecordingHandler(), ServerOptions(**options), reactor=clock)
    lookups: list[Deferred[Any]] = []

    def reverseLookup(ip: str) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        lookups.append(d)
        return d

    factory.knownName = lambda ip: None  # type: ignore[method-assign]
    factory.reverseLookup = reverseLookup  # type: ignore[method-assign]
    return factory, lookups


class ImplicitTLSEventOrderTests(SynchronousTestCase):
    """
    On an C{ssl:} listener the handshake ends before the session begins (the
    reverse lookup, C{onConnect}): its C{secure} event must still follow the
    C{connect} one and name the client as the lookup found it, as the log
    lines of a STARTTLS session do (docs/operator.md, "Sessions").
    """

    def test_secureAfterConnect(self) -> None:
        """
        The C{secure} event of an implicit TLS session comes after its
        C{connect} event, once the client's reverse name is known.
        """
        factory, lookups = _lookingUp(Clock())
        events: list[tuple[str, str | None]] = []

        def observe(event: str, session: Session, data: dict[str, Any]) -> None:
            events.append((event, session.clientHostname))

        factory.addObserver(observe)
        proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
        proto.handshakeCompleted()
        lookups[0].callback("mail.example.org")
        self.assertEqual(
            events[:2], [("connect", "mail.example.org"), ("secure", "mail.example.org")]
        )
        self.assertTrue(transport.value().startswith(b"220 "))

    def test_logLineNamesClient(self) -> None:
        """
        The C{TLS} log line of an implicit TLS session follows its
        C{connect from} line and names the client by its reverse name,
        not C{unknown}.
        """
        log = LogCatcher(self)
        factory, lookups = _lookingUp(Clock())
        factory.addObserver(SessionLogger())
        proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
        proto.handshakeCompleted()
        lookups[0].callback("mail.example.org")
        sid = proto.session.id
        lines = [line for line in log.lines if line.startswith(sid + " ")]
        self.assertEqual(
            [line.split(" ")[1] for line in lines[:2]],
            ["connect", "TLS"],
        )
        self.assertIn(" from mail.example.org[192.0.2.7] sni=", lines[1])

    def test_goneDuringLookupLeavesNoSecureEvent(self) -> None:
        """
        An implicit TLS client gone during its reverse lookup never began a
        session: no C{secure} event, as no C{connect} and no C{close} one.
        """
        factory, lookups = _lookingUp(Clock())
        events: list[str] = []
        factory.addObserver(lambda event, session, data: events.append(event))
        proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
        proto.handshakeCompleted()
        proto.connectionLost()
        lookups[0].callback(None)
        self.assertEqual(events, [])


class MessageLostTests(SynchronousTestCase):
    """
    A client that goes away in the middle of a message (a reset, or a FIN
    before the final dot) leaves one line saying so, as Postfix's C{lost
    connection after DATA}: until now its session logged only C{close}.
    """

    def _lost(
        self, body: bytes, halfClose: bool, matching: str = "connection lost during", **options: Any
    ) -> tuple[str, list[str]]:
        log = LogCatcher(self)
        proto, transport, clock, factory = connect(**options)
        factory.addObserver(SessionLogger())
        transaction(proto, transport)
        proto.dataReceived(body)
        if halfClose:
            proto.readConnectionLost()
        proto.connectionLost(Failure(ConnectionLost()))
        return proto.session.id, log.matching(matching)

    def test_resetDuringData(self) -> None:
        """
        A reset in the middle of a DATA body: one line, with the client
        address and the octets of the message received.
        """
        body = b"Subject: x\r\n\r\nhello"
        sid, lines = self._lost(b"DATA\r\n" + body, False)
        self.assertEqual(
            lines,
            [
                f"{sid} 192.0.2.7 connection lost during DATA after {len(body)} bytes:"
                " message dropped"
            ],
        )

    def test_finDuringData(self) -> None:
        """
        A FIN before the final dot loses the message too: the same line.
        """
        body = b"Subject: x\r\n\r\nhello"
        sid, lines = self._lost(b"DATA\r\n" + body, True)
        self.assertEqual(
            lines,
            [
                f"{sid} 192.0.2.7 connection lost during DATA after {len(body)} bytes:"
                " message dropped"
            ],
        )

    def test_resetInsideBdatChunk(self) -> None:
        """
        A reset inside a BDAT chunk, and one between two chunks, each
        leave the line, naming BDAT and the octets received.
        """
        sid, lines = self._lost(b"BDAT 10 LAST\r\nabc", False)
        self.assertEqual(
            lines,
            [f"{sid} 192.0.2.7 connection lost during BDAT after 3 bytes: message dropped"],
        )
        sid, lines = self._lost(b"BDAT 4\r\nabcd", False)
        self.assertEqual(
            lines,
            [f"{sid} 192.0.2.7 connection lost during BDAT after 4 bytes: message dropped"],
        )

    def test_resetInsideOversizedChunk(self) -> None:
        """
        A reset while the chunk that took the message past the size limit
        is read and dropped still leaves the refused message's line (it
        would have followed the chunk's last octet), marked as not sent:
        the session no longer ends with no word of the message; a reset in
        a later chunk adds no second line.
        """
        sid, lines = self._lost(b"BDAT 3\r\nabcBDAT 100 LAST\r\nabcde", False, " bytes", size=100)
        self.assertEqual(
            lines,
            [
                f"{sid} message 103 bytes from <s@example.com> to <r@example.com>:"
                " 552 Error: message exceeds fixed maximum message size"
                " (session ended before this answer: not sent)"
            ],
        )
        sid, lines = self._lost(
            b"BDAT 100\r\n" + b"x" * 100 + b"BDAT 5\r\nab", False, " bytes", size=90
        )
        self.assertEqual(
            lines,
            [
                f"{sid} message 100 bytes from <s@example.com> to <r@example.com>:"
                " 552 Error: message exceeds fixed maximum message size"
            ],
        )

    def test_noLineOnceTheBodyEnded(self) -> None:
        """
        A client gone after its final dot lost nothing this line would
        tell: the message's own line says what became of it.
        """
        sid, lines = self._lost(b"DATA\r\nhello\r\n.\r\n", False)
        self.assertEqual(lines, [])

    def test_noLineWhenTheServerClosed(self) -> None:
        """
        A transfer the server cut (the data rate too low: logged already)
        adds no line when the connection then ends.
        """
        log = LogCatcher(self)
        proto, transport, clock, factory = connect(minDataRate=(1000, 5))
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\nhello")
        clock.advance(6)
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(log.matching("connection lost during"), [])
        self.assertEqual(len(log.matching("data rate below")), 1)

    def test_ignoredHostLeavesNoLine(self) -> None:
        """
        A client of C{ignoredHosts} leaves no line, as it leaves no other.
        """
        sid, lines = self._lost(b"DATA\r\nhello", False, ignoredHosts=("192.0.2.7",))
        self.assertEqual(lines, [])


class TLSSessionErrorTests(SynchronousTestCase):
    """
    A TLS session the TLS layer ends after its handshake (a client writing
    a record that does not decrypt under the session's keys) leaves one
    line with OpenSSL's reason, as a failed handshake does: until now only
    C{close}.
    """

    def _ended(self, reason: Failure, **options: Any) -> tuple[str, list[str]]:
        log = LogCatcher(self)
        factory = factoryFor(Clock(), **options)
        proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
        proto.handshakeCompleted()
        self.assertTrue(transport.value().startswith(b"220 "))
        proto.dataReceived(b"EHLO c\r\n")
        proto.connectionLost(reason)
        return proto.session.id, [line for line in log.lines if "TLS error" in line]

    def test_badRecordLogged(self) -> None:
        """
        An OpenSSL error ending the session: one line with its reason.
        """
        error = SSL.Error([("SSL routines", "", "bad record mac")])
        sid, lines = self._ended(Failure(error))
        self.assertEqual(lines, [f"{sid} 192.0.2.7 TLS error: bad record mac: connection closed"])

    def test_plainEndsLeaveNoLine(self) -> None:
        """
        A session ended by a FIN or a reset adds no such line.
        """
        for reason in [Failure(ConnectionDone()), Failure(ConnectionLost())]:
            sid, lines = self._ended(reason)
            self.assertEqual(lines, [])

    def test_ignoredHost(self) -> None:
        """
        A client of C{ignoredHosts} leaves no line.
        """
        error = SSL.Error([("SSL routines", "", "bad record mac")])
        sid, lines = self._ended(Failure(error), ignoredHosts=("192.0.2.7",))
        self.assertEqual(lines, [])

    def test_handlerPassingTheErrorOnIsQuiet(self) -> None:
        """
        A TLS error in the middle of a message reaches the handler as a lost
        connection: a handler passing its stream's failure on (as the
        Maildir handler does) is not logged as failing, with a traceback at
        level critical; the session's lines say what happened.
        """
        levels: list[object] = []

        def observe(event: LogEvent) -> None:
            levels.append(event.get("log_level"))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        log = LogCatcher(self)
        handler = RecordingHandler()
        failures: list[Failure] = []
        collect = handler.onData

        def onData(stream: IMessageStream, session: Session) -> object:
            def failed(failure: Failure) -> Failure:
                failures.append(failure)
                return failure

            d: Any = collect(stream, session)
            return d.addErrback(failed)

        handler.onData = onData  # type: ignore[method-assign]
        proto, transport, clock, factory = connect(handler)
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\nSubject: x\r\n\r\nhello")
        error = SSL.Error([("SSL routines", "", "bad record mac")])
        proto.connectionLost(Failure(error))
        self.assertEqual(log.matching("onData failed"), [])
        self.assertNotIn(LogLevel.critical, levels)
        self.assertEqual(len(failures), 1)
        self.assertTrue(failures[0].check(ConnectionLost))
        self.assertIn("bad record mac", failures[0].getErrorMessage())
        self.assertEqual(len(log.matching("connection lost during DATA")), 1)


class RefusedConnectionsTakeNoSlotTests(SynchronousTestCase):
    """
    Connections refused at connect are still open while their 421 waits
    (on an implicit TLS listener, for a handshake, up to C{CLOSE_GRACE}):
    they must not fill C{maxClients}, or one address flooding past its own
    limit (C{maxClientsPerIp}, C{maxConnectionRate}) locks every other
    client out with C{421 Too many connections}.
    """

    def test_floodPastPerAddressLimit(self) -> None:
        """
        A client address holding its one allowed session and opening many
        more implicit TLS connections that never finish their handshake
        (each refused for its address) leaves the other slot to another
        client, who is greeted; C{maxClients} still counts the sessions
        served.
        """
        clock = Clock()
        factory = factoryFor(clock, maxClients=2, maxClientsPerIp=1)
        first, _ = connectFrom(factory, "192.0.2.7", tls=True)
        first.handshakeCompleted()
        flood = [connectFrom(factory, "192.0.2.7", tls=True) for _ in range(10)]
        for proto, _ in flood:
            self.assertTrue(proto.closing)
        # Two wait for their handshake (test_refusalsWaitingBounded).
        self.assertEqual([t.disconnected for _, t in flood], [False] * 2 + [True] * 8)
        other, transport = connectFrom(factory, "198.51.100.9")
        self.assertTrue(transport.value().startswith(b"220 "), transport.value())
        third, transport = connectFrom(factory, "203.0.113.5")
        self.assertEqual(transport.value(), replies.TOO_MANY_CLIENTS)

    def test_refusalsWaitingBounded(self) -> None:
        """
        Refused implicit TLS connections wait for their handshake only up to
        C{maxClients} of them at once; past that each is dropped at once, so
        that a flood holds no more sockets than the sessions may.
        """
        clock = Clock()
        factory = factoryFor(clock, maxClients=3, maxClientsPerIp=1)
        connectFrom(factory, "192.0.2.7", tls=True)[0].handshakeCompleted()
        flood = [connectFrom(factory, "192.0.2.7", tls=True) for _ in range(6)]
        self.assertEqual([t.disconnected for _, t in flood], [False] * 3 + [True] * 3)
        self.assertTrue(all(proto.closing for proto, _ in flood))

    def test_refusalsForgotten(self) -> None:
        """
        A refused connection that ends is forgotten with the others: the
        set of connections being refused empties.
        """
        clock = Clock()
        factory = factoryFor(clock, maxClients=1)
        connectFrom(factory, "192.0.2.7")
        proto, transport = connectFrom(factory, "192.0.2.8", tls=True)
        self.assertEqual(factory.refusing, {proto})
        clock.advance(CLOSE_GRACE)
        self.assertTrue(transport.disconnected)
        proto.connectionLost()
        self.assertEqual(factory.refusing, set())
