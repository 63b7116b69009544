# -*- test-case-name: tests.test_tlsonplainport -*-
"""
A real TLS client (one configured for implicit TLS) talking to a plaintext
C{tcp:} listener, and one sending an SSL 2.0 style hello: the server answers
421, closes at once, logs one refusal line and no traceback, and keeps no
file descriptor for it.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.tlsserving import PLAIN, listen, logLines, sessionsGone
from twisted_smtpd import SMTPServer
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.logging import SessionLogger
from twisted_smtpd.handlers import BaseHandler

#: An SSL 2.0 style ClientHello offering TLS 1.0.
SSLV2_HELLO = bytes.fromhex("802e0103010015000000100100800300800700c0060040020080040080") + bytes(
    16
)


def _implicitTLSClient(port: int) -> str:
    """
    A client that begins a TLS handshake at once.

    @return: Its error.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            ctx.wrap_socket(s).close()
        except (ssl.SSLError, OSError) as e:
            return str(e)
    return "handshake succeeded"


def _sslv2Client(port: int) -> bytes:
    """
    Send an SSL 2.0 style hello (without a line feed) and read to the close.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(SSLV2_HELLO)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out


def _openFiles() -> int:
    return len(os.listdir("/proc/self/fd"))


class PlainPortHandshakeTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def serve(self) -> Any:
        self.server = SMTPServer(
            BaseHandler(), ServerOptions(name="mx.example.com", disableReverseLookup=True)
        )
        self.server.addObserver(SessionLogger())
        self.lines = logLines(self)
        (port,) = yield listen(self, self.server, PLAIN)
        return port

    def sessionsGone(self) -> Any:
        return sessionsGone(self, self.server)

    @inlineCallbacks
    def test_clientHello(self) -> Any:
        """
        A client configured for implicit TLS: 421, one C{reject:} line with
        the reply, the connection closed.
        """
        port = yield self.serve()
        yield deferToThread(_implicitTLSClient, port)
        yield self.sessionsGone()
        rejected = [line for line in self.lines if " reject: " in line]
        self.assertEqual(len(rejected), 1, self.lines)
        # The first client made what stays (the threads' pool); the next
        # ones leave nothing open.
        before = _openFiles()
        for _ in range(5):
            yield deferToThread(_implicitTLSClient, port)
        yield self.sessionsGone()
        self.assertTrue(
            rejected[0].endswith(": 421 4.7.0 Error: TLS handshake without STARTTLS"), rejected
        )
        self.assertFalse([line for line in self.lines if "Traceback" in line])
        self.assertEqual(_openFiles(), before)

    @inlineCallbacks
    def test_sslv2Hello(self) -> Any:
        """
        An SSL 2.0 style hello without a line feed gets its 421 at once.
        """
        port = yield self.serve()
        out = yield deferToThread(_sslv2Client, port)
        self.assertTrue(out.endswith(b"\r\n421 4.7.0 Error: TLS handshake without STARTTLS\r\n"))
        yield self.sessionsGone()
        rejected = [line for line in self.lines if " reject: " in line]
        self.assertEqual(len(rejected), 1, self.lines)
