# -*- test-case-name: tests.integration.test_nagle -*-
"""
Nagle's algorithm is off on every TCP session, whatever the listener puts
between the socket and the session (TLS, a PROXY header, both, STARTTLS
behind a PROXY header): a reply written while the client has not yet
acknowledged the one before leaves at once, not after the client's delayed
acknowledgement.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.integration.test_halfclose import tlsServer
from twisted_smtpd._serving.flow import socketUnder
from twisted_smtpd.handlers import BaseHandler

HEADER = b"PROXY TCP4 192.0.2.9 192.0.2.1 4000 25\r\n"


def _readLine(stream: Any, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        chunk = stream.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed")
        got += chunk
    return got


def _session(port: int, ctx: ssl.SSLContext, header: bytes, implicit: bool, starttls: bool) -> Any:
    """
    Open a session and get it to the point where the server reads commands
    (over TLS where asked): send EHLO and read its reply.  Return the
    client's socket, still open.
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(header)
    stream: Any = raw
    if implicit:
        stream = ctx.wrap_socket(raw)
    _readLine(stream, b"220 ")
    if starttls:
        stream.sendall(b"EHLO c\r\n")
        _readLine(stream, b"250 ")
        stream.sendall(b"STARTTLS\r\n")
        _readLine(stream, b"220 ")
        stream = ctx.wrap_socket(raw)
    stream.sendall(b"EHLO c\r\n")
    _readLine(stream, b"250 ")
    return stream


class NoDelayTests(TestCase):
    timeout = 30

    def _serve(self, listen: str) -> Any:
        server, ctx = tlsServer(self.mktemp(), BaseHandler(), useProxy=["127.0.0.0/8"])
        return server, ctx, server.listen(listen)

    @inlineCallbacks
    def _check(
        self, listen: str, header: bytes = b"", implicit: bool = False, starttls: bool = False
    ) -> Any:
        server, ctx, d = self._serve(listen)
        port = yield d
        self.addCleanup(port.stopListening)
        client = yield deferToThread(_session, port.getHost().port, ctx, header, implicit, starttls)
        self.addCleanup(client.close)
        (protocol,) = server.factory.connections
        connection = socketUnder(protocol.transport)
        option = connection.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self.assertTrue(option)
        connection.abortConnection()

    def test_tcp(self) -> Any:
        """
        A C{tcp:} listener's session.
        """
        return self._check("tcp:0:interface=127.0.0.1")

    def test_startTLS(self) -> Any:
        """
        A C{tcp:} session after STARTTLS.
        """
        return self._check("tcp:0:interface=127.0.0.1", starttls=True)

    def test_implicitTLS(self) -> Any:
        """
        An C{ssl:} listener's session.
        """
        return self._check("ssl:0:interface=127.0.0.1", implicit=True)

    def test_proxy(self) -> Any:
        """
        A C{haproxy:tcp:} listener's session.
        """
        return self._check("haproxy:tcp:0:interface=127.0.0.1", HEADER)

    def test_proxyStartTLS(self) -> Any:
        """
        A C{haproxy:tcp:} session after STARTTLS.
        """
        return self._check("haproxy:tcp:0:interface=127.0.0.1", HEADER, starttls=True)

    def test_proxyImplicitTLS(self) -> Any:
        """
        A C{haproxy:ssl:} listener's session.
        """
        return self._check("haproxy:ssl:0:interface=127.0.0.1", HEADER, implicit=True)

    @inlineCallbacks
    def test_unix(self) -> Any:
        """
        A C{unix:} listener's session, which has no Nagle to turn off,
        works.
        """
        path = self.mktemp()
        server, ctx, d = self._serve(f"unix:{path}")
        port = yield d
        self.addCleanup(port.stopListening)

        def session() -> bytes:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(path)
                _readLine(s, b"220 ")
                s.sendall(b"EHLO c\r\n")
                return _readLine(s, b"250 ")

        out = yield deferToThread(session)
        self.assertIn(b"250", out)
