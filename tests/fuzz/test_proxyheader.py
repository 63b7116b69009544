"""
A PROXY header (version 1 or 2, valid or malformed) in front of a session,
its bytes and the commands behind it split anywhere, with the clock
advanced past the header timeout or the session's own at a drawn point:
the replies, the client the session sees, the log lines and the close are
those of the same bytes in one piece, and nothing is left on the clock once
the connection is lost.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.fuzz import PROFILE
from tests.fuzz.model import FuzzHandler, parseReplies
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.proxyheader import V2_SIGNATURE
from twisted_smtpd._serving.logging import SessionLogger
from twisted_smtpd._serving.proxy import HEADER_TIMEOUT, ProxyWrappingFactory
from twisted_smtpd._serving.server import SMTPServerFactory

SOCKET_TIMEOUT = 30.0


def _v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def _v2inet(src: str, dst: str, tlvs: bytes = b"") -> bytes:
    ipv6 = ":" in src
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    body = socket.inet_pton(family, src) + socket.inet_pton(family, dst)
    return _v2(1, 0x21 if ipv6 else 0x11, body + struct.pack("!HH", 4000, 25) + tlvs)


#: Headers, each with the client the session must see (C{None}: the front
#: end itself) or C{"malformed"}.
HEADERS: dict[bytes, tuple[str, int] | str | None] = {
    b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 25\r\n": ("203.0.113.5", 5555),
    b"PROXY TCP6 2001:db8::5 2001:db8::1 5555 25\r\n": ("2001:db8::5", 5555),
    b"PROXY UNKNOWN\r\n": None,
    b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n": None,
    _v2inet("198.51.100.4", "192.0.2.1"): ("198.51.100.4", 4000),
    _v2inet("2001:db8::4", "2001:db8::1", b"\x01\x00\x02h2"): ("2001:db8::4", 4000),
    _v2(0, 0x11, b"\x00" * 12): None,
    _v2(1, 0x00, b""): None,
    b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 25\n": "malformed",
    b"PROXY TCP4 203.0.113.5 192.0.2.1 5555\r\n": "malformed",
    b"PROXY TCP4 2001:db8::5 192.0.2.1 5555 25\r\n": "malformed",
    b"PROXY TCP4 203.0.113.5 192.0.2.1 55555 25\r\n": ("203.0.113.5", 55555),
    b"PROXY TCP4 203.0.113.5 192.0.2.1 65536 25\r\n": "malformed",
    b"PROXY " + b"x" * 120 + b"\r\n": "malformed",
    b"EHLO spoof\r\n": "malformed",
    _v2(1, 0x41, b"\x00" * 12): "malformed",
    _v2(1, 0x11, b"\x00" * 8): "malformed",
    _v2(1, 0x11, b"\x00" * 12 + b"\x01\x00\x09ab"): "malformed",
    _v2(1, 0x11, b"\x00" * 2000): "malformed",
}

COMMANDS = st.lists(
    st.sampled_from(
        [
            b"EHLO c.example.com\r\n",
            b"NOOP\r\n",
            b"MAIL FROM:<a@example.com>\r\n",
            b"RCPT TO:<b@example.com>\r\n",
            b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n",
            b"RSET\r\n",
            b"XCLIENT ADDR=192.0.2.9\r\n",
            b"PROXY TCP4 203.0.113.6 192.0.2.1 1 25\r\n",
            V2_SIGNATURE,
        ]
    ),
    max_size=5,
).map(b"".join)


class _Lines:
    """
    Every log line written, formatted.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.lines.append(formatEvent(event))


def run(
    data: bytes, cuts: list[int], stallAt: int | None, seconds: float
) -> tuple[bytes, Any, list[str], tuple[bool, bool], list[Any]]:
    """
    Send C{data} through a PROXY listener cut at C{cuts}; when C{stallAt}
    is not C{None}, only its first C{stallAt} bytes, then C{seconds} pass.
    Then the connection is lost.

    @return: The output, the session's remote address (C{None} if no
        session began), the log lines, whether the server closed before
        the clock was advanced and whether it closed in the end, and the
        calls left on the clock once the connection was lost.
    """
    clock = Clock()
    options = ServerOptions(
        name="mx.example.com",
        disableReverseLookup=True,
        authOptional=True,
        socketTimeout=SOCKET_TIMEOUT,
        useProxy=["127.0.0.0/8"],
        useXClient=["127.0.0.0/8", "203.0.113.0/24"],
    )
    factory = SMTPServerFactory(FuzzHandler(), options, reactor=clock)
    factory.addObserver(SessionLogger())
    wrapping = ProxyWrappingFactory(factory, options.useProxy, clock)
    peer = IPv4Address("TCP", "127.0.0.1", 1000)
    wrapper = wrapping.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "10.0.0.1", 25))
    lines = _Lines()
    globalLogPublisher.addObserver(lines)
    try:
        wrapper.makeConnection(transport)
        if stallAt is not None:
            data = data[:stallAt]
        previous = 0
        for point in sorted({c % (len(data) + 1) for c in cuts} | {len(data)}):
            if point > previous and not transport.disconnecting:
                wrapper.dataReceived(data[previous:point])
                previous = point
        closedEarly = transport.disconnecting
        if stallAt is not None:
            for _ in range(int(seconds)):
                clock.advance(1)
        closed = (closedEarly, transport.disconnecting)
        session = getattr(wrapper.wrappedProtocol, "session", None)
        address = session.remoteAddress if wrapper.proxyHeader is not None else None
        wrapper.connectionLost(Failure(ConnectionDone()))
        clock.advance(0)
        left = clock.getDelayedCalls()
    finally:
        globalLogPublisher.removeObserver(lines)
    return transport.value(), address, lines.lines, closed, left


class ProxyHeaderFuzzTests(SynchronousTestCase):
    @PROFILE
    @given(
        header=st.sampled_from(sorted(HEADERS)),
        commands=COMMANDS,
        cuts=st.lists(st.integers(0, 1 << 16), max_size=6),
        stall=st.one_of(st.none(), st.integers(0, 1 << 16)),
        seconds=st.sampled_from([HEADER_TIMEOUT - 1, HEADER_TIMEOUT + 1, SOCKET_TIMEOUT + 2]),
    )
    def test_headerSplitAnywhere(
        self,
        header: bytes,
        commands: bytes,
        cuts: list[int],
        stall: int | None,
        seconds: float,
    ) -> None:
        """
        However the bytes are cut, the output, the client seen, the log
        lines and the close are the same; a malformed header gets one 421
        and one log line and starts no session; a valid one starts the
        session as the client it names; a stall past a deadline ends with
        one 421 and one log line; no log line holds a control character,
        and no call is left on the clock.
        """
        data = header + commands
        stallAt = None if stall is None else stall % (len(data) + 1)
        whole = run(data, [], stallAt, seconds)
        split = run(data, cuts, stallAt, seconds)
        out, address, lines, (closedEarly, closed), left = split
        self.assertEqual(whole[:2], split[:2])
        self.assertEqual(whole[3:], split[3:])
        self.assertEqual(len(whole[2]), len(lines), (whole[2], lines))
        self.assertEqual(left, [])
        for line in lines:
            self.assertFalse(any(ord(c) < 32 or 127 <= ord(c) < 160 for c in line), line)
        replies, rest = parseReplies(out)
        self.assertEqual(rest, b"")
        expected = HEADERS[header]
        complete = stallAt is None or stallAt >= len(header)
        if expected == "malformed" and (complete or b"malformed" in out):
            # Refused as soon as the bytes cannot start a header.
            self.assertEqual([code for code, _ in replies], [421], out)
            self.assertIn(b"malformed PROXY header", out)
            self.assertTrue(closed)
            self.assertIsNone(address)
            self.assertEqual(len([x for x in lines if "malformed PROXY" in x]), 1, lines)
            return
        if not complete:
            # Stalled inside the header.
            if seconds >= HEADER_TIMEOUT:
                self.assertEqual(out, b"421 4.4.2 Error: timeout waiting for the PROXY header\r\n")
                self.assertTrue(closed)
                self.assertEqual(len(lines), 1, lines)
            else:
                self.assertEqual((out, closed), (b"", False))
            return
        self.assertEqual(replies[0][0], 220, out)
        client = ("127.0.0.1", 1000) if expected is None else expected
        assert address is not None and not isinstance(client, str)
        if address[0] == "192.0.2.9":
            # A trusted client's XCLIENT named another.
            self.assertIn(b"XCLIENT", commands)
            self.assertIn(client[0], ("127.0.0.1", "203.0.113.5"))
            address = (client[0], address[1])
        self.assertEqual(address, client)
        timeouts = [r for r in replies if r[0] == 421 and b"timeout" in b" ".join(r[1])]
        if stallAt is not None and seconds > SOCKET_TIMEOUT and not closedEarly:
            self.assertEqual(len(timeouts), 1, out)
            self.assertEqual(replies[-1], timeouts[0])
            self.assertTrue(closed)
            self.assertEqual(len([x for x in lines if "timeout" in x]), 1, lines)
        else:
            self.assertEqual(timeouts, [])
