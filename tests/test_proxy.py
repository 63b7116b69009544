"""
Tests for PROXY protocol support: the pure header parser
(L{twisted_smtpd._proxyheader}) and the listener wrapper
(L{twisted_smtpd._proxy}).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_protocol import RecordingHandler
from twisted_smtpd._options import ServerOptions
from twisted_smtpd._proxy import ProxyWrappingFactory
from twisted_smtpd._proxyheader import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    parseProxyHeader,
)
from twisted_smtpd._server import SMTPServerFactory

UNTRUSTED_PROXY = b"421 4.7.0 Error: PROXY header from an untrusted address\r\n"
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


def proxied(peer: str, **options: Any) -> tuple[Any, StringTransport, Clock]:
    options.setdefault("name", "mx.example.com")
    options.setdefault("disableReverseLookup", True)
    clock = Clock()
    serverOptions = ServerOptions(**options)
    factory = SMTPServerFactory(RecordingHandler(), serverOptions, reactor=clock)
    wrapping = ProxyWrappingFactory(factory, serverOptions.useProxy, clock)
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

    def test_badHeader(self) -> None:
        """
        A connection that does not start with a header is closed.
        """
        wrapper, transport, clock = proxied("127.0.0.1")
        wrapper.dataReceived(b"EHLO spoof\r\n")
        self.assertEqual(transport.value(), UNTRUSTED_PROXY)
        self.assertTrue(transport.disconnecting)

    def test_headerTimeout(self) -> None:
        """
        A front end that never sends its header is dropped after the header
        timeout.
        """
        wrapper, transport, clock = proxied("127.0.0.1")
        clock.advance(10)
        self.assertTrue(transport.disconnecting)
