# -*- test-case-name: tests.test_client -*-
"""
The client side of one SMTP or LMTP dialogue (L{ClientProtocol}), driven by
L{twisted_smtpd._smtpclient.client.deliver}.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any, TypeVar

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IReactorTime,
    ITLSTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_smtpd._core.hostname import asciiAddress
from twisted_smtpd._smtpclient.clientrequest import PipedBody, Request, TLSMode, _BodyWriter
from twisted_smtpd._smtpclient.clientwire import (
    ClientReply,
    DeliveryError,
    DeliveryResult,
    HandshakeError,
    MalformedReply,
    RecipientResult,
    ReplyParser,
    failureText,
    localReply,
    sessionReused,
)

__all__ = ["QUIT_TIMEOUT", "ClientProtocol", "Request", "TLSMode", "_BodyWriter"]

_T = TypeVar("_T")

# How long a polite QUIT may take once the outcome is known.
QUIT_TIMEOUT = 10.0


@implementer(IHandshakeListener)
class ClientProtocol(Protocol):
    """
    One client session.  L{run} drives the dialogue as a coroutine; replies
    are handed to it in order through L{_reply}.
    """

    def __init__(self, request: Request, clock: IReactorTime) -> None:
        self._request = request
        self._clock = clock
        self._parser = ReplyParser()
        self._replies: list[ClientReply] = []
        self._waiters: list[Deferred[ClientReply]] = []
        self._races: list[Deferred[Any]] = []
        self._lost: Failure | None = None
        self._closed: Deferred[None] = Deferred()
        self._timer: IDelayedCall | None = None
        self._closeTimer: IDelayedCall | None = None
        self._timeout = request.timeout
        self._timedOut = False
        self._protocolError: str | None = None
        # Replies expected and not yet read; the greeting is the first.
        self._outstanding = 1
        self._secure = False
        #: Whether STARTTLS resumed an earlier TLS session.
        self.resumed = False
        # Whether the TLS handshake after STARTTLS completed.
        self._handshaken = False
        self._stage = "greeting"

    # Protocol.

    def connectionMade(self) -> None:
        transport: Any = self.transport
        setNoDelay = getattr(transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            # Commands are small writes answered one by one: Nagle's algorithm
            # meeting the server's delayed ACK would add tens of milliseconds.
            with contextlib.suppress(OSError):
                setNoDelay(True)
        self._resetTimer()

    def dataReceived(self, data: bytes) -> None:
        if self._secure:
            # Only what the handshake protects reaches here after STARTTLS.
            self._handshaken = True
        error = None
        try:
            replies = self._parser.feed(data)
        except MalformedReply as e:
            # The replies completed before the fault are handed on first:
            # a 250 to the end of the data stands, whatever follows it.
            replies, error = e.replies, str(e)
        if replies:
            # The deadline runs per reply, not per read: a server trickling
            # a reply octet by octet does not hold the session.
            self._resetTimer()
            # Replies beyond those to the commands sent are the server's
            # error, or text injected into the connection: the session is
            # out of step, and ends once the replies due are handed on.
            expected = max(self._outstanding + len(self._waiters) - len(self._replies), 0)
            if len(replies) > expected:
                error = f"a reply to no command: {replies[expected].code}"
                replies = replies[:expected]
        if error is not None and self._protocolError is None:
            # Known before the replies due are handed on: what they resume
            # (STARTTLS, giving the session back for the next message)
            # sees that the session is ending.
            self._protocolError = error
        self._replies.extend(replies)
        # Each waiter's callback may send and wait again (taking a queued
        # reply at once): queued replies are handed on strictly in order.
        while self._waiters and self._replies:
            self._waiters.pop(0).callback(self._replies.pop(0))
        if error is not None:
            self.abort()
        elif self._outstanding + len(self._waiters) <= len(self._replies):
            # Every reply has come: an idle session waits for its next
            # command (and the pool's idle limit), not for the server.  The
            # next command sent arms the deadline again.
            self._stopTimer()

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake after STARTTLS is over (L{IHandshakeListener}).
        """
        self._handshaken = True

    @property
    def clock(self) -> IReactorTime:
        """
        The clock of this session's timers, for those of its users.
        """
        return self._clock

    @property
    def failed(self) -> bool:
        """
        Whether the server broke the protocol: the session is ending.
        """
        return self._protocolError is not None

    def _fail(self, error: str) -> None:
        """
        End the session for a protocol error of the server.
        """
        if self._protocolError is None:
            self._protocolError = error
        self.abort()

    def checkDataReply(self, reply: ClientReply) -> None:
        """
        Check the reply to DATA: 354, or a refusal (4xx, 5xx).

        @raise DeliveryError: Any other reply (a 250 would have the message
            taken as sent when no octet of it was): the session is ended,
            as the server's state is unknown.
        """
        if reply.code != 354 and not 400 <= reply.code < 600:
            self._fail(f"DATA answered with {reply.code}")
            raise self._lostError()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self._lost = reason
        self._stopTimer()
        if self._closeTimer is not None and self._closeTimer.active():
            self._closeTimer.cancel()
        waiters: list[Deferred[Any]] = [*self._waiters, *self._races]
        self._waiters, self._races = [], []
        for d in waiters:
            d.errback(self._lostError())
        self._closed.callback(None)

    # Helpers.

    def _resetTimer(self) -> None:
        if not self.connected:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._timeout)
        else:
            self._timer = self._clock.callLater(self._timeout, self._timeOut)

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timeOut(self) -> None:
        self._timer = None
        self._timedOut = True
        self.abort()

    def abort(self) -> None:
        """
        Drop the connection at once.
        """
        if self.connected and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _lostError(self) -> DeliveryError:
        stage = self._stage
        if self._timedOut:
            return DeliveryError(
                451, f"Error: timeout waiting for the server ({stage})", "4.4.2", stage=stage
            )
        if self._protocolError is not None:
            text = f"Error: bad reply from the server: {self._protocolError}"
            return DeliveryError(451, text, "4.5.0", stage=stage)
        reason = failureText(self._lost) if self._lost is not None else "unknown"
        if stage == "tls":
            return DeliveryError(
                451, f"Error: TLS negotiation failed: {reason}", "4.7.5", stage=stage
            )
        return DeliveryError(
            451, f"Error: connection lost ({stage}): {reason}", "4.4.2", stage=stage
        )

    def _send(self, line: str | bytes) -> None:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self._outstanding += 1
        if self.connected and self.transport is not None:
            self.transport.write(line + b"\r\n")
            self._resetTimer()

    def _reply(self) -> Deferred[ClientReply]:
        """
        The next reply, in order.
        """
        self._outstanding -= 1
        if self._replies:
            d: Deferred[ClientReply] = Deferred()
            d.callback(self._replies.pop(0))
            return d
        if self._lost is not None:
            d = Deferred()
            d.errback(self._lostError())
            return d
        d = Deferred()
        self._waiters.append(d)
        return d

    def _race(self, d: Deferred[_T]) -> Deferred[_T]:
        """
        A L{Deferred} with C{d}'s result that fails as soon as the connection
        is lost.
        """
        waiter: Deferred[_T] = Deferred()
        if self._lost is not None:
            waiter.errback(self._lostError())
        else:
            self._races.append(waiter)

        def done(result: _T | Failure) -> None:
            if waiter.called:
                return
            self._races.remove(waiter)
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

        d.addBoth(done)
        return waiter

    def writeChunk(self, data: bytes) -> Deferred[ClientReply]:
        """
        Send one BDAT chunk: the command, then the octets (the chunks of a
        message are pipelined).

        @return: Its reply, to come after those of the chunks before it.
        """
        self._outstanding += 1
        self.writeBody(b"BDAT %d\r\n" % len(data) + data)
        return self._reply()

    def writeBody(self, data: bytes) -> None:
        """
        Write stuffed body bytes (from L{_BodyWriter}).
        """
        if data and self.connected and self.transport is not None:
            self.transport.write(data)
            self._resetTimer()

    def _refused(self, reply: ClientReply) -> DeliveryError:
        return DeliveryError(reply.code, reply.text, reply.enhanced, stage=self._stage, reply=reply)

    # The dialogue.

    async def run(self) -> DeliveryResult:
        """
        Talk to the server; fire with the outcome once every recipient has a
        final reply, then say QUIT and close.

        @raise DeliveryError: The dialogue stopped before that.
        """
        try:
            result = await self._dialogue()
        except DeliveryError:
            self.end()
            raise
        except Exception:
            self.abort()
            await self._closed
            raise
        self.end()
        return result

    def end(self) -> None:
        """
        Close the session without delaying the outcome: with QUIT when the
        server is in step (its reply is not read, as Postfix's
        C{smtp_skip_quit_response}), else at once.  A server that does not
        read what is left to write is cut off after L{QUIT_TIMEOUT}.
        """
        if self._lost is not None:
            return
        if not self.connected or self.transport is None:
            return
        if self._outstanding != 0 or self.failed:
            self.abort()
            return
        self._timeout = min(self._timeout, QUIT_TIMEOUT)
        self._stage = "quit"
        self._send(b"QUIT")
        # Its reply is not waited for; the close has a deadline of its own
        # (a send buffer never drained, a TLS close never answered).
        self._closeTimer = self._clock.callLater(QUIT_TIMEOUT, self.abort)
        self.transport.loseConnection()

    async def _dialogue(self) -> DeliveryResult:
        extensions = await self.open()
        return await self._transaction(extensions)

    async def open(self) -> dict[str, str]:
        """
        Read the greeting, say EHLO (or LHLO), use STARTTLS and AUTH as the
        request says.

        @return: The extensions offered in the last EHLO reply, keyword
            (upper case) to parameters.
        @raise DeliveryError: The server refused the session, or it failed.
        """
        request = self._request
        greeting = await self._reply()
        if greeting.code != 220:
            raise self._refused(greeting)
        extensions = await self._hello()
        if request.tls != "none":
            extensions = await self._startTLS(extensions)
        if request.username is not None:
            await self._authenticate(extensions)
        return extensions

    @property
    def secure(self) -> bool:
        """
        Whether STARTTLS succeeded on this connection.
        """
        return self._secure

    @property
    def verified(self) -> bool:
        """
        Whether the connection is encrypted and the server's certificate was
        verified for the expected name.
        """
        request = self._request
        return self._secure and request.tlsCreator is not None and request.verify

    async def _hello(self) -> dict[str, str]:
        """
        EHLO (LHLO in LMTP), falling back to HELO when EHLO is refused (RFC
        5321 section 3.2).

        @return: The extensions offered, keyword (upper case) to parameters.
        """
        request = self._request
        if not self._secure:
            # After STARTTLS, a lost connection here is a failed handshake.
            self._stage = "hello"
        self._send(f"{'LHLO' if request.lmtp else 'EHLO'} {request.heloName}")
        reply = await self._reply()
        if reply.positive:
            extensions = {}
            for line in reply.text.split("\n")[1:]:
                keyword, _, parameters = line.strip().partition(" ")
                extensions[keyword.upper()] = parameters
            return extensions
        if request.lmtp or self._secure or not 500 <= reply.code < 600:
            raise self._refused(reply)
        self._send(f"HELO {request.heloName}")
        reply = await self._reply()
        if not reply.positive:
            raise self._refused(reply)
        return {}

    async def _startTLS(self, extensions: dict[str, str]) -> dict[str, str]:
        request = self._request
        self._stage = "starttls"
        if "STARTTLS" not in extensions:
            if request.tls == "required":
                raise DeliveryError(
                    451, "Error: the server does not offer STARTTLS", "4.7.5", stage="starttls"
                )
            return extensions
        self._send(b"STARTTLS")
        reply = await self._reply()
        if reply.code != 220:
            if request.tls == "required":
                text = f"Error: STARTTLS refused: {reply.code} {reply.text}"
                raise DeliveryError(451, text, "4.7.5", stage="starttls", reply=reply)
            return extensions
        self._stage = "tls"
        if self._replies or self._parser.pending or self.failed:
            # Plain text behind the 220 would be read as answers to the
            # commands sent over TLS: refused, as text injected before the
            # handshake (RFC 3207 section 4.2 drops all it knew).
            self._fail("data after the reply to STARTTLS")
            raise self._lostError()
        transport = self.transport
        assert request.tlsCreator is not None and transport is not None
        ITLSTransport(transport).startTLS(request.tlsCreator)
        self._secure = True
        # The certificate is checked during the handshake; a failure loses the
        # connection while the new EHLO waits for its reply.
        try:
            extensions = await self._hello()
        except DeliveryError as e:
            if e.reply is not None or self._handshaken:
                raise
            # No reply came over TLS: the handshake itself failed.
            reason = "timeout" if self._timedOut else self._protocolError
            if reason is None:
                reason = failureText(self._lost) if self._lost is not None else e.message
            raise HandshakeError(e.message, reason) from None
        # The handshake is over: remember its session for the next
        # connection, when the creator keeps sessions (ResumingTLS).
        remember = getattr(request.tlsCreator, "remember", None)
        connection: Any = transport.getHandle()  # type: ignore[attr-defined]
        if remember is not None and isinstance(connection, SSL.Connection):
            remember(connection)
            self.resumed = sessionReused(connection)
        return extensions

    async def _authenticate(self, extensions: dict[str, str]) -> None:
        request = self._request
        assert request.username is not None and request.password is not None
        self._stage = "auth"
        if not self._secure and request.tls != "none":
            text = "Error: not sending credentials over an unencrypted connection"
            raise DeliveryError(451, text, "4.7.0", stage="auth")
        mechanisms = set(extensions.get("AUTH", "").upper().split())
        user = request.username.encode("utf-8")
        password = request.password.encode("utf-8")
        if "PLAIN" in mechanisms:
            token = base64.b64encode(b"\0" + user + b"\0" + password)
            self._send(b"AUTH PLAIN " + token)
            reply = await self._reply()
        elif "LOGIN" in mechanisms:
            self._send(b"AUTH LOGIN")
            reply = await self._reply()
            for secret in (user, password):
                if reply.code != 334:
                    break
                self._send(base64.b64encode(secret))
                reply = await self._reply()
        else:
            text = "Error: the server offers neither AUTH PLAIN nor AUTH LOGIN"
            raise DeliveryError(451, text, "4.7.0", stage="auth")
        if reply.code == 334:
            # A challenge where none belongs: cancel the exchange (RFC 4954 section 4).
            self._send(b"*")
            await self._reply()
        if reply.code != 235:
            raise self._refused(reply)

    async def _transaction(self, extensions: dict[str, str]) -> DeliveryResult:
        request = self._request
        self._stage = "mail"
        parameters = ""
        sender, *recipients = addresses = [request.sender, *request.recipients]
        if request.smtpUtf8 or not all(a.isascii() for a in addresses):
            # Without SMTPUTF8, a domain in U-labels goes in A-labels.
            forms = [asciiAddress(a) for a in addresses]
            if "SMTPUTF8" in extensions:
                parameters += " SMTPUTF8"
            elif request.smtpUtf8 or None in forms:
                text = "Error: the server does not support SMTPUTF8"
                raise DeliveryError(553, text, "5.6.7", stage="mail")
            else:
                sender, *recipients = (a or "" for a in forms)
        if "8BITMIME" in extensions:
            parameters += " BODY=8BITMIME"
        if request.requireTls:
            # RFC 8689 section 4.2.1: only over verified TLS, to a server
            # that promises to keep requiring it.
            if not (self._secure and request.tlsCreator is not None and request.verify):
                text = "Error: REQUIRETLS needs a verified TLS session"
                raise DeliveryError(550, text, "5.7.10", stage="mail")
            if "REQUIRETLS" not in extensions:
                text = "Error: the server does not support REQUIRETLS"
                raise DeliveryError(550, text, "5.7.30", stage="mail")
            parameters += " REQUIRETLS"
        pipelining = "PIPELINING" in extensions
        commands = [f"RCPT TO:<{address}>" for address in recipients]
        self._send(f"MAIL FROM:<{sender}>{parameters}")
        if pipelining:
            for command in commands:
                self._send(command)
            self._send(b"DATA")
        mailReply = await self._reply()
        rcptReplies = []
        for command in commands:
            if not pipelining and mailReply.positive:
                self._send(command)
            if pipelining or mailReply.positive:
                rcptReplies.append(await self._reply())
        accepted = [i for i, reply in enumerate(rcptReplies) if reply.positive]
        if not mailReply.positive:
            if pipelining:
                await self._abandonData(await self._reply())
            raise self._refused(mailReply)
        if not pipelining:
            if not accepted:
                self._send(b"RSET")
                await self._reply()
                return self._result(rcptReplies, {}, None)
            self._send(b"DATA")
        self._stage = "data"
        dataReply = await self._reply()
        self.checkDataReply(dataReply)
        if dataReply.code != 354 or not accepted:
            await self._abandonData(dataReply)
            refusals = {} if dataReply.code == 354 else dict.fromkeys(accepted, dataReply)
            return self._result(rcptReplies, refusals, dataReply if refusals else None)
        await self._sendBody(len(accepted) if request.lmtp else 1)
        self._stage = "reply"
        if not request.lmtp:
            final = await self._reply()
            return self._result(rcptReplies, dict.fromkeys(accepted, final), final)
        finals: dict[int, ClientReply] = {}
        for index in accepted:
            try:
                finals[index] = await self._reply()
            except DeliveryError as e:
                if not finals:
                    raise
                # Some recipients have their message: do not let the rest
                # make the whole delivery fail (RFC 2033 section 4.2).
                finals[index] = localReply(e)
        return self._result(rcptReplies, finals, None)

    async def _abandonData(self, dataReply: ClientReply) -> None:
        """
        DATA was answered although no transaction can take a message: if it
        was answered with 354, send an empty message and ignore its reply.
        """
        if dataReply.code == 354:
            self._send(b".")
            await self._reply()

    async def _sendBody(self, replies: int, stream: PipedBody | None = None) -> None:
        self._stage = "body"
        writer = _BodyWriter(self)
        stream = stream or self._request.stream
        assert stream is not None
        await self._race(stream.pipe(writer))
        if self.transport is not None:
            self.transport.write(writer.stuffer.end())
        self._resetTimer()
        self._outstanding += replies

    def _result(
        self,
        rcptReplies: list[ClientReply],
        finals: dict[int, ClientReply],
        dataReply: ClientReply | None,
    ) -> DeliveryResult:
        recipients = tuple(
            RecipientResult(address, finals.get(index, reply))
            for index, (address, reply) in enumerate(
                zip(self._request.recipients, rcptReplies, strict=True)
            )
        )
        return DeliveryResult(recipients, dataReply, self._secure)
