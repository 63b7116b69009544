# -*- test-case-name: tests.test_snilogline -*-
"""
An SNI name that is not a host name (bytes that are not ASCII, control
characters, 255 octets of them), sent by a real TLS client to a real
listener, as the session's C{TLS} log line and C{session.tls} show it:
every such byte escaped (C{\\xff}, C{\\x1b}), never a replacement
character, and the line bounded.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.integration.tlsclients import startTLS
from tests.tlsserving import IMPLICIT, PLAIN, listen, logLines, reactor, tlsServer
from twisted_smtpd._core.session import Session
from twisted_smtpd._serving.logging import SessionLogger


def _handshake(port: int, servername: bytes, starttls: bool) -> None:
    """
    Finish a TLS handshake asking for C{servername} (raw bytes, as
    pyOpenSSL sends them), say QUIT and read to the close.
    """
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        if starttls:
            startTLS(s)
        # pyOpenSSL needs a blocking socket: bounded by the kernel instead.
        s.settimeout(None)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
        tls = SSL.Connection(ctx, s)
        tls.set_tlsext_host_name(servername)
        tls.set_connect_state()
        tls.do_handshake()
        tls.sendall(b"QUIT\r\n")
        try:
            while tls.recv(4096):
                pass
        except (SSL.ZeroReturnError, SSL.SysCallError):
            pass


class SNILogLineTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def serve(self) -> Any:
        """
        A server with a certificate of a CA made for the test, its session
        lines logged; fire with the ports of its C{ssl:} and C{tcp:}
        listeners.
        """
        server = tlsServer(self)
        server.addObserver(SessionLogger())
        self.sessions: list[Session] = []

        def secure(event: str, session: Session, data: dict[str, Any]) -> None:
            if event == "secure":
                self.sessions.append(session)

        server.addObserver(secure)
        self.lines = logLines(self)
        ports = yield listen(self, server, IMPLICIT, PLAIN)
        return ports

    @inlineCallbacks
    def tlsLine(self, servername: bytes, starttls: bool = False) -> Any:
        """
        The C{TLS} line of a session whose client asked for C{servername}.
        """
        implicit, plain = yield self.serve()
        yield deferToThread(_handshake, plain if starttls else implicit, servername, starttls)
        for _ in range(100):
            logged = [line for line in self.lines if " TLS TLSv" in line]
            if logged:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(logged), 1, self.lines)
        return logged[0]

    @inlineCallbacks
    def test_notUTF8(self) -> Any:
        """
        Bytes that are not UTF-8 and an escape sequence are escaped, in the
        line and in C{session.tls.servername}; no replacement character.
        """
        line = yield self.tlsLine(b"mx\xff\xfe.\x1b[31m.example")
        self.assertTrue(line.endswith(" sni=mx\\xff\\xfe.\\x1b[31m.example"), line)
        self.assertNotIn("\ufffd", line)
        self.assertEqual(self.sessions[0].tls.servername, "mx\\xff\\xfe.\x1b[31m.example")

    @inlineCallbacks
    def test_afterSTARTTLS(self) -> Any:
        """
        The same after STARTTLS.
        """
        line = yield self.tlsLine(b"\xc3(\x85.example", starttls=True)
        self.assertTrue(line.endswith(" sni=\\xc3(\\x85.example"), line)

    @inlineCallbacks
    def test_bounded(self) -> Any:
        """
        The longest SNI name, every octet escaped, is cut in the line.
        """
        line = yield self.tlsLine(b"\xff" * 255)
        sni = line.split(" sni=", 1)[1]
        self.assertEqual(sni, "\\xff" * 50 + "...")
