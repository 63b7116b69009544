# -*- test-case-name: tests.integration.test_turnwriter -*-
"""
Sessions sharing a server over real plain TCP sockets, whose replies wait
for the end of the reactor's turn: every reply arrives, in order, including
those to a client that shuts its sending side down right behind its
commands, the one before a STARTTLS switch and the one that ends a session.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.integration.test_halfclose import tlsServer
from twisted_smtpd.handlers import BaseHandler


def _readUntil(s: Any, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def _sessions(port: int, ctx: ssl.SSLContext) -> list[bytes]:
    """
    Open four sessions at once; on each, in turn: pipeline commands and
    read the replies; shut down the sending side behind a command; switch
    to TLS; and quit.  Return what each session read.
    """
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
    try:
        for client in clients:
            _readUntil(client, b"220 ")
        for client in clients:
            client.sendall(b"EHLO c\r\nNOOP\r\nNOOP\r\n")
        pipelined = clients[0]
        got = [_readUntil(pipelined, b"250 2.0.0 OK\r\n250 2.0.0 OK\r\n")]
        halfClosed = clients[1]
        halfClosed.sendall(b"RSET\r\n")
        halfClosed.shutdown(socket.SHUT_WR)
        got.append(_readUntil(halfClosed, b"Flushed\r\n"))
        starting = clients[2]
        _readUntil(starting, b"250 2.0.0 OK\r\n250 2.0.0 OK\r\n")
        starting.sendall(b"STARTTLS\r\n")
        got.append(_readUntil(starting, b"\r\n"))
        with ctx.wrap_socket(starting) as secure:
            secure.sendall(b"EHLO c\r\n")
            got.append(_readUntil(secure, b"250 "))
        quitting = clients[3]
        _readUntil(quitting, b"250 2.0.0 OK\r\n250 2.0.0 OK\r\n")
        quitting.sendall(b"QUIT\r\n")
        got.append(_readUntil(quitting, b"\r\n"))
        got.append(quitting.recv(100))
        return got
    finally:
        for client in clients:
            client.close()


class ClosingHandler(BaseHandler):
    """
    Counts the sessions that ended.
    """

    def __init__(self) -> None:
        self.closed = 0

    def onClose(self, session: Any) -> None:
        self.closed += 1


class TurnWriterTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_sessionsShareTurns(self) -> Any:
        """
        Four sessions open at once all get their replies, whole and in
        order, and all end once their clients have closed.
        """
        from twisted.internet import reactor

        handler = ClosingHandler()
        server, ctx = tlsServer(self.mktemp(), handler)
        port = yield server.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(port.stopListening)
        got = yield deferToThread(_sessions, port.getHost().port, ctx)
        # The server may see the last of the four closes after the clients
        # returned: a session still open would be left to the next test.
        for _ in range(200):
            if handler.closed == 4:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(handler.closed, 4)
        self.assertEqual(server.factory.connections, set())
        pipelined, halfClosed, starting, secure, quitting, after = got
        self.assertTrue(pipelined.startswith(b"250-mx.example.com"), pipelined)
        self.assertTrue(pipelined.endswith(b"250 2.0.0 OK\r\n250 2.0.0 OK\r\n"), pipelined)
        self.assertTrue(
            halfClosed.endswith(b"250 2.0.0 OK\r\n250 2.0.0 OK\r\n250 2.0.0 Flushed\r\n"),
            halfClosed[-60:],
        )
        self.assertEqual(starting, b"220 2.0.0 Ready to start TLS\r\n")
        self.assertTrue(secure.startswith(b"250-mx.example.com"), secure)
        self.assertEqual(quitting, b"221 2.0.0 mx.example.com Closing connection\r\n")
        self.assertEqual(after, b"")


def _quitAmongOthers(port: int) -> tuple[list[bytes], list[bytes]]:
    """
    With a second session open, and then alone: QUIT, and read the reply
    and the end of the connection.
    """
    other = socket.create_connection(("127.0.0.1", port), timeout=10)
    ended = []
    try:
        _readUntil(other, b"220 ")
        first = socket.create_connection(("127.0.0.1", port), timeout=10)
        _readUntil(first, b"220 ")
        for client in (first, other):
            with client:
                client.sendall(b"HELO c\r\nQUIT\r\n")
                got = _readUntil(client, b"Closing connection\r\n")
                ended.append([got[got.index(b"221 ") :], client.recv(100)])
    finally:
        other.close()
    return ended[0], ended[1]


class CloseTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_quitCloses(self) -> Any:
        """
        A session that ends with QUIT over plain TCP, with another session
        open and alone, gets its 221 and then the end of the connection;
        its C{onClose} runs, the server forgets it, and its socket is no
        longer watched by the reactor.
        """
        from twisted.internet import reactor, tcp

        def connections() -> set[object]:
            watched = set(reactor.getReaders()) | set(reactor.getWriters())  # type: ignore[attr-defined]
            return {s for s in watched if isinstance(s, tcp.Server)}

        handler = ClosingHandler()
        server, _ = tlsServer(self.mktemp(), handler)
        port = yield server.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(port.stopListening)
        before = connections()
        amongOthers, alone = yield deferToThread(_quitAmongOthers, port.getHost().port)
        bye = b"221 2.0.0 mx.example.com Closing connection\r\n"
        self.assertEqual(amongOthers, [bye, b""])
        self.assertEqual(alone, [bye, b""])
        for _ in range(50):
            if handler.closed == 2:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(handler.closed, 2)
        self.assertEqual(server.factory.connections, set())
        self.assertEqual(connections() - before, set())
