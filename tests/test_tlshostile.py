# -*- test-case-name: tests.test_tlshostile -*-
"""
Hostile TLS clients over real sockets, after STARTTLS and on an C{ssl:}
listener: one that stalls in the middle of its handshake, one that closes
or resets it or sends its close_notify in its middle, one sending a
ClientHello far too large, an SSL 2.0 style hello, and a TLS 1.2 client
asking to renegotiate.  Each connection ends with one clear log line, no
traceback, and no file descriptor left open.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.integration.tlsclients import startTLS
from tests.tlsserving import IMPLICIT, PLAIN, listen, logLines, reactor, sessionsGone, tlsServer

#: The handshake deadline of the server under test, in seconds.
HANDSHAKE_TIMEOUT = 1

SSLV2_HELLO = bytes.fromhex("802e0103010015000000100100800300800700c0060040020080040080") + bytes(
    16
)


def _connect(port: int, starttls: bool) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if starttls:
        startTLS(s)
    return s


def _readToClose(s: socket.socket) -> None:
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass


def stall(port: int, starttls: bool) -> None:
    """
    The first octets of a ClientHello, then silence until the server ends it.
    """
    with _connect(port, starttls) as s:
        s.sendall(bytes.fromhex("1603010200"))
        _readToClose(s)


def closeMidway(port: int, starttls: bool) -> None:
    """
    Part of a ClientHello, then a FIN.
    """
    with _connect(port, starttls) as s:
        s.sendall(bytes.fromhex("160301020001"))


def resetMidway(port: int, starttls: bool) -> None:
    """
    Part of a ClientHello, then a reset.
    """
    s = _connect(port, starttls)
    s.sendall(bytes.fromhex("160301020001"))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def hugeHello(port: int, starttls: bool) -> None:
    """
    A ClientHello claiming 16 MiB, sent in full records until the server
    gives up.
    """
    with _connect(port, starttls) as s:
        message = b"\x01\xff\xff\xf0\x03\x03" + b"A" * 16000
        try:
            for _ in range(100):
                s.sendall(b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message)
                message = b"B" * 16000
        except OSError:
            return
        _readToClose(s)


def clientHello() -> bytes:
    """
    The first flight of a pyOpenSSL client: its ClientHello records.
    """
    client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    client.set_connect_state()
    with contextlib.suppress(SSL.WantReadError):
        client.do_handshake()
    return client.bio_read(65536)


#: A close_notify alert in a plaintext record (RFC 8446 section 6.1: either
#: side may send it at any time, the handshake not finished too).
CLOSE_NOTIFY = bytes.fromhex("15030300020100")


def closeNotifyMidway(port: int, starttls: bool) -> None:
    """
    A ClientHello, then a close_notify before the handshake has finished.
    """
    with _connect(port, starttls) as s:
        s.sendall(clientHello() + CLOSE_NOTIFY)
        _readToClose(s)


def sslv2(port: int, starttls: bool) -> None:
    """
    An SSL 2.0 style ClientHello.
    """
    with _connect(port, starttls) as s:
        s.sendall(SSLV2_HELLO)
        _readToClose(s)


def renegotiate(port: int, starttls: bool) -> None:
    """
    A TLS 1.2 client that finishes its handshake, then asks for another.
    """
    s = _connect(port, starttls)
    s.settimeout(None)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    tls = SSL.Connection(context, s)
    tls.set_connect_state()
    tls.do_handshake()
    if not starttls:
        tls.recv(4096)
    tls.renegotiate()
    try:
        tls.do_handshake()
        tls.sendall(b"NOOP\r\n")
        tls.recv(4096)
    except SSL.Error:
        pass
    s.close()


class HostileHandshakeTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def serve(self) -> Any:
        self.server = tlsServer(self, tlsHandshakeTimeout=HANDSHAKE_TIMEOUT)
        self.lines = logLines(self)
        ports = yield listen(self, self.server, IMPLICIT, PLAIN)
        return ports

    def sessionsGone(self) -> Any:
        return sessionsGone(self, self.server)

    @inlineCallbacks
    def check(self, client: Callable[[int, bool], None], *expected: str) -> Any:
        """
        C{client} after STARTTLS and on the C{ssl:} listener: each of its
        connections leaves one line containing one of C{expected}, and
        nothing stays open.
        """
        implicit, plain = yield self.serve()
        # A first connection makes what stays (the threads' pool).
        yield deferToThread(closeMidway, plain, True)
        yield self.sessionsGone()
        before = len(os.listdir("/proc/self/fd"))
        del self.lines[:]
        yield deferToThread(client, plain, True)
        yield deferToThread(client, implicit, False)
        # A connection reset at once may be accepted after the client is
        # done: its line tells it was.
        for _ in range(200):
            logged = [line for line in self.lines if any(text in line for text in expected)]
            if len(logged) >= 2:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        yield self.sessionsGone()
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)
        logged = [line for line in self.lines if any(text in line for text in expected)]
        self.assertEqual(len(logged), 2, self.lines)
        for line in logged:
            self.assertEqual(line.split(" ")[1], "127.0.0.1", line)
        self.assertFalse([line for line in self.lines if "Traceback" in line], self.lines)
        self.assertFalse([line for line in self.lines if "Unhandled" in line], self.lines)

    def test_stall(self) -> Any:
        """
        A stalled handshake is aborted at its deadline.
        """
        return self.check(stall, f"TLS handshake timeout ({HANDSHAKE_TIMEOUT} s)")

    def test_closeMidway(self) -> Any:
        """
        A client closing in the middle of its handshake.
        """
        return self.check(closeMidway, "TLS handshake failed: ")

    def test_resetMidway(self) -> Any:
        """
        A client resetting in the middle of its handshake.
        """
        return self.check(resetMidway, "TLS handshake failed: ")

    def test_closeNotifyMidway(self) -> Any:
        """
        A client sending its close_notify in the middle of its handshake:
        a close, with no traceback.
        """
        return self.check(closeNotifyMidway, "TLS handshake failed: connection closed")

    def test_hugeHello(self) -> Any:
        """
        A ClientHello larger than OpenSSL takes.
        """
        return self.check(hugeHello, "TLS handshake failed: excessive message size")

    def test_sslv2Hello(self) -> Any:
        """
        An SSL 2.0 style hello: OpenSSL 4 fails the handshake at once
        ("wrong version number"); with OpenSSL 3 (the floors'
        C{cryptography}) the handshake may instead wait for the rest of the
        record the hello's length claims, and is then aborted at its
        deadline.  One line either way.
        """
        return self.check(
            sslv2, "TLS handshake failed: ", f"TLS handshake timeout ({HANDSHAKE_TIMEOUT} s)"
        )

    def test_renegotiation(self) -> Any:
        """
        A TLS 1.2 client asking to renegotiate is refused; the alert it
        answers with ends its session with one line.
        """
        return self.check(renegotiate, "TLS error: ")
