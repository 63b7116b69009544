"""
Every line the server writes about one session, naming its id, is in the
C{twisted_smtpd.session} namespace (L{NAMESPACE}), whichever part of the
server wrote it: the deadlines, the TLS failures, a message lost, a hook's
failure, a PROXY header refused, with their text and level unchanged.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_deadlines import connectFrom, factoryFor
from tests.test_protocol import connect, take, transaction
from twisted_smtpd._serving import deadlines, tlscommand
from twisted_smtpd._serving.logging import NAMESPACE


class Catcher:
    """
    Every log event while installed, as C{(namespace, level, text)}.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[tuple[str, LogLevel, str]] = []
        globalLogPublisher.addObserver(self)
        case.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: LogEvent) -> None:
        self.events.append((event["log_namespace"], event["log_level"], formatEvent(event)))

    def only(self, text: str) -> tuple[str, LogLevel, str]:
        (found,) = [event for event in self.events if text in event[2]]
        return found


class SessionNamespaceTests(SynchronousTestCase):
    def assertSessionLine(
        self, caught: Catcher, sid: str, text: str, level: LogLevel = LogLevel.info
    ) -> None:
        namespace, logged, line = caught.only(text)
        self.assertEqual((namespace, logged), (NAMESPACE, level), line)
        self.assertTrue(line.startswith(f"{sid} "), line)

    def test_timeout(self) -> None:
        """
        A client silent past C{socketTimeout}.
        """
        caught = Catcher(self)
        proto, transport, clock, factory = connect(socketTimeout=60)
        clock.advance(60)
        self.assertSessionLine(caught, proto.session.id, "192.0.2.7 timeout (60 s)")

    def test_dataRate(self) -> None:
        """
        A message cut for C{minDataRate}: the line fail2ban's filter finds.
        """
        caught = Catcher(self)
        proto, transport, clock, factory = connect(socketTimeout=60, minDataRate=(1000, 10))
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        take(transport)
        while not transport.disconnecting:
            proto.dataReceived(b"x" * 40)
            clock.advance(1)
        self.assertSessionLine(caught, proto.session.id, "data rate below 1000 bytes per 10 s")

    def test_handshakeFailed(self) -> None:
        """
        A TLS handshake broken off, and one timed out.
        """
        caught = Catcher(self)
        proto, transport = connectFrom(factoryFor(Clock()), "192.0.2.7", tls=True)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertSessionLine(caught, proto.session.id, "TLS handshake failed: connection closed")
        clock = Clock()
        proto, transport = connectFrom(factoryFor(clock), "192.0.2.7", tls=True)
        clock.advance(30)
        self.assertSessionLine(caught, proto.session.id, "TLS handshake timeout (30 s)")

    def test_tlsError(self) -> None:
        """
        A TLS session ended on an error of the TLS layer.
        """
        caught = Catcher(self)
        proto, transport = connectFrom(factoryFor(Clock()), "192.0.2.7")
        error = SSL.Error([("SSL routines", "", "decryption failed or bad record mac")])
        tlscommand.sessionFailed(proto, Failure(error))
        self.assertSessionLine(caught, proto.session.id, "TLS error: decryption failed")

    def test_messageLost(self) -> None:
        """
        A client gone in the middle of DATA.
        """
        caught = Catcher(self)
        proto, transport, clock, factory = connect()
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\nSubject: x\r\n")
        proto.connectionLost(Failure(ConnectionLost()))
        self.assertSessionLine(caught, proto.session.id, "connection lost during DATA after")

    def test_pipeliningAfterSTARTTLS(self) -> None:
        """
        Plaintext pipelined behind STARTTLS: a warning.
        """
        caught = Catcher(self)
        proto, transport = connectFrom(factoryFor(Clock()), "192.0.2.7")
        tlscommand.pipelinedDiscarded(proto, 12)
        self.assertSessionLine(
            caught,
            proto.session.id,
            "192.0.2.7 improper command pipelining after STARTTLS: 12 octets discarded",
            LogLevel.warn,
        )

    def test_shutdown(self) -> None:
        """
        A transaction cut by a shutdown past C{closeTimeout}.
        """
        caught = Catcher(self)
        proto, transport, clock, factory = connect()
        transaction(proto, transport)
        deadlines.shutdown(proto, True)
        self.assertSessionLine(caught, proto.session.id, "shutdown: transaction cut")

    def test_hookFailure(self) -> None:
        """
        A hook's unexpected failure, with its traceback, at level critical.
        """
        caught = Catcher(self)
        proto, transport, clock, factory = connect()
        proto.logFailure(Failure(RuntimeError("boom")), "onMailFrom")
        self.assertSessionLine(caught, proto.session.id, "onMailFrom failed", LogLevel.critical)
        self.flushLoggedErrors(RuntimeError)

    def test_ignoredHostsStillUnlogged(self) -> None:
        """
        A client of C{ignoredHosts} still leaves none of these lines.
        """
        caught = Catcher(self)
        proto, transport, clock, factory = connect(socketTimeout=60, ignoredHosts=["192.0.2.7"])
        tlscommand.pipelinedDiscarded(proto, 12)
        clock.advance(60)
        self.assertTrue(transport.disconnecting)
        self.assertEqual([e for e in caught.events if proto.session.id in e[2]], [])

    def test_configurationLinesApart(self) -> None:
        """
        A STARTTLS the server cannot honour (a connection that cannot
        switch) is the server's affair: its line, naming no session, stays
        out of the sessions' namespace.
        """
        caught = Catcher(self)
        proto, transport = connectFrom(factoryFor(Clock(), **_tls(self)), "192.0.2.7")
        proto.dataReceived(b"EHLO client.example.com\r\nSTARTTLS\r\n")
        namespace, level, line = caught.only("STARTTLS refused")
        self.assertEqual(line, "STARTTLS refused: this connection cannot switch to TLS")
        self.assertEqual(level, LogLevel.warn)
        self.assertNotEqual(namespace, NAMESPACE)


def _tls(case: SynchronousTestCase) -> dict[str, Any]:
    """
    A certificate and key, for a server offering STARTTLS.
    """
    import os

    from tests.certs import CertificateAuthority

    issued = CertificateAuthority(os.path.abspath(case.mktemp())).server("mx.example.com")
    return {"certificate": issued.certificatePath, "privateKey": issued.keyPath}
