# -*- test-case-name: tests.integration.test_halfclose -*-
"""
A client that shuts its sending side down right after the end of its
message, or right after a command whose hook answers late, over a real
socket (plain TCP, and behind a PROXY header): it still gets its replies.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.certs import CertificateAuthority
from twisted_smtpd import SMTPServer
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

reactor: Any = _reactor


class SlowData(BaseHandler):
    """
    Answers each message 0.2 s after its body ended: long after the
    client's FIN is in the server's socket.
    """

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[str]:
        stream.drain()
        d: Deferred[str] = Deferred()
        reactor.callLater(0.2, d.callback, "queued")
        return d


class SlowMail(BaseHandler):
    """
    Answers each MAIL 0.2 s after it came: long after the client's FIN is
    in the server's socket.
    """

    def onMailFrom(self, address: Address, session: Session) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        reactor.callLater(0.2, d.callback, None)
        return d


def _readAll(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(1000):
        out += chunk
    return out


def _sendMessage(s: socket.socket, before: bytes) -> None:
    """
    Send C{before}, an envelope and DATA, wait for the 354, then send a
    whole body with its final dot.
    """
    s.sendall(before + b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    got = b""
    while b"354" not in got:
        chunk = s.recv(1000)
        if not chunk:
            break
        got += chunk
    s.sendall(b"hello\r\n.\r\n")


def _halfClosingAfterMail(port: int, header: bytes = b"") -> bytes:
    """
    Send MAIL, shut the sending side down at once, and read every reply
    until the server closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(header)
        s.recv(1000)
        s.sendall(b"EHLO c\r\n")
        s.recv(1000)
        s.sendall(b"MAIL FROM:<a@example.com>\r\n")
        s.shutdown(socket.SHUT_WR)
        return _readAll(s)


def _halfClosingClient(port: int) -> bytes:
    """
    Send a whole message, shut the sending side down after the dot, and
    read every reply until the server closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.recv(1000)
        s.sendall(b"EHLO c\r\n")
        s.recv(1000)
        _sendMessage(s, b"")
        s.shutdown(socket.SHUT_WR)
        return _readAll(s)


def _headerThenFin(port: int) -> bytes:
    """
    Send a PROXY header, shut the sending side down, and read until the
    server closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"PROXY TCP4 192.0.2.9 192.0.2.1 4000 25\r\n")
        s.shutdown(socket.SHUT_WR)
        return _readAll(s)


def _finAfterDotOverTLS(port: int, ctx: ssl.SSLContext) -> bytes:
    """
    After STARTTLS, send a whole message, then a bare FIN (no TLS
    close_notify), and return the raw bytes the server sends after it.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.recv(1000)
        raw.sendall(b"EHLO c\r\n")
        raw.recv(1000)
        raw.sendall(b"STARTTLS\r\n")
        raw.recv(1000)
        s = ctx.wrap_socket(raw)
        _sendMessage(s, b"EHLO c\r\n")
        # The TLS object is dropped: what follows is read undecrypted.
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := socket.socket.recv(s, 1000):
            out += chunk
        return out


class HalfCloseTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_replyAfterHalfClose(self) -> Any:
        """
        The 250 of a message whose client half-closed after the dot reaches
        the client, then the server closes.
        """
        server = SMTPServer(
            SlowData(), ServerOptions(name="mx.example.com", disableReverseLookup=True)
        )
        port = yield server.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(port.stopListening)
        out = yield deferToThread(_halfClosingClient, port.getHost().port)
        self.assertIn(b"250 2.0.0 queued", out)

    @inlineCallbacks
    def test_repliesAfterHalfCloseBehindSlowHook(self) -> Any:
        """
        A client that sends MAIL and half-closes at once, while
        C{onMailFrom} has not answered, gets its reply, then the server
        closes.
        """
        server = SMTPServer(
            SlowMail(), ServerOptions(name="mx.example.com", disableReverseLookup=True)
        )
        port = yield server.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(port.stopListening)
        out = yield deferToThread(_halfClosingAfterMail, port.getHost().port)
        self.assertTrue(out.endswith(b"250 2.1.0 Accepted\r\n"), out)

    @inlineCallbacks
    def test_repliesAfterHalfCloseBehindProxy(self) -> Any:
        """
        The same behind a PROXY header (C{haproxy:} listener): the front
        end's half-close reaches the session.
        """
        server = SMTPServer(
            SlowMail(),
            ServerOptions(
                name="mx.example.com", disableReverseLookup=True, useProxy=["127.0.0.0/8"]
            ),
        )
        port = yield server.listen("haproxy:tcp:0:interface=127.0.0.1")
        self.addCleanup(port.stopListening)
        header = b"PROXY TCP4 192.0.2.9 192.0.2.1 4000 25\r\n"
        out = yield deferToThread(_halfClosingAfterMail, port.getHost().port, header)
        self.assertTrue(out.endswith(b"250 2.1.0 Accepted\r\n"), out)

    @inlineCallbacks
    def test_tlsBehindProxy(self) -> Any:
        """
        On a C{haproxy:ssl:} listener, a front end that sends its header and
        shuts its sending side down is disconnected, with no error.
        """
        issued = CertificateAuthority(self.mktemp()).server("mx.example.com")
        server = SMTPServer(
            SlowMail(),
            ServerOptions(
                name="mx.example.com",
                disableReverseLookup=True,
                useProxy=["127.0.0.0/8"],
                certificate=issued.certificatePath,
                privateKey=issued.keyPath,
            ),
        )
        port = yield server.listen("haproxy:ssl:0:interface=127.0.0.1")
        self.addCleanup(port.stopListening)
        out = yield deferToThread(_headerThenFin, port.getHost().port)
        self.assertEqual(out, b"")
        self.assertEqual(len(server.factory.connections), 0)

    @inlineCallbacks
    def test_replyAfterFinOverTLS(self) -> Any:
        """
        After STARTTLS, where no half-close is told, the end of a body still
        stops reading until C{onData} answers, so that a FIN behind the dot
        does not end the session before its reply: the reply (a TLS record)
        still leaves before the server closes.
        """
        ca = CertificateAuthority(self.mktemp())
        issued = ca.server("mx.example.com")
        ctx = ssl.create_default_context(cafile=ca.certificatePath)
        ctx.check_hostname = False
        server = SMTPServer(
            SlowData(),
            ServerOptions(
                name="mx.example.com",
                disableReverseLookup=True,
                certificate=issued.certificatePath,
                privateKey=issued.keyPath,
            ),
        )
        port = yield server.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(port.stopListening)
        out = yield deferToThread(_finAfterDotOverTLS, port.getHost().port, ctx)
        self.assertNotEqual(out, b"")

    test_replyAfterFinOverTLS.todo = (  # type: ignore[attr-defined]
        "the reply is written once onData answers, reading resumes with it, and"
        " the FIN read before the reply leaves drops it with the connection"
    )
