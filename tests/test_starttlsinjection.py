# -*- test-case-name: tests.test_starttlsinjection -*-
"""
Plaintext pipelined behind STARTTLS (the command injection of
CVE-2011-0411) over real sockets, on a C{tcp:} listener and behind a PROXY
header on a C{haproxy:tcp:} one: the bytes are discarded, never run, and
one line names the client and how many octets went, never the bytes.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.tlsserving import listen, logLines, tlsServer

#: What the client pipelines behind STARTTLS: a command to inject, with an
#: escape sequence that must never reach the log.
INJECTED = b"MAIL FROM:<evil@example.com>\x1b[31m\r\nRCPT TO:<victim@example.com>\r\n"


def _injecting(port: int, header: bytes) -> tuple[bytes, bytes]:
    """
    Send C{header}, EHLO, then C{STARTTLS} and L{INJECTED} in one write;
    finish the handshake and say C{MAIL FROM} over TLS.

    @return: The reply to STARTTLS (with anything sent in plaintext after
        it) and the replies over TLS.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(header)
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO client.example.com\r\n")
        while f.readline()[3:4] != b" ":
            pass
        s.sendall(b"STARTTLS\r\n" + INJECTED)
        ready = f.readline()
        f.close()
        with ctx.wrap_socket(s) as tls:
            tls.sendall(b"EHLO client.example.com\r\n")
            replies = b""
            while b"250 " not in replies:
                replies += tls.recv(4096)
            tls.sendall(b"RCPT TO:<victim@example.com>\r\nQUIT\r\n")
            while b"221 " not in replies:
                replies += tls.recv(4096)
    return ready, replies


class InjectionTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def serve(self, description: str, **options: Any) -> Any:
        server = tlsServer(self, **options)
        self.lines = logLines(self)
        (port,) = yield listen(self, server, description)
        return port

    @inlineCallbacks
    def check(self, description: str, header: bytes, client: str, **options: Any) -> Any:
        port = yield self.serve(description, **options)
        ready, replies = yield deferToThread(_injecting, port, header)
        self.assertEqual(ready, b"220 2.0.0 Ready to start TLS\r\n")
        # Nothing injected ran: the RCPT over TLS finds no MAIL.
        self.assertIn(b"503 5.5.1 Error: need MAIL command\r\n", replies)
        logged = [line for line in self.lines if "after STARTTLS" in line]
        self.assertEqual(len(logged), 1, self.lines)
        session, address, rest = logged[0].split(" ", 2)
        self.assertEqual(len(session), 8, logged)
        self.assertEqual(address, client, logged)
        self.assertEqual(
            rest,
            f"improper command pipelining after STARTTLS: {len(INJECTED)} octets discarded",
        )
        self.assertFalse([line for line in self.lines if "evil" in line or "\x1b" in line])
        self.assertFalse([line for line in self.lines if "Traceback" in line])

    def test_plain(self) -> Any:
        """
        On a C{tcp:} listener.
        """
        return self.check("tcp:0:interface=127.0.0.1", b"", "127.0.0.1")

    def test_behindProxyHeader(self) -> Any:
        """
        Behind a PROXY header on a C{haproxy:tcp:} listener: the line names
        the client the header names.
        """
        return self.check(
            "haproxy:tcp:0:interface=127.0.0.1",
            b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 25\r\n",
            "192.0.2.7",
        )
