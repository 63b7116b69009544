# -*- test-case-name: tests.integration.test_halfclose -*-
"""
A client that shuts its sending side down right after the end of its
message, or right after a command whose hook answers late, over a real
socket (plain TCP, behind a PROXY header, and over TLS): it still gets its
replies.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
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


def _finAfterDotOverTLS(
    port: int,
    ctx: ssl.SSLContext,
    starttls: bool = True,
    header: bytes = b"",
    run: bytes | None = None,
) -> bytes:
    """
    Over TLS (after STARTTLS, or from the start), send a whole message (or
    C{run}, in one write), then a bare FIN (no TLS close_notify), and return
    what the server says after it, decrypted.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(header)
        if starttls:
            raw.recv(1000)
            raw.sendall(b"EHLO c\r\n")
            raw.recv(1000)
            raw.sendall(b"STARTTLS\r\n")
            raw.recv(1000)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing)

        def exchange(step: Any) -> bytes:
            # Run a TLS step, moving records until it needs no more.
            while True:
                try:
                    result: bytes = step()
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    data = raw.recv(65536)
                    if not data:
                        raise ConnectionError("the server closed") from None
                    incoming.write(data)
                    continue
                raw.sendall(outgoing.read())
                return result

        def readUntil(marker: bytes) -> None:
            got = b""
            while marker not in got:
                got += exchange(lambda: tls.read(65536))

        exchange(tls.do_handshake)
        if not starttls:
            readUntil(b"220 ")
        exchange(lambda: tls.write(b"EHLO c\r\n"))
        readUntil(b"250 ")
        if run is not None:
            exchange(lambda: tls.write(run))
        else:
            envelope = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
            exchange(lambda: tls.write(envelope))
            readUntil(b"354 ")
            exchange(lambda: tls.write(b"hello\r\n.\r\n"))
        raw.shutdown(socket.SHUT_WR)
        incoming.write(_readAll(raw))
        out = b""
        with contextlib.suppress(ssl.SSLError):
            while chunk := tls.read(65536):
                out += chunk
        return out


def _commandRightAfterHandshakeThenFin(
    port: int, ctx: ssl.SSLContext, gap: float, header: bytes = b""
) -> bytes:
    """
    After STARTTLS, complete the TLS handshake, wait C{gap} seconds (busily:
    the command is meant to arrive while the server's session tickets, TLS
    1.3, may still wait to be sent), send C{NOOP}, then a bare FIN.  Return
    what the server says after the handshake, decrypted, with the name of
    any error that ended the reading.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(header)
        raw.recv(1000)
        raw.sendall(b"EHLO c\r\nSTARTTLS\r\n")
        got = b""
        while b"220 2.0.0" not in got:
            got += raw.recv(1000)
        with ctx.wrap_socket(raw) as tls:
            end = time.perf_counter() + gap
            while time.perf_counter() < end:
                pass
            tls.sendall(b"NOOP\r\n")
            with socket.socket(fileno=os.dup(tls.fileno())) as duplicate:
                duplicate.shutdown(socket.SHUT_WR)
            out = b""
            try:
                while chunk := tls.recv(4096):
                    out += chunk
            except (OSError, ssl.SSLError) as e:
                out += f"<{type(e).__name__}>".encode()
            return out


def tlsServer(
    folder: str, handler: BaseHandler, **options: Any
) -> tuple[SMTPServer, ssl.SSLContext]:
    """
    A server for C{handler} with a certificate made in C{folder}, and a
    client context trusting it.
    """
    ca = CertificateAuthority(folder)
    issued = ca.server("mx.example.com")
    ctx = ssl.create_default_context(cafile=ca.certificatePath)
    ctx.check_hostname = False
    server = SMTPServer(
        handler,
        ServerOptions(
            name="mx.example.com",
            disableReverseLookup=True,
            certificate=issued.certificatePath,
            privateKey=issued.keyPath,
            **options,
        ),
    )
    return server, ctx


class QuickData(BaseHandler):
    """
    Answers each message as soon as its body ended.
    """

    def onData(self, stream: IMessageStream, session: Session) -> str:
        stream.drain()
        return "queued"


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
        server, _ = tlsServer(self.mktemp(), SlowMail(), useProxy=["127.0.0.0/8"])
        port = yield server.listen("haproxy:ssl:0:interface=127.0.0.1")
        self.addCleanup(port.stopListening)
        out = yield deferToThread(_headerThenFin, port.getHost().port)
        self.assertEqual(out, b"")
        self.assertEqual(len(server.factory.connections), 0)

    def _serveTLS(self, handler: BaseHandler, listen: str, **options: Any) -> Any:
        """
        Listen on C{listen} with a certificate made for the test; fire with
        the port number and a client context trusting it.
        """
        server, ctx = tlsServer(self.mktemp(), handler, **options)
        d = server.listen(listen)

        def listening(port: Any) -> tuple[int, ssl.SSLContext]:
            self.addCleanup(port.stopListening)
            return port.getHost().port, ctx

        return d.addCallback(listening)

    @inlineCallbacks
    def _finBehindProxy(self, listen: str, starttls: bool) -> Any:
        """
        Behind a PROXY header on C{listen}, a message over TLS followed by a
        FIN; fire with what the server said after it.
        """
        port, ctx = yield self._serveTLS(SlowData(), listen, useProxy=["127.0.0.0/8"])
        header = b"PROXY TCP4 192.0.2.9 192.0.2.1 4000 25\r\n"
        return (yield deferToThread(_finAfterDotOverTLS, port, ctx, starttls, header))

    @inlineCallbacks
    def test_replyAfterFinOverTLS(self) -> Any:
        """
        After STARTTLS, where no half-close is told, a FIN right behind the
        final dot does not cost the message its reply: the reply (a TLS
        record) leaves before the server reads the FIN and closes.
        """
        port, ctx = yield self._serveTLS(SlowData(), "tcp:0:interface=127.0.0.1")
        out = yield deferToThread(_finAfterDotOverTLS, port, ctx)
        self.assertEqual(out, b"250 2.0.0 queued\r\n")

    @inlineCallbacks
    def test_immediateReplyAfterFinOverTLS(self) -> Any:
        """
        The same when C{onData} answers at once, while the body is read.
        """
        port, ctx = yield self._serveTLS(QuickData(), "tcp:0:interface=127.0.0.1")
        out = yield deferToThread(_finAfterDotOverTLS, port, ctx)
        self.assertEqual(out, b"250 2.0.0 queued\r\n")

    @inlineCallbacks
    def test_replyAfterFinOverImplicitTLS(self) -> Any:
        """
        The same on an C{ssl:} listener.
        """
        port, ctx = yield self._serveTLS(SlowData(), "ssl:0:interface=127.0.0.1")
        out = yield deferToThread(_finAfterDotOverTLS, port, ctx, False)
        self.assertEqual(out, b"250 2.0.0 queued\r\n")

    @inlineCallbacks
    def test_replyAfterFinOverTLSBehindProxy(self) -> Any:
        """
        The same on a C{haproxy:ssl:} listener.
        """
        out = yield self._finBehindProxy("haproxy:ssl:0:interface=127.0.0.1", False)
        self.assertEqual(out, b"250 2.0.0 queued\r\n")

    @inlineCallbacks
    def test_replyAfterFinOverStartTLSBehindProxy(self) -> Any:
        """
        The same after STARTTLS on a C{haproxy:tcp:} listener, where the TLS
        layer starts under the PROXY wrapper: the session hears of the
        handshake, answers the EHLO after it, and the message's reply
        arrives.
        """
        out = yield self._finBehindProxy("haproxy:tcp:0:interface=127.0.0.1", True)
        self.assertEqual(out, b"250 2.0.0 queued\r\n")

    @inlineCallbacks
    def test_replyRightAfterHandshakeThenFin(self) -> Any:
        """
        After STARTTLS over TLS 1.3, a command sent right after the
        handshake and followed by a FIN gets its reply, also when it comes
        while the server's session tickets still wait to be sent: the reply
        leaves with them before the FIN is read.  Sixty tries at gaps of 0
        to 500 microseconds after the handshake, on a C{tcp:} and a
        C{haproxy:tcp:} listener.
        """
        header = b"PROXY TCP4 192.0.2.9 192.0.2.1 4000 25\r\n"
        for listen, sent in (
            ("tcp:0:interface=127.0.0.1", b""),
            ("haproxy:tcp:0:interface=127.0.0.1", header),
        ):
            port, ctx = yield self._serveTLS(QuickData(), listen, useProxy=["127.0.0.0/8"])
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            lost = []
            for gap in (0, 50, 100, 200, 300, 500) * 10:
                out = yield deferToThread(
                    _commandRightAfterHandshakeThenFin, port, ctx, gap / 1e6, sent
                )
                if out != b"250 2.0.0 OK\r\n":
                    lost.append((gap, out))
            self.assertEqual(lost, [], listen)

    @inlineCallbacks
    def test_pipelinedRunThenFinOverTLS(self) -> Any:
        """
        After STARTTLS, the replies to a pipelined run of commands followed
        by a FIN all arrive, whether or not they fill whole batches of 64
        (the replies of a full batch wait in the TLS layer for the rest of
        the run, and still leave before the FIN is read).
        """
        # Runs of NOOPs past the junk command limit: no limit here.
        port, ctx = yield self._serveTLS(
            QuickData(), "tcp:0:interface=127.0.0.1", maxJunkCommands=0
        )
        for n in (63, 64, 65, 128):
            out = yield deferToThread(_finAfterDotOverTLS, port, ctx, True, b"", b"NOOP\r\n" * n)
            self.assertEqual(out, b"250 2.0.0 OK\r\n" * n, f"{n} NOOPs")
        out = yield deferToThread(
            _finAfterDotOverTLS, port, ctx, True, b"", b"NOOP\r\n" * 63 + b"QUIT\r\n"
        )
        self.assertTrue(out.endswith(b"221 2.0.0 mx.example.com Closing connection\r\n"), out[-80:])
