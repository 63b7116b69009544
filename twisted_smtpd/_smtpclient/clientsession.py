# -*- test-case-name: tests.test_clientsession -*-
"""
A downstream SMTP or LMTP session driven one command at a time
(L{ClientSession}), for handlers that pass each command of their own client
on to the next hop and answer with its verdict, as Postfix's before-queue
proxy does: MAIL, then each RCPT, then the body, then RSET before the next
message on the same connection.

L{openSession} connects, reads the greeting and says EHLO/LHLO, STARTTLS
and AUTH as asked; L{twisted_smtpd._smtpclient.clientpool.SessionPool} keeps open
sessions for the next messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from attrs import evolve
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IProducer,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_smtpd._core.replies import sanitiseText
from twisted_smtpd._smtpclient.clientconnect import connectWithin
from twisted_smtpd._smtpclient.clientprotocol import (
    QUIT_TIMEOUT,
    ClientProtocol,
    Request,
    _BodyWriter,
)
from twisted_smtpd._smtpclient.clientrequest import PipedBody
from twisted_smtpd._smtpclient.clientwire import (
    ClientReply,
    DeliveryError,
    HandshakeError,
    localReply,
)

#: The most octets gathered before a BDAT chunk leaves.
CHUNK_SIZE = 65536

#: The most seconds octets gathered wait before their BDAT chunk leaves,
#: however few they are: a body trickling in slower than L{CHUNK_SIZE}
#: octets a few minutes would otherwise leave the next hop without a word
#: for longer than it waits (Postfix's C{smtpd_timeout} is 300 s, 10 s
#: under stress), and it would drop the session.
CHUNK_WAIT = 1.0

#: Seconds the RSET checking an idle session may take (Postfix's
#: C{smtp_rset_timeout}): a session the next hop or a firewall dropped
#: silently is given up on soon, not after the whole reply timeout.
RSET_TIMEOUT = 20.0


class ProtocolFactory(ClientFactory):
    """
    Builds the L{ClientProtocol} of one connection to the next hop, for a
    single delivery (L{twisted_smtpd._smtpclient.client}) or a reusable
    session (L{openSession}).
    """

    def __init__(self, request: Request, clock: Any) -> None:
        self._request = request
        self._clock = clock

    # No "Starting factory" line per connection.
    noisy = False

    def buildProtocol(self, addr: object) -> ClientProtocol:
        protocol = ClientProtocol(self._request, self._clock)
        protocol.factory = self
        return protocol


@implementer(IConsumer)
class _ChunkWriter:
    """
    The L{IConsumer} a message stream is piped into for BDAT (RFC 3030):
    every chunk of the stream leaves as one C{BDAT <size>} command followed
    by its octets, unchanged, so that binary content arrives byte for byte.

    Each chunk's reply is read as it arrives and only its verdict kept, so
    that a next hop answering every chunk with a long reply makes the
    client hold none of them, however long the message.

    @ivar refusal: The first chunk's reply that was not positive.
    @ivar lost: The failure that ended the session before every chunk was
        answered.
    @ivar last: The last chunk's reply, with nothing in it (the verdicts
        are in L{refusal} and L{lost}): fired once every chunk is
        answered, the replies coming in order.
    """

    def __init__(self, protocol: ClientProtocol) -> None:
        self._protocol = protocol
        self._body = _BodyWriter(protocol)
        # The pieces gathered for the next chunk, joined as they come.
        self._buffer = bytearray()
        # Sends them after CHUNK_WAIT seconds, if they do not fill a chunk.
        self._timer: IDelayedCall | None = None
        self.chunks = 0
        self.refusal: ClientReply | None = None
        self.lost: DeliveryError | None = None
        self.last: Deferred[None] | None = None

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._body.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._body.unregisterProducer()

    def write(self, data: bytes) -> None:
        # Small pieces are gathered into chunks of CHUNK_SIZE octets, so that
        # a client sending its message in tiny packets does not make one
        # BDAT command (and one reply to keep) per packet.  They are joined
        # as they come (as the server joins short BDAT pieces, SHORT_PIECE):
        # kept as a list, pieces of a few octets (a DATA body in tiny TLS
        # records) would cost about twenty times their size in objects.
        if not self._buffer and len(data) >= CHUNK_SIZE:
            self._send(data)
            return
        self._buffer += data
        if len(self._buffer) >= CHUNK_SIZE:
            self.flush()
        elif self._timer is None:
            self._timer = self._protocol.clock.callLater(CHUNK_WAIT, self.flush)

    def flush(self) -> None:
        """
        Send what is gathered as one chunk.
        """
        self.stop()
        if not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer = bytearray()
        self._send(data)

    def stop(self) -> None:
        """
        Send nothing more by itself (what is gathered waits for L{flush}).
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _send(self, data: bytes) -> None:
        self.chunks += 1
        self.last = self._protocol.writeChunk(data).addCallbacks(self._verdict, self._lost)

    def _verdict(self, reply: ClientReply) -> None:
        if self.refusal is None and not reply.positive:
            self.refusal = reply

    def _lost(self, failure: Failure) -> Failure | None:
        error = failure.value
        if not isinstance(error, DeliveryError):
            return failure
        if self.lost is None:
            self.lost = error
        return None


@implementer(IOpenSSLClientConnectionCreator)
class ResumingTLS:
    """
    A client TLS connection creator that offers the session of the last
    connection for resumption (RFC 8446 section 2.2, RFC 5077), so that the
    next session to the same next hop skips the full handshake when the
    next hop allows it.  The certificate checks are those of the wrapped
    creator.
    """

    def __init__(self, creator: IOpenSSLClientConnectionCreator) -> None:
        self._creator = creator
        self._session: SSL.Session | None = None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        A new client connection, offering the remembered session.
        """
        connection: SSL.Connection = self._creator.clientConnectionForTLS(tlsProtocol)
        if self._session is not None:
            connection.set_session(self._session)
        return connection

    def remember(self, connection: SSL.Connection) -> None:
        """
        Keep the session of C{connection}, after its handshake.
        """
        session = connection.get_session()
        if session is not None:
            self._session = session


class ClientSession:
    """
    An open session to a next hop, greeted (and secured and authenticated
    as configured), ready for a transaction.

    Each method sends one command (or the body) and waits for its reply;
    a failure of the connection raises L{DeliveryError} and leaves the
    session unusable (L{usable} is then false).

    @ivar extensions: The extensions the next hop offered, keyword (upper
        case) to parameters.
    @ivar lmtp: Whether the session speaks LMTP.
    @ivar messages: How many messages were sent on this session.
    """

    def __init__(self, protocol: ClientProtocol, extensions: dict[str, str], lmtp: bool) -> None:
        self._protocol = protocol
        self.extensions = extensions
        self.lmtp = lmtp
        self.messages = 0
        self._broken = False

    @property
    def secure(self) -> bool:
        """
        Whether the session is encrypted.
        """
        return self._protocol.secure

    @property
    def verified(self) -> bool:
        """
        Whether the session is encrypted with a verified certificate.
        """
        return self._protocol.verified

    @property
    def resumed(self) -> bool:
        """
        Whether the TLS session was resumed from an earlier one.
        """
        return self._protocol.resumed

    @property
    def usable(self) -> bool:
        """
        Whether the connection is up, the next hop has not broken the
        protocol, and no reply is outstanding, so that a new command may be
        sent.
        """
        protocol = self._protocol
        return (
            not self._broken
            and bool(protocol.connected)
            and not protocol.failed
            and protocol._outstanding == 0
        )

    def offers(self, *keywords: str) -> bool:
        """
        Whether the next hop offered every one of C{keywords}.
        """
        return all(keyword in self.extensions for keyword in keywords)

    async def command(self, line: str, stage: str) -> ClientReply:
        """
        Send one command line and return its reply.

        @raise DeliveryError: The connection failed or timed out.
        """
        protocol = self._protocol
        protocol._stage = stage
        protocol._send(line)
        try:
            return await protocol._reply()
        except DeliveryError:
            self._broken = True
            raise

    async def mail(self, sender: str, parameters: str) -> ClientReply:
        """
        C{MAIL FROM:<sender> parameters}.
        """
        return await self.command(f"MAIL FROM:<{sender}>{parameters}", "mail")

    async def rcpt(self, address: str, parameters: str) -> ClientReply:
        """
        C{RCPT TO:<address> parameters}.
        """
        return await self.command(f"RCPT TO:<{address}>{parameters}", "rcpt")

    async def rset(self) -> ClientReply:
        """
        C{RSET}: end any transaction, before the next message; its reply
        is waited for L{RSET_TIMEOUT} seconds at most.
        """
        protocol = self._protocol
        timeout = protocol._timeout
        protocol._timeout = min(timeout, RSET_TIMEOUT)
        try:
            return await self.command("RSET", "rset")
        finally:
            protocol._timeout = timeout

    async def data(self, stream: PipedBody, recipients: int) -> list[ClientReply]:
        """
        Send the body with DATA, dot-stuffed.

        @param recipients: How many recipients were accepted: the number of
            replies an LMTP server gives after the body.
        @return: The replies after the body: one in SMTP, one per recipient
            in LMTP; or the one refusal of DATA.
        """
        protocol = self._protocol
        reply = await self.command("DATA", "data")
        try:
            protocol.checkDataReply(reply)
        except DeliveryError:
            self._broken = True
            raise
        if reply.code != 354:
            return [reply]
        try:
            await protocol._sendBody(recipients if self.lmtp else 1, stream)
        except BaseException:
            self.abort()
            raise
        return await self._finals(recipients if self.lmtp else 1)

    async def bdat(self, stream: PipedBody, recipients: int) -> list[ClientReply]:
        """
        Send the body with BDAT (RFC 3030), unchanged, each chunk as it
        comes, pipelined; then C{BDAT 0 LAST}.

        @return: As for L{data}; a refused chunk stands for every recipient
            (and the connection is closed, as the next hop's state is then
            unclear).
        """
        protocol = self._protocol
        protocol._stage = "body"
        writer = _ChunkWriter(protocol)
        try:
            await protocol._race(stream.pipe(writer))
        except BaseException as e:
            writer.stop()
            self.abort()
            if isinstance(e, DeliveryError) and writer.refusal is not None:
                # The next hop refused a chunk, then closed: its verdict,
                # received first, is the answer.
                return [writer.refusal]
            raise
        count = recipients if self.lmtp else 1
        writer.flush()
        # BDAT LAST is answered once per recipient in LMTP.
        protocol._outstanding += count
        protocol.writeBody(b"BDAT 0 LAST\r\n")
        protocol._stage = "reply"
        if writer.last is not None:
            await writer.last
        if writer.refusal is not None:
            # A refused chunk is the verdict, even when the next hop closed
            # the connection behind it (RFC 3030 section 2).
            self.abort()
            return [writer.refusal]
        if writer.lost is not None:
            self._broken = True
            raise writer.lost
        return await self._finals(count)

    async def _finals(self, count: int) -> list[ClientReply]:
        protocol = self._protocol
        protocol._stage = "reply"
        self.messages += 1
        finals: list[ClientReply] = []
        for _ in range(count):
            try:
                finals.append(messageVerdict(await protocol._reply()))
            except DeliveryError as e:
                self._broken = True
                if not finals:
                    raise
                # Some recipients have their message: the others get this
                # temporary failure, not a failure of the whole delivery
                # (RFC 2033 section 4.2).
                finals.append(localReply(e))
            if finals[-1].detail is not None:
                # The server broke the protocol: it is out of step.
                self._broken = True
        return finals

    async def quit(self) -> None:
        """
        Say QUIT, wait for its reply and close, politely when possible, all
        within L{QUIT_TIMEOUT}: for an idle session closed when nothing
        waits on it (the pool's idle limit, a shutdown).  A next hop that
        answers QUIT, then reads nothing more (its TLS close alert never
        answered, a send buffer never drained) is cut off at that deadline,
        as one that never answers: the close completing is not left to it.
        """
        protocol = self._protocol
        if not self.usable:
            self.abort()
            await protocol._closed
            return
        protocol._timeout = min(protocol._timeout, QUIT_TIMEOUT)
        protocol._closeTimer = protocol.clock.callLater(QUIT_TIMEOUT, protocol.abort)
        with contextlib.suppress(DeliveryError):
            # Not answered in time: the deadline aborts the connection.
            await self.command("QUIT", "quit")
        if protocol.transport is not None:
            protocol.transport.loseConnection()
        await protocol._closed

    def abort(self) -> None:
        """
        Drop the connection at once.
        """
        self._broken = True
        self._protocol.abort()


_log = Logger()


def messageVerdict(reply: ClientReply) -> ClientReply:
    """
    C{reply} after a message, or a temporary failure standing for it when
    it is neither an acceptance nor a refusal (a 354, which asks for a
    message no command began): the server broke the protocol.  Its text is
    the one L{twisted_smtpd._smtpclient.clientwire.replyError} gives such a
    reply, with the code only; the reply itself is its C{detail}, for the
    log line.
    """
    if reply.positive or 400 <= reply.code < 600:
        return reply
    words = " ".join(sanitiseText(reply.text))
    return ClientReply(
        451,
        "4.5.0",
        f"Error: unexpected reply from the next hop ({reply.code}), try again later",
        detail=f"Error: unexpected reply after the message: {reply.code} {words}",
    )


_T = TypeVar("_T")


def plaintextFallback(request: Request) -> Request | None:
    """
    How to try again in plain text, on a new connection, after the TLS
    handshake that followed STARTTLS failed: as Postfix's smtp client at
    security level C{may} (C{PLAINTEXT_FALLBACK_OK_AFTER_STARTTLS_FAILURE}),
    only for opportunistic TLS, never when the certificate was to be
    verified, when the message carries REQUIRETLS (RFC 8689) or when
    credentials were to be sent over TLS.

    @return: The plain-text request, or C{None} when there is no fallback.
    """
    if (
        request.tls != "opportunistic"
        or request.verify
        or request.requireTls
        or request.username is not None
    ):
        return None
    return evolve(request, tls="none", tlsCreator=None)


async def withFallback(
    attempt: Callable[[Request], Awaitable[_T]], request: Request, peer: str
) -> _T:
    """
    C{attempt(request)}, and when its TLS handshake failed and
    L{plaintextFallback} allows it, once more in plain text, with one log
    line saying so (naming C{peer} and the TLS error, sanitised).
    """
    try:
        return await attempt(request)
    except HandshakeError as e:
        plain = plaintextFallback(request)
        if plain is None:
            raise
        _log.warn(
            "STARTTLS handshake with {peer} failed ({error}); trying again in plain text"
            " (opportunistic TLS)",
            peer=" ".join(sanitiseText(peer)),
            error=" ".join(sanitiseText(e.reason)),
        )
        return await attempt(plain)


async def openSession(
    endpoint: IStreamClientEndpoint, request: Request, clock: Any, peer: str = "the next hop"
) -> ClientSession:
    """
    Connect to C{endpoint} and get a session ready for a transaction.  With
    opportunistic TLS and no certificate verification, a failed TLS
    handshake is followed by one more connection in plain text
    (L{plaintextFallback}), logged once.

    @param request: How to talk to the next hop (C{lmtp}, C{heloName}, TLS,
        credentials, C{timeout}); its C{sender}, C{recipients} and C{stream}
        are not used.
    @param peer: The next hop's name, for the log line of a fallback.
    @raise DeliveryError: The connection failed, or the next hop refused
        the session; the connection is then closed.
    """
    return await withFallback(lambda r: _openSession(endpoint, r, clock), request, peer)


async def _openSession(
    endpoint: IStreamClientEndpoint, request: Request, clock: Any
) -> ClientSession:
    protocol: ClientProtocol = await connectWithin(
        endpoint, ProtocolFactory(request, clock), clock, request.timeout
    )
    try:
        extensions = await protocol.open()
    except DeliveryError:
        # The refusal is the outcome: the close (QUIT, its reply not
        # waited for) goes on behind it, within its deadline.
        protocol.end()
        raise
    except BaseException:
        protocol.abort()
        raise
    return ClientSession(protocol, extensions, request.lmtp)
