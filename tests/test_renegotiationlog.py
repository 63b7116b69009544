# -*- test-case-name: tests.test_renegotiationlog -*-
"""
A TLS 1.2 client asking a real server on 127.0.0.1 to renegotiate is
refused by OpenSSL (L{tests.test_renegotiation}); the session says so in
one log line, C{SESSION TLS renegotiation refused}.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.test_client import startServer
from twisted_smtpd._core.session import Session
from twisted_smtpd.handlers import SinkHandler


class RenegotiatingClient(Protocol):
    """
    An SMTP client that says EHLO, STARTTLS, makes a TLS 1.2 handshake
    (pyOpenSSL over memory BIOs), then asks to renegotiate.

    @ivar outcome: Fires with C{"refused"} once the server refused the
        renegotiation (OpenSSL's client then fails its connection), or
        C{"settled"} once no renegotiation is pending (one was made, or
        none asked for).
    """

    def __init__(self) -> None:
        self.plain = b""
        self.tls: SSL.Connection | None = None
        self.requested = False
        self.outcome: Deferred[str] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.tls is not None:
            self.tls.bio_write(data)
            self.drive()
            return
        self.plain += data
        while b"\r\n" in self.plain:
            line, _, self.plain = self.plain.partition(b"\r\n")
            if line.startswith(b"220 ") and b"TLS" not in line:
                self.transport.write(b"EHLO client.example\r\n")  # type: ignore[union-attr]
            elif line.startswith(b"250 "):
                self.transport.write(b"STARTTLS\r\n")  # type: ignore[union-attr]
            elif line.startswith(b"220 "):
                context = SSL.Context(SSL.TLS_METHOD)
                context.set_max_proto_version(SSL.TLS1_2_VERSION)
                self.tls = SSL.Connection(context, None)
                self.tls.set_connect_state()
                self.drive()
                return

    def drive(self) -> None:
        tls = self.tls
        assert tls is not None
        try:
            tls.do_handshake()
            if not self.requested:
                self.requested = True
                assert tls.get_protocol_version_name() == "TLSv1.2"
                assert tls.renegotiate()
                tls.do_handshake()
            while True:
                tls.recv(65536)
        except SSL.WantReadError:
            pass
        except SSL.Error as e:
            self.finish("refused" if "no renegotiation" in str(e) else f"failed: {e}")
        if self.requested and not tls.renegotiate_pending():
            # The handshake done, no renegotiation pending: none asked
            # for, or one made.
            self.finish("settled")
        self.flush()

    def flush(self) -> None:
        tls = self.tls
        assert tls is not None
        while self.transport is not None:
            try:
                data = tls.bio_read(65536)
            except SSL.WantReadError:
                return
            self.transport.write(data)

    def finish(self, outcome: str) -> None:
        if not self.outcome.called:
            self.outcome.callback(outcome)
            self.transport.loseConnection()  # type: ignore[union-attr]


class SecuredSessions(SinkHandler):
    """
    Keeps the id of each session that completed a TLS handshake.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secured: list[str] = []

    def onSecure(self, session: Session) -> None:
        self.secured.append(session.id)


class RenegotiationLogTests(TestCase):
    """
    The session of a client whose renegotiation is refused.
    """

    async def test_oneLine(self) -> None:
        """
        One line names the session and says its renegotiation was refused.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        handler = SecuredSessions()
        server, port = await startServer(self, handler)
        client = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), RenegotiatingClient()
        )
        self.addCleanup(lambda: client.transport and client.transport.loseConnection())
        timer = reactor.callLater(10, client.outcome.cancel)  # type: ignore[attr-defined]
        outcome = await client.outcome
        timer.cancel()
        self.assertEqual(outcome, "refused")
        lines = [formatEvent(e) for e in events]
        refused = [line for line in lines if "renegotiation" in line]
        self.assertEqual(len(refused), 1, lines)
        (line,) = refused
        session, _, rest = line.partition(" ")
        self.assertEqual(rest, "TLS renegotiation refused")
        self.assertEqual(handler.secured, [session])

    async def test_noLineWithoutRenegotiation(self) -> None:
        """
        A TLS session whose client does not renegotiate has no such line.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server, port = await startServer(self, SinkHandler())
        client = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), RenegotiatingClient()
        )
        client.requested = True  # Never asks.
        self.addCleanup(lambda: client.transport and client.transport.loseConnection())
        timer = reactor.callLater(10, client.outcome.cancel)  # type: ignore[attr-defined]
        outcome = await client.outcome
        timer.cancel()
        self.assertEqual(outcome, "settled")
        self.assertEqual([e for e in events if "renegotiation" in formatEvent(e)], [])
