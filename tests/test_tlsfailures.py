"""
Tests for the failed TLS handshakes an operator sees: their kinds
(L{twisted_smtpd._serving.tlsfailures}), the C{tlsfailed} event a session
emits, and C{smtpd_tls_handshake_failures_total}.
"""

from __future__ import annotations

import struct
from typing import Any

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_deadlines import LogCatcher, connectFrom, factoryFor
from twisted_smtpd._core.session import Session
from twisted_smtpd._serving.metrics import ServerMetrics
from twisted_smtpd._serving.tls import ServerTLS
from twisted_smtpd._serving.tlsfailures import (
    REASONS,
    ListenerTLSFactory,
    failureReason,
    listenerLabel,
)


def _openssl(*reasons: str) -> SSL.Error:
    """
    An error as pyOpenSSL raises it, with OpenSSL's C{reasons}.
    """
    return SSL.Error([("SSL routines", "", reason) for reason in reasons])


class FailureReasonTests(SynchronousTestCase):
    def test_openSSLReasons(self) -> None:
        """
        OpenSSL's reasons map onto a few fixed kinds: version and cipher
        mismatches and plaintext are C{protocol}, a certificate refused on
        either side C{certificate}, an end of file C{closed}, anything else
        C{other}.
        """
        cases = {
            "unsupported protocol": "protocol",
            "tlsv1 alert protocol version": "protocol",
            "no shared cipher": "protocol",
            "wrong version number": "protocol",
            "http request": "protocol",
            "packet length too long": "protocol",
            "version too low": "protocol",
            "sslv3 alert handshake failure": "protocol",
            "no suitable signature algorithm": "protocol",
            "tlsv1 alert unknown ca": "certificate",
            "sslv3 alert bad certificate": "certificate",
            "sslv3 alert certificate expired": "certificate",
            "peer did not return a certificate": "certificate",
            "certificate verify failed": "certificate",
            "tlsv13 alert certificate required": "certificate",
            "unexpected eof while reading": "closed",
            "bad extension": "protocol",
            "length mismatch": "protocol",
            "length too short": "protocol",
            "excessive message size": "protocol",
            "missing sigalgs extension": "protocol",
            "too many warn alerts": "protocol",
            "no renegotiation": "protocol",
            "tls alert illegal parameter": "protocol",
            "cert length mismatch": "protocol",
            "bad record mac": "other",
            "something OpenSSL says one day": "other",
        }
        self.assertEqual({why: failureReason(_openssl(why)) for why in cases}, cases)

    def test_severalReasons(self) -> None:
        """
        With several reasons, a certificate one wins.
        """
        self.assertEqual(
            failureReason(_openssl("wrong version number", "certificate verify failed")),
            "certificate",
        )

    def test_notOpenSSL(self) -> None:
        """
        The connection's end (a FIN, a reset, an abort, an end of file
        under OpenSSL) is C{closed}; an
        error without reasons, or of another kind, is C{other}.
        """
        for error in (
            ConnectionDone(),
            ConnectionLost(),
            ConnectionAborted(),
            SSL.SysCallError(-1, "Unexpected EOF"),
            SSL.SysCallError(104, "ECONNRESET"),
        ):
            self.assertEqual(failureReason(error), "closed")
        self.assertEqual(failureReason(SSL.Error()), "other")
        self.assertEqual(failureReason(SSL.Error("text")), "other")
        self.assertEqual(failureReason(ValueError("x")), "other")
        self.assertEqual(failureReason(None), "other")

    def test_fixedSet(self) -> None:
        """
        Whatever the text, the kind is one of L{REASONS}.
        """
        for text in ["", "\x00", "a" * 5000, "certificate\r\nhttp request", "\u00e9"]:
            self.assertIn(failureReason(_openssl(text)), REASONS)


class ListenerLabelTests(SynchronousTestCase):
    def test_labels(self) -> None:
        """
        A handshake after STARTTLS is C{starttls}; one on an implicit TLS
        connection is named by its listener's endpoint string, C{""} when
        its TLS layer was not made by a listener of the server.
        """

        class Layer:
            factory: Any = None

        layer = Layer()
        self.assertEqual(listenerLabel(layer, implicitTLS=False), "starttls")
        self.assertEqual(listenerLabel(layer, implicitTLS=True), "")
        tls = ServerTLS(None, hostname="mx.example.com")
        layer.factory = ListenerTLSFactory(tls, None, "ssl:465:interface=127.0.0.1")
        self.assertEqual(listenerLabel(layer, implicitTLS=True), "ssl:465:interface=127.0.0.1")
        self.assertEqual(listenerLabel(object(), implicitTLS=True), "")


class FailedEventTests(SynchronousTestCase):
    def events(self, factory: Any) -> list[tuple[str, dict[str, Any]]]:
        seen: list[tuple[str, dict[str, Any]]] = []

        def observer(event: str, session: Session, data: dict[str, Any]) -> None:
            seen.append((event, data))

        factory.addObserver(observer)
        return seen

    def test_failedHandshake(self) -> None:
        """
        A connection lost in the middle of its handshake emits one
        C{tlsfailed} event with the kind, the listener and OpenSSL's text,
        and leaves one log line.
        """
        log = LogCatcher(self)
        factory = factoryFor(Clock())
        seen = self.events(factory)
        proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
        proto.connectionLost(Failure(_openssl("unsupported protocol")))
        self.assertEqual(
            seen,
            [
                (
                    "tlsfailed",
                    {"reason": "protocol", "listener": "", "error": "unsupported protocol"},
                )
            ],
        )
        self.assertEqual(len(log.matching("TLS handshake failed")), 1)

    def test_stalledHandshake(self) -> None:
        """
        A handshake that does not finish within C{tlsHandshakeTimeout} emits
        one C{tlsfailed} event of kind C{timeout}, and no other when the
        aborted connection is then lost.
        """
        clock = Clock()
        factory = factoryFor(clock, tlsHandshakeTimeout=5)
        seen = self.events(factory)
        proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
        clock.advance(4)
        self.assertEqual(seen, [])
        clock.advance(1)
        self.assertEqual(
            seen,
            [("tlsfailed", {"reason": "timeout", "listener": "", "error": "handshake timeout"})],
        )
        proto.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(len(seen), 1)

    def test_ignoredHosts(self) -> None:
        """
        A client of C{ignoredHosts} (a health check) emits none.
        """
        clock = Clock()
        factory = factoryFor(clock, ignoredHosts=("192.0.2.7",), tlsHandshakeTimeout=5)
        seen = self.events(factory)
        proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
        proto.connectionLost(Failure(ConnectionLost()))
        connectFrom(factory, "192.0.2.7", tls=True)
        clock.advance(5)
        self.assertEqual(seen, [])

    def test_finishedHandshake(self) -> None:
        """
        A connection lost after its handshake finished emits none.
        """
        factory = factoryFor(Clock())
        seen = self.events(factory)
        proto, transport = connectFrom(factory, "192.0.2.7", tls=True)
        proto.handshakeCompleted()
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertNotIn("tlsfailed", [event for event, data in seen])


class FailureMetricTests(SynchronousTestCase):
    def test_counted(self) -> None:
        """
        Each C{tlsfailed} event counts once under its listener and kind; a
        kind outside the fixed set counts as C{other}.
        """
        metrics = ServerMetrics()
        session = Session(id="s1")
        for reason in ["protocol", "protocol", "timeout", "made up by someone"]:
            metrics("tlsfailed", session, {"reason": reason, "listener": "ssl:465", "error": "x"})
        metrics("tlsfailed", session, {"reason": "closed", "listener": "starttls", "error": "x"})

        def value(listener: str, reason: str) -> float | None:
            result: float | None = metrics.registry.get_sample_value(
                "smtpd_tls_handshake_failures_total", {"listener": listener, "reason": reason}
            )
            return result

        self.assertEqual(value("ssl:465", "protocol"), 2)
        self.assertEqual(value("ssl:465", "timeout"), 1)
        self.assertEqual(value("ssl:465", "other"), 1)
        self.assertEqual(value("starttls", "closed"), 1)
        self.assertIn("tlsfailed", metrics.events)

    def test_stalledHandshakeCounted(self) -> None:
        """
        A handshake stalled past C{tlsHandshakeTimeout} (with C{task.Clock})
        and one lost mid-way are counted by a server's L{ServerMetrics},
        under their reasons, and the stalled one only once when its aborted
        connection is then lost.
        """
        clock = Clock()
        factory = factoryFor(clock, tlsHandshakeTimeout=5)
        metrics = ServerMetrics()
        factory.addObserver(metrics)
        stalled, _ = connectFrom(factory, "192.0.2.7", tls=True)
        gone, _ = connectFrom(factory, "192.0.2.8", tls=True)
        gone.connectionLost(Failure(ConnectionLost()))
        clock.advance(5)
        stalled.connectionLost(Failure(ConnectionAborted()))

        def value(reason: str) -> float | None:
            result: float | None = metrics.registry.get_sample_value(
                "smtpd_tls_handshake_failures_total", {"listener": "", "reason": reason}
            )
            return result

        self.assertEqual((value("timeout"), value("closed")), (1, 1))


class CloseNotifyMidwayTests(SynchronousTestCase):
    def test_closeNotifyBeforeHandshakeEnds(self) -> None:
        """
        A client's close_notify after its ClientHello, before the handshake
        has finished (OpenSSL's C{ZeroReturnError}, without reasons), closes
        the connection as a client closing it: nothing raised out of
        C{dataReceived}, one line C{TLS handshake failed: connection
        closed} and one C{tlsfailed} event of kind C{closed}, and the slot
        is given back.
        """
        log = LogCatcher(self)
        factory = factoryFor(Clock(), maxClients=1)
        seen: list[tuple[str, dict[str, Any]]] = []
        factory.addObserver(lambda event, session, data: seen.append((event, data)))
        tls = ServerTLS(None, hostname="mx.example.com")
        layer = ListenerTLSFactory(tls, factory, "ssl:465").buildProtocol(None)
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 40000),
            hostAddress=IPv4Address("TCP", "192.0.2.1", 465),
        )
        layer.makeConnection(transport)
        client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
        client.set_connect_state()
        self.assertRaises(SSL.WantReadError, client.do_handshake)
        # The ClientHello, then a close_notify alert (RFC 8446 section 6.1).
        layer.dataReceived(client.bio_read(65536) + bytes.fromhex("15030300020100"))
        self.assertTrue(transport.disconnecting)
        layer.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            [line.split(" ", 1)[1] for line in log.matching("TLS handshake failed")],
            ["192.0.2.7 TLS handshake failed: connection closed"],
        )
        self.assertEqual(
            [(event, data["reason"]) for event, data in seen if event == "tlsfailed"],
            [("tlsfailed", "closed")],
        )
        self.assertFalse(factory.connections)


def _extension(kind: int, body: bytes) -> bytes:
    """
    One extension of a ClientHello (RFC 8446 section 4.2).
    """
    return struct.pack("!HH", kind, len(body)) + body


#: TLS 1.3 (supported_versions), x25519 (supported_groups), and
#: ECDSA, RSA-PSS and RSA signatures (signature_algorithms).
_VERSIONS = _extension(43, bytes.fromhex("020304"))
_GROUPS = _extension(10, bytes.fromhex("0006001d00170018"))
_SIGNATURES = _extension(13, bytes.fromhex("001004030503060308070804080504010501"))
_POINT_FORMATS = _extension(11, bytes.fromhex("0100"))

#: TLS_AES_128_GCM_SHA256 and TLS_EMPTY_RENEGOTIATION_INFO_SCSV.
_TLS13_SUITES = bytes.fromhex("130100ff")
#: ECDHE with RSA or ECDSA, AES-GCM: TLS 1.2 only.
_TLS12_SUITES = bytes.fromhex("c02fc02bc030c02c")


def _clientHello(suites: bytes, *extensions: bytes) -> bytes:
    """
    A ClientHello in one handshake record, built by hand (RFC 8446 section
    4.1.2), with C{extensions} as given: duplicated, malformed, missing.
    """
    body = b"\x03\x03" + b"\x11" * 32 + b"\x00"
    body += struct.pack("!H", len(suites)) + suites + b"\x01\x00"
    joined = b"".join(extensions)
    body += struct.pack("!H", len(joined)) + joined
    message = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(message)) + message


def _alert(level: int, description: int) -> bytes:
    """
    One alert record (RFC 8446 section 6).
    """
    return bytes([0x15, 0x03, 0x03, 0x00, 0x02, level, description])


class MalformedInputTests(SynchronousTestCase):
    """
    Malformed input from a client, records built by hand, fails its
    handshake as C{protocol} in C{smtpd_tls_handshake_failures_total}, as
    plaintext and a version or cipher mismatch do, not as C{other}.
    """

    def setUp(self) -> None:
        self.tls = ServerTLS(None, hostname="mx.example.com")

    def handshake(self, data: bytes) -> tuple[str, str]:
        """
        Send C{data} to an C{ssl:465} listener of a server counting with
        L{ServerMetrics}.

        @return: The kind the failure was counted under (the only sample
            of the counter) and OpenSSL's text of the C{tlsfailed} event.
        """
        factory = factoryFor(Clock())
        metrics = ServerMetrics()
        factory.addObserver(metrics)
        seen: list[dict[str, Any]] = []
        factory.addObserver(
            lambda event, session, data: seen.append(data) if event == "tlsfailed" else None
        )
        layer = ListenerTLSFactory(self.tls, factory, "ssl:465").buildProtocol(None)
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 40000),
            hostAddress=IPv4Address("TCP", "192.0.2.1", 465),
        )
        layer.makeConnection(transport)
        layer.dataReceived(data)
        self.assertTrue(transport.disconnecting)
        layer.connectionLost(Failure(ConnectionDone()))
        [event] = seen
        counted = {
            sample.labels["reason"]: sample.value
            for family in metrics.registry.collect()
            if family.name == "smtpd_tls_handshake_failures"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.value
        }
        self.assertEqual(list(counted.values()), [1.0], counted)
        [reason] = counted
        return reason, event["error"]

    def test_badExtension(self) -> None:
        """
        A ClientHello holding an extension twice: OpenSSL's C{bad
        extension}.
        """
        hello = _clientHello(_TLS13_SUITES, _VERSIONS, _VERSIONS, _GROUPS, _SIGNATURES)
        self.assertEqual(self.handshake(hello), ("protocol", "bad extension"))

    def test_lengthMismatch(self) -> None:
        """
        An extension whose inner length says more than it holds: OpenSSL's
        C{length mismatch}.
        """
        versions = _extension(43, bytes.fromhex("050304"))
        hello = _clientHello(_TLS13_SUITES, versions, _GROUPS, _SIGNATURES)
        self.assertEqual(self.handshake(hello), ("protocol", "length mismatch"))

    def test_truncatedHello(self) -> None:
        """
        A ClientHello too short to hold a version, or announcing 16 MB:
        C{length too short}, C{excessive message size}.
        """
        self.assertEqual(
            self.handshake(bytes.fromhex("160301000401000000")), ("protocol", "length too short")
        )
        self.assertEqual(
            self.handshake(bytes.fromhex("160301000501ffffff00")),
            ("protocol", "excessive message size"),
        )

    def test_missingSignatureAlgorithms(self) -> None:
        """
        A TLS 1.3 ClientHello without the signature_algorithms extension
        RFC 8446 section 9.2 requires: C{missing sigalgs extension}.
        """
        hello = _clientHello(_TLS13_SUITES, _VERSIONS, _GROUPS)
        self.assertEqual(self.handshake(hello), ("protocol", "missing sigalgs extension"))

    def test_tooManyWarnAlerts(self) -> None:
        """
        A TLS 1.2 ClientHello, then warning alerts in a row (C{unrecognized_name}):
        OpenSSL's C{too many warn alerts} at the fifth.
        """
        hello = _clientHello(_TLS12_SUITES, _GROUPS, _SIGNATURES, _POINT_FORMATS)
        self.assertEqual(
            self.handshake(hello + _alert(1, 112) * 6), ("protocol", "too many warn alerts")
        )

    def test_renegotiationAlert(self) -> None:
        """
        A warning C{no_renegotiation} alert in the middle of a handshake,
        where it has no place: OpenSSL's C{no renegotiation}.
        """
        hello = _clientHello(_TLS12_SUITES, _GROUPS, _SIGNATURES, _POINT_FORMATS)
        self.assertEqual(self.handshake(hello + _alert(1, 100)), ("protocol", "no renegotiation"))

    def test_plaintextStillProtocol(self) -> None:
        """
        Plaintext SMTP on the listener stays C{protocol} (OpenSSL 3.2 says
        C{packet length too long}, later ones C{wrong version number}).
        """
        reason, error = self.handshake(b"EHLO client\r\n")
        self.assertEqual(reason, "protocol", error)
