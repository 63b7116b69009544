# -*- test-case-name: tests.test_protocol -*-
"""
How a session's replies leave and how it ends: replies to pipelined
commands gathered into one send, refusals counted and told to the
observers, the close after the last reply and the abort of a dead one.

L{SessionOutput} is a part of L{SMTPProtocol
<twisted_smtpd._serving.protocol.SMTPProtocol>}, kept in a module of its
own; it declares the protocol's state it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.grammar import Verb
from twisted_smtpd._core.replies import Reply, formatReply
from twisted_smtpd._serving import ending as _ending
from twisted_smtpd._serving import lingering
from twisted_smtpd._serving.deadlines import CLOSE_GRACE
from twisted_smtpd._serving.flow import giveUpUnreadAfter, writeThrough
from twisted_smtpd._serving.logging import NAMESPACE, clientAddress, refusal
from twisted_smtpd._serving.tarpit import ErrorTarpit
from twisted_smtpd._serving.tls import closeAfterCloseNotify

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime, ITransport

    from twisted_smtpd._core.options import ServerOptions
    from twisted_smtpd._core.session import Session
    from twisted_smtpd._serving.authcommand import AuthCommand
    from twisted_smtpd._serving.deadlines import Times
    from twisted_smtpd._serving.flow import TurnWriter
    from twisted_smtpd._serving.server import SMTPServerFactory


# Recipients refused with 452 4.5.3 (too many) before each one more counts
# as an error (Postfix's smtpd_recipient_overshoot_limit).
RECIPIENT_OVERSHOOT = 1000
# Replies to pipelined commands written at once, at most.
REPLY_BATCH = 64
# The codes of replies after which the server closes the connection.
CLOSING_CODES = frozenset((421, 521))

_sessionLog = Logger(namespace=NAMESPACE)


def fixedReplies(options: ServerOptions) -> dict[Reply, bytes]:
    """
    The encoded form of every reply whose text is fixed for a server: the
    catalogue's, the greeting, the reply to QUIT and the 530 before AUTH.
    Its sessions share it (the factory's C{wireCache}) and it never grows:
    a reply holding text from outside (the client's name in the reply to
    HELO or EHLO, a handler's text, a SASL challenge, a chunk's octet
    count) is never kept in it, so that clients can never fill it.
    """
    fixed = [value for value in vars(catalogue).values() if type(value) is Reply]
    fixed.append(catalogue.greeting(options.name, options.banner, options.lmtp))
    fixed.append(catalogue.closing(options.name))
    fixed.append(catalogue.authRequired(options.authRequiredMessage))
    enhanced = options.enhancedStatusCodes
    return {reply: formatReply(reply, enhanced) for reply in fixed}


def disabledVerbs(options: ServerOptions) -> frozenset[Verb]:
    """
    The commands C{options} disables (C{disabledCommands}), those known.
    """
    return frozenset(Verb(c) for c in options.disabledCommands if c in Verb.__members__)


@lru_cache(maxsize=256)
def _perText(reply: Reply, enhanced: bool) -> bytes:
    # Replies made once per text of the client's (L{catalogue.helo},
    # L{catalogue.ehlo}): a client seen again costs no formatting, and the
    # least recently used make room for others.
    return formatReply(reply, enhanced)


class SessionOutput:
    """
    The replies and the end of one session.
    """

    # The protocol's state, as this part uses it (its slots are the
    # protocol class's).
    transport: ITransport | None
    server: SMTPServerFactory | None
    options: ServerOptions
    clock: IReactorTime
    session: Session
    auth: AuthCommand | None
    times: Times
    closing: bool
    began: bool
    refused: bool
    draining: bool
    _wire: dict[Reply, bytes]
    _writer: TurnWriter
    _enhanced: bool
    _processing: bool
    _out: list[bytes]
    _held: bool
    _socket: Any
    _plainTCP: bool
    _buffer: bytes
    _errors: int
    _junk: int
    _overshoot: int
    _verb: Verb | None
    _argument: bytes | None
    _transportPaused: bool
    readClosed: bool
    tarpit: ErrorTarpit | None
    abandonMessage: Callable[[Reply], None]
    holdForHook: Callable[[], int]
    hookAnswered: Callable[[int], None]
    setPause: Callable[[int, bool], None]

    def reply(self, reply: Reply, perText: bool = False) -> None:
        """
        Send C{reply}: with the replies to the other commands of a
        pipelined batch, or at once.

        @param perText: Whether C{reply} is made once per text from outside
            (the replies to HELO and EHLO, which name the client): its
            encoded form is kept in a small cache of its own, never among
            the fixed replies (L{fixedReplies}).
        """
        data = self._wire.get(reply)
        if data is None:
            if perText:
                data = _perText(reply, self._enhanced)
            else:
                # Non-ASCII text (a handler's, a next hop's) is sent as UTF-8
                # only inside a transaction whose MAIL carried SMTPUTF8.
                data = formatReply(reply, self._enhanced, self.session.envelope.smtpUtf8)
        out = self._out
        out.append(data)
        if not self._processing:
            # At once (nothing else waits in out outside a run of commands).
            self._flush()
        elif len(out) >= REPLY_BATCH:
            # Replies to pipelined commands leave together, in one send per
            # batch; a full send buffer then stops the processing.
            self._flush(more=True)

    def _flush(self, more: bool = False) -> None:
        out = self._out
        if out or self._held:
            # Held replies leave with these, or alone when the run ended on
            # a full batch.
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            # The server's only session sends at once: no other reply
            # would join.
            server = self.server
            alone = server is None or len(server.connections) < 2
            socket = self._socket
            transport = socket if self._plainTCP else self.transport
            self._held = writeThrough(transport, data, socket, more, self._writer, alone)

    def fail(self, reply: Reply) -> None:
        """
        Send an error reply and count it; too many errors end the session
        (Postfix's C{smtpd_hard_error_limit}).  A 421 or 521 (a handler's)
        says the server closes the connection (RFC 5321 section 3.8, RFC
        7504), so it does.
        """
        if reply.code in CLOSING_CODES:
            self.closeWith(reply)
            return
        self.reply(reply)
        self._emitRefusal(reply)
        self._counted(reply)

    def _counted(self, reply: Reply) -> None:
        # Count the refusal C{reply}.
        if reply.enhanced == "4.5.3" and self._overshoot < RECIPIENT_OVERSHOOT:
            # Recipients past a limit (452 4.5.3) are the client's to send
            # later, not errors, up to Postfix's smtpd_recipient_overshoot_limit.
            self._overshoot += 1
            return
        self._countError()

    def refuseForLimit(self, reply: Reply, limit: str) -> None:
        """
        Refuse the command for a limit of the client's address reached
        (C{maxAuthRate}), counted as an error: one line in the
        C{twisted_smtpd.session} namespace whether or not sessions are
        logged, as for the connection limits, and a C{reject} event that
        carries the C{limit}.

        @param limit: The limit reached, described for the log line.
        """
        _sessionLog.info(
            "{session} {client} refused: {limit} reached",
            session=self.session.id,
            client=clientAddress(self.session.remoteAddress),
            limit=limit,
        )
        self.reply(reply)
        self._emitRefusal(reply, limit=limit)
        self._countError()

    def closeForLimit(self, reply: Reply, limit: str, told: bool = False) -> None:
        """
        Refuse the command with C{reply} and close, for a limit of the
        session reached: one line in the C{twisted_smtpd.session} namespace
        whether or not sessions are logged, as L{refuseForLimit}'s, and a
        C{reject} event that carries the C{limit}.

        @param limit: The limit reached, described for the log line.
        @param told: Whether C{reply}'s own event was already emitted (the
            C{message} event of a message refused for its size): then no
            C{reject} event repeats it.
        """
        if self.closing:
            return
        _sessionLog.info(
            "{session} {client} refused: {limit} reached: connection closed",
            session=self.session.id,
            client=clientAddress(self.session.remoteAddress),
            limit=limit,
        )
        self.closeWith(reply, limit, told)

    def countError(self) -> None:
        """
        Count an error that was not a refused command's (a message refused
        before its end); too many end the session.
        """
        self._countError()

    def _countError(self) -> None:
        # Only refusals come here: the tarpit costs the replies of a
        # session under softErrorLimit nothing.
        tarpit = self.tarpit
        if tarpit is not None and tarpit.holding:
            # The refusal is held: counted once it is sent, so that the one
            # that reaches maxErrors is late too, and its 421 follows it.
            tarpit.later(self._countError)
            return
        errors = self._errors = self._errors + 1
        options = self.options
        if errors >= options.maxErrors:
            self.closeWith(catalogue.TOO_MANY_ERRORS)
        elif (
            errors == options.softErrorLimit
            and options.errorSleep
            and not (self.readClosed or self.closing)
        ):
            # Postfix's smtpd_chat_reply sleeps before every reply once
            # error_count >= smtpd_soft_error_limit: from the next reply
            # on, each is held (ErrorTarpit).  Not for a client that shut
            # its sending side (nothing more can come; holding would only
            # keep its connection).
            if tarpit is None:
                tarpit = self.tarpit = ErrorTarpit(self, errors)
            tarpit.intercept(self)

    def countJunk(self) -> None:
        """
        Count a command that moves no message on, once it is answered
        (Postfix's C{smtpd_junk_command_limit}): each one after the first
        C{maxJunkCommands + 1} since the connection or the last message
        accepted counts as an error, as Postfix's C{smtpd_proto} tests
        C{junk_cmds++ > var_smtpd_junk_cmd_limit}, the count before this
        command against the limit.
        """
        junk = self._junk
        self._junk = junk + 1
        limit = self.options.maxJunkCommands
        if limit and junk > limit:
            self._countError()

    def _emitRefusal(self, reply: Reply, closing: bool = False, limit: str | None = None) -> None:
        """
        Tell the observers of a refused command (C{reject}).
        """
        if self.server is not None and "reject" in self.server.wanted:
            data = refusal(reply, self._verb, self._argument, self.auth, closing)
            if limit is not None:
                data["limit"] = limit
            if data["connect"]:
                # Refused by onSecure on an implicit TLS connection, the
                # session began: its close event follows.
                data["began"] = self.began and not self.refused
            self.emit("reject", **data)

    def closeWith(self, reply: Reply, limit: str | None = None, told: bool = False) -> None:
        """
        Send C{reply}, then close once the replies are sent.

        @param limit: The connection limit refused, as the factory logged it.
        @param told: Whether C{reply}'s event was already emitted.
        """
        if self.closing:
            return
        self._sendHeld()
        if reply.code >= 400:
            if not told and not catalogue.loggedApart(reply):
                # A refusal or a limit reached that ends the session.
                self._emitRefusal(reply, True, limit)
            self.reply(reply)
            self.closeRefused()
            return
        self.reply(reply)
        self._close()

    def closeRefused(self) -> None:
        """
        Close once the replies are sent, the last of them a refusal that
        ends the session (its log line already told).
        """
        self._sendHeld()
        # Replies a refused client leaves unread must not keep its
        # connection in the kernel for long once the server closed its
        # socket; while the session holds them itself, its abort after the
        # close's grace (a reset the client sees) comes first.
        giveUpUnreadAfter(self._socket, 2 * CLOSE_GRACE)
        self._close(linger=True)

    def _sendHeld(self) -> None:
        # A reply held by the tarpit leaves first, at once, and no reply
        # is held after it: the session ends (a QUIT, a shutdown, a
        # deadline, a lockout, a handler's 421).  A held 220 to STARTTLS
        # is dropped instead (ErrorTarpit.cancel): the closing reply
        # answers STARTTLS.
        tarpit = self.tarpit
        if tarpit is not None:
            for late, perText in tarpit.cancel(self):
                self.reply(late, perText)

    def _close(self, linger: bool = False) -> None:
        # linger: the close may linger (L{lingering}), after a refusal.
        self._flush()
        # The last replies leave now, before the close begins: a reactor
        # shutting down drops its connections before the turn ends.
        self._writer.sendNow(self._socket)
        self.closing = True
        self.times.closingSince = self.clock.seconds()
        self._buffer = b""
        transport: Any = self.transport
        # A TLS transport shuts down only once no producer is registered, and
        # must read to see the peer go.
        transport.unregisterProducer()
        socket = self._socket
        # A client that shut its side sends nothing more; one refused at
        # connect has sent nothing yet; a server that stops does not wait.
        linger = linger and not (self.readClosed or self.refused or self.draining)
        if linger and lingering.plainConnection(socket, transport, self._plainTCP):
            # What the client still sends is read and dropped, and the
            # sending side shut at the end of the turn, after the replies.
            lingering.begin(self, socket)
            self._writer.closeAtEnd(socket, half=True)
            # The session ends now, its connection a little later.
            _ending.sessionOver(self)  # type: ignore[arg-type]
            return
        if transport is socket and not transport.TLS:
            # Plain TCP: closed at the end of the turn, after the replies
            # (TurnWriter.closeAtEnd).
            self._writer.closeAtEnd(transport)
            return
        if self._transportPaused and not self.readClosed:
            self._transportPaused = False
            transport.resumeProducing()
        transport.loseConnection()
        # The replies and the server's close_notify are written: close
        # without waiting for the client's (a TLS layer would wait).
        closing = closeAfterCloseNotify(transport, self if linger else None)
        if closing and linger and lingering.lingers(self):
            # The session ends now, its connection a little later.
            _ending.sessionOver(self)  # type: ignore[arg-type]

    def emit(self, event: str, **data: Any) -> None:
        """
        Tell the factory's observers of C{event}, when one wants it.
        """
        factory = self.server
        if factory is not None and event in factory.wanted:
            factory.tellObservers(event, self.session, data)

    def abort(self) -> None:
        """
        Drop the connection now, whatever is still queued.
        """
        self.abandonMessage(catalogue.TIMEOUT)
        if self.tarpit is not None:
            self.tarpit.cancel(self)
        self._writer.drop(self._socket)
        self.closing = True
        self.times.closingSince = self.clock.seconds()
        self._buffer = b""
        transport: Any = self.transport
        transport.abortConnection()
