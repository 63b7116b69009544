# -*- test-case-name: tests.integration.test_resetbehindhook -*-
"""
A client that resets its connection (C{SO_LINGER} 0) while a hook has not
answered and the session has stopped reading (commands pipelined behind the
held one; a message over TLS, whose reading stops at the end of its body):
over a real socket, the session ends within the deadlines' second, not when
the hook answers, so it gives its C{maxClients} place back; the hook's late
answer is then dropped quietly.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests import replies
from tests.integration.test_halfclose import tlsServer
from twisted_smtpd import SMTPServer
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

reactor: Any = _reactor

#: How long the session may take to end after the reset: the deadlines'
#: timer runs once a second.
BOUND = 10.0


class HeldHooks(BaseHandler):
    """
    Holds every message, and every recipient when C{recipients}, until the
    test answers them; C{called} is set (from the reactor thread) when one
    is held.
    """

    def __init__(self, recipients: bool = True) -> None:
        self.held: list[Deferred[None]] = []
        self.called = threading.Event()
        self._recipients = recipients

    def _hold(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.held.append(d)
        self.called.set()
        return d

    def onRcptTo(self, address: Address, session: Session) -> Deferred[None] | None:
        return self._hold() if self._recipients else None

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[None]:
        stream.drain()
        return self._hold()

    def answerAll(self) -> None:
        for d in self.held:
            d.callback(None)


def _readUntil(s: Any, marker: bytes) -> None:
    got = b""
    while marker not in got:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed before {marker!r}: {got!r}")
        got += chunk


def _reset(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _plainServer(handler: Any, **options: Any) -> SMTPServer:
    """
    A server of C{handler} without reverse lookups, with C{options}.
    """
    return SMTPServer(
        handler, ServerOptions(name="mx.example.com", disableReverseLookup=True, **options)
    )


def _heldAtRcpt(s: socket.socket, called: threading.Event) -> None:
    """
    Send RCPT with NOOP right behind it in one write and wait until the
    recipient's hook is held.
    """
    _readUntil(s, b"220 ")
    s.sendall(b"EHLO c\r\n")
    _readUntil(s, b"250 ")
    s.sendall(b"MAIL FROM:<a@example.com>\r\n")
    _readUntil(s, b"250 ")
    s.sendall(b"RCPT TO:<b@example.com>\r\nNOOP\r\n")
    if not called.wait(10):
        raise AssertionError("onRcptTo was not called")


def _pipelineThenReset(port: int, called: threading.Event, finFirst: bool = False) -> None:
    """
    Send RCPT with NOOP right behind it in one write, wait until the
    recipient's hook is held, then reset the connection (after a FIN, when
    C{finFirst}).
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        _heldAtRcpt(s, called)
        if finFirst:
            s.shutdown(socket.SHUT_WR)
    finally:
        _reset(s)


def _pipelineThenHalfClose(port: int, called: threading.Event) -> bytes:
    """
    Send RCPT with NOOP right behind it in one write, wait until the
    recipient's hook is held, shut the sending side down, and read what
    the server sends until it closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        _heldAtRcpt(s, called)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def _tlsMessageThenReset(port: int, ctx: ssl.SSLContext, called: threading.Event) -> None:
    """
    After STARTTLS, send a message, wait until its C{onData} is held, then
    reset the connection (no TLS close_notify, no FIN).
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    current: socket.socket = raw
    try:
        _readUntil(raw, b"220 ")
        raw.sendall(b"EHLO c\r\nSTARTTLS\r\n")
        _readUntil(raw, b"220 2.0.0")
        # The TLS socket takes the descriptor over.
        current = tls = ctx.wrap_socket(raw)
        tls.sendall(b"EHLO c\r\n")
        _readUntil(tls, b"250 ")
        tls.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        _readUntil(tls, b"354 ")
        tls.sendall(b"hello\r\n.\r\n")
        if not called.wait(10):
            raise AssertionError("onData was not called")
    finally:
        _reset(current)


class ResetBehindHookTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def _waitGone(self, server: SMTPServer) -> Any:
        """
        Wait (in steps of 0.1 s, at most L{BOUND}) until C{server} has no
        session left; fail if one is still there.
        """
        for _ in range(int(BOUND * 10)):
            if not server.factory.connections:
                return
            yield deferLater(reactor, 0.1, lambda: None)
        self.fail(f"session still open {BOUND:g} s after the client's reset")

    @inlineCallbacks
    def _listening(self, server: SMTPServer) -> Any:
        """
        Start C{server} on a port of 127.0.0.1, stopped after the test.

        @return: A L{Deferred} firing with the port's number.
        """
        port = yield server.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def _events(self, server: SMTPServer) -> list[str]:
        events: list[str] = []
        server.addObserver(lambda event, session, data: events.append(event))
        return events

    @inlineCallbacks
    def test_resetWithCommandsPipelinedBehindHook(self) -> Any:
        """
        A client that pipelines NOOP behind a RCPT whose hook is held, then
        resets, has its session ended while the hook still has not
        answered; its answer, later, is dropped with no error and no second
        close.
        """
        handler = HeldHooks()
        server = _plainServer(handler, maxClients=1)
        events = self._events(server)
        portNumber = yield self._listening(server)
        yield deferToThread(_pipelineThenReset, portNumber, handler.called)
        yield self._waitGone(server)
        self.assertEqual(len(handler.held), 1)
        handler.answerAll()
        yield deferLater(reactor, 0, lambda: None)
        self.assertEqual(events.count("close"), 1)
        self.assertEqual(events.count("error"), 0)

    @inlineCallbacks
    def test_resetAfterHalfClose(self) -> Any:
        """
        A client that half-closes behind a held RCPT (the session then reads
        no more) and then resets has its session ended all the same, before
        the hook answers.
        """
        handler = HeldHooks()
        server = _plainServer(handler, maxClients=1)
        events = self._events(server)
        portNumber = yield self._listening(server)
        yield deferToThread(_pipelineThenReset, portNumber, handler.called, True)
        yield self._waitGone(server)
        handler.answerAll()
        yield deferLater(reactor, 0, lambda: None)
        self.assertEqual(events.count("close"), 1)

    @inlineCallbacks
    def test_resetOverTLSWhileOnDataHeld(self) -> Any:
        """
        Over TLS the session stops reading at the end of a message body:
        a client that resets while C{onData} is held has its session ended
        all the same, and the late answer is dropped, the message event
        marked unanswered.
        """
        handler = HeldHooks(recipients=False)
        server, ctx = tlsServer(self.mktemp(), handler, maxClients=1)
        messages: list[dict[str, Any]] = []
        server.addObserver(
            lambda event, session, data: messages.append(data) if event == "message" else None
        )
        events = self._events(server)
        portNumber = yield self._listening(server)
        yield deferToThread(_tlsMessageThenReset, portNumber, ctx, handler.called)
        yield self._waitGone(server)
        self.assertEqual(len(handler.held), 1)
        handler.answerAll()
        yield deferLater(reactor, 0, lambda: None)
        self.assertEqual(events.count("close"), 1)
        self.assertEqual(events.count("error"), 0)
        self.assertEqual([m["unanswered"] for m in messages], [True])

    @inlineCallbacks
    def test_halfCloseIsNoReset(self) -> Any:
        """
        A client that pipelines NOOP behind a held RCPT and then only shuts
        its sending side down (a FIN) is not taken for gone: held past
        several runs of the deadlines' timer, the hook's answer and the
        NOOP's still reach it.
        """
        handler = HeldHooks()
        server = _plainServer(handler)
        portNumber = yield self._listening(server)
        received = deferToThread(_pipelineThenHalfClose, portNumber, handler.called)
        while not handler.held:
            yield deferLater(reactor, 0.05, lambda: None)
        # The timer runs once a second: let it find the session held twice.
        yield deferLater(reactor, 2.5, lambda: None)
        self.assertEqual(len(server.factory.connections), 1)
        handler.answerAll()
        out = yield received
        self.assertTrue(out.endswith(replies.RCPT_OK + replies.OK), out)
