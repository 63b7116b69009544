# -*- test-case-name: tests.test_client -*-
"""
A small streaming SMTP and LMTP client: L{deliver} hands one message to a
server, the way the relay and LMTP handlers need it.

The dialogue is RFC 5321 (SMTP) or RFC 2033 (LMTP): the greeting, EHLO or
LHLO, STARTTLS (RFC 3207) when offered or required, AUTH PLAIN or LOGIN (RFC
4954) when credentials are given, MAIL, one RCPT per recipient (pipelined
with MAIL and DATA when the server offers PIPELINING, RFC 2920), DATA, the
body streamed with dot-stuffing and flow control, and QUIT.

The body is never held whole: an L{IMessageStream} is registered as the
streaming producer of the connection, so a slow server pauses the stream,
which pauses the client the message comes from.

The values, the reply parser, dot-stuffing and the non-verifying TLS
connection creator live in L{twisted_smtpd._clientwire}, which uses no
reactor; the names handlers need are re-exported here.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from attrs import frozen
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IProducer,
    IReactorTime,
    IStreamClientEndpoint,
    ITLSTransport,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_smtpd._clientwire import (
    ClientReply,
    DeliveryError,
    DeliveryResult,
    DotStuffer,
    RecipientResult,
    ReplyParser,
    UnverifiedClientTLS,
)
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.interfaces import IMessageStream

__all__ = [
    "TLS_MODES",
    "ClientReply",
    "DeliveryError",
    "DeliveryResult",
    "RecipientResult",
    "TLSMode",
    "UnverifiedClientTLS",
    "deliver",
]

_T = TypeVar("_T")

TLSMode = Literal["required", "opportunistic", "none"]
TLS_MODES: frozenset[str] = frozenset({"required", "opportunistic", "none"})

# How long a polite QUIT may take once the outcome is known.
QUIT_TIMEOUT = 10.0


@frozen
class _Request:
    sender: str
    recipients: tuple[str, ...]
    stream: IMessageStream
    lmtp: bool
    heloName: str
    tls: str
    tlsCreator: IOpenSSLClientConnectionCreator | None
    verify: bool
    username: str | None
    password: str | None
    smtpUtf8: bool
    requireTls: bool
    timeout: float


@implementer(IConsumer)
class _BodyWriter:
    """
    The L{IConsumer} a message stream is piped into: stuffs each chunk and
    writes it to the connection, registering the stream as the connection's
    streaming producer so that a full send buffer pauses it.
    """

    def __init__(self, protocol: _ClientProtocol) -> None:
        self._protocol = protocol
        self.stuffer = DotStuffer()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        transport = self._protocol.transport
        if transport is not None and self._protocol.connected:
            transport.registerProducer(producer, streaming)  # type: ignore[attr-defined]
        else:
            producer.stopProducing()

    def unregisterProducer(self) -> None:
        transport = self._protocol.transport
        if transport is not None and self._protocol.connected:
            transport.unregisterProducer()  # type: ignore[attr-defined]

    def write(self, data: bytes) -> None:
        self._protocol.writeBody(self.stuffer.encode(data))


class _ClientProtocol(Protocol):
    """
    One client session.  L{run} drives the dialogue as a coroutine; replies
    are handed to it in order through L{_reply}.
    """

    def __init__(self, request: _Request, clock: IReactorTime) -> None:
        self._request = request
        self._clock = clock
        self._parser = ReplyParser()
        self._replies: list[ClientReply] = []
        self._waiters: list[Deferred[ClientReply]] = []
        self._races: list[Deferred[Any]] = []
        self._lost: Failure | None = None
        self._closed: Deferred[None] = Deferred()
        self._timer: IDelayedCall | None = None
        self._timeout = request.timeout
        self._timedOut = False
        self._protocolError: str | None = None
        # Replies expected and not yet read; the greeting is the first.
        self._outstanding = 1
        self._secure = False
        self._stage = "greeting"

    # Protocol.

    def connectionMade(self) -> None:
        self._resetTimer()

    def dataReceived(self, data: bytes) -> None:
        self._resetTimer()
        try:
            replies = self._parser.feed(data)
        except ValueError as e:
            self._protocolError = str(e)
            self._abort()
            return
        for reply in replies:
            if self._waiters:
                self._waiters.pop(0).callback(reply)
            else:
                self._replies.append(reply)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self._lost = reason
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
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

    def _timeOut(self) -> None:
        self._timer = None
        self._timedOut = True
        self._abort()

    def _abort(self) -> None:
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
        reason = self._lost.getErrorMessage() if self._lost is not None else "unknown"
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
            if self.connected and self._outstanding == 0:
                await self._quit()
            else:
                self._abort()
                await self._closed
            raise
        except Exception:
            self._abort()
            await self._closed
            raise
        await self._quit()
        return result

    async def _quit(self) -> None:
        self._timeout = min(self._timeout, QUIT_TIMEOUT)
        self._stage = "quit"
        try:
            self._send(b"QUIT")
            await self._reply()
        except DeliveryError:
            pass
        if self.transport is not None:
            self.transport.loseConnection()
        await self._closed

    async def _dialogue(self) -> DeliveryResult:
        request = self._request
        greeting = await self._reply()
        if greeting.code != 220:
            raise self._refused(greeting)
        extensions = await self._hello()
        if request.tls != "none":
            extensions = await self._startTLS(extensions)
        if request.username is not None:
            await self._authenticate(extensions)
        return await self._transaction(extensions)

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
        transport = self.transport
        assert request.tlsCreator is not None and transport is not None
        ITLSTransport(transport).startTLS(request.tlsCreator)
        self._secure = True
        # The certificate is checked during the handshake; a failure loses the
        # connection while the new EHLO waits for its reply.
        extensions = await self._hello()
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
        if request.smtpUtf8 or not all(a.isascii() for a in (request.sender, *request.recipients)):
            if "SMTPUTF8" not in extensions:
                text = "Error: the server does not support SMTPUTF8"
                raise DeliveryError(553, text, "5.6.7", stage="mail")
            parameters += " SMTPUTF8"
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
        commands = [f"RCPT TO:<{address}>" for address in request.recipients]
        self._send(f"MAIL FROM:<{request.sender}>{parameters}")
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
                finals[index] = ClientReply(e.code, e.enhanced, e.message)
        return self._result(rcptReplies, finals, None)

    async def _abandonData(self, dataReply: ClientReply) -> None:
        """
        DATA was answered although no transaction can take a message: if it
        was answered with 354, send an empty message and ignore its reply.
        """
        if dataReply.code == 354:
            self._send(b".")
            await self._reply()

    async def _sendBody(self, replies: int) -> None:
        self._stage = "body"
        writer = _BodyWriter(self)
        await self._race(self._request.stream.pipe(writer))  # type: ignore[arg-type]
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


class _ClientFactory(ClientFactory):
    def __init__(self, request: _Request, clock: IReactorTime) -> None:
        self._request = request
        self._clock = clock

    def buildProtocol(self, addr: object) -> _ClientProtocol:
        protocol = _ClientProtocol(self._request, self._clock)
        protocol.factory = self
        return protocol


def _checkLine(name: str, value: str) -> None:
    if any(c in value for c in "\r\n\x00") or (name != "sender" and not value):
        raise ValueError(f"invalid {name}: {value!r}")


def deliver(
    endpoint: IStreamClientEndpoint,
    *,
    sender: str,
    recipients: Sequence[str],
    stream: IMessageStream | bytes,
    heloName: str,
    lmtp: bool = False,
    tls: TLSMode = "opportunistic",
    tlsHostname: str | None = None,
    trustRoot: Certificate | IOpenSSLTrustRoot | None = None,
    verify: bool = True,
    username: str | None = None,
    password: str | None = None,
    smtpUtf8: bool = False,
    requireTls: bool = False,
    timeout: float = 300.0,
    reactor: Any = None,
) -> Deferred[DeliveryResult]:
    """
    Hand one message to the SMTP or LMTP server at C{endpoint}.

    With C{tls="opportunistic"} STARTTLS is used when offered, with
    C{"required"} a server not offering it fails the delivery (451 4.7.5),
    with C{"none"} it is never used.  Once STARTTLS is used the server's
    certificate must be valid for C{tlsHostname} (checked with
    C{service_identity}); a failed check fails the delivery (451 4.7.5),
    there is no fall back to plain text.  Credentials are only sent over TLS,
    unless C{tls="none"} says plain text is intended.

    @param endpoint: Where the server listens.
    @param sender: The reverse-path (C{""} for C{<>}).
    @param recipients: The forward-paths, at least one.
    @param stream: The body (after dot-unstuffing), streamed; or C{bytes}.
    @param heloName: The name to give in EHLO/LHLO.
    @param lmtp: Speak LMTP (RFC 2033): LHLO, one reply per recipient.
    @param tls: C{"required"}, C{"opportunistic"} or C{"none"}.
    @param tlsHostname: The name the certificate must match, also sent as
        SNI; needed unless C{tls="none"} or C{verify=False}.
    @param trustRoot: The CAs to trust; the platform's by default.
    @param verify: C{False} accepts any certificate: INSECURE, it only keeps
        passive eavesdroppers out.
    @param username: For AUTH PLAIN (or LOGIN when only that is offered).
    @param password: Its password.
    @param smtpUtf8: Ask for SMTPUTF8 (RFC 6531) even for ASCII addresses;
        it is asked for anyway when an address is not ASCII.  A server not
        offering it fails the delivery (553 5.6.7).
    @param requireTls: The message carries REQUIRETLS (RFC 8689): it is only
        sent over TLS verified for C{tlsHostname}, to a server offering
        REQUIRETLS (which MAIL then carries); otherwise the delivery fails
        permanently (550 5.7.10 or 5.7.30).  STARTTLS is then required
        whatever C{tls} says.
    @param timeout: Seconds to wait for the connection and for each reply
        (and for the server to take each part of the body).
    @param reactor: The reactor for timeouts; the global one by default.
    @return: A L{Deferred} firing with a L{DeliveryResult} once every
        recipient has its final reply (in LMTP, when the connection is lost
        after some recipients' replies, the others get a 451 made here), or
        failing with L{DeliveryError}; if the stream fails (the body did not
        arrive whole), the connection is dropped before the final dot and
        the L{Deferred} fails with the stream's failure.
    @raise ValueError: An argument is invalid.
    """
    if tls not in TLS_MODES:
        raise ValueError(f"tls must be one of {', '.join(sorted(TLS_MODES))}")
    if not recipients:
        raise ValueError("at least one recipient is needed")
    _checkLine("sender", sender)
    for address in recipients:
        _checkLine("recipient", address)
    _checkLine("heloName", heloName)
    if (username is None) != (password is None):
        raise ValueError("username and password go together")
    if requireTls:
        tls = "required"
    creator: IOpenSSLClientConnectionCreator | None = None
    if tls != "none":
        if verify:
            if not tlsHostname:
                raise ValueError("tlsHostname is needed to verify the server's certificate")
            creator = optionsForClientTLS(tlsHostname, trustRoot=trustRoot)
        else:
            creator = UnverifiedClientTLS(tlsHostname)
    if isinstance(stream, bytes):
        body = MessageStream()
        body._write(stream)
        body._finish()
        stream = body
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    request = _Request(
        sender=sender,
        recipients=tuple(recipients),
        stream=stream,
        lmtp=lmtp,
        heloName=heloName,
        tls=tls,
        tlsCreator=creator,
        username=username,
        password=password,
        smtpUtf8=smtpUtf8,
        requireTls=requireTls,
        verify=verify,
        timeout=timeout,
    )
    return Deferred.fromCoroutine(_connectAndRun(endpoint, request, reactor))


async def _connectAndRun(
    endpoint: IStreamClientEndpoint, request: _Request, clock: Any
) -> DeliveryResult:
    connecting: Deferred[Any] = endpoint.connect(_ClientFactory(request, clock))
    timedOut = []

    def timeOut() -> None:
        timedOut.append(True)
        connecting.cancel()

    timer = clock.callLater(request.timeout, timeOut)
    try:
        protocol: _ClientProtocol = await connecting
    except CancelledError:
        if not timedOut:
            raise
        raise DeliveryError(
            451, "Error: timeout connecting to the server", "4.4.1", stage="connect"
        ) from None
    except Exception as e:
        text = f"Error: cannot connect to the server: {e}"
        raise DeliveryError(451, text, "4.4.1", stage="connect") from e
    finally:
        if timer.active():
            timer.cancel()
    return await protocol.run()
