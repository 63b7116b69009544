# -*- test-case-name: tests.test_metrics,tests.test_metricstimeouts -*-
"""
The HTTP side of the metrics listener (L{metricsSite
<twisted_smtpd._serving.metrics.metricsSite>}): a plain HTTP/1.1 channel
taking only C{GET} and C{HEAD} without a body, each request whole within
L{REQUEST_DEADLINE} seconds of its first byte, at most L{MAX_CONNECTIONS}
connections at once (one more taking the place of the one answered least
recently), C{HEAD} answered without a body or a warning, and one
log line for each refusal or limit reached, none for each request.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet.interfaces import (
    IHandshakeListener,
    IProtocolNegotiationFactory,
    ISSLTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.session import hostPort
from twisted_smtpd._serving.logging import formatPeer, loggable

#: Seconds a request to the metrics listener may take from its first byte
#: to its last header, and an idle connection may stay open.
REQUEST_DEADLINE = 10

#: Connections the metrics listener holds at once; one more takes the
#: place of the one answered least recently (L{ConnectionLimit}).
MAX_CONNECTIONS = 8

#: Orders the connections by when each was last answered (or made).
_answers = itertools.count()

_log = Logger(namespace="twisted_smtpd.metrics")


def originForm(target: bytes) -> bytes:
    """
    The path and query of the request target C{target}: itself when it is
    not in absolute form, the part after the authority when it is an
    C{http} or C{https} URI (C{http://127.0.0.1:9100/metrics?x} is
    C{/metrics?x}; C{http://host} and C{http://host?x} have the path
    C{/}).  A server must accept the absolute form (RFC 9112 section
    3.2.2), and take the host from it rather than from C{Host}: this
    listener has no virtual hosts, so any host is served.

    @param target: The request target, as the request line gives it.
    """
    scheme, colon, rest = target.partition(b"://")
    if not colon or scheme.lower() not in (b"http", b"https"):
        return target
    for index, byte in enumerate(rest):
        if byte in b"/?":
            path = rest[index:]
            return path if byte == ord("/") else b"/" + path
    return b"/"


class MetricsChannel(HTTPChannel):
    """
    HTTP for C{/metrics} and C{/healthz}: only C{GET} and C{HEAD} without a
    body, of a path (not C{*}) or an C{http}/C{https} URI naming one (the
    absolute form, L{originForm}), anything else refused (405, 413, 400: a
    C{Transfer-Encoding} other than C{chunked} included) and
    the connection closed before any body is read; a request must be whole
    within the channel's timeout (L{REQUEST_DEADLINE}) of its first byte,
    which the bytes that follow do not push back (Twisted's idle timeout,
    reset by every byte, does).

    A request that comes while the client leaves the responses before it
    unread (the transport paused this channel: its send buffer is full) is
    not answered and the connection is closed once those responses are
    sent, or aborted by the timeout: Twisted's channel would answer every
    request pipelined behind it into that buffer, without bound.
    """

    _receiving = False
    _refused = False
    _clientBehind = False
    #: When it was last answered, or made (L{_answers}): the connection
    #: with the least gives its place to a new one (L{ConnectionLimit}).
    lastAnswered = -1

    def connectionMade(self) -> None:
        self.lastAnswered = next(_answers)
        super().connectionMade()

    def requestDone(self, request: Any) -> None:
        self.lastAnswered = next(_answers)
        super().requestDone(request)

    def pauseProducing(self) -> None:
        self._clientBehind = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._clientBehind = False
        super().resumeProducing()

    def resetTimeout(self) -> None:
        if not self._receiving:
            super().resetTimeout()

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            # Being closed: behind TLS the connection still reads (for the
            # client's close_notify); what comes is neither parsed (each
            # request would be refused and logged again) nor pushes the
            # timeout back.
            return
        self.resetTimeout()
        self._receiving = True
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._receiving = False
        if self._clientBehind:
            self._abandon()
        elif self._command not in (b"GET", b"HEAD"):
            self._refuse(b"405 Method Not Allowed", b"Allow: GET, HEAD\r\n")
        elif self.length == 0 and self.requests[-1].requestHeaders.hasHeader(b"transfer-encoding"):
            # A coding other than chunked last (Twisted ignores identity,
            # reading no body): the body's length cannot be known, so 400
            # and close (RFC 9112 section 6.3), never an answer with the
            # bytes after this head read as a request of their own.
            self._respondToBadRequestAndDisconnect()
        elif self.length != 0:
            self._refuse(b"413 Content Too Large", b"")
        elif self._path == b"*":
            # Only OPTIONS, refused above, may have this target; Twisted
            # would answer it itself (405 naming OPTIONS, and its version).
            self._respondToBadRequestAndDisconnect()
        else:
            self._path = originForm(self._path)
            super().allHeadersReceived()

    def _refuse(self, status: bytes, headers: bytes) -> None:
        self._refused = True
        assert self.transport is not None
        _log.info(
            "metrics: {status} for {method} from {peer}",
            status=status.decode("ascii"),
            method=printable(self._command.decode("latin-1")[:20]),
            peer=formatPeer(hostPort(self.transport.getPeer())),
        )
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\n" + headers + b"Content-Length: 0\r\n"
            b"Connection: close\r\n\r\n"
        )
        self.transport.loseConnection()

    def _abandon(self) -> None:
        self._refused = True
        assert self.transport is not None
        _log.info(
            "metrics: connection from {peer} closed: a request came while"
            " the responses before it were unread",
            peer=formatPeer(hostPort(self.transport.getPeer())),
        )
        # The responses written go out if the client reads them; if it does
        # not, the channel's timeout aborts the connection.  The wrapper's
        # disconnecting flag stops the parsing of further lines, and
        # dataReceived drops what comes after.
        self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        """
        The channel's timeout (L{REQUEST_DEADLINE}): close the connection,
        and abort it if it is not gone C{abortTimeout} seconds later, as
        Twisted's channel does, with one line of this listener's log in
        place of Twisted's own (C{"Timing out client: ..."}).
        """
        assert self.transport is not None
        if self._receiving:
            why = f"its request was not whole {REQUEST_DEADLINE} s after its first byte"
        elif self._refused:
            why = "the responses written before it was closed were still unread"
        else:
            why = f"idle for {REQUEST_DEADLINE} s"
        _log.info(
            "metrics: connection from {peer} timed out: {why}",
            peer=formatPeer(hostPort(self.transport.getPeer())),
            why=why,
        )
        if self.abortTimeout is not None:
            # What Twisted's HTTPChannel.timeoutConnection does; its
            # connectionLost cancels the call.
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def forceAbortClient(self) -> None:
        """
        Abort the connection still open C{abortTimeout} seconds after its
        timeout (its client reads nothing), with one line of this
        listener's log in place of Twisted's own.
        """
        transport: Any = self.transport
        _log.info(
            "metrics: connection from {peer} aborted: still open {seconds} s after its timeout",
            peer=formatPeer(hostPort(transport.getPeer())),
            seconds=self.abortTimeout,
        )
        self._abortingCall = None
        transport.abortConnection()

    def allContentReceived(self) -> None:
        if not self._refused:
            super().allContentReceived()

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A request line or header line over C{MAX_LENGTH} octets: 400, as
        for any other malformed request, rather than the silent close of
        Twisted's C{LineReceiver}.
        """
        self._respondToBadRequestAndDisconnect()

    def _respondToBadRequestAndDisconnect(self) -> None:
        """
        Twisted's answer to a malformed request (a bad request line or
        header, too many headers, headers too long): 400 and close, with
        one log line, as every refusal of this listener has.
        """
        if not self._refused:
            self._refused = True
            assert self.transport is not None
            _log.info(
                "metrics: 400 Bad Request for a malformed or oversized request from {peer}",
                peer=formatPeer(hostPort(self.transport.getPeer())),
            )
        super()._respondToBadRequestAndDisconnect()


@implementer(IHandshakeListener)
class _Connection(ProtocolWrapper):
    """
    A connection of the metrics listener, counted by L{ConnectionLimit}:
    behind TLS, a handshake that fails on a TLS error (a scraper speaking
    plain HTTP, one refusing the certificate, or sharing no protocol
    version or cipher) gives one line with the peer and OpenSSL's reason,
    which Twisted's TLS layer keeps to itself; a connection closed without
    any TLS error (a TCP health check) gives none.
    """

    _handshakeDone = False
    #: Whether it gave its place to a new connection (L{evict}).
    evicted = False

    def handshakeCompleted(self) -> None:
        self._handshakeDone = True

    def lastAnswered(self) -> int:
        """
        When its channel last answered a request, or was made
        (L{MetricsChannel.lastAnswered}).
        """
        answered: int = getattr(self.wrappedProtocol, "lastAnswered", -1)
        return answered

    def evict(self, limit: int, newcomer: Any) -> None:
        """
        Give this connection's place to a new one, from C{newcomer}: abort
        it, with one line.  Aborted: behind TLS, a close would wait for
        the client, which a hostile one never lets end.
        """
        self.evicted = True
        assert self.transport is not None
        _log.info(
            "metrics: connection from {peer} aborted for a new one from {newcomer}:"
            " {limit} connections open, this one the longest unanswered",
            peer=formatPeer(hostPort(self.transport.getPeer())),
            newcomer=formatPeer(hostPort(newcomer)),
            limit=limit,
        )
        transport: Any = self.transport
        transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self._handshakeDone and ISSLTransport.providedBy(self.transport):
            _logHandshakeFailure(self.transport, reason.value)
        super().connectionLost(reason)


def _logHandshakeFailure(transport: Any, error: BaseException | None) -> None:
    """
    One line for a TLS handshake that C{error} ended, if it is a TLS error.
    """
    # Loaded already: the connection is behind TLS.
    from OpenSSL import SSL

    from twisted_smtpd._serving.sni import _why

    if isinstance(error, SSL.Error):
        _log.info(
            "metrics: TLS handshake with {peer} failed: {error}",
            peer=formatPeer(hostPort(transport.getPeer())),
            error=loggable(_why(error), 120),
        )


@implementer(IProtocolNegotiationFactory)
class ConnectionLimit(WrappingFactory):
    """
    At most C{limit} connections at once; one more takes the place of the
    one that has gone longest without an answer (since its last response,
    or since it was made when it has had none: one idle between
    keep-alive requests, or one still sending its request), which is
    aborted, with a log line, as a server reuses its idle keep-alive
    connections when it has none left (nginx).  A client holding every
    connection open, each with a request in time to stay under the idle
    timeout, cannot keep a new scraper out; one answered a moment ago,
    the scraper's, is the last to go.  Behind
    C{ssl:} it offers HTTP/1.1, the one protocol its channel speaks, to a
    client that negotiates one (ALPN): without any, Twisted's TLS layer
    fails the handshake of every such client (curl, Prometheus's HTTP
    client).
    """

    protocol = _Connection

    def __init__(self, wrappedFactory: Any, limit: int) -> None:
        super().__init__(wrappedFactory)
        self.limit = limit

    def acceptableProtocols(self) -> list[bytes]:
        """
        The protocol the channel speaks (L{MetricsChannel}): HTTP/1.1.
        """
        return [b"http/1.1"]

    def buildProtocol(self, addr: Any) -> Any:
        held = [p for p in self.protocols if not p.evicted]
        if len(held) >= self.limit:
            min(held, key=_Connection.lastAnswered).evict(self.limit, addr)
        return super().buildProtocol(addr)


def noAccessLine(request: object) -> None:
    """
    Log nothing for C{request} (the metrics site's C{log}).
    """


class _Bodyless(Resource):
    """
    A resource answering C{HEAD} as its C{GET}, with that body's length in
    C{Content-Length}, but no body.
    """

    isLeaf = True

    def __init__(self, wrapped: Any) -> None:
        super().__init__()
        self._wrapped = wrapped

    def render(self, request: Request) -> Any:
        body = self._wrapped.render(request)
        if request.method == b"HEAD" and isinstance(body, bytes):
            request.setHeader(b"Content-Length", b"%d" % (len(body),))
            return b""
        return body


class MetricsRequest(Request):
    """
    A request of the metrics listener: a C{HEAD} (of C{/metrics},
    C{/healthz} or a path not found) is answered without Twisted's line
    (C{"Warning: HEAD request <Request ... uri=...> ... I think I'll eat
    it."}, in its own namespace, quoting a URI of up to 16 KiB from the
    client) that a resource rendering a body for it makes, once per
    request: a HEAD is answered, as a GET is, without any line.  No answer
    names the web server and its version (Twisted's C{Server} header).
    """

    def render(self, resrc: Any) -> None:
        self.responseHeaders.removeHeader(b"server")
        super().render(_Bodyless(resrc) if self.method == b"HEAD" else resrc)
