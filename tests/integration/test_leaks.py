# -*- test-case-name: tests.integration.test_leaks -*-
"""
Nothing of a session outlives it, however it ends: after clients that reset
or close at every stage (after the greeting, in the middle of a command
line, of a message body, of a BDAT chunk, of a STARTTLS handshake, of an
AUTH exchange, right after the final dot, at QUIT), that leave replies
unread, whose hooks answer after they left, and after the server's own
timeouts and limits, over real sockets on 127.0.0.1 in plaintext, after
STARTTLS and on an C{ssl:} listener, the session's protocol is freed, no
timer of it is left, the server holds the file descriptors it held before,
no file is left in the handler's directories and the C{connections open}
gauge is back to 0.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import ssl
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.certs import CertificateAuthority
from twisted_smtpd import SMTPError, SMTPServer
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Session
from twisted_smtpd._serving import deadlines
from twisted_smtpd._serving.metrics import ServerMetrics
from twisted_smtpd.handlers import (
    BaseHandler,
    ChainHandler,
    MaildirHandler,
    MboxHandler,
    PipeHandler,
    SinkHandler,
)
from twisted_smtpd.interfaces import IMessageStream

reactor: Any = _reactor

#: Seconds a client waits for the server at most.
CLIENT_TIMEOUT = 15.0

#: The modes a client connects in.
PLAIN, STARTTLS, IMPLICIT = "plain", "starttls", "implicit"


# -- blocking clients, run in a thread ---------------------------------------


def _reset(s: socket.socket) -> None:
    # SO_LINGER 0: close() sends a reset, as a crashing client does.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Client:
    """
    A client connection in plaintext, after STARTTLS or in implicit TLS,
    ended with a reset or a FIN.
    """

    def __init__(self, port: int, mode: str, context: ssl.SSLContext) -> None:
        self.mode = mode
        self.context = context
        raw = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        self.raw = raw
        self.s: Any = raw
        if mode == IMPLICIT:
            self.s = context.wrap_socket(raw, server_hostname="mx.example.com")
        self.f = self.s.makefile("rb")

    def reply(self) -> bytes:
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("connection closed")
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    def send(self, data: bytes) -> None:
        self.s.sendall(data)

    def command(self, line: bytes) -> bytes:
        self.send(line)
        return self.reply()

    def startTLS(self) -> None:
        reply = self.command(b"STARTTLS\r\n")
        assert reply.startswith(b"220"), reply
        self.f.close()
        self.s = self.context.wrap_socket(self.raw, server_hostname="mx.example.com")
        self.f = self.s.makefile("rb")

    def greeted(self) -> None:
        """
        Read the greeting, say EHLO (and STARTTLS, then EHLO again).
        """
        self.reply()
        self.command(b"EHLO client.example\r\n")
        if self.mode == STARTTLS:
            self.startTLS()
            self.command(b"EHLO client.example\r\n")

    def inTransaction(self) -> None:
        self.greeted()
        assert self.command(b"MAIL FROM:<a@example.com>\r\n").startswith(b"250")
        assert self.command(b"RCPT TO:<b@example.com>\r\n").startswith(b"250")

    def untilClosed(self) -> None:
        """
        Read (and drop) everything until the server closes.
        """
        try:
            while self.s.recv(65536):
                pass
        except OSError:
            pass

    def end(self, reset: bool) -> None:
        if reset:
            _reset(self.s)
        for closing in (self.f, self.s, self.raw):
            with contextlib.suppress(OSError):
                closing.close()


#: A client's script: what it does before it goes away.
Script = Callable[[Client], None]


def _settle(c: Client) -> None:
    # Time for the server to read what was sent before the client goes.
    time.sleep(0.05)


def afterGreeting(c: Client) -> None:
    c.reply()


def midCommandLine(c: Client) -> None:
    c.greeted()
    c.send(b"MAIL FROM:<a@exa")
    _settle(c)


def midData(c: Client) -> None:
    c.inTransaction()
    assert c.command(b"DATA\r\n").startswith(b"354")
    c.send(b"Subject: cut short\r\n\r\n" + b"x" * 300_000)
    _settle(c)


def midSmallData(c: Client) -> None:
    c.inTransaction()
    assert c.command(b"DATA\r\n").startswith(b"354")
    c.send(b"Subject: cut short\r\n\r\nhello")
    _settle(c)


def midChunk(c: Client) -> None:
    c.inTransaction()
    assert c.command(b"BDAT 20\r\nSubject: x\r\n\r\n123456\r\n").startswith(b"250")
    c.send(b"BDAT 100000\r\n" + b"z" * 5000)
    _settle(c)


def afterFinalDot(c: Client) -> None:
    c.inTransaction()
    assert c.command(b"DATA\r\n").startswith(b"354")
    c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")


def afterLastChunk(c: Client) -> None:
    c.inTransaction()
    c.send(b"BDAT 20 LAST\r\nSubject: x\r\n\r\n123456\r\n")


def midAuth(c: Client) -> None:
    c.greeted()
    assert c.command(b"AUTH LOGIN\r\n").startswith(b"334")
    c.send(b"dXNlcg==\r\n")
    _settle(c)


def atQuit(c: Client) -> None:
    c.inTransaction()
    assert c.command(b"DATA\r\n").startswith(b"354")
    assert c.command(b"Subject: x\r\n\r\nbody\r\n.\r\n").startswith(b"250")
    c.send(b"QUIT\r\n")


def midHandshake(c: Client) -> None:
    # Plaintext only: STARTTLS, then part of a ClientHello.
    c.reply()
    c.command(b"EHLO client.example\r\n")
    assert c.command(b"STARTTLS\r\n").startswith(b"220")
    c.send(bytes.fromhex("160301020001"))
    _settle(c)


def unreadReplies(c: Client) -> None:
    # Pipelined commands whose replies fill a tiny receive window.
    c.greeted()
    c.s.settimeout(0.5)
    try:
        for _ in range(100):
            c.s.sendall(b"RSET\r\n" * 1000)
    except OSError:
        pass
    time.sleep(0.1)


#: The endings of a client, in every mode (but those in plaintext only).
ENDINGS: list[tuple[Script, tuple[str, ...]]] = [
    (afterGreeting, (PLAIN, STARTTLS, IMPLICIT)),
    (midCommandLine, (PLAIN, STARTTLS, IMPLICIT)),
    (midData, (PLAIN, STARTTLS, IMPLICIT)),
    (midSmallData, (PLAIN, STARTTLS, IMPLICIT)),
    (midChunk, (PLAIN, STARTTLS, IMPLICIT)),
    (afterFinalDot, (PLAIN, STARTTLS, IMPLICIT)),
    (afterLastChunk, (PLAIN, STARTTLS, IMPLICIT)),
    (midAuth, (PLAIN, STARTTLS, IMPLICIT)),
    (atQuit, (PLAIN, STARTTLS, IMPLICIT)),
    (midHandshake, (PLAIN,)),
    (unreadReplies, (PLAIN, STARTTLS, IMPLICIT)),
]


def runClient(port: int, mode: str, context: ssl.SSLContext, script: Script, reset: bool) -> None:
    """
    In a thread: connect, run C{script}, go away (with a reset or a FIN).
    """
    c = Client(port, mode, context)
    try:
        script(c)
    finally:
        c.end(reset)


# -- handlers ----------------------------------------------------------------


class _Auth:
    """
    AUTH offered (and every attempt refused), so that a client can leave
    in the middle of it.
    """

    def onAuth(self, auth: object, session: Session) -> object:
        raise SMTPError(535, "Error: authentication failed", "5.7.8")


class AuthSink(_Auth, SinkHandler):
    """
    L{SinkHandler} offering AUTH.
    """


class Collecting(_Auth, BaseHandler):
    """
    A handler written as the documentation shows one: a coroutine awaiting
    the whole body.
    """

    async def onData(self, stream: IMessageStream, session: Session) -> str:
        await stream.collect()
        return "OK"


#: Set when L{Holding} holds a hook: its client may go.
HOOK_CALLED = threading.Event()


def _whileHeld(c: Client) -> None:
    # The client goes once its hook is held, however busy the machine.
    HOOK_CALLED.wait(CLIENT_TIMEOUT)


class Holding(_Auth, BaseHandler):
    """
    The hook named by C{hold} answers only when the test fires its
    L{Deferred} (in C{held}).
    """

    def __init__(self) -> None:
        self.hold: str | None = None
        self.held: list[Deferred[object]] = []

    def _maybe(self, name: str) -> Deferred[object] | None:
        if self.hold != name:
            return None
        d: Deferred[object] = Deferred()
        self.held.append(d)
        HOOK_CALLED.set()
        return d

    def onConnect(self, session: Session) -> object:
        return self._maybe("onConnect")

    def onHelo(self, hostname: str, session: Session) -> object:
        return self._maybe("onHelo")

    def onSecure(self, session: Session) -> object:
        return self._maybe("onSecure")

    def onAuth(self, auth: object, session: Session) -> object:
        return self._maybe("onAuth") or super().onAuth(auth, session)

    def onMailFrom(self, address: object, session: Session) -> object:
        return self._maybe("onMailFrom")

    def onRcptTo(self, address: object, session: Session) -> object:
        return self._maybe("onRcptTo")

    def onData(self, stream: IMessageStream, session: Session) -> object:
        drained = stream.drain()
        return self._maybe("onData") or drained

    def onClose(self, session: Session) -> object:
        return self._maybe("onClose")


# -- the server and what it must give back ------------------------------------


class LeakTestCase(TestCase):
    timeout = 300

    def setUp(self) -> None:
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        self.issued = ca.server("mx.example.com")
        context = ssl.create_default_context(cafile=ca.certificatePath)
        self.context = context
        self.refs: list[weakref.ref[Any]] = []

    @inlineCallbacks
    def serve(self, handler: Any, directories: tuple[str, ...] = (), **options: Any) -> Any:
        """
        Serve C{handler} on a plaintext and an C{ssl:} listener, with
        metrics, every protocol it makes watched; then make one session of
        each mode, so that what stays (the threads' pool, TLS contexts) is
        in the baseline.
        """
        self.directories = directories
        settings: dict[str, Any] = {
            "name": "mx.example.com",
            "disableReverseLookup": True,
            "certificate": self.issued.certificatePath,
            "privateKey": self.issued.keyPath,
            "allowInsecureAuth": True,
            "authOptional": True,
        }
        settings.update(options)
        self.server = server = SMTPServer(handler, ServerOptions(**settings))
        self.metrics = ServerMetrics()
        server.addObserver(self.metrics)
        factory = server.factory
        build = factory.buildProtocol

        def watched(addr: Any) -> Any:
            protocol = build(addr)
            self.refs.append(weakref.ref(protocol))
            return protocol

        factory.buildProtocol = watched  # type: ignore[method-assign]
        plain = yield server.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(plain.stopListening)
        implicit = yield server.listen(
            f"ssl:0:interface=127.0.0.1:certKey={self.issued.certificatePath}"
            f":privateKey={self.issued.keyPath}"
        )
        self.addCleanup(implicit.stopListening)
        self.ports = {
            PLAIN: plain.getHost().port,
            STARTTLS: plain.getHost().port,
            IMPLICIT: implicit.getHost().port,
        }
        self.addCleanup(server.close)
        for mode in (PLAIN, STARTTLS, IMPLICIT):
            yield self.client(mode, atQuit, False)
        yield self.released("the warm-up", baseline=False)
        self.fds = _openFds()
        self.calls = set(reactor.getDelayedCalls())

    def client(self, mode: str, script: Script, reset: bool) -> Deferred[None]:
        return deferToThread(runClient, self.ports[mode], mode, self.context, script, reset)

    @inlineCallbacks
    def ended(self, what: str) -> Any:
        """
        Wait (bounded) for the sessions to end.
        """
        factory = self.server.factory
        for _ in range(500):
            if not factory.connections and all(_ended(ref) for ref in self.refs):
                return
            yield deferLater(reactor, 0.02, lambda: None)
        self.fail(f"{what}: sessions not ended")

    @inlineCallbacks
    def released(self, what: str, baseline: bool = True) -> Any:
        """
        Wait (bounded) for the sessions to end; then every protocol made is
        freed, no timer, file descriptor or file is left and the gauge of
        open connections is 0, else fail naming C{what} ended them.
        """
        yield self.ended(what)
        alive = []
        for _ in range(50):
            # Disk work in the threads' pool may still hold a session for
            # a moment.
            gc.collect()
            alive = [ref for ref in self.refs if ref() is not None]
            leftovers = [
                name for directory in self.directories for name in sorted(os.listdir(directory))
            ]
            settled = not alive and not leftovers
            if baseline:
                settled = settled and _openFds() == self.fds
            if settled:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        if alive:
            self.fail(f"{what}: {len(alive)} of {len(self.refs)} sessions alive")
        self.assertEqual(leftovers, [], f"{what}: files left")
        self.assertEqual(self.metrics.connectionsOpen._value.get(), 0, f"{what}: gauge")
        if baseline:
            for _ in range(50):
                # A call due at once (Twisted's TLS layer flushing its small
                # writes on the next turn, as Twisted 23.10 does) runs then;
                # a session's timer would still be there.
                calls = [
                    (call.func, call.args)
                    for call in reactor.getDelayedCalls()
                    if call.active() and call not in self.calls
                ]
                if not calls:
                    break
                yield deferLater(reactor, 0.02, lambda: None)
            self.assertEqual(calls, [], f"{what}: timers left")
            self.assertEqual(_openFds(), self.fds, f"{what}: file descriptors")
        del self.refs[:]


def _ended(ref: weakref.ref[Any]) -> bool:
    protocol = ref()
    return protocol is None or not protocol.connected


def _openFds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _maildir(case: TestCase) -> tuple[MaildirHandler, tuple[str, ...]]:
    path = os.path.abspath(case.mktemp())
    return MaildirHandler(path), (os.path.join(path, "tmp"),)


class ClientEndingTests(LeakTestCase):
    """
    Every ending of a client, with each kind of handler.
    """

    @inlineCallbacks
    def endings(self, handler: Any, directories: tuple[str, ...] = ()) -> Any:
        yield self.serve(handler, directories)
        for script, modes in ENDINGS:
            for mode in modes:
                for reset in (True, False):
                    yield self.client(mode, script, reset)
                how = "reset and FIN"
                yield self.released(f"{script.__name__} ({mode}, {how})")

    def test_sink(self) -> Any:
        """
        L{SinkHandler}.
        """
        return self.endings(AuthSink())

    def test_maildir(self) -> Any:
        """
        L{MaildirHandler}: nothing left in C{tmp/}.
        """
        handler, directories = _maildir(self)
        return self.endings(ChainHandler(_AuthFilter(), delivery=handler), directories)

    def test_mbox(self) -> Any:
        """
        L{MboxHandler}, whose body goes to a spool file first.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        handler = MboxHandler(os.path.join(directory, "mbox"))
        return self.endings(ChainHandler(_AuthFilter(), delivery=handler))

    def test_pipe(self) -> Any:
        """
        L{PipeHandler}, whose body goes to a spool file in
        C{spoolDirectory} first.
        """
        spool = os.path.abspath(self.mktemp())
        os.makedirs(spool)
        command = [sys.executable, "-c", "import sys; sys.stdin.buffer.read()"]
        handler = PipeHandler(command, spoolDirectory=spool)
        return self.endings(ChainHandler(_AuthFilter(), delivery=handler), (spool,))

    def test_coroutine(self) -> Any:
        """
        A handler's coroutine awaiting the body, which fails when the
        client goes: the failure it raises holds none of the session.
        """
        return self.endings(Collecting())


class _AuthFilter(_Auth, BaseHandler):
    """
    A filter of a chain offering AUTH.
    """


def _handshaken(c: Client) -> None:
    c.s.do_handshake()
    _whileHeld(c)


def _sent(c: Client, data: bytes, greeted: bool = True) -> None:
    if greeted:
        c.greeted()
    else:
        c.reply()
    c.send(data)
    _whileHeld(c)


def _afterFinalDot(c: Client) -> None:
    afterFinalDot(c)
    _whileHeld(c)


class LateHookTests(LeakTestCase):
    """
    A hook still pending when its client goes, answering later.
    """

    #: The hooks held, and the script of a client leaving while each is.
    HOOKS: list[tuple[str, Script, tuple[str, ...]]] = [
        ("onConnect", _whileHeld, (PLAIN,)),
        ("onSecure", lambda c: _handshaken(c), (IMPLICIT,)),
        ("onHelo", lambda c: _sent(c, b"EHLO x\r\nNOOP\r\n", greeted=False), (PLAIN,)),
        ("onAuth", lambda c: _sent(c, b"AUTH PLAIN AHUAcA==\r\n"), (PLAIN, IMPLICIT)),
        ("onMailFrom", lambda c: _sent(c, b"MAIL FROM:<a@b.example>\r\n"), (PLAIN, STARTTLS)),
        (
            "onRcptTo",
            lambda c: _sent(c, b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"),
            (PLAIN, IMPLICIT),
        ),
        ("onData", _afterFinalDot, (PLAIN, STARTTLS, IMPLICIT)),
        ("onClose", atQuit, (PLAIN, IMPLICIT)),
    ]

    @inlineCallbacks
    def test_answeredLater(self) -> Any:
        """
        Whether the hook then answers, refuses or fails.
        """
        handler = Holding()
        yield self.serve(handler)
        outcomes: list[tuple[str, Callable[[Deferred[object]], None]]] = [
            ("answered", lambda d: d.callback(None)),
            ("refused", lambda d: d.errback(SMTPError(550, "no", "5.7.1"))),
            ("failed", lambda d: d.errback(RuntimeError("hook failed"))),
        ]
        for hook, script, modes in self.HOOKS:
            for mode in modes:
                for outcome, fire in outcomes:
                    handler.hold = hook
                    HOOK_CALLED.clear()
                    yield self.client(mode, script, True)
                    for _ in range(500):
                        if handler.held:
                            break
                        yield deferLater(reactor, 0.02, lambda: None)
                    handler.hold = None
                    held, handler.held = handler.held, []
                    self.assertEqual(len(held), 1, f"{hook} ({mode}) not held")
                    for d in held:
                        fire(d)
                    yield self.released(f"{hook} {outcome} late ({mode})")
        self.flushLoggedErrors(RuntimeError, SMTPError)


class ServerEndingTests(LeakTestCase):
    """
    The server's own timeouts and limits ending a session.
    """

    def setUp(self) -> None:
        super().setUp()
        # The polite close of a client that reads nothing is aborted sooner.
        self.patch(deadlines, "CLOSE_GRACE", 0.5)

    @inlineCallbacks
    def test_timeoutsAndLimits(self) -> Any:
        """
        Idle, incomplete line, handshake, write and data-rate timeouts, too
        many errors, a message too large, an HTTP request.
        """

        def idle(c: Client) -> None:
            c.greeted()
            c.untilClosed()

        def lineIncomplete(c: Client) -> None:
            c.greeted()
            c.send(b"MAIL FROM:<a@exa")
            c.untilClosed()

        def dataStalled(c: Client) -> None:
            c.inTransaction()
            c.command(b"DATA\r\n")
            c.send(b"Subject: x\r\n\r\n" + b"y" * 300_000)
            c.untilClosed()

        def chunkStalled(c: Client) -> None:
            c.inTransaction()
            c.send(b"BDAT 150000\r\n" + b"z" * 100_000)
            c.untilClosed()

        def handshakeStalled(c: Client) -> None:
            midHandshake(c)
            c.untilClosed()

        def neverReads(c: Client) -> None:
            unreadReplies(c)
            deadline = time.monotonic() + CLIENT_TIMEOUT
            while time.monotonic() < deadline:
                time.sleep(0.1)
                state = c.s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
                if state != 1:  # no longer TCP_ESTABLISHED
                    return

        def errors(c: Client) -> None:
            c.greeted()
            c.send(b"BOGUS\r\n" * 30)
            c.untilClosed()

        def tooLarge(c: Client) -> None:
            c.inTransaction()
            c.command(b"DATA\r\n")
            c.send(b"Subject: x\r\n\r\n" + b"y" * 200_000 + b"\r\n.\r\nQUIT\r\n")
            c.untilClosed()

        def http(c: Client) -> None:
            c.reply()
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            c.untilClosed()

        def slow(c: Client) -> None:
            c.inTransaction()
            c.command(b"DATA\r\n")
            for _ in range(40):
                try:
                    c.send(b"y")
                except OSError:
                    return
                time.sleep(0.1)
            c.untilClosed()

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        yield self.serve(
            ChainHandler(_AuthFilter(), delivery=MboxHandler(os.path.join(directory, "mbox"))),
            socketTimeout=1,
            tlsHandshakeTimeout=1,
            size=100_000,
            maxErrors=5,
            maxJunkCommands=0,
            minDataRate=(1000, 1),
        )
        scripts: list[tuple[Script, tuple[str, ...]]] = [
            (idle, (PLAIN, STARTTLS, IMPLICIT)),
            (lineIncomplete, (PLAIN, IMPLICIT)),
            (dataStalled, (PLAIN, STARTTLS, IMPLICIT)),
            (chunkStalled, (PLAIN, IMPLICIT)),
            (handshakeStalled, (PLAIN,)),
            (neverReads, (PLAIN, IMPLICIT)),
            (errors, (PLAIN, IMPLICIT)),
            (tooLarge, (PLAIN, IMPLICIT)),
            (http, (PLAIN,)),
            (slow, (PLAIN, IMPLICIT)),
        ]
        for script, modes in scripts:
            for mode in modes:
                yield self.client(mode, script, True)
                yield self.released(f"{script.__name__} ({mode})")


class GrowthTests(LeakTestCase):
    """
    Hostile sessions one after another leave the number of objects flat.
    """

    @inlineCallbacks
    def test_flat(self) -> Any:
        """
        200 sessions cut short by their clients (each ending, each mode)
        leave no more objects than after the first 50, within a margin far
        below what one session holds.
        """
        yield self.serve(Collecting())
        cycle = [(s, m) for s, modes in ENDINGS if s is not unreadReplies for m in modes]
        before = 0
        for n in range(250):
            script, mode = cycle[n % len(cycle)]
            yield self.client(mode, script, n % 2 == 0)
            if n == 49:
                yield self.ended("the first 50")
                gc.collect()
                before = len(gc.get_objects())
        yield self.ended("200 more")
        gc.collect()
        grown = len(gc.get_objects()) - before
        self.assertLess(grown, 1500, f"{grown} more objects after 200 sessions")
        yield self.released("200 more")
