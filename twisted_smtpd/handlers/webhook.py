# -*- test-case-name: tests.test_webhook,tests.integration.test_webhook -*-
"""
L{WebhookHandler}: POST every accepted message to an HTTP endpoint (a
mail-to-API gateway), through C{treq}.

Needs the C{webhook} extra: C{pip install 'twisted-smtpd[webhook]'}.
"""

from __future__ import annotations

import contextlib
from typing import IO, Any, cast

import treq
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    HTTPConnectionPool,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import Session
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers._envelope import envelopeFields, envelopeJSON, messageId, sanitise
from twisted_smtpd.handlers._signedspool import SignedSpool
from twisted_smtpd.handlers.relay import loadTrustRoot
from twisted_smtpd.interfaces import IMessageStream

FORMATS = ("raw", "json")
# How much of a response body is kept (for a refusal's reason), and how much
# is read at most before the connection is dropped.
_KEEP = 1024
_READ_LIMIT = 65536

TIMESTAMP_HEADER = "X-SMTPD-Timestamp"
SIGNATURE_HEADER = "X-SMTPD-Signature"


class _TemporaryFailure(Exception):
    """
    One attempt failed in a way worth another: C{str()} says how.
    """


class _Unclosable:
    """
    A file that L{FileBodyProducer} reads and cannot close, so that the
    spool can be sent again.
    """

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.read = file.read
        self.seek = file.seek
        self.tell = file.tell

    def close(self) -> None:
        """
        Leave the file open: the spool closes it.
        """


class _BoundedReader(Protocol):
    """
    Read a response body, keep its first L{_KEEP} bytes, and drop the
    connection past L{_READ_LIMIT}.
    """

    def __init__(self, done: Deferred[bytes]) -> None:
        self._done = done
        self._kept = b""
        self._read = 0

    def dataReceived(self, data: bytes) -> None:
        self._read += len(data)
        if len(self._kept) < _KEEP:
            self._kept += data[: _KEEP - len(self._kept)]
        if self._read > _READ_LIMIT and self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self._done.called:
            self._done.callback(self._kept)


def _stop(producer: FileBodyProducer) -> None:
    """
    Stop C{producer} if it started.
    """
    with contextlib.suppress(AttributeError):
        producer.stopProducing()


def _readBody(response: IResponse) -> Deferred[bytes]:
    """
    The first L{_KEEP} bytes of C{response}'s body, read to its end (or to
    L{_READ_LIMIT}); cancelling drops the connection.
    """
    reader: _BoundedReader

    def cancel(d: Deferred[bytes]) -> None:
        if reader.transport is not None:
            cast(IPushProducer, reader.transport).stopProducing()

    d: Deferred[bytes] = Deferred(cancel)
    reader = _BoundedReader(d)
    response.deliverBody(reader)
    return d


def _reason(response: IResponse, body: bytes) -> str:
    """
    Why the receiver refused, sanitised: the first line of a C{text/plain}
    body, else the HTTP reason phrase.
    """
    types = response.headers.getRawHeaders(b"content-type") or [b""]
    if types[0].lower().startswith(b"text/plain"):
        for line in body.splitlines():
            text = sanitise(line)
            if text:
                return text
    return sanitise(response.phrase) or f"HTTP {response.code}"


class WebhookHandler(BaseHandler):
    """
    POST each message to C{url}, and answer the client with what the
    receiver said.

    The request body carries the envelope and the message, in one of two
    formats:

      - C{format="raw"}: C{multipart/form-data} (RFC 7578) with a random
        boundary and two parts, C{envelope} (C{application/json}) and
        C{message} (C{message/rfc822}, the message byte for byte);
      - C{format="json"}: C{application/json}, C{{"envelope": {...},
        "message": BASE64}}.

    The envelope is one line of ASCII JSON (C{sender}, C{recipients},
    C{clientAddress}, C{clientPort}, C{helo}, C{user}, C{tls},
    C{sessionId}, C{messageId}).  It is in the body, not in a header, so
    that a message to many recipients never meets a receiver's header size
    limit (8 KiB a line in nginx and Apache, 16 KiB in all in
    C{twisted.web}): every header is small and bounded.  The body is
    spooled to a temporary file while the message arrives, then streamed
    from it; it is never held in memory.  Besides C{Content-Type} and
    C{User-Agent}, every request has these headers:

      - C{X-SMTPD-Timestamp}: seconds since the epoch when the message
        arrived;
      - C{X-SMTPD-Signature}, with a C{secret}: C{v2=} and the hexadecimal
        HMAC-SHA256 of C{TIMESTAMP "." BODY} (the timestamp header and the
        exact body bytes, the envelope among them).

    The HTTP status decides the reply: 2xx is 250; 408, 429, 5xx, a
    connection failure or no answer in time is tried again, with growing
    pauses, until C{timeout} seconds after the message ended, then answered
    451; any other 4xx is 550 with the receiver's reason (the first line of
    a C{text/plain} body, or the reason phrase), sanitised; anything else
    (1xx, 3xx) is 451.  The same reply goes to every recipient in LMTP mode.

    HTTPS URLs are verified against the system's CAs, or the PEM bundle
    C{caCertificates}.

    @ivar url: Where messages are posted.
    """

    _log = Logger()

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes | None = None,
        format: str = "raw",
        timeout: float = 50.0,
        caCertificates: str | None = None,
        spoolDirectory: str | None = None,
        firstRetry: float = 0.25,
        maxRetryDelay: float = 5.0,
        reactor: Any = None,
    ) -> None:
        """
        @param url: An C{http://} or C{https://} URL.
        @param secret: The HMAC key signing each request, or C{None}.
        @param format: C{"raw"} or C{"json"}.
        @param timeout: Seconds after the end of a message within which the
            receiver must accept it, retries included; keep it below the
            SMTP client's patience (RFC 5321 section 4.5.3.2.6: 10 minutes)
            and the server's C{socketTimeout} does not apply to it.
        @param caCertificates: A PEM bundle to verify HTTPS with, instead of
            the system's CAs.
        @param spoolDirectory: Where the temporary files go.
        @param firstRetry: Seconds before the first retry; each pause
            doubles, up to C{maxRetryDelay}.
        @param maxRetryDelay: The longest pause between attempts.
        @param reactor: The reactor (the global one by default).
        @raise ValueError: If C{url}, C{format}, C{timeout} or the CA
            bundle is not usable.
        """
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        if any(c in url for c in "\r\n\x00 "):
            raise ValueError("the URL contains spaces or control characters")
        if format not in FORMATS:
            raise ValueError(f"format must be raw or json, not {format!r}")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.url = url
        self._secret = secret.encode("utf-8") if isinstance(secret, str) else secret
        self._json = format == "json"
        self._timeout = timeout
        self._spoolDirectory = spoolDirectory
        self._firstRetry = firstRetry
        self._maxRetryDelay = maxRetryDelay
        self._reactor = reactor
        policy = BrowserLikePolicyForHTTPS(
            loadTrustRoot(caCertificates) if caCertificates is not None else None
        )
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 16
        self._client = treq.client.HTTPClient(
            Agent(reactor, contextFactory=policy, pool=self._pool)
        )

    def close(self) -> Deferred[None]:
        """
        Close the idle HTTP connections kept for the next messages.
        """
        return self._pool.closeCachedConnections()  # type: ignore[no-any-return]

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[str]:
        """
        Spool the body, then POST it.

        @return: A L{Deferred} firing with the 250 text, or failing with a
            451 or 550 L{SMTPError}, or with the stream's failure if the body
            did not arrive whole.
        """
        return Deferred.fromCoroutine(self._deliver(stream, session))

    async def _deliver(self, stream: IMessageStream, session: Session) -> str:
        fields = envelopeFields(session)
        envelope = envelopeJSON(fields)
        timestamp = str(int(self._reactor.seconds()))
        spool = SignedSpool(
            secret=self._secret,
            timestamp=timestamp,
            envelope=envelope,
            jsonFormat=self._json,
            directory=self._spoolDirectory,
        )
        try:
            piped: Deferred[int] = stream.pipeToFile(spool)
            await piped
            spool.finish()
            headers = Headers(
                {
                    "Content-Type": [spool.contentType],
                    "User-Agent": ["twisted-smtpd"],
                    TIMESTAMP_HEADER: [timestamp],
                }
            )
            signature = spool.signature()
            if signature is not None:
                headers.addRawHeader(SIGNATURE_HEADER, signature)
            return await self._post(spool, headers, session)
        finally:
            spool.close()

    async def _post(self, spool: SignedSpool, headers: Headers, session: Session) -> str:
        deadline = self._reactor.seconds() + self._timeout
        delay = self._firstRetry
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - self._reactor.seconds()
            try:
                return await self._attempt(spool, headers, session, remaining)
            except _TemporaryFailure as e:
                problem = str(e)
            remaining = deadline - self._reactor.seconds()
            if remaining <= delay:
                self._log.warn(
                    "{session} webhook failed {attempts} times, last: {problem}",
                    session=session.id,
                    attempts=attempt,
                    problem=problem,
                )
                raise SMTPError(451, f"Error: webhook unavailable ({problem})", "4.3.0")
            self._log.info(
                "{session} webhook attempt {attempt} failed ({problem}); again in {delay}s",
                session=session.id,
                attempt=attempt,
                problem=problem,
                delay=delay,
            )
            pause: Deferred[None] = Deferred()
            self._reactor.callLater(delay, pause.callback, None)
            await pause
            delay = min(delay * 2, self._maxRetryDelay)

    async def _attempt(
        self, spool: SignedSpool, headers: Headers, session: Session, remaining: float
    ) -> str:
        spool.file.seek(0)
        producer = FileBodyProducer(_Unclosable(spool.file))

        async def exchange() -> tuple[IResponse, bytes]:
            response: IResponse = await self._client.post(self.url, data=producer, headers=headers)
            body = await _readBody(response)
            return response, body

        d = Deferred.fromCoroutine(exchange())
        timedOut = []

        def timeOut() -> None:
            timedOut.append(True)
            d.cancel()

        timer = self._reactor.callLater(max(remaining, 0), timeOut)
        try:
            response, body = await d
        except Exception as e:
            _stop(producer)
            if timedOut:
                raise _TemporaryFailure("no answer in time") from e
            raise _TemporaryFailure(sanitise(type(e).__name__)) from e
        finally:
            if timer.active():
                timer.cancel()
        code = response.code
        if 200 <= code < 300:
            self._log.info(
                "{session} webhook accepted {id}: HTTP {code}",
                session=session.id,
                id=messageId(session),
                code=code,
            )
            return f"OK: queued as {messageId(session)}"
        if code in (408, 429) or code >= 500:
            raise _TemporaryFailure(f"HTTP {code}")
        reason = _reason(response, body)
        if 400 <= code < 500:
            self._log.warn(
                "{session} webhook refused the message: HTTP {code} {reason}",
                session=session.id,
                code=code,
                reason=reason,
            )
            raise SMTPError(550, f"Error: refused by the receiver: {reason}", "5.7.1")
        self._log.warn(
            "{session} webhook answered HTTP {code} {reason}",
            session=session.id,
            code=code,
            reason=reason,
        )
        raise SMTPError(451, f"Error: unexpected answer from the receiver (HTTP {code})", "4.3.0")


__all__ = ["FORMATS", "WebhookHandler"]
