# -*- test-case-name: tests.test_webhook -*-
"""
The HTTP parts of L{twisted_smtpd.handlers.webhook}: the URL checked once,
a plain C{twisted.web.client.Agent} (no redirects, no cookies, no content
decoding) over a connection pool that bounds the response headers it
reads, bounded body reads, one line saying why an exchange failed, and the
receiver's own words for a refusal.
"""

from __future__ import annotations

import ipaddress
from typing import Any, cast

import hyperlink
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionDone
from twisted.internet.interfaces import IPushProducer, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web import http_headers
from twisted.web._newclient import (
    HTTP11ClientProtocol,
    ParseError,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web._newclient import (
    _WrapperException as WrapperException,
)
from twisted.web.client import BrowserLikePolicyForHTTPS, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from zope.interface import implementer

from twisted_smtpd._core.printable import validHostname
from twisted_smtpd._smtpclient.clientwire import failureText, refuseRenegotiation
from twisted_smtpd.handlers._envelope import sanitise

#: The most octets of status lines and headers (any 1xx answers included)
#: read for one response; nginx's largest default is 4 buffers of 8 KiB.
HEADER_LIMIT = 65536
#: The most octets of one status or header line (Twisted's own default).
HEADER_LINE_LIMIT = 16384
#: Seconds an idle pooled connection is kept for the next message: long
#: enough for a burst, short enough that a connection a firewall, NAT or
#: load balancer has silently dropped is seldom reused.
IDLE_TIMEOUT = 5
#: Idle connections kept for each receiver.
MAX_IDLE = 16
#: The most 1xx answers taken before the final one (Twisted logs a line for
#: each): a receiver sending more is broken, and not tried again.
MAX_INFORMATIONAL = 4


class ResponseHeadersTooLarge(Exception):
    """
    The response's status line and headers passed L{HEADER_LIMIT} octets.
    """

    def __str__(self) -> str:
        return f"response headers over {HEADER_LIMIT} octets"


class ResponseLineTooLong(Exception):
    """
    A status or header line of the response passed L{HEADER_LINE_LIMIT}
    octets.
    """

    def __str__(self) -> str:
        return f"a response header line over {HEADER_LINE_LIMIT} octets"


class TooManyInformational(Exception):
    """
    The receiver sent more than L{MAX_INFORMATIONAL} 1xx answers.
    """

    def __str__(self) -> str:
        return f"more than {MAX_INFORMATIONAL} 1xx answers"


class SwitchedProtocols(Exception):
    """
    The receiver answered C{101 Switching Protocols} to a request that
    asked for no upgrade (RFC 9110 section 7.8): what follows is not HTTP.
    """

    def __str__(self) -> str:
        return "HTTP 101 Switching Protocols to a request asking for no upgrade"


#: The attribute marking a response that came whole before the request's
#: body was all sent.
_EARLY = "_answeredBeforeTheBody"


def answeredEarly(response: object) -> bool:
    """
    Whether C{response} came whole before its request's body was all sent:
    the receiver answered without the whole message, so that even a 2xx
    cannot mean it took the message.
    """
    return bool(getattr(response, _EARLY, False))


def _checkStatus(parser: Any) -> Any:
    """
    C{parser}'s C{statusReceived}, refusing first a status code that is not
    three ASCII digits (RFC 9112 section 4): Twisted reads it with C{int},
    which takes C{0200}, C{+200} or C{2_00} for 200.
    """
    statusReceived = parser.statusReceived

    def checked(status: bytes) -> None:
        parts = status.split(b" ", 2)
        if len(parts) > 1 and not (len(parts[1]) == 3 and parts[1].isdigit()):
            raise ParseError("status code not three digits", status)
        statusReceived(status)

    return checked


def _lineTooLong(line: bytes) -> None:
    """
    A parser's C{lineLengthExceeded}: fail, so that the connection is
    dropped and the attempt names the bound (Twisted's own drops it as if
    the receiver had closed it).

    @raise ResponseLineTooLong: Always.
    """
    raise ResponseLineTooLong()


class _BoundedHeadersProtocol(HTTP11ClientProtocol):
    """
    An L{HTTP11ClientProtocol} that drops the connection once a response's
    head is longer than L{HEADER_LIMIT} octets or one of its lines longer
    than L{HEADER_LINE_LIMIT}, as it does on a parse error, or after more
    than L{MAX_INFORMATIONAL} 1xx answers or a C{101} (which Twisted skips
    as any 1xx, reading the protocol switched to as HTTP), and at once when a
    whole response, or the status and headers of a 2xx one, arrives before
    the request body was sent.

    Whatever ends a response while the request body is still being sent
    fails or answers the request at once, with its own reason: Twisted,
    left to itself, forgets the request then, and logs its reason as an
    unhandled error.
    """

    _headerOctets = 0

    def request(self, request: Any) -> Deferred[IResponse]:
        self._headerOctets = 0
        response: Deferred[IResponse] = super().request(request)
        parser = self._parser
        if parser is not None:
            parser.statusReceived = _checkStatus(parser)  # type: ignore[method-assign]
            parser.MAX_LENGTH = HEADER_LINE_LIMIT
            parser.lineLengthExceeded = _lineTooLong  # type: ignore[method-assign]
            parser.allHeadersReceived = self._countInformational(parser)  # type: ignore[method-assign]
        return response

    def _countInformational(self, parser: Any) -> Any:
        """
        C{parser}'s C{allHeadersReceived}, counting the 1xx answers first.
        """
        allHeadersReceived = parser.allHeadersReceived
        seen = [0]

        def counted() -> None:
            code = parser.response.code
            if code == 101:
                # Twisted skips it as any 1xx, and would take the bytes
                # of the protocol switched to for the final answer.
                self._giveUp(Failure(SwitchedProtocols()))
                assert self.transport is not None
                cast(ITCPTransport, self.transport).abortConnection()
                return
            if 100 <= code < 200:
                seen[0] += 1
                if seen[0] > MAX_INFORMATIONAL:
                    if seen[0] == MAX_INFORMATIONAL + 1:
                        self._giveUp(Failure(TooManyInformational()))
                        assert self.transport is not None
                        cast(ITCPTransport, self.transport).abortConnection()
                    return
            allHeadersReceived()
            if 200 <= code < 300 and self._state == "TRANSMITTING":
                # The receiver said yes before it had the message: the
                # answer is marked, as a whole one would be, and the rest
                # of the request is not sent.
                setattr(parser.response, _EARLY, True)
                self._giveUp(Failure(ConnectionDone("answered before the body was sent")))
                assert self.transport is not None
                cast(ITCPTransport, self.transport).abortConnection()

        return counted

    def _giveUp(self, reason: Failure) -> None:
        """
        Drop the connection and end the response with C{reason}, while the
        request body is still being sent too: the request's L{Deferred} is
        then given the response, or the response's failure, as Twisted
        does for a whole response that came before the body was sent.
        """
        response, request = self._responseDeferred, self._finishedRequest
        if self._state != "TRANSMITTING" or response is None or request is None:
            super()._giveUp(reason)
            return
        self._state = "TRANSMITTING_AFTER_RECEIVING_RESPONSE"
        # The parser is disconnected first, so that the request's user,
        # called back at once, finds the response's body ended.
        super()._giveUp(reason)
        response.chainDeferred(request)

    def _finishResponse_TRANSMITTING(self, rest: bytes) -> None:
        """
        The whole answer came before the whole request body was sent (a
        receiver may answer early, then read on): the answer is marked so
        (L{answeredEarly}), and the connection ends now, which stops the
        body's producer, rather than let it send the rest slowly into a
        connection Twisted will not reuse, reading the spool the next
        attempt reads, or after it is closed.
        """
        parser = self._parser
        if parser is not None and parser.response is not None:
            setattr(parser.response, _EARLY, True)
        super()._finishResponse_TRANSMITTING(rest)
        assert self.transport is not None
        cast(ITCPTransport, self.transport).abortConnection()

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        parser = self._parser
        # STATUS and HEADER: the head is not over yet (a 1xx starts again).
        if parser is None or parser.state not in ("STATUS", "HEADER"):
            return
        self._headerOctets += len(data)
        if self._headerOctets > HEADER_LIMIT:
            self._giveUp(Failure(ResponseHeadersTooLarge()))
            assert self.transport is not None
            cast(ITCPTransport, self.transport).abortConnection()


class _BoundedHeadersFactory(_HTTP11ClientFactory):
    """
    Builds L{_BoundedHeadersProtocol}s for the pool, silently: a message
    leaves the handler's one line, not Twisted's C{Starting factory} and
    C{Stopping factory} for each connection besides.
    """

    noisy = False

    def buildProtocol(self, addr: object) -> _BoundedHeadersProtocol:
        return _BoundedHeadersProtocol(self._quiescentCallback)


def makePool(reactor: Any) -> HTTPConnectionPool:
    """
    A pool of persistent connections whose responses have bounded heads,
    keeping at most L{MAX_IDLE} idle connections a receiver for
    L{IDLE_TIMEOUT} seconds.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool._factory = _BoundedHeadersFactory
    pool.maxPersistentPerHost = MAX_IDLE
    pool.cachedConnectionTimeout = IDLE_TIMEOUT
    # Twisted only ever retries idempotent methods; say so for a POST.
    pool.retryAutomatically = False
    return pool


def checkURL(url: str) -> bytes:
    """
    The request URL, in ASCII, of an C{http://} or C{https://} C{url} that
    names a host (a name, an IPv4 address or a bracketed IPv6 address) and
    a port from 1 to 65535, without a user name, password or fragment
    (RFC 9110 section 4.2).

    @raise ValueError: Saying what is wrong with C{url}.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("the URL contains spaces or control characters")
    authority = url.partition("://")[2]
    for end in "/?#":
        authority = authority.partition(end)[0]
    hostPort = authority.rpartition("@")[2]
    written = hostPort.rpartition(":")[2]
    digits = written.isascii() and written.isdigit()
    if ":" in hostPort and written and "]" not in written and not digits:
        # hyperlink reads it with int(): +80, full-width digits.
        raise ValueError(f"the port is not ASCII digits: {written!a}")
    try:
        parsed = hyperlink.URL.from_text(url)
    except ValueError as e:
        raise ValueError(f"not a valid URL: {e}") from None
    if parsed.userinfo:
        raise ValueError(
            "a user name or password in the URL is not supported (RFC 9110 section 4.2.4)"
        )
    if parsed.fragment or url.endswith("#"):
        raise ValueError("a fragment (#) in the URL is never sent")
    host = parsed.host
    if not host:
        raise ValueError("the URL names no host")
    port = parsed.port
    if port is None or not 0 < port < 65536:
        raise ValueError(f"port {port} is not from 1 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if ":" in host:
            raise ValueError(f"not an IPv6 address: {host!r}") from None
        try:
            uri = parsed.to_uri()
        except ValueError as e:
            raise ValueError(f"not a valid host name: {e}") from None
        name = uri.host[:-1] if uri.host.endswith(".") else uri.host
        if not validHostname(name):
            raise ValueError(f"not a valid host name: {host!r}") from None
    else:
        # hyperlink's IDNA step refuses address literals: encode the rest.
        uri = parsed.replace(host="address.invalid").to_uri().replace(host=host)
    text: str = uri.to_text()
    return text.encode("ascii")


def _causes(failure: Failure) -> list[BaseException]:
    """
    C{failure}'s exception, or the exceptions inside Twisted's
    C{ResponseFailed}, C{RequestTransmissionFailed} and
    C{ResponseNeverReceived}, innermost first.
    """
    value = failure.value
    assert value is not None
    if isinstance(value, WrapperException):
        found: list[BaseException] = []
        for reason in value.reasons:
            found.extend(_causes(reason))
        return found
    return [value]


def describe(failure: Failure) -> tuple[str, bool]:
    """
    Why an exchange failed, in one sanitised line, and whether another
    attempt may go better: a certificate that does not verify will not
    verify a second later.
    """
    causes = _causes(failure)
    # The receiver's answer was being read: a ValueError or KeyError is
    # Twisted's word for headers it cannot use.
    answered = isinstance(failure.value, ResponseFailed | ResponseNeverReceived)
    for value in causes:
        if isinstance(value, VerificationError):
            return sanitise(f"TLS certificate does not match: {value}"), False
        if isinstance(value, SSL.Error):
            text = failureText(Failure(value))
            return sanitise(f"TLS: {text}"), "certificate verify failed" not in text
    for value in causes:
        if isinstance(value, ResponseHeadersTooLarge | ResponseLineTooLong):
            return str(value), True
        if isinstance(value, TooManyInformational | SwitchedProtocols):
            return str(value), False
        if isinstance(value, ParseError):
            return sanitise(f"malformed HTTP response: {value.args[0]}"), True
        if answered and isinstance(value, ValueError | KeyError):
            return sanitise(f"malformed HTTP response: {_headersProblem(value)}"), True
        if isinstance(value, ConnectError | OSError):
            return sanitise(type(value).__name__), True
    if causes:
        return sanitise(type(causes[0]).__name__), True
    return sanitise(type(failure.value).__name__), True


#: Twisted's error for a header name that is not a token (a C{ValueError}),
#: where its version has one: older ones take such a name.
_INVALID_HEADER_NAME: tuple[type[Exception], ...] = (
    (http_headers.InvalidHeaderName,) if hasattr(http_headers, "InvalidHeaderName") else ()
)


def _headersProblem(error: ValueError | KeyError) -> str:
    """
    What is wrong with the response headers that made Twisted raise
    C{error}: a header name that is not a token, a transfer coding it does
    not know (the only C{KeyError} it raises), or its own text.
    """
    if isinstance(error, _INVALID_HEADER_NAME):
        return "invalid header name"
    if isinstance(error, KeyError):
        coding = error.args[0] if error.args else b""
        if isinstance(coding, bytes):
            coding = coding.decode("latin-1")
        return f"unknown transfer coding {coding}"
    return str(error)


class _BoundedReader(Protocol):
    """
    Read a response body into C{keep}, up to C{keep} bytes, and drop the
    connection past C{limit}.
    """

    def __init__(self, done: Deferred[bytes], keep: int, limit: int) -> None:
        self._done = done
        self._keep = keep
        self._limit = limit
        self._kept = b""
        self._read = 0

    def dataReceived(self, data: bytes) -> None:
        self._read += len(data)
        if len(self._kept) < self._keep:
            self._kept += data[: self._keep - len(self._kept)]
        if self._read > self._limit:
            self.abandon()

    def abandon(self) -> None:
        """
        Drop the connection: the rest of the body is not wanted.
        """
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self._done.called:
            self._done.callback(self._kept)


class _Discarder(Protocol):
    """
    Drop the connection as soon as the body starts: nothing of it is
    wanted.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        cast(IPushProducer, self.transport).stopProducing()


def discardBody(response: IResponse) -> None:
    """
    Drop C{response}'s connection unless its body was already read whole.
    """
    response.deliverBody(_Discarder())


def readBody(response: IResponse, keep: int, limit: int) -> Deferred[bytes]:
    """
    The first C{keep} bytes of C{response}'s body, read to its end or to
    C{limit} bytes, then the connection dropped; cancelling drops it too.
    """
    reader: _BoundedReader

    def cancel(d: Deferred[bytes]) -> None:
        reader.abandon()

    d: Deferred[bytes] = Deferred(cancel)
    reader = _BoundedReader(d, keep, limit)
    response.deliverBody(reader)
    return d


__all__ = [
    "HEADER_LIMIT",
    "HEADER_LINE_LIMIT",
    "checkURL",
    "describe",
    "discardBody",
    "makePool",
    "readBody",
]


def refusalReason(response: IResponse, body: bytes) -> str:
    """
    Why the receiver refused, sanitised: the first line of a C{text/plain}
    body that is not content-coded, else the HTTP reason phrase.
    """
    types = response.headers.getRawHeaders(b"content-type") or [b""]
    codings = response.headers.getRawHeaders(b"content-encoding") or [b"identity"]
    plain = all(c.strip().lower() == b"identity" for c in codings)
    if plain and types[0].lower().startswith(b"text/plain"):
        for line in body.splitlines():
            text = sanitise(line)
            if text:
                return text
    return sanitise(response.phrase) or f"HTTP {response.code}"


@implementer(IPolicyForHTTPS)
class RenegotiationRefusingPolicy:
    """
    Twisted's browser-like HTTPS policy (the server's certificate checked
    against C{trustRoot}, or the system's CAs, for the URL's host), whose
    connections refuse a renegotiation the server starts
    (L{refuseRenegotiation}).  One connection creator, one TLS context, per
    host and port, not one per request as the policy makes them: the
    webhook posts to one URL.
    """

    #: The most hosts and ports whose creators are kept.
    MAX_CREATORS = 16

    def __init__(self, trustRoot: Any = None) -> None:
        self._policy = BrowserLikePolicyForHTTPS(trustRoot)
        self._creators: dict[tuple[bytes, int], Any] = {}

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        """
        The connection creator for C{hostname}:C{port} (L{IPolicyForHTTPS}).
        """
        key = (hostname, port)
        creator = self._creators.get(key)
        if creator is None:
            creator = refuseRenegotiation(self._policy.creatorForNetloc(hostname, port))
            if len(self._creators) >= self.MAX_CREATORS:
                self._creators.clear()
            self._creators[key] = creator
        return creator
