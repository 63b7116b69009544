# -*- test-case-name: tests.test_protocol -*-
"""
The SMTP/LMTP protocol: the glue between a connection, the pure grammar
(L{twisted_smtpd._core.grammar}), the DATA decoder and the user's handler.

Input is scanned in chunks: command lines are split with C{bytes.find}, and a
message body goes straight from the socket into the decoder, never line by
line.  Replies always leave in command order: while a hook has not answered,
no command is handled and the socket is read at most once more (RFC 2920
section 3.1), so a slow hook never reorders replies and the server never
buffers without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from twisted.internet import tcp
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IReactorTime,
    ISSLTransport,
)
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.grammar import (
    AUTH_LINE_LIMIT,
    Phase,
    Verb,
    lineLimit,
    looksLikeBdat,
    looksLikeHTTP,
    looksLikeTLS,
    parseCommand,
)
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.replies import CommandError, Reply
from twisted_smtpd._core.session import Session, hostPort, newSessionId
from twisted_smtpd._serving import commands as _commands
from twisted_smtpd._serving import ending as _ending
from twisted_smtpd._serving import flow as _flow
from twisted_smtpd._serving import forwarding as _forwarding
from twisted_smtpd._serving import greeting as _greeting
from twisted_smtpd._serving import tlscommand as _tlscommand
from twisted_smtpd._serving import transaction as _transaction
from twisted_smtpd._serving.deadlines import Times, lineStarted, waitForHandler
from twisted_smtpd._serving.flow import PAUSE_HOOK, PAUSE_STREAM, PAUSE_WRITE
from twisted_smtpd._serving.hooks import runHook
from twisted_smtpd._serving.logging import NAMESPACE
from twisted_smtpd._serving.output import CLOSING_CODES, SessionOutput, disabledVerbs
from twisted_smtpd._serving.receiving import MessageReceiver
from twisted_smtpd._serving.tls import _tlsLayer
from twisted_smtpd._serving.tlshalfclose import halfClosing
from twisted_smtpd.interfaces import ISMTPHandler

if TYPE_CHECKING:
    from twisted_smtpd._serving.server import SMTPServerFactory


@implementer(IHandshakeListener, IHalfCloseableProtocol)
class SMTPProtocol(SessionOutput, LineReceiver):
    """
    One SMTP or LMTP session.

    L{LineReceiver}'s line splitting is replaced by a chunk scanner: a command
    line is found with one C{find}, the body of a message is handed to the
    decoder a whole read at a time.

    The commands and the life cycle of the session live in their own modules
    (L{commands<twisted_smtpd._serving.commands>},
    L{transaction<twisted_smtpd._serving.transaction>}, ...), which see the
    protocol as the L{SessionControl<twisted_smtpd._serving.context.SessionControl>}
    it implements; its public attributes and methods are documented there.

    @ivar session: The L{Session} handlers see.
    @ivar limitHost: The address the factory counts this connection under
        for C{maxClientsPerIp}, or C{None}.
    @ivar readClosed: Whether the client shut its sending side down.
    """

    # Twisted's BaseProtocol declares it an int.
    connected: bool

    # Slots keep an idle connection small (hundreds of bytes, not kilobytes).
    # fmt: off
    __slots__ = (
        "_argument", "_bodyEnded", "_buffer", "_disabled", "_discardingLine", "_enhanced",
        "_errors", "_held", "_hookToken", "_junk", "_out", "_overshoot", "_plainTCP", "_pos",
        "_processing", "_socket", "_transportPaused", "_unauthenticated", "_verb", "_wire",
        "_writer", "auth", "began", "clock", "closing", "connected", "connectedFrom", "discard",
        "draining", "handler", "implicitTLS", "limitHost", "options", "pauses", "phase",
        "rcptAccepted", "readClosed", "receiver", "refused", "server", "session", "sessionOver",
        "tarpit", "times", "waiting",
    )
    # fmt: on

    def __init__(
        self,
        handler: ISMTPHandler,
        options: ServerOptions,
        clock: IReactorTime,
        factory: SMTPServerFactory | None = None,
    ) -> None:
        self.handler = handler
        self.options = options
        self.clock = clock
        self.server = factory
        self._enhanced = options.enhancedStatusCodes
        if factory is not None and options is factory.options:
            self._disabled = factory.disabledVerbs  # made once per server
        else:
            self._disabled = disabledVerbs(options)
        self._wire: dict[Reply, bytes] = factory.wireCache if factory is not None else {}
        self._writer = factory.turnWriter if factory is not None else _flow.TurnWriter()
        # What is read and not yet handled: _buffer from _pos on.  _pos is
        # set whenever _buffer gets new bytes; an empty _buffer holds none.
        self._buffer = b""
        self._pos = 0
        self._processing = self._plainTCP = False
        self._out: list[bytes] = []
        self._held = False  # whether the TLS layer holds a full batch of replies
        self._socket: Any = None  # the TCP connection under the transport
        self.waiting = self.closing = self.connected = self.refused = self.began = False
        self.pauses = 0
        self._transportPaused = self._discardingLine = self.readClosed = self.sessionOver = False
        self.discard: _transaction.RefusedChunk | None = None
        self.draining = False
        self.implicitTLS = False
        self.phase = Phase.CONNECTED
        self.rcptAccepted = 0
        self._errors = self._junk = self._overshoot = self._hookToken = 0
        self._unauthenticated = 0
        self.times = Times()
        self.limitHost: str | None = None
        self.receiver: MessageReceiver | None = None
        self.auth = self.tarpit = None
        self.connectedFrom = ""
        # The command being answered, for the log line of a refusal; no
        # argument before the first line (a refusal at connect).
        self._verb: Verb | None = None
        self._argument: bytes | None = None
        self._bodyEnded = 0.0
        self.session = Session(id=newSessionId())

    # -- connection life -------------------------------------------------

    def connectionMade(self) -> None:
        """
        Fill in the session and apply C{maxClients}; then (after the handshake
        on an implicit TLS connection) the reverse lookup, C{onConnect},
        C{onSecure} and the greeting.
        """
        transport: Any = self.transport
        self.connected = True
        # The connection itself, or a PROXY wrapper straight over it, which
        # passes writes and half-closes on: replies then go to the
        # connection (the end of the turn, L{writeThrough}).
        self._plainTCP = type(transport) is tcp.Server or (
            getattr(type(transport), "passesWritesOn", False)
            and type(transport.transport) is tcp.Server
        )
        self._socket = socket = _flow.socketUnder(transport)
        _flow.noDelay(socket)  # under TLS and PROXY layers too
        self.times.lastActivity = self.clock.seconds()
        session = self.session
        session.remoteAddress = hostPort(transport.getPeer())
        session.localAddress = hostPort(transport.getHost())
        transport.registerProducer(self, True)
        if ISSLTransport.providedBy(transport):
            # Implicit TLS (RFC 8314): nothing happens before the handshake,
            # and reading must go on for the handshake to finish.
            self.implicitTLS = True
            self.times.handshakeSince = self.times.lastActivity
            session.secure = True
        factory = self.server
        if factory is not None:
            refused = factory.admit(self)
            if refused is not None:
                self.refused = True
                self.closeWith(*refused)
                if self.implicitTLS and factory.refusingTooMany():
                    # Its 421 would wait for a handshake: with as many
                    # refusals waiting as maxClients allows sessions, the
                    # connection goes at once, bounding their sockets.
                    transport.abortConnection()
                return
        self.connectedFrom = session.remoteAddress[0]
        _forwarding.connected(session, transport)
        self.waiting = True
        if self.implicitTLS:
            return
        _greeting.beginSession(self)

    def hookThenResume(
        self,
        fn: Callable[..., object],
        accepted: Callable[[object], None],
        refused: Callable[[Reply], None],
    ) -> None:
        """
        Run a hook taking only the session while reading is held, then read
        again (at once when it answered at once).
        """
        self.waiting = False
        self.hook(fn, (self.session,), accepted, refused)
        if not self.waiting and not self.closing:
            self._resume()

    #: Twisted's end of the connection: L{ending.connectionLost
    #: <twisted_smtpd._serving.ending.connectionLost>} as a method.
    connectionLost = _ending.connectionLost

    def readConnectionLost(self) -> None:
        """
        The client shut its sending side down (a FIN on plain TCP): what it
        sent before is still answered, hooks included (a reply held past
        C{softErrorLimit} at once), then the session closes.
        """
        # Twisted stopped reading; it must not start again (each read would
        # see the end once more).
        self.readClosed = self._transportPaused = True
        if self.tarpit is not None:
            self.tarpit.releaseNow(self)
        self._closeIfDone()

    def writeConnectionLost(self) -> None:
        """Never happens: the server does not half-close."""

    def _closeIfDone(self) -> None:
        # After the client's FIN: close once nothing it sent is left to
        # answer (commands kept back while it did not read go first).
        if self.readClosed and not (
            self.waiting
            or self.closing
            or self._processing
            or (self._buffer and self.pauses & PAUSE_WRITE)
        ):
            self._close()

    # -- flow control ------------------------------------------------------

    def pauseProducing(self) -> None:
        """
        The transport's write buffer is full: stop reading until the client
        has read its replies.
        """
        self.setPause(PAUSE_WRITE, True)

    def resumeProducing(self) -> None:
        """
        The client caught up with its replies: read again, and handle the
        commands already read.
        """
        self.times.lastActivity = self.clock.seconds()
        self.setPause(PAUSE_WRITE, False)
        if self._buffer and not (self._processing or self.waiting or self.closing):
            self.dataReceived()

    def stopProducing(self) -> None:
        """The transport is going away; nothing to do until C{connectionLost}."""

    def setPause(self, reason: int, paused: bool) -> None:
        """
        Record one reason to stop reading (L{PAUSE_HOOK}, L{PAUSE_STREAM},
        L{PAUSE_WRITE}); the transport reads while there is none.
        L{PAUSE_HOOK} alone stops it only once bytes arrive (L{dataReceived})
        or a message body has ended: a client waiting for its reply to a
        command costs no pause and resume (two C{epoll_ctl}).
        """
        pauses = self.pauses | reason if paused else self.pauses & ~reason
        self.pauses = pauses
        want = bool(pauses & ~PAUSE_HOOK) or (
            pauses != 0 and (self._transportPaused or bool(self._buffer))
        )
        if (
            want != self._transportPaused
            and self.connected
            and not (self.closing or self.readClosed)
        ):
            transport: Any = self.transport
            self._transportPaused = want
            if want:
                transport.pauseProducing()
            else:
                transport.resumeProducing()

    # -- input -------------------------------------------------------------

    def dataReceived(self, data: bytes | None = None) -> None:
        """
        Take bytes from the connection and handle what can be handled now;
        without bytes (C{None}: a hook answered, the client read its
        replies), handle what was read before.
        """
        if data is not None:
            self.times.lastActivity = self.clock.seconds()
            if self.closing:
                return
            if self.pauses:
                # Bytes while a hook holds (setPause): keep them, read no more.
                self._stopReading()
            buf = self._buffer
            # Only what is left of the last read is copied again, not the read.
            self._buffer = buf[self._pos :] + data if buf else data
            self._pos = 0
            if self._processing:
                return
        # Each command line, body and chunk moves _pos on: the rest of a read
        # is never copied per command (a read of many commands cost its square).
        self._processing = True
        try:
            # Not while the client leaves its replies unread: their amount
            # stays bounded by what one batch adds to a full send buffer.
            while self._buffer and not (self.waiting or self.closing or self.pauses & PAUSE_WRITE):
                buf = self._buffer
                pos = self._pos
                receiver = self.receiver
                if receiver is not None and receiver.reading:
                    self._buffer = b""
                    self.bodyReceived(receiver, buf, pos)
                    continue
                if self.discard is not None:
                    self._skipTo(buf, _transaction.discardRefused(self, self.discard, buf, pos))
                    continue
                if self._discardingLine:
                    # The rest of a line refused as too long, up to its end.
                    end = buf.find(b"\n", pos)
                    self._skipTo(buf, len(buf) if end < 0 else end + 1)
                    self._discardingLine = end < 0
                    lineStarted(self, end < 0)
                    continue
                # No line is ever longer than AUTH_LINE_LIMIT octets (plus
                # CRLF), however its bytes arrive.
                end = buf.find(b"\n", pos, pos + AUTH_LINE_LIMIT + 2)
                if end < 0:
                    if looksLikeTLS(buf[pos : pos + 4]):
                        # A ClientHello need not hold a line feed: refused
                        # now, not at the socket timeout.
                        self._buffer = b""
                        self._refuseTLS(buf[pos:])
                        break
                    if len(buf) - pos < AUTH_LINE_LIMIT + 2:
                        if pos:
                            # Only the line's start is kept, not the read.
                            self._buffer, self._pos = buf[pos:], 0
                        # Its end must come within the timeout of its start.
                        lineStarted(self, True)
                        break
                    self._discardingLine = True
                    self._lineTooLong(buf[pos:])
                    continue
                if end + 1 < len(buf):
                    self._pos = end + 1
                else:
                    self._buffer = b""
                if self.times.lineSince is not None:
                    self.times.lineSince = None
                line = buf[pos : end - 1] if end > pos and buf[end - 1] == 13 else buf[pos:end]
                if len(line) > AUTH_LINE_LIMIT:
                    self._lineTooLong(line)
                    continue
                auth = self.auth
                if auth is not None and auth.active:
                    auth.line(line)
                else:
                    self._lineReceived(line)
        finally:
            self._processing = False
            self._flush()
            if self.readClosed:
                self._closeIfDone()

    def _skipTo(self, buf: bytes, pos: int) -> None:
        # What is left of buf, from pos on, is what is left to handle (none
        # once the session closed while it was handled: nothing will).
        if pos < len(buf) and not self.closing:
            self._buffer, self._pos = buf, pos
        else:
            self._buffer = b""

    def _lineReceived(self, line: bytes) -> None:
        limit = self.options.maxLineLength
        if len(line) > limit and len(line) > lineLimit(line, limit):
            self._lineTooLong(line)
            return
        try:
            command = parseCommand(line)
        except CommandError as e:
            self._verb = None
            self._argument = line
            if looksLikeHTTP(line):
                self.closeWith(catalogue.HTTP_REFUSED)
            elif looksLikeTLS(line):
                self._refuseTLS(line)
            elif looksLikeBdat(line):
                _transaction.malformedBdat(self)
            else:
                self.fail(e.reply)
            return
        verb = self._verb = command.verb
        self._argument = command.argument
        factory = self.server
        if factory is not None and factory.authRequired and self.session.user is None:
            self._unauthenticated += 1
            limit = self.options.maxAllowedUnauthenticatedCommands
            if limit and self._unauthenticated > limit and verb is not Verb.QUIT:
                self.closeWith(catalogue.TOO_MANY_UNAUTHENTICATED)
                return
        _commands.run(self, verb, command.argument, self._disabled)

    def _refuseTLS(self, line: bytes) -> None:
        # A TLS handshake where a command should be: its refusal is logged
        # as a line that did not parse.
        self._verb = None
        self._argument = line
        self.closeWith(catalogue.TLS_WITHOUT_STARTTLS)

    def _lineTooLong(self, line: bytes) -> None:
        auth = self.auth
        if auth is None or not auth.active:
            # A command line that was never parsed: its refusal is logged
            # as one that did not parse, under its first word, never as the
            # command before it.
            self._verb = None
            self._argument = line
        _commands.lineTooLong(self, line)

    def bodyReceived(self, receiver: MessageReceiver, data: bytes, begin: int) -> None:
        size = len(data)
        self.times.rateBytes += size - begin
        factory = self.server
        if factory is not None and "message" in factory.wanted:
            # When this data ends the body: the start of the delivery time.
            self._bodyEnded = perf_counter()
        rest = receiver.feed(data, begin)
        if rest < 0:
            if size - begin >= _flow.READ_SIZE:
                _flow.readLarger(self._socket)
            return
        socket = self._socket
        if socket is not None and socket.bufferSize != _flow.READ_SIZE:
            _flow.readNormal(socket)
        if rest < size and not self.closing:
            if self._buffer:
                # Read while the body was handed on: after what followed it.
                self._buffer = data[rest:] + self._buffer
                self._pos = 0
            else:
                self._buffer, self._pos = data, rest
        if not receiver.ended:
            # A BDAT chunk is in; the message goes on.
            self.reply(catalogue.chunkReceived(receiver.decoder.byteLength))
            return
        self.times.streamSince = None
        if self.pauses or self._transportPaused:
            # (Without either, there is nothing to undo.)
            self.setPause(PAUSE_STREAM, False)
        if not receiver.finished:
            # The body is in; the reply waits for onData, and so does
            # everything the client pipelined behind it.
            self.waiting = True
            waitForHandler(self, "onData did not answer")
            self.setPause(PAUSE_HOOK, True)
            transport: Any = self.transport
            if not self._plainTCP or transport.TLS:
                # At once: only plain TCP tells of a half-close
                # (readConnectionLost); elsewhere a FIN read now would end
                # the session before its reply.
                self._stopReading()

    def _stopReading(self) -> None:
        if not self._transportPaused and self.connected and not self.closing:
            self._transportPaused = True
            transport: Any = self.transport
            transport.pauseProducing()

    def messageDone(self, replies: list[Reply], size: int) -> None:
        """
        Send a message's replies and end its transaction.  A refused message
        (any 4xx or 5xx reply; once per message, however many LMTP
        recipients) counts towards C{maxErrors} like a refused command
        (Postfix's C{smtpd_hard_error_limit}).  If the session ended since
        the body did, the observers still hear of it (C{unanswered}: the
        handler may have kept it) and nothing is sent.
        """
        self.receiver = None
        seconds = perf_counter() - self._bodyEnded if self._bodyEnded else None
        unanswered = self.closing
        self.emit(
            "message", size=size, replies=tuple(replies), seconds=seconds, unanswered=unanswered
        )
        if unanswered:
            return
        refused = closes = False
        for reply in replies:
            self.reply(reply)
            if reply.code >= 400:
                refused = True
                closes = closes or reply.code in CLOSING_CODES
        self.resetTransaction()
        if refused:
            if closes:
                # onData's 421 or 521 closes the session, as any hook's.
                self.closeRefused()
                return
            self._countError()
            if self.tarpit is not None and self.tarpit.holding and not self.draining:
                return  # the tarpit takes commands again once they are sent
        else:
            # A message accepted forgives the errors and junk commands before
            # it, as Postfix does before its reply (which is then not held).
            self._errors = self._junk = 0
            if self.tarpit is not None:
                self.tarpit.leave(self)
        if self.draining:
            self.closeWith(catalogue.SHUTDOWN)
            return
        self._resume()

    # -- hooks -----------------------------------------------------------------

    #: Call a handler hook: L{runHook} as a method.
    hook = runHook
    resetTransaction = _transaction.resetTransaction
    inTransaction = _transaction.inTransaction
    abandonMessage = _transaction.abandonMessage

    def holdForHook(self) -> int:
        """
        A hook answers later: hold commands until it does.
        """
        self.waiting = True
        self.setPause(PAUSE_HOOK, True)
        self._hookToken += 1
        return self._hookToken

    def hookAnswered(self, token: int) -> None:
        """
        The hook held for with C{token} answered: read again, unless its
        answer started another slow hook.
        """
        if self._hookToken == token:
            self._resume()

    def _resume(self) -> None:
        self.waiting = False
        self.times.waitSince = None
        if self.pauses or self._transportPaused:
            self.setPause(PAUSE_HOOK, False)
        if not self._processing and not self.closing:
            self.dataReceived()

    @property
    def log(self) -> Logger:
        """
        Where the session's own lines go (its deadlines, its TLS failures, a
        message lost, a hook's failure), each naming the session id: the
        C{twisted_smtpd.session} namespace of the L{SessionLogger
        <twisted_smtpd._serving.logging.SessionLogger>} lines, never this
        class's own module path (a L{Logger} on the class would take it).
        """
        return Logger(NAMESPACE, self)

    def logFailure(self, failure: Failure, hookName: str) -> None:
        self.log.failure("{session} {hook} failed", failure, session=self.session.id, hook=hookName)
        self.emit("error", hook=hookName)

    # -- TLS -------------------------------------------------------------------

    def beginTLS(self, contextFactory: object) -> None:
        """Switch to TLS after the STARTTLS reply, or close after it."""
        # The 220 must leave in plaintext, before the switch.
        self._flush()
        self._writer.sendNow(self._socket)
        # RFC 3207 section 4.2 and CVE-2011-0411: whatever the client
        # pipelined behind STARTTLS in plaintext is discarded, never run.
        if self._buffer:
            _tlscommand.pipelinedDiscarded(self, len(self._buffer) - self._pos)
        self._buffer = b""
        if self.readClosed:
            # The client shut its side while the 220 was held: no handshake comes.
            return self._close()
        # Hold commands, but keep reading: the handshake needs it.
        self.waiting = True
        self.times.handshakeSince = self.clock.seconds()
        transport: Any = self.transport
        transport.startTLS(contextFactory)
        # A close_notify after STARTTLS is a half-close too.
        halfClosing(_tlsLayer(transport))

    #: A TLS handshake finished (STARTTLS or implicit TLS).
    handshakeCompleted = _tlscommand.handshakeCompleted
