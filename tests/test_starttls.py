"""
Tests for STARTTLS (RFC 3207) and the TLS-dependent behaviour of a session,
over a L{StringTransport} that records the switch to TLS.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_auth import AUTH_OK, PasswordHandler, b64
from tests.test_protocol import PEER, RecordingHandler, _ipv4, take
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Session
from twisted_smtpd._serving.logging import SessionLogger
from twisted_smtpd._serving.protocol import SMTPProtocol
from twisted_smtpd._serving.server import SMTPServerFactory

READY = b"220 2.0.0 Ready to start TLS\r\n"
ALREADY_SECURE = b"554 5.5.1 Error: TLS already active\r\n"
UNAVAILABLE = b"454 4.7.0 TLS not available due to temporary reason\r\n"


class TLSStringTransport(StringTransport):
    """
    A L{StringTransport} that records C{startTLS}.
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.tlsStarted: list[object] = []
        self.writtenBeforeTLS = b""

    def startTLS(self, contextFactory: object) -> None:
        self.tlsStarted.append(contextFactory)
        self.writtenBeforeTLS = self.value()


class FakeTLS:
    """
    Stands for L{ServerTLS}: hands out a marker context factory.
    """

    marker = object()

    def contextFactory(self) -> object:
        return self.marker


def connect(handler: Any = None, **options: Any) -> tuple[SMTPProtocol, TLSStringTransport]:
    options.setdefault("name", "mx.example.com")
    options.setdefault("disableReverseLookup", True)
    factory = SMTPServerFactory(
        handler if handler is not None else RecordingHandler(),
        ServerOptions(**options),
        reactor=Clock(),
    )
    factory._tls = FakeTLS()  # type: ignore[assignment]
    proto = factory.buildProtocol(None)
    transport = TLSStringTransport(peerAddress=_ipv4(*PEER))
    proto.makeConnection(transport)
    take(transport)
    return proto, transport


class SlowHelo(RecordingHandler):
    """
    C{onHelo} answers with the L{Deferred} given.
    """

    def __init__(self, pending: Deferred[None]) -> None:
        super().__init__()
        self.pending = pending

    def onHelo(self, hostname: str, session: Session) -> object:
        return self.pending


class StartTLSTests(SynchronousTestCase):
    def test_advertised(self) -> None:
        """
        STARTTLS is advertised before TLS; REQUIRETLS is not.
        """
        proto, transport = connect()
        proto.dataReceived(b"EHLO c\r\n")
        out = take(transport)
        self.assertIn(b"250-STARTTLS\r\n", out)
        self.assertNotIn(b"REQUIRETLS", out)

    def test_pipelinedCommandsDiscarded(self) -> None:
        """
        Commands pipelined behind STARTTLS in plaintext are discarded, never
        run, not even after the handshake (the STARTTLS injection bugs).
        """
        proto, transport = connect()
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"STARTTLS\r\nNOOP\r\nMAIL FROM:<evil@example.com>\r\n")
        self.assertEqual(transport.writtenBeforeTLS, READY)
        self.assertEqual(take(transport), READY)
        self.assertEqual(transport.tlsStarted, [FakeTLS.marker])
        proto.handshakeCompleted()
        self.assertEqual(take(transport), b"")
        self.assertIsNone(proto.session.envelope.mailFrom)
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(take(transport), replies.OK)

    def test_halfClosedBehindSlowHook(self) -> None:
        """
        A STARTTLS answered after the client shut its sending side (kept
        back behind a hook that had not answered) gets its 220, then the
        session closes: no TLS is started for a handshake that can no
        longer come, and what was pipelined behind it is discarded.
        """
        pending: Deferred[None] = Deferred()
        proto, transport = connect(SlowHelo(pending))
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
        proto.readConnectionLost()
        self.assertEqual(take(transport), b"")
        pending.callback(None)
        self.assertTrue(take(transport).endswith(b"250 BINARYMIME\r\n" + READY))
        self.assertEqual(transport.tlsStarted, [])
        self.assertIsNone(proto.session.envelope.mailFrom)
        self.assertTrue(transport.disconnecting)

    def test_sessionReset(self) -> None:
        """
        After the handshake a new EHLO is needed; the envelope and the AUTH
        state are gone; the session is secure.
        """
        proto, transport = connect(PasswordHandler(), allowInsecureAuth=True, authOptional=True)
        proto.dataReceived(b"EHLO c\r\nAUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        take(transport)
        self.assertIsNotNone(proto.session.user)
        proto.dataReceived(b"STARTTLS\r\n")
        proto.handshakeCompleted()
        take(transport)
        self.assertTrue(proto.session.secure)
        self.assertIsNone(proto.session.user)
        self.assertIsNone(proto.session.openingCommand)
        proto.dataReceived(b"MAIL FROM:<a@b.c>\r\nEHLO c\r\n")
        out = take(transport)
        self.assertTrue(out.startswith(replies.NEED_HELO), out)
        self.assertTrue(out.endswith(b"250 REQUIRETLS\r\n"), out)
        self.assertNotIn(b"STARTTLS", out)
        self.assertEqual(proto.session.transmissionType, "ESMTPS")
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), AUTH_OK)
        self.assertEqual(proto.session.transmissionType, "ESMTPSA")

    def test_alreadySecure(self) -> None:
        """
        A second STARTTLS gets 554 5.5.1, as Postfix answers it.
        """
        proto, transport = connect()
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        proto.handshakeCompleted()
        take(transport)
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        self.assertTrue(take(transport).endswith(ALREADY_SECURE))

    def test_alreadySecureLogged(self) -> None:
        """
        The refused second STARTTLS leaves one C{reject} line with its 554
        reply, which fail2ban's aggressive mode reads as it read the 503.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proto, transport = connect()
        proto.factory.addObserver(SessionLogger())
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        proto.handshakeCompleted()
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        self.assertEqual(
            [formatEvent(e) for e in events if " reject: " in formatEvent(e)],
            [
                f"{proto.session.id} reject: STARTTLS from unknown[{PEER[0]}]:"
                " 554 5.5.1 Error: TLS already active"
            ],
        )

    def test_parameters(self) -> None:
        """
        STARTTLS with a parameter gets 501 and TLS does not start.
        """
        proto, transport = connect()
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"STARTTLS now\r\n")
        self.assertEqual(take(transport), replies.SYNTAX_ERROR)
        self.assertEqual(transport.tlsStarted, [])

    def test_hiddenButAccepted(self) -> None:
        """
        With hideSTARTTLS it is not advertised but still works.
        """
        proto, transport = connect(hideSTARTTLS=True)
        proto.dataReceived(b"EHLO c\r\n")
        self.assertNotIn(b"STARTTLS", take(transport))
        proto.dataReceived(b"STARTTLS\r\n")
        self.assertEqual(take(transport), READY)

    def test_disabled(self) -> None:
        """
        With STARTTLS disabled it is neither advertised nor accepted.
        """
        proto, transport = connect(disabledCommands=["STARTTLS"])
        proto.dataReceived(b"EHLO c\r\n")
        self.assertNotIn(b"STARTTLS", take(transport))
        proto.dataReceived(b"STARTTLS\r\n")
        self.assertEqual(take(transport), replies.NOT_IMPLEMENTED)

    def test_tlsUnavailable(self) -> None:
        """
        When the TLS configuration cannot be made at the first STARTTLS (the
        self-signed certificate is made then), the client gets 454 and
        stays in plaintext, and the cause is logged.
        """

        class Broken:
            def contextFactory(self) -> object:
                raise ValueError("cannot make the self-signed certificate")

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proto, transport = connect()
        proto.factory._tls = Broken()  # type: ignore[assignment]
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        out = take(transport)
        self.assertTrue(out.endswith(UNAVAILABLE), out)
        self.assertEqual(transport.tlsStarted, [])
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(take(transport), replies.OK)
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("cannot make the self-signed certificate", formatEvent(errors[0]))

    def test_selfSignedCertificateFails(self) -> None:
        """
        The same through the real TLS configuration: making the self-signed
        certificate at the first STARTTLS fails, the client gets 454, and
        the next STARTTLS tries again.
        """
        from twisted_smtpd._serving import tls

        real = tls.selfSignedCertificate

        def failing(hostname: str = "localhost") -> tuple[bytes, bytes]:
            raise ValueError("no certificate today")

        self.patch(tls, "selfSignedCertificate", failing)
        factory = SMTPServerFactory(
            RecordingHandler(),
            ServerOptions(name="mx.example.com", disableReverseLookup=True),
            reactor=Clock(),
        )
        proto = factory.buildProtocol(None)
        transport = TLSStringTransport(peerAddress=_ipv4(*PEER))
        proto.makeConnection(transport)
        take(transport)
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        self.assertTrue(take(transport).endswith(UNAVAILABLE))
        self.assertEqual(transport.tlsStarted, [])
        self.patch(tls, "selfSignedCertificate", real)
        proto.dataReceived(b"STARTTLS\r\n")
        self.assertEqual(take(transport), READY)
        self.assertEqual(transport.tlsStarted, [factory.tls])

    def test_onSecureRefuses(self) -> None:
        """
        onSecure may refuse the session: its reply is sent and the connection
        closed.
        """

        class Refuse(RecordingHandler):
            def onSecure(self, session: Session) -> object:
                raise SMTPError(554, "certificate not welcome", "5.7.1")

        proto, transport = connect(Refuse())
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        take(transport)
        proto.handshakeCompleted()
        self.assertEqual(take(transport), b"554 5.7.1 certificate not welcome\r\n")
        self.assertTrue(transport.disconnecting)

    def test_slowOnSecure(self) -> None:
        """
        Commands wait for a slow onSecure.
        """
        pending: Deferred[None] = Deferred()

        class Slow(RecordingHandler):
            def onSecure(self, session: Session) -> object:
                return pending

        proto, transport = connect(Slow())
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        proto.handshakeCompleted()
        take(transport)
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(take(transport), b"")
        pending.callback(None)
        self.assertEqual(take(transport), replies.OK)

    def test_stalledHandshakeAborted(self) -> None:
        """
        STARTTLS then silence: the handshake never finishes, and after
        tlsHandshakeTimeout the connection is aborted (no 421 can reach a
        client in the middle of a handshake) and its slot given back.
        """
        proto, transport = connect(tlsHandshakeTimeout=30, socketTimeout=300)
        clock: Any = proto.clock
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        take(transport)
        clock.advance(29)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(take(transport), b"")
        proto.connectionLost()
        self.assertEqual(proto.server.connections, set())  # type: ignore[union-attr]

    def test_stalledHandshakeDefault(self) -> None:
        """
        The handshake deadline applies by default, well before the socket
        timeout.
        """
        proto, transport = connect()
        clock: Any = proto.clock
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        clock.advance(30)
        self.assertTrue(transport.disconnected)

    def test_handshakeDoneEndsTheDeadline(self) -> None:
        """
        After the handshake only the socket timeout applies.
        """
        proto, transport = connect(tlsHandshakeTimeout=5, socketTimeout=60)
        clock: Any = proto.clock
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        clock.advance(4)
        proto.handshakeCompleted()
        clock.advance(30)
        self.assertFalse(transport.disconnecting)

    def test_requireTls(self) -> None:
        """
        After TLS, MAIL takes REQUIRETLS and the envelope records it.
        """
        proto, transport = connect()
        proto.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        proto.handshakeCompleted()
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"MAIL FROM:<a@b.c> REQUIRETLS\r\n")
        self.assertEqual(take(transport), replies.MAIL_OK)
        self.assertTrue(proto.session.envelope.requireTls)


class StartTLSResetsBdatTests(SynchronousTestCase):
    def test_startTLSInBdatTransferResetsIt(self) -> None:
        """
        STARTTLS in the middle of a BDAT transfer drops it (RFC 3207 section
        4.2, RFC 5321 section 4.1.4): the handler's stream fails and, after
        the handshake and a new EHLO, a new transaction is accepted.
        """
        from tests.test_protocol import QUEUED, FailureRecordingHandler

        handler = FailureRecordingHandler()
        proto, transport = connect(handler)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n")
        proto.dataReceived(b"BDAT 3\r\nabcSTARTTLS\r\n")
        proto.handshakeCompleted()
        self.assertEqual(len(handler.failures), 1)
        self.assertFalse(proto.inTransaction())
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(
            b"MAIL FROM:<t@example.com>\r\nRCPT TO:<u@example.com>\r\nBDAT 2 LAST\r\nhi"
        )
        self.assertEqual(take(transport), replies.MAIL_OK + replies.RCPT_OK + QUEUED)
        self.assertEqual(handler.messages, [("t@example.com", ["u@example.com"], b"hi")])


#: A TLS 1.2 ClientHello's first octets: a handshake record, its length,
#: a ClientHello and its length (no line feed among them).
CLIENT_HELLO = bytes.fromhex("16030100c8010000c40303") + b"\x5a" * 32
#: An SSL 2.0 style ClientHello offering TLS 1.0.
SSLV2_HELLO = bytes.fromhex("802e0103010015000000100100800300800700c0060040020080040080") + bytes(
    range(16)
)
NO_STARTTLS = b"421 4.7.0 Error: TLS handshake without STARTTLS\r\n"


class HandshakeWithoutStartTLSTests(SynchronousTestCase):
    """
    A client beginning a TLS handshake on a plaintext session (one meant
    for an implicit TLS port, or a scanner) gets 421 and is closed at once,
    with one refusal line, however its octets arrive.
    """

    def refused(self, *reads: bytes) -> list[dict[str, Any]]:
        proto, transport = connect()
        rejected: list[dict[str, Any]] = []
        proto.factory.addObserver(  # type: ignore[union-attr]
            lambda event, session, data: rejected.append(data) if event == "reject" else None
        )
        for data in reads:
            proto.dataReceived(data)
        self.assertEqual(take(transport), NO_STARTTLS)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.tlsStarted, [])
        return rejected

    def test_withLineFeed(self) -> None:
        """
        A ClientHello holding a line feed (most do: the supported_groups
        extension is numbered 10).
        """
        rejected = self.refused(CLIENT_HELLO + b"\x00\x0a\x00\x08more")
        self.assertEqual([data["reply"].code for data in rejected], [421])

    def test_withoutLineFeed(self) -> None:
        """
        A ClientHello without a line feed is refused as soon as its first
        octets are read, not at the socket timeout.
        """
        self.refused(CLIENT_HELLO)

    def test_byteByByte(self) -> None:
        """
        Its octets one at a time.
        """
        self.refused(*[CLIENT_HELLO[i : i + 1] for i in range(len(CLIENT_HELLO))])

    def test_sslv2(self) -> None:
        """
        An SSL 2.0 style ClientHello.
        """
        self.refused(SSLV2_HELLO)

    def test_afterCommands(self) -> None:
        """
        After EHLO, the same.
        """
        proto, transport = connect()
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(CLIENT_HELLO)
        self.assertEqual(take(transport), NO_STARTTLS)
        self.assertTrue(transport.disconnecting)

    def test_otherBinaryLine(self) -> None:
        """
        Other octets that are not a command are still refused one line at
        a time.
        """
        proto, transport = connect()
        proto.dataReceived(b"\x16\x02junk\r\n\x80\x01\x02\x03\r\n")
        self.assertEqual(take(transport), replies.UNKNOWN_COMMAND * 2)
        self.assertFalse(transport.disconnecting)
