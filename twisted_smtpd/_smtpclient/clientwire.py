# -*- test-case-name: tests.test_client -*-
"""
The reactor-free part of the SMTP/LMTP client in L{twisted_smtpd._smtpclient.client}:
replies and results as values, the reply parser, dot-stuffing, the mapping
of a next hop's failure to the reply a handler gives its own client, the
TLS connection creator that does not verify, and what a TLS connection or
a failure says, in words.

Bytes and values in, values out; no reactor.
"""

from __future__ import annotations

import re
from typing import Any

from attrs import field, frozen
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_smtpd._core.errors import SMTPError

# Bounds on what a server may send as one reply: RFC 5321 section 4.5.3.1.5
# allows 512 octets per line; EHLO replies hold a few dozen lines.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100
# The most characters of text kept of one reply (lines beyond are read and
# dropped): more than any EHLO reply holds, and more than a reply passed on
# (20 lines of 480 octets) or logged shows; so that an LMTP server
# answering each of a thousand recipients at the greatest length allowed
# makes the client hold megabytes, not hundreds of them.
MAX_REPLY_TEXT = 16384

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
# The stages after which a refusal concerns the session, not the message.
SESSION_STAGES = frozenset({"connect", "greeting", "hello", "starttls", "tls", "auth"})


@frozen
class ClientReply:
    """
    One reply from the server.

    @ivar code: The three-digit reply code.
    @ivar enhanced: The RFC 3463 enhanced status code, if the reply had one.
    @ivar text: The text, lines joined with C{"\\n"}, enhanced codes removed.
    @ivar detail: For a reply made here, standing for one that never came
        (L{localReply}): what went wrong, for the log line only (it may
        quote the server's words or name it); C{None} for a reply the
        server sent.
    """

    code: int
    enhanced: str | None
    text: str
    detail: str | None = field(default=None, kw_only=True)

    @property
    def positive(self) -> bool:
        """
        Whether this is a 2xx reply.
        """
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        """
        Whether this is a 4xx reply.
        """
        return 400 <= self.code < 500

    def toSMTPError(self) -> SMTPError:
        """
        An L{SMTPError} repeating this reply.
        """
        return SMTPError(self.code, self.text, self.enhanced)


@frozen
class RecipientResult:
    """
    What became of one recipient.

    @ivar address: The recipient, as given to L{deliver}.
    @ivar reply: Its final reply: the refusal of its RCPT, or the reply to
        the message (SMTP: the one reply after the body or the refusal of
        DATA; LMTP: its own reply after the body, RFC 2033 section 4.2).
    """

    address: str
    reply: ClientReply

    @property
    def accepted(self) -> bool:
        """
        Whether the server took responsibility for the message for this
        recipient.
        """
        return self.reply.positive


@frozen
class DeliveryResult:
    """
    The outcome of L{deliver} once every recipient has a final reply.

    @ivar recipients: One L{RecipientResult} per recipient, in order.
    @ivar dataReply: In SMTP, the reply after the body; in either protocol,
        the refusal of DATA; C{None} when DATA was not reached or in LMTP.
    @ivar secure: Whether the session was encrypted with STARTTLS.
    """

    recipients: tuple[RecipientResult, ...]
    dataReply: ClientReply | None
    secure: bool

    @property
    def accepted(self) -> tuple[RecipientResult, ...]:
        """
        The recipients the server accepted the message for.
        """
        return tuple(r for r in self.recipients if r.accepted)

    @property
    def refused(self) -> tuple[RecipientResult, ...]:
        """
        The recipients it did not.
        """
        return tuple(r for r in self.recipients if not r.accepted)


class DeliveryError(SMTPError):
    """
    The dialogue stopped before every recipient had a final reply: nothing
    was delivered.

    C{code} is 4xx for a temporary failure (the connection failed, was lost
    or timed out, TLS failed, or the server answered 4xx) and 5xx for a
    permanent one (the server answered 5xx).

    @ivar stage: Where it stopped: C{"connect"}, C{"greeting"}, C{"hello"},
        C{"starttls"}, C{"tls"}, C{"auth"}, C{"mail"}, C{"data"},
        C{"body"} or C{"reply"}.
    @ivar reply: The server's reply, or C{None} for a local failure.
    """

    def __init__(
        self,
        code: int,
        message: str,
        enhanced: str | None = None,
        *,
        stage: str,
        reply: ClientReply | None = None,
    ) -> None:
        super().__init__(code, message, enhanced)
        self.stage = stage
        self.reply = reply

    @property
    def temporary(self) -> bool:
        """
        Whether trying again later may succeed.
        """
        return 400 <= self.code < 500

    def __str__(self) -> str:
        stage = f"({self.stage})"
        # A failure of the connection names its stage in its words already.
        named = "" if stage in self.message else f" {stage}"
        return f"{self.code} {self.enhanced or ''} {self.message}{named}"


class HandshakeError(DeliveryError):
    """
    The TLS handshake after the server's 220 to STARTTLS failed (the
    connection was lost, timed out or broke the protocol before the
    handshake completed): 451 4.7.5, stage C{"tls"}.

    @ivar reason: What went wrong, for a log line (not yet sanitised).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(451, message, "4.7.5", stage="tls")
        self.reason = reason


class MalformedReply(ValueError):
    """
    The bytes a server sent are not a well-formed reply.

    @ivar replies: The replies completed before the malformed part, in
        order: they were answers to commands, and stand (a 250 after the
        body means the server has the message, whatever follows it).
    """

    def __init__(self, message: str, replies: list[ClientReply]) -> None:
        super().__init__(message)
        self.replies = replies


class ReplyParser:
    """
    Splits the bytes a server sends into L{ClientReply}s (RFC 5321 section
    4.2.1: C{"250-"} continues a reply, C{"250 "} ends it).  Lines may end
    with CRLF or a bare LF.

    Once the bytes are malformed, every later call raises too: nothing
    after the fault is parsed.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._code: bytes | None = None
        self._lines: list[str] = []
        # Lines of the reply being read, and characters of text kept.
        self._count = 0
        self._kept = 0
        self._error: str | None = None

    @property
    def pending(self) -> bool:
        """
        Whether part of a reply was received and not yet completed (or
        bytes that are no reply at all).
        """
        return bool(self._buffer or self._count or self._error)

    def feed(self, data: bytes) -> list[ClientReply]:
        """
        Add received bytes.

        @return: The replies completed by them, in order.
        @raise MalformedReply: The bytes are not a well-formed reply; it
            carries the replies completed before the fault.
        """
        if self._error is not None:
            raise MalformedReply(self._error, [])
        buffer = self._buffer + data
        replies: list[ClientReply] = []
        start = 0
        try:
            while True:
                end = buffer.find(b"\n", start)
                if end < 0:
                    break
                line = buffer[start:end]
                start = end + 1
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > MAX_REPLY_LINE:
                    raise ValueError("reply line too long")
                reply = self._line(line)
                if reply is not None:
                    replies.append(reply)
            self._buffer = buffer[start:]
            if len(self._buffer) > MAX_REPLY_LINE:
                raise ValueError("reply line too long")
        except ValueError as e:
            self._error = str(e)
            self._buffer, self._lines, self._count = b"", [], 0
            raise MalformedReply(self._error, replies) from None
        return replies

    def _line(self, line: bytes) -> ClientReply | None:
        code = line[:3]
        separator = line[3:4]
        if len(code) != 3 or not code.isdigit() or separator not in (b"", b" ", b"-"):
            raise ValueError(f"malformed reply line: {line[:80]!r}")
        if code[:1] not in b"2345":
            # RFC 5321 section 4.2.1: 1yz is never used, 6yz-9yz do not exist.
            raise ValueError(f"reply code out of range: {line[:80]!r}")
        if self._code is not None and code != self._code:
            raise ValueError("reply code changed inside a multi-line reply")
        self._code = code
        self._count += 1
        if self._kept < MAX_REPLY_TEXT:
            text = line[4:].decode("utf-8", "replace")[: MAX_REPLY_TEXT - self._kept]
            self._kept += len(text) + 1
            self._lines.append(text)
        if self._count > MAX_REPLY_LINES:
            raise ValueError("reply has too many lines")
        if separator == b"-":
            return None
        lines, self._lines, self._code = self._lines, [], None
        self._count = self._kept = 0
        return _makeReply(int(code), lines)


def _makeReply(code: int, lines: list[str]) -> ClientReply:
    """
    Build a reply, taking the enhanced status code (RFC 2034 section 4) off
    every line that carries the one the first line has.
    """
    match = _ENHANCED.match(lines[0])
    enhanced = None
    if match is not None and match.group(1) == str(code)[0]:
        enhanced = ".".join(match.groups())
        lines = [
            line[len(enhanced) :].lstrip(" ") if line.startswith(enhanced) else line
            for line in lines
        ]
    return ClientReply(code, enhanced, "\n".join(lines))


class DotStuffer:
    """
    Transparency for message text (RFC 5321 section 4.5.2), chunk by chunk:
    a period starting a line gets another one.

    A period after a bare CR or bare LF is doubled too, so that a server
    treating those as line ends can never be made to see the end of the data
    inside the message (SMTP smuggling); for a message with CRLF line ends
    only, the text arrives byte for byte.
    """

    def __init__(self) -> None:
        # The start of the body counts as the start of a line.
        self._tail = b"\r\n"

    def encode(self, chunk: bytes) -> bytes:
        """
        Stuff one chunk, carrying the line-start state over from the last.
        """
        if not chunk:
            return b""
        out = chunk.replace(b"\n.", b"\n..").replace(b"\r.", b"\r..")
        if chunk[:1] == b"." and self._tail[-1:] in (b"\r", b"\n"):
            out = b"." + out
        self._tail = (self._tail + chunk)[-2:]
        return out

    def end(self) -> bytes:
        """
        The end-of-data indication, after a CRLF when the body did not end
        with one.
        """
        return b".\r\n" if self._tail == b"\r\n" else b"\r\n.\r\n"


#: OpenSSL's option refusing renegotiation (1.1.0h and later); pyOpenSSL
#: leaves the name out where the library has none.
NO_RENEGOTIATION: int = getattr(SSL, "OP_NO_RENEGOTIATION", 0)


@implementer(IOpenSSLClientConnectionCreator)
class RenegotiationRefusing:
    """
    A client TLS connection creator whose connections refuse a
    renegotiation the server starts (a TLS 1.2 HelloRequest is answered
    with a no_renegotiation alert), as the server's own contexts refuse a
    client's (L{twisted_smtpd._serving.sni.TLSPolicy.newContext}): OpenSSL
    lets a client renegotiate when its server asks, a full handshake each
    time, the server's certificate changing in the middle of a session.

    The option is set on each connection (pyOpenSSL 25 and later, whose
    contexts cannot change once used).  With an older pyOpenSSL, which has
    no options per connection, it is set on the context of the wrapped
    creator's first connection (Twisted's C{optionsForClientTLS} keeps its
    context to itself), which is then made again, as OpenSSL copies a
    context's options into a connection when it is made.  The certificate
    checks are the wrapped creator's.
    """

    def __init__(self, creator: IOpenSSLClientConnectionCreator) -> None:
        self._creator = creator

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        A new client connection (L{IOpenSSLClientConnectionCreator}).
        """
        connection: SSL.Connection = self._creator.clientConnectionForTLS(tlsProtocol)
        if not NO_RENEGOTIATION:
            return connection
        setOptions = getattr(connection, "set_options", None)
        if setOptions is not None:
            setOptions(NO_RENEGOTIATION)
            return connection
        context = connection.get_context()
        # set_options(0) changes nothing and gives the options set.
        if not context.set_options(0) & NO_RENEGOTIATION:
            context.set_options(NO_RENEGOTIATION)
            connection = self._creator.clientConnectionForTLS(tlsProtocol)
        return connection


def refuseRenegotiation(
    creator: IOpenSSLClientConnectionCreator,
) -> IOpenSSLClientConnectionCreator:
    """
    C{creator}, its connections refusing the server's renegotiation
    (L{RenegotiationRefusing}).
    """
    return RenegotiationRefusing(creator)


@implementer(IOpenSSLClientConnectionCreator)
class UnverifiedClientTLS:
    """
    A client TLS connection creator that sends C{hostname} as SNI but does
    not verify the server's certificate at all.  INSECURE: it encrypts
    against passive eavesdroppers only; anyone able to intercept the
    connection can read and change the mail.
    """

    def __init__(self, hostname: str | None) -> None:
        self._hostname = hostname
        self._options = CertificateOptions()
        if NO_RENEGOTIATION:
            # The server's renegotiation is refused (L{refuseRenegotiation}).
            self._options.getContext().set_options(NO_RENEGOTIATION)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        A new client connection (L{IOpenSSLClientConnectionCreator}).
        """
        connection = SSL.Connection(self._options.getContext(), None)
        name = self._hostname
        if name and not isIPAddress(name) and not isIPv6Address(name):
            connection.set_tlsext_host_name(name.encode("idna"))
        connection.set_app_data(tlsProtocol)
        return connection


#: The words our own client is told when the next hop failed without a
#: refusal of its own (by the enhanced code of the failure): what went
#: wrong in general terms, never the next hop's name or address, nor the
#: details of the failure (a DNS or certificate error names hosts), which
#: the log line gives, as Postfix's before-queue proxy answers
#: C{451 4.3.0 Error: queue file write error} whatever happened.
LOCAL_FAILURES = {
    "4.3.2": "Error: shutting down, try again later",
    "4.4.1": "Error: the next hop cannot be reached, try again later",
    "4.4.2": "Error: the connection to the next hop failed, try again later",
    "4.4.5": "Error: the next hop is busy, try again later",
    "4.5.0": "Error: the next hop broke the protocol, try again later",
    "4.7.0": "Error: cannot authenticate to the next hop, try again later",
    "4.7.5": "Error: no secure session with the next hop, try again later",
}

#: The words for any other failure of the next hop without a reply.
NEXT_HOP_FAILED = "Error: the next hop failed, try again later"


def localReply(error: DeliveryError) -> ClientReply:
    """
    The reply standing for an LMTP recipient's final reply that never came
    (the session failed after some had theirs, RFC 2033 section 4.2): the
    server's own reply if the failure was one, else the generic words of
    L{LOCAL_FAILURES}, the failure itself (which may quote what the server
    sent, or name it) kept as its C{detail} for the log line.
    """
    if error.reply is not None:
        return error.reply
    text = LOCAL_FAILURES.get(error.enhanced or "", NEXT_HOP_FAILED)
    return ClientReply(error.code, error.enhanced, text, detail=error.message)


def remoteFailure(error: DeliveryError) -> SMTPError:
    """
    The reply a handler passing mail on gives its own client when the next
    hop failed: a refusal of the session (greeting, EHLO, TLS, AUTH) or a
    local failure is temporary whatever the code (the next hop or its
    configuration must be fixed, the message is fine); a refusal of the
    message keeps the server's code and text, so a 5xx stays permanent.

    The text of a local failure or of a refused session is generic
    (L{LOCAL_FAILURES}): it never names the next hop (an internal host,
    which the client has no business knowing) nor quotes what it said
    before the transaction (a greeting or an EHLO reply starts with its
    host name); the caller's log line says all of it.

    @param error: The failure of L{deliver}.
    """
    reply = error.reply
    if reply is None:
        text = LOCAL_FAILURES.get(error.enhanced or "", NEXT_HOP_FAILED)
        return SMTPError(error.code, text, error.enhanced)
    if error.stage in SESSION_STAGES:
        text = f"Error: the next hop refused the session ({reply.code}), try again later"
        return SMTPError(451, text, reply.enhanced if reply.temporary else "4.4.1")
    return replyError(reply)


#: A next hop's replies that say it closes, and what our own client is told
#: instead: our server does not close.
_CLOSING = {421: 451, 521: 550}


def replyError(reply: ClientReply) -> SMTPError:
    """
    The L{SMTPError} repeating a next hop's refusal to our own client; 421
    and 521, which would announce that our own server is closing (and close
    our client's session, RFC 5321 section 3.8, RFC 7504), become 451 and
    550.  A reply that refuses nothing (2xx, 3xx where no such reply belongs, such
    as C{354} to MAIL or after the end of the data) is the next hop's
    protocol error: 451 4.5.0 giving its code, not its words (the caller's
    log line quotes them).
    """
    if reply.detail is not None:
        # Made here (localReply): its text is the generic one already.
        return SMTPError(reply.code, reply.text, reply.enhanced)
    if not 400 <= reply.code < 600:
        # Not passed on (as Postfix since 2.6): the log line quotes it.
        text = f"Error: unexpected reply from the next hop ({reply.code}), try again later"
        return SMTPError(451, text, "4.5.0")
    code = _CLOSING.get(reply.code, reply.code)
    return SMTPError(code, reply.text, reply.enhanced)


def worstReply(result: DeliveryResult) -> ClientReply:
    """
    The one reply standing for a delivery that reached no recipient: the
    first temporary refusal if any (so that the client tries again), else
    the first refusal.
    """
    replies = [r.reply for r in result.recipients]
    for reply in replies:
        if reply.temporary:
            return reply
    return replies[0]


def sessionReused(connection: SSL.Connection) -> bool:
    """
    Whether the handshake of C{connection} resumed an earlier session
    (C{SSL_session_reused}, which pyOpenSSL does not wrap; C{False} when the
    binding lacks it).
    """
    try:
        from OpenSSL._util import lib

        return bool(lib.SSL_session_reused(connection._ssl))
    except (ImportError, AttributeError):
        return False


def failureText(failure: Failure) -> str:
    """
    A failure's message as plain words for a reply text or a log line: an
    OpenSSL error's reasons rather than the repr of its error stack, a
    certificate for another name as the name it is not valid for rather
    than the repr of C{service_identity}'s error.
    """
    value = failure.value
    if isinstance(value, VerificationError):
        # Its repr names the classes of service_identity; the words are these.
        names = []
        for error in value.errors:
            identity = getattr(error, "mismatched_id", None)
            name = getattr(identity, "hostname", None) or getattr(identity, "ip", None)
            if isinstance(name, bytes):
                name = name.decode("ascii", "replace")
            if name is not None:
                names.append(str(name))
        wanted = ", ".join(names) or "the name asked for"
        return f"certificate verify failed: the certificate is not valid for {wanted}"
    if isinstance(value, SSL.Error) and value.args and isinstance(value.args[0], list):
        reasons = [str(e[-1]) for e in value.args[0] if isinstance(e, tuple) and e and e[-1]]
        if reasons:
            return "; ".join(reasons)
    return failure.getErrorMessage()
