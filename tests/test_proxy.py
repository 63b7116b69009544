"""
Tests for PROXY protocol support: the pure header parser
(L{twisted_smtpd._core.proxyheader}) and the listener wrapper
(L{twisted_smtpd._serving.proxy}).
"""

from __future__ import annotations

import select
import socket
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import tcp
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_deadlines import connectFrom, factoryFor
from tests.test_protocol import RecordingHandler, SlowData
from twisted_smtpd._core import proxyheader
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.proxyheader import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    parseProxyHeader,
)
from twisted_smtpd._serving.logging import SessionLogger
from twisted_smtpd._serving.metrics import ServerMetrics
from twisted_smtpd._serving.proxy import ProxyWrappingFactory
from twisted_smtpd._serving.server import SMTPServerFactory

UNTRUSTED_PROXY = b"421 4.7.0 Error: PROXY header from an untrusted address\r\n"
MALFORMED_PROXY = b"421 4.5.0 Error: malformed PROXY header\r\n"
#: A session id at the start of a line.
SESSION = r"^[a-z2-7]{8}"
PROXY_TIMEOUT = b"421 4.4.2 Error: timeout waiting for the PROXY header\r\n"
V1 = b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 25\r\n"


def v2(src: str, dst: str, sport: int, dport: int, family: int = socket.AF_INET) -> bytes:
    raw = socket.inet_pton(family, src) + socket.inet_pton(family, dst)
    body = raw + struct.pack("!HH", sport, dport)
    fam = 0x11 if family == socket.AF_INET else 0x21
    return V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


class HeaderTests(SynchronousTestCase):
    def test_v1(self) -> None:
        """
        A version 1 line gives both addresses and its length.
        """
        self.assertEqual(
            parseProxyHeader(V1 + b"EHLO"),
            (ProxyHeader(1, ("203.0.113.5", 5555), ("192.0.2.1", 25)), len(V1)),
        )

    def test_v1Unknown(self) -> None:
        """
        C{PROXY UNKNOWN} names no client.
        """
        self.assertEqual(parseProxyHeader(b"PROXY UNKNOWN\r\n"), (ProxyHeader(1, None, None), 15))

    def test_v2IPv6(self) -> None:
        """
        A version 2 header over IPv6.
        """
        header = v2("2001:db8::1", "2001:db8::2", 1234, 587, socket.AF_INET6)
        self.assertEqual(
            parseProxyHeader(header),
            (ProxyHeader(2, ("2001:db8::1", 1234), ("2001:db8::2", 587)), len(header)),
        )

    def test_v2Local(self) -> None:
        """
        A version 2 LOCAL header (a health check) names no client.
        """
        header = V2_SIGNATURE + b"\x20\x00\x00\x00"
        self.assertEqual(parseProxyHeader(header), (ProxyHeader(2, None, None), 16))

    def test_incomplete(self) -> None:
        """
        Every proper prefix of a header asks for more bytes.
        """
        for header in (V1, v2("198.51.100.1", "192.0.2.1", 1, 25)):
            for cut in range(len(header)):
                self.assertEqual(parseProxyHeader(header[:cut]), (None, 0))

    def test_invalid(self) -> None:
        """
        Anything that cannot be a header is refused at once.
        """
        for bad in (
            b"EHLO x\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP5 a b c d\r\n",
            b"PROXY " + b"x" * 200,
            V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,
            V2_SIGNATURE + b"\x21\x11\xff\xff",
        ):
            self.assertRaises(ProxyHeaderError, parseProxyHeader, bad)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=200))
    def test_neverCrashes(self, data: bytes) -> None:
        """
        Arbitrary bytes give a header, a request for more, or
        L{ProxyHeaderError}; nothing else.
        """
        try:
            header, length = parseProxyHeader(data)
        except ProxyHeaderError:
            return
        self.assertLessEqual(length, len(data))


def v2raw(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


class HeaderValidationTests(SynchronousTestCase):
    def test_v2UnassignedFamilyRefused(self) -> None:
        """
        A version 2 PROXY header whose address family or transport protocol
        is not one the specification assigns is refused (proxy-protocol.txt
        section 2.2: "must be rejected as invalid by receivers").
        """
        for family in (0x01, 0x02, 0x10, 0x13, 0x23, 0x30, 0x41, 0x51, 0xF1, 0xFF):
            self.assertRaises(ProxyHeaderError, parseProxyHeader, v2raw(1, family, b"\x00" * 216))

    def test_v2ShortAddressBlockRefused(self) -> None:
        """
        A version 2 PROXY header whose address block is shorter than its
        family needs (12 bytes for IPv4, 36 for IPv6, 216 for UNIX) is
        refused instead of being taken as naming no client.
        """
        for family, needed in ((0x11, 12), (0x12, 12), (0x21, 36), (0x22, 36), (0x31, 216)):
            for length in (0, 4, needed - 1):
                self.assertRaises(
                    ProxyHeaderError, parseProxyHeader, v2raw(1, family, b"\x01" * length)
                )

    def test_v2OtherFamiliesNameNoClient(self) -> None:
        """
        UNSPEC, datagram and UNIX addresses are valid but name no TCP client.
        """
        for family, length in ((0x00, 0), (0x00, 7), (0x12, 12), (0x22, 36), (0x31, 216)):
            header = v2raw(1, family, b"\x01" * length)
            self.assertEqual(parseProxyHeader(header), (ProxyHeader(2, None, None), len(header)))

    def test_v2LocalIgnoresFamily(self) -> None:
        """
        A LOCAL header is accepted whatever its family byte: the
        specification says the receiver ignores it.
        """
        header = v2raw(0, 0x41, b"")
        self.assertEqual(parseProxyHeader(header), (ProxyHeader(2, None, None), 16))

    def test_v2TLVs(self) -> None:
        """
        TLVs after the addresses are skipped; one that runs past the end of
        the header is refused.
        """
        addresses = socket.inet_aton("198.51.100.1") + socket.inet_aton("192.0.2.1")
        addresses += struct.pack("!HH", 1000, 25)
        good = v2raw(1, 0x11, addresses + b"\x04\x00\x02ab" + b"\x02\x00\x00")
        self.assertEqual(
            parseProxyHeader(good),
            (ProxyHeader(2, ("198.51.100.1", 1000), ("192.0.2.1", 25)), len(good)),
        )
        for tail in (b"\x04", b"\x04\x00", b"\x04\x00\x05ab"):
            self.assertRaises(ProxyHeaderError, parseProxyHeader, v2raw(1, 0x11, addresses + tail))

    def test_crc32c(self) -> None:
        """
        L{proxyheader.crc32c} is the Castagnoli CRC: its check value (RFC
        3720 appendix B.4) for C{123456789}, and 0 for nothing.
        """
        self.assertEqual(proxyheader.crc32c(b"123456789"), 0xE3069283)
        self.assertEqual(proxyheader.crc32c(b""), 0)

    def test_v2CRC32C(self) -> None:
        """
        A C{PP2_TYPE_CRC32C} TLV is checked (proxy-protocol.txt section
        2.2.5: a receiver that supports it "MUST also check the checksum
        value"): the header HAProxy 2.6 sent with C{proxy-v2-options
        crc32c,unique-id} is accepted; the same header with one bit changed
        in the checksum, in an address or in a port, or with a checksum TLV
        of another length than 4, is refused.
        """
        sent = bytes.fromhex(
            "0d0a0d0a000d0a515549540a211100167f0000017f000001c51c30fd030004449528e7050000"
        )
        self.assertEqual(
            parseProxyHeader(sent + b"EHLO x\r\n"),
            (ProxyHeader(2, ("127.0.0.1", 50460), ("127.0.0.1", 12541)), len(sent)),
        )
        for position in (31, 16, 26):
            altered = bytearray(sent)
            altered[position] ^= 0x01
            error = self.assertRaises(ProxyHeaderError, parseProxyHeader, bytes(altered))
            self.assertEqual(str(error), "PROXY CRC32C mismatch")
        addresses = sent[16:28]
        for value in (b"", b"\x00" * 3, b"\x00" * 5):
            tlv = b"\x03" + struct.pack("!H", len(value)) + value
            error = self.assertRaises(
                ProxyHeaderError, parseProxyHeader, v2raw(1, 0x11, addresses + tlv)
            )
            self.assertEqual(str(error), "bad PROXY CRC32C length")

    def test_v1Grammar(self) -> None:
        """
        A version 1 line must follow the grammar exactly: one space between
        fields, upper-case keywords, addresses of the family named, no
        IPv6 zone, ports 0 to 65535 in ASCII digits without leading zeros.
        """
        for bad in (
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xd9\xa1\r\n",
            b"PROXY UNKNOWNX\r\n",
        ):
            self.assertRaises(ProxyHeaderError, parseProxyHeader, bad)
        self.assertEqual(
            parseProxyHeader(b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n")[0],
            ProxyHeader(1, ("0.0.0.0", 0), ("255.255.255.255", 65535)),
        )

    def test_v1BareLineFeedRefused(self) -> None:
        """
        A version 1 line ended by a bare LF is refused at once, not waited
        on until the length limit or the timeout.
        """
        self.assertRaises(ProxyHeaderError, parseProxyHeader, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n")

    def test_v1Length(self) -> None:
        """
        A version 1 line of 107 bytes with its CRLF is accepted; one byte
        more is refused.
        """
        line = b"PROXY UNKNOWN " + b"x" * (107 - 16) + b"\r\n"
        self.assertEqual(len(line), 107)
        self.assertEqual(parseProxyHeader(line), (ProxyHeader(1, None, None), 107))
        longer = b"PROXY UNKNOWN " + b"x" * (108 - 16) + b"\r\n"
        self.assertRaises(ProxyHeaderError, parseProxyHeader, longer)


def v1Line(header: ProxyHeader) -> bytes:
    if header.source is None or header.destination is None:
        return b"PROXY UNKNOWN\r\n"
    kind = "TCP6" if ":" in header.source[0] else "TCP4"
    (src, sport), (dst, dport) = header.source, header.destination
    return f"PROXY {kind} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def v2Header(header: ProxyHeader, tlvs: bytes) -> bytes:
    if header.source is None or header.destination is None:
        return v2raw(0, 0, b"")
    (src, sport), (dst, dport) = header.source, header.destination
    ipv6 = ":" in src
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    body = socket.inet_pton(family, src) + socket.inet_pton(family, dst)
    return v2raw(1, 0x21 if ipv6 else 0x11, body + struct.pack("!HH", sport, dport) + tlvs)


_ports = st.integers(0, 65535)
_headers = st.one_of(
    st.just(ProxyHeader(2, None, None)),
    st.builds(
        lambda version, a, b, p, q: ProxyHeader(version, (str(a), p), (str(b), q)),
        st.sampled_from([1, 2]),
        st.ip_addresses(v=4),
        st.ip_addresses(v=4),
        _ports,
        _ports,
    ),
    st.builds(
        lambda version, a, b, p, q: ProxyHeader(version, (str(a), p), (str(b), q)),
        st.sampled_from([1, 2]),
        st.ip_addresses(v=6),
        st.ip_addresses(v=6),
        _ports,
        _ports,
    ),
)
#: TLVs of any type but PP2_TYPE_CRC32C (0x03), whose value must be the
#: header's checksum (L{HeaderValidationTests.test_v2CRC32C}).
_tlvs = st.lists(
    st.tuples(st.integers(0, 255).filter(lambda t: t != 0x03), st.binary(max_size=20)).map(
        lambda t: bytes([t[0]]) + struct.pack("!H", len(t[1])) + t[1]
    ),
    max_size=4,
).map(b"".join)


class HeaderPropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from([b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", V2_SIGNATURE]),
        st.binary(max_size=300),
    )
    def test_arbitraryBytes(self, prefix: bytes, data: bytes) -> None:
        """
        Arbitrary bytes, after any start a header can have, give a header
        no longer than the data, a request for more, or
        L{ProxyHeaderError}; nothing else.
        """
        try:
            header, length = parseProxyHeader(prefix + data)
        except ProxyHeaderError:
            return
        self.assertLessEqual(length, len(prefix + data))
        if header is None:
            self.assertEqual(length, 0)

    @settings(max_examples=300, deadline=None)
    @given(_headers, _tlvs, st.binary(max_size=20))
    def test_roundTrip(self, header: ProxyHeader, tlvs: bytes, rest: bytes) -> None:
        """
        A valid header, in its version's encoding and followed by anything,
        parses back to itself and its exact length.
        """
        if header.source is None or header.version == 2:
            data = v2Header(ProxyHeader(2, header.source, header.destination), tlvs)
            expected = ProxyHeader(2, header.source, header.destination)
        else:
            data = v1Line(header)
            expected = header
        self.assertEqual(parseProxyHeader(data + rest), (expected, len(data)))


def proxied(
    peer: str,
    handler: Any = None,
    inner: Callable[[SMTPServerFactory], Any] | None = None,
    **options: Any,
) -> tuple[Any, StringTransport, Clock]:
    """
    A PROXY wrapper connected from C{peer} over a L{StringTransport}, around
    a server factory for C{handler} (a L{RecordingHandler} by default), or
    around what C{inner} wraps that factory in.
    """
    options.setdefault("name", "mx.example.com")
    options.setdefault("disableReverseLookup", True)
    clock = Clock()
    serverOptions = ServerOptions(**options)
    factory = SMTPServerFactory(
        handler if handler is not None else RecordingHandler(), serverOptions, reactor=clock
    )
    wrapped = factory if inner is None else inner(factory)
    wrapping = ProxyWrappingFactory(wrapped, serverOptions.useProxy, clock)
    wrapper = wrapping.buildProtocol(IPv4Address("TCP", peer, 1000))
    transport = StringTransport(
        peerAddress=IPv4Address("TCP", peer, 1000), hostAddress=IPv4Address("TCP", "10.0.0.1", 25)
    )
    wrapper.makeConnection(transport)
    return wrapper, transport, clock


class WrapperTests(SynchronousTestCase):
    def test_sessionStartsAfterHeader(self) -> None:
        """
        The greeting waits for the header; then the session sees the real
        client, even with the header split across reads.
        """
        wrapper, transport, clock = proxied("127.0.0.1", useProxy=["127.0.0.0/8"])
        self.assertEqual(transport.value(), b"")
        wrapper.dataReceived(V1[:10])
        wrapper.dataReceived(V1[10:])
        self.assertEqual(transport.value(), replies.GREETING)
        session = wrapper.wrappedProtocol.session
        self.assertEqual(session.remoteAddress, ("203.0.113.5", 5555))
        self.assertEqual(session.localAddress, ("192.0.2.1", 25))
        self.assertEqual(session.proxy.attributes["PROXY"], "127.0.0.1")

    def test_commandsBehindHeader(self) -> None:
        """
        Commands arriving with the header are handled after the greeting.
        """
        wrapper, transport, clock = proxied("127.0.0.1")
        wrapper.dataReceived(v2("198.51.100.4", "192.0.2.1", 4000, 25) + b"NOOP\r\n")
        self.assertEqual(transport.value(), replies.GREETING + replies.OK)
        self.assertEqual(wrapper.wrappedProtocol.session.remoteAddress, ("198.51.100.4", 4000))

    def test_untrustedProxy(self) -> None:
        """
        A connection from outside useProxy gets 421 and is closed before any
        header is read.
        """
        wrapper, transport, clock = proxied("198.51.100.9", useProxy=["127.0.0.0/8"])
        self.assertEqual(transport.value(), UNTRUSTED_PROXY)
        self.assertTrue(transport.disconnecting)

    def test_unixFrontEndTrusted(self) -> None:
        """
        C{useProxy} names IP networks; a front end on a C{haproxy:unix:}
        listener has no address to match, and the socket file's permissions
        decide who reaches it (as for Postfix, which trusts any peer of a
        PROXY listener), so its header is read and its client served.
        """
        clock = Clock()
        serverOptions = ServerOptions(
            name="mx.example.com", disableReverseLookup=True, useProxy=["10.0.0.5/32"]
        )
        factory = SMTPServerFactory(RecordingHandler(), serverOptions, reactor=clock)
        wrapping = ProxyWrappingFactory(factory, serverOptions.useProxy, clock)
        wrapper = wrapping.buildProtocol(UNIXAddress(None))
        transport = StringTransport(
            peerAddress=UNIXAddress(None), hostAddress=UNIXAddress(b"/run/smtpd.sock")
        )
        wrapper.makeConnection(transport)
        wrapper.dataReceived(V1 + b"NOOP\r\n")
        self.assertEqual(transport.value(), replies.GREETING + replies.OK)
        self.assertEqual(wrapper.wrappedProtocol.session.remoteAddress, ("203.0.113.5", 5555))

    def test_badHeader(self) -> None:
        """
        A connection from a trusted peer that does not start with a header
        gets the malformed-header reply (not "untrusted address"), one log
        line saying so, and is closed.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        wrapper, transport, clock = proxied("127.0.0.1", useProxy=["127.0.0.0/8"])
        wrapper.dataReceived(b"EHLO spoof\r\n")
        self.assertEqual(transport.value(), MALFORMED_PROXY)
        self.assertTrue(transport.disconnecting)
        (event,) = events
        self.assertRegex(
            formatEvent(event), SESSION + r" malformed PROXY header from 127\.0\.0\.1:1000: "
        )

    def test_malformedHeaderFromTrustedPeer(self) -> None:
        """
        A trusted peer's header with an unassigned address family gets the
        malformed-header reply and is closed; the session never starts.
        """
        wrapper, transport, clock = proxied("127.0.0.1", useProxy=["127.0.0.0/8"])
        wrapper.dataReceived(v2raw(1, 0x41, b"\x00" * 12) + b"EHLO x\r\n")
        self.assertEqual(transport.value(), MALFORMED_PROXY)
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(wrapper.proxyHeader)
        wrapper.dataReceived(b"NOOP\r\n")
        self.assertEqual(transport.value(), MALFORMED_PROXY)

    def test_wrongChecksumRefused(self) -> None:
        """
        A header whose CRC32C does not match gets the malformed-header
        reply and a log line saying why; the session never starts.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        wrapper, transport, clock = proxied("127.0.0.1", useProxy=["127.0.0.0/8"])
        header = v2raw(
            1,
            0x11,
            socket.inet_aton("198.51.100.1")
            + socket.inet_aton("192.0.2.1")
            + struct.pack("!HH", 1000, 25)
            + b"\x03\x00\x04\x00\x00\x00\x01",
        )
        wrapper.dataReceived(header + b"EHLO x\r\n")
        self.assertEqual(transport.value(), MALFORMED_PROXY)
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(wrapper.proxyHeader)
        (event,) = events
        self.assertRegex(
            formatEvent(event),
            SESSION + r" malformed PROXY header from 127\.0\.0\.1:1000: PROXY CRC32C mismatch$",
        )

    def test_untrustedLogged(self) -> None:
        """
        A connection from outside useProxy leaves one log line naming it,
        with a session id as every refusal's line.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxied("198.51.100.9", useProxy=["127.0.0.0/8"])
        (line,) = [formatEvent(e) for e in events]
        self.assertRegex(line, SESSION + r" PROXY connection from untrusted 198\.51\.100\.9:1000$")

    def test_headerTimeout(self) -> None:
        """
        A front end that never sends its header is dropped after the header
        timeout, with a reply and one log line saying so.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        wrapper, transport, clock = proxied("127.0.0.1")
        wrapper.dataReceived(b"PROXY TCP4 ")
        clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertEqual(transport.value(), PROXY_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        (line,) = [formatEvent(e) for e in events]
        self.assertRegex(
            line, SESSION + r" no PROXY header from 127\.0\.0\.1:1000 within 10 seconds$"
        )
        # A session line, in the namespace of the others.
        (event,) = events
        self.assertEqual(
            (event["log_namespace"], event["log_level"]), ("twisted_smtpd.session", LogLevel.warn)
        )


class PendingHeaderLimitTests(SynchronousTestCase):
    """
    Connections still waiting for their PROXY header count towards the
    server's C{maxClients}: each holds a descriptor.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        options = ServerOptions(
            name="mx.example.com",
            disableReverseLookup=True,
            useProxy=["127.0.0.0/8"],
            maxClients=2,
        )
        self.server = SMTPServerFactory(RecordingHandler(), options, reactor=self.clock)
        self.wrapping = ProxyWrappingFactory(
            self.server, options.useProxy, self.clock, server=self.server
        )

    def connect(self) -> tuple[Any, StringTransport]:
        wrapper = self.wrapping.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1000))
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 1000),
            hostAddress=IPv4Address("TCP", "10.0.0.1", 25),
        )
        wrapper.makeConnection(transport)
        return wrapper, transport

    def test_pendingHeadersCounted(self) -> None:
        """
        With C{maxClients} 2, a third connection while two wait for their
        header is refused with 421 and one log line; once one of them has
        gone, a new one is taken, and one that sent its header counts as a
        session.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        first, _ = self.connect()
        second, secondTransport = self.connect()
        third, thirdTransport = self.connect()
        self.assertEqual(thirdTransport.value(), replies.TOO_MANY_CLIENTS)
        self.assertTrue(thirdTransport.disconnecting)
        third.connectionLost()
        (line,) = [formatEvent(e) for e in events]
        self.assertRegex(
            line,
            SESSION + r" 127\.0\.0\.1 refused: connection limit \(2\) reached,"
            r" PROXY header pending$",
        )
        (event,) = events
        self.assertEqual(event["log_namespace"], "twisted_smtpd.session")
        second.connectionLost()
        fourth, fourthTransport = self.connect()
        self.assertEqual(fourthTransport.value(), b"")
        fourth.dataReceived(V1)
        self.assertEqual(fourthTransport.value(), replies.GREETING)
        self.assertEqual((self.wrapping.pending, len(self.server.connections)), (1, 1))
        fifth, fifthTransport = self.connect()
        self.assertEqual(fifthTransport.value(), replies.TOO_MANY_CLIENTS)

    def test_limitRefusalCounted(self) -> None:
        """
        A connection refused for C{maxClients} while others wait for their
        header is counted as the server counts a connection it refuses at
        connect for that limit: a connection, a session refused and a
        C{CONNECT} refusal; and it leaves its one line only, the session
        logger adding none.
        """
        metrics = ServerMetrics()
        self.server.addObserver(metrics)
        self.server.addObserver(SessionLogger())
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.connect()
        self.connect()
        refused, transport = self.connect()
        self.assertEqual(transport.value(), replies.TOO_MANY_CLIENTS)
        refused.connectionLost()

        def value(name: str, **labels: str) -> float | None:
            found: float | None = metrics.registry.get_sample_value(name, labels)
            return found

        self.assertEqual(
            (
                value("smtpd_connections_total"),
                value("smtpd_sessions_total", outcome="refused"),
                value("smtpd_refusals_total", command="CONNECT", code="421"),
                value("smtpd_connections_open"),
            ),
            (1.0, 1.0, 1.0, 0.0),
        )
        (line,) = [formatEvent(e) for e in events]
        self.assertIn(" refused: connection limit (2) reached", line)

    def test_refusalsTakeNoSlot(self) -> None:
        """
        Connections being refused (their 421 waiting for the handshake of
        an implicit TLS listener) take no slot of C{maxClients} from a
        PROXY connection, as they take none from a direct one: one address
        flooding past C{maxClientsPerIp} does not lock out the clients of
        a C{haproxy:} listener sharing the server.
        """
        server = factoryFor(self.clock, maxClients=2, maxClientsPerIp=1)
        wrapping = ProxyWrappingFactory(server, (), self.clock, server=server)
        connectFrom(server, "192.0.2.7", tls=True)[0].handshakeCompleted()
        for _ in range(2):
            connectFrom(server, "192.0.2.7", tls=True)
        self.assertEqual((len(server.connections), len(server.refusing)), (3, 2))
        self.wrapping = wrapping
        proxied, transport = self.connect()
        self.assertEqual(transport.value(), b"")
        proxied.dataReceived(V1)
        self.assertEqual(transport.value(), replies.GREETING)
        _, transport = self.connect()
        self.assertEqual(transport.value(), replies.TOO_MANY_CLIENTS)

    def test_pendingCountReturnsToZero(self) -> None:
        """
        Connections that time out, send a malformed header or go away
        before their header leave the count.
        """
        timedOut, _ = self.connect()
        malformed, _ = self.connect()
        malformed.dataReceived(b"GARBAGE\r\n")
        malformed.connectionLost()
        self.clock.advance(10)
        timedOut.connectionLost()
        self.assertEqual(self.wrapping.pending, 0)
        gone, _ = self.connect()
        gone.connectionLost()
        self.assertEqual(self.wrapping.pending, 0)

    def test_headerTimeoutFollowsSocketTimeout(self) -> None:
        """
        A listener's header deadline is the socket timeout when that is
        shorter than 10 seconds.
        """
        from twisted_smtpd import SMTPServer

        for socketTimeout, expected in ((3.0, 3.0), (60.0, 10.0)):
            server = SMTPServer(
                RecordingHandler(),
                ServerOptions(
                    name="mx.example.com",
                    useProxy=["127.0.0.0/8"],
                    socketTimeout=socketTimeout,
                ),
            )
            wrapping = server._wrap(["haproxy"], "haproxy:tcp:0")
            assert isinstance(wrapping, ProxyWrappingFactory)
            self.assertEqual(wrapping.headerTimeout, expected)
            self.assertIs(wrapping.server, server.factory)


class FrontEndLimitTests(SynchronousTestCase):
    """
    A connection whose PROXY header names no client (C{LOCAL}, C{UNKNOWN},
    a UNIX socket's family: the front end's health checks) is the front
    end's own: the per-address limits, which count clients, leave it out,
    as they leave out a UNIX socket's clients.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        options = ServerOptions(
            name="mx.example.com",
            disableReverseLookup=True,
            useProxy=["127.0.0.0/8"],
            maxClientsPerIp=1,
            maxConnectionRate=(2, 60.0),
        )
        self.server = SMTPServerFactory(RecordingHandler(), options, reactor=self.clock)
        self.wrapping = ProxyWrappingFactory(
            self.server, options.useProxy, self.clock, server=self.server
        )

    def connect(self, header: bytes) -> tuple[Any, StringTransport]:
        wrapper = self.wrapping.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1000))
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 1000),
            hostAddress=IPv4Address("TCP", "10.0.0.1", 25),
        )
        wrapper.makeConnection(transport)
        wrapper.dataReceived(header)
        return wrapper, transport

    def test_healthChecksNotLimited(self) -> None:
        """
        Health checks, however many and however often, are greeted, and
        the limit tables hold nothing for them; the clients the front end
        names are still limited.
        """
        local = V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
        unix = V2_SIGNATURE + bytes([0x21, 0x31]) + struct.pack("!H", 216) + b"\0" * 216
        for header in [local] * 3 + [b"PROXY UNKNOWN\r\n"] * 2 + [unix]:
            _, transport = self.connect(header)
            self.assertEqual(transport.value(), replies.GREETING, header)
        self.assertEqual((self.server.limits.open, self.server.limits.windows), ({}, {}))
        _, transport = self.connect(V1)
        self.assertEqual(transport.value(), replies.GREETING)
        _, transport = self.connect(V1)
        self.assertTrue(transport.value().startswith(b"421 4.7.0 "), transport.value())


class ProxyRefusalCountTests(SynchronousTestCase):
    """
    A connection refused at the PROXY layer (a front end outside
    C{--proxy-trusted}, a malformed header, no header in time) is counted
    as the server counts a connection it refuses at connect: a connection,
    a session refused, a C{CONNECT} refusal with the reply's code; and it
    leaves the wrapper's one line only, the session logger adding none.
    """

    def refuse(self, trustedNetwork: str, act: Callable[[Any, Clock], None]) -> tuple[bytes, Any]:
        clock = Clock()
        options = ServerOptions(
            name="mx.example.com", disableReverseLookup=True, useProxy=[trustedNetwork]
        )
        server = SMTPServerFactory(RecordingHandler(), options, reactor=clock)
        wrapping = ProxyWrappingFactory(server, options.useProxy, clock, server=server)
        metrics = ServerMetrics()
        server.addObserver(metrics)
        server.addObserver(SessionLogger())
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        wrapper = wrapping.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1000))
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 1000),
            hostAddress=IPv4Address("TCP", "10.0.0.1", 25),
        )
        wrapper.makeConnection(transport)
        act(wrapper, clock)
        wrapper.connectionLost()
        counts = tuple(
            metrics.registry.get_sample_value(name, labels)
            for name, labels in (
                ("smtpd_connections_total", {}),
                ("smtpd_sessions_total", {"outcome": "refused"}),
                ("smtpd_refusals_total", {"command": "CONNECT", "code": "421"}),
                ("smtpd_connections_open", {}),
            )
        )
        self.assertEqual(counts, (1.0, 1.0, 1.0, 0.0))
        (line,) = [formatEvent(e) for e in events]
        return transport.value(), line

    def test_untrusted(self) -> None:
        """
        A front end outside C{--proxy-trusted}.
        """
        reply, line = self.refuse("192.0.2.0/24", lambda wrapper, clock: None)
        self.assertEqual(reply, UNTRUSTED_PROXY)
        self.assertRegex(line, SESSION + r" PROXY connection from untrusted 127\.0\.0\.1:1000$")

    def test_malformed(self) -> None:
        """
        A header that is no PROXY header.
        """
        reply, line = self.refuse(
            "127.0.0.0/8", lambda wrapper, clock: wrapper.dataReceived(b"GARBAGE\r\n")
        )
        self.assertEqual(reply, MALFORMED_PROXY)
        self.assertRegex(line, SESSION + r" malformed PROXY header from 127\.0\.0\.1:1000: ")

    def test_timeout(self) -> None:
        """
        No header within the deadline.
        """
        reply, line = self.refuse("127.0.0.0/8", lambda wrapper, clock: clock.advance(10))
        self.assertEqual(reply, PROXY_TIMEOUT)
        self.assertRegex(line, SESSION + r" no PROXY header from 127\.0\.0\.1:1000 within 10")


class ProxiedTurnTests(SynchronousTestCase):
    """
    Sessions behind PROXY wrappers straight over real TCP connections.
    """

    def _sessions(self, handler: Any, count: int) -> tuple[MemoryReactorClock, list[Any]]:
        """
        C{count} greeted sessions of a server for C{handler}, each behind a
        PROXY wrapper over a real TCP connection on 127.0.0.1 (the server's
        side read by hand, on a L{MemoryReactorClock}).

        @return: The reactor, and C{(connection, client socket)} pairs.
        """
        reactor = MemoryReactorClock()
        options = ServerOptions(
            name="mx.example.com", disableReverseLookup=True, useProxy=["127.0.0.0/8"]
        )
        factory = SMTPServerFactory(handler, options, reactor=reactor)
        wrapping = ProxyWrappingFactory(factory, options.useProxy, reactor)
        listening = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listening.close)
        sessions = []
        for n in range(count):
            client = socket.create_connection(listening.getsockname(), timeout=5)
            self.addCleanup(client.close)
            # Each command reaches the server as it is sent.
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            accepted, address = listening.accept()
            accepted.setblocking(False)
            self.addCleanup(accepted.close)
            wrapper = wrapping.buildProtocol(IPv4Address("TCP", *address))
            connection = tcp.Server(accepted, wrapper, address, None, n, reactor)  # type: ignore[arg-type]
            wrapper.makeConnection(connection)
            client.sendall(V1)
            connection.doRead()
            reactor.advance(0)
            self.assertEqual(client.recv(4096), replies.GREETING)
            self.assertTrue(wrapper.wrappedProtocol._plainTCP)
            sessions.append((connection, client))
        return reactor, sessions

    def test_repliesAtTheEndOfTheTurn(self) -> None:
        """
        A session behind a PROXY wrapper straight over a TCP connection
        writes to the connection itself, as over plain TCP: with another
        session open, its replies wait for the end of the reactor's turn and
        leave together.
        """
        reactor, sessions = self._sessions(RecordingHandler(), 2)
        for connection, client in sessions:
            client.sendall(b"NOOP\r\n")
            connection.doRead()
        for connection, client in sessions:
            client.sendall(b"RSET\r\n")
            connection.doRead()
            # The replies wait for the end of the turn.
            self.assertEqual(select.select([client], [], [], 0)[0], [])
        reactor.advance(0)
        for _connection, client in sessions:
            self.assertEqual(client.recv(4096), replies.OK + b"250 2.0.0 Flushed\r\n")

    def test_readingGoesOnWhileOnDataAnswers(self) -> None:
        """
        Behind a PROXY wrapper straight over a TCP connection, which tells
        of half-closes, a session keeps reading while C{onData} answers, as
        over plain TCP: no pause and resume around each message.
        """
        handler = SlowData()
        reactor, [(connection, client)] = self._sessions(handler, 1)
        client.sendall(b"HELO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        connection.doRead()
        client.sendall(b"DATA\r\n")
        connection.doRead()
        client.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        connection.doRead()
        # (Membership tested apart: this connection has no repr.)
        self.assertTrue(connection in reactor.getReaders(), "the session stopped reading")
        handler.pending.callback("queued")
        reactor.advance(0)
        got = b""
        while not got.endswith(b"queued\r\n"):
            got += client.recv(4096)
        self.assertTrue(got.splitlines()[-1].startswith(b"250 "), got)
        self.assertTrue(connection in reactor.getReaders(), "the session stopped reading")
