# -*- test-case-name: tests.test_webhook,tests.integration.test_webhook -*-
"""
L{WebhookHandler}: POST every accepted message to an HTTP endpoint (a
mail-to-API gateway), through Twisted's C{twisted.web.client.Agent}.
"""

from __future__ import annotations

import contextlib
import tempfile
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.optionvalues import handlerSeconds
from twisted_smtpd._core.session import Session
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers._concurrency import DeliveryBound, checkConcurrency
from twisted_smtpd.handlers._diskfailure import diskError, logDiskFailure
from twisted_smtpd.handlers._envelope import envelopeFields, envelopeJSON, messageId
from twisted_smtpd.handlers._filebody import SpooledBody, ThreadedFileBody
from twisted_smtpd.handlers._sessionwork import SessionWork
from twisted_smtpd.handlers._signedspool import SignedSpool
from twisted_smtpd.handlers._webhookclient import (
    RenegotiationRefusingPolicy,
    answeredEarly,
    checkURL,
    describe,
    discardBody,
    makePool,
    readBody,
    refusalReason,
)
from twisted_smtpd.handlers.relay import loadTrustRoot
from twisted_smtpd.interfaces import IMessageStream

FORMATS = ("raw", "json")
# How much of a response body is kept (for a refusal's reason), and how much
# is read at most before the connection is dropped.
_KEEP = 1024
_READ_LIMIT = 65536
# Seconds the rest of a 2xx answer's body is read for before the connection
# is dropped: the status already decided the reply.
_DRAIN_TIMEOUT = 5.0

TIMESTAMP_HEADER = "X-SMTPD-Timestamp"
SIGNATURE_HEADER = "X-SMTPD-Signature"


class _TemporaryFailure(Exception):
    """
    One attempt failed in a way worth another: C{str()} says how.
    """


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
    spooled to a temporary file while the message arrives, written in a
    thread pool (a slow disk pauses that client only), then streamed from
    it; it is never held in memory (a file that cannot be written
    is answered 452 when the disk or quota is full, else 451, with one log
    line, and nothing is posted).  Besides C{Content-Type} and
    C{User-Agent}, every request has these headers:

      - C{X-SMTPD-Timestamp}: seconds since the epoch when the message
        arrived;
      - C{X-SMTPD-Signature}, with a C{secret}: C{v2=} and the hexadecimal
        HMAC-SHA256 of C{TIMESTAMP "." BODY} (the timestamp header and the
        exact body bytes, the envelope among them).

    The request is a plain HTTP/1.1 POST: no redirect is followed, no
    cookie kept, no compressed answer asked for or decoded.

    The HTTP status of the answer to the POST decides the reply, as soon as
    the status line and headers are in: 2xx is 250 at once (the rest of the
    body is read afterwards, for at most 5 seconds and 64 KiB, then
    dropped), but a whole answer, or a 2xx status and headers, that came
    before the request body was all sent counts as a failed attempt (the
    receiver had not read the message); 408, 429, 5xx, a
    status outside 100-599, a malformed answer, a connection failure or no
    answer within C{attemptTimeout} is tried again, with growing pauses,
    until C{timeout} seconds after the message ended, then answered 451; any
    other 4xx is 550 with the receiver's reason (the first line of a
    C{text/plain} body, or the reason phrase), sanitised; 1xx and 3xx
    (redirects) are 451 at once, naming the status.  The same reply goes to
    every recipient in LMTP mode.  A failed attempt is not tried again once
    the session has ended (its client left, or the server timed it out or
    stopped): that client was never told 250 and will send the message
    again, so a later attempt taken could only post it twice.  The message
    is then answered 451 at once, with its one log line, even in the pause
    before a next attempt.

    At most C{maxConcurrent} messages are posted at once (Postfix's
    C{default_destination_concurrency_limit} is 20 as well): a message
    beyond waits for one of them to end, that wait counting within its
    C{timeout}; one that gets no turn in time is answered 451 4.4.5 with
    one log line, and a line says when the bound is reached (not one for
    each message waiting).  A message whose session ends while it waits is
    never posted.

    HTTPS URLs are verified against the system's CAs, or the PEM bundle
    C{caCertificates}; a certificate that does not verify is 451 at once,
    naming OpenSSL's reason, without more attempts.

    A message leaves one log line: accepted, refused, or failed with the
    last attempt's problem; each failed attempt leaves a debug line.

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
        attemptTimeout: float = 20.0,
        caCertificates: str | None = None,
        spoolDirectory: str | None = None,
        firstRetry: float = 0.25,
        maxRetryDelay: float = 5.0,
        maxConcurrent: int = 20,
        reactor: Any = None,
        threadpool: ThreadPool | None = None,
    ) -> None:
        """
        @param url: An C{http://} or C{https://} URL with a host, an
            optional port from 1 to 65535, and no user name, password or
            fragment.
        @param secret: The HMAC key signing each request (not empty, nor
            white space alone), or C{None}.
        @param format: C{"raw"} or C{"json"}.
        @param timeout: Seconds after the end of a message within which the
            receiver must accept it, retries included; keep it below the
            SMTP client's patience (RFC 5321 section 4.5.3.2.6: 10 minutes)
            and the server's C{socketTimeout} does not apply to it.
        @param attemptTimeout: Seconds one attempt may take to get the
            answer's status and headers (within C{timeout}), so that an
            attempt on a connection that went silent leaves time for
            another on a new one.
        @param caCertificates: A PEM bundle to verify HTTPS with, instead of
            the system's CAs (only with an C{https://} URL).
        @param spoolDirectory: Where the temporary files go.
        @param firstRetry: Seconds before the first retry; each pause
            doubles, up to C{maxRetryDelay}.
        @param maxRetryDelay: The longest pause between attempts.
        @param maxConcurrent: The most messages posted at once (above 0).
        @param reactor: The reactor (the global one by default).
        @param threadpool: Where the spool file is written and read;
            C{reactor.getThreadPool()} by default.
        @raise ValueError: If C{url}, C{format}, a timeout, the secret,
            the CA bundle or C{maxConcurrent} is not usable.
        """
        requestURL = checkURL(url)
        if format not in FORMATS:
            raise ValueError(f"format must be raw or json, not {format!r}")
        for name, seconds in [
            ("timeout", timeout),
            ("attemptTimeout", attemptTimeout),
            ("firstRetry", firstRetry),
            ("maxRetryDelay", maxRetryDelay),
        ]:
            handlerSeconds(name, seconds)
        checkConcurrency("maxConcurrent", maxConcurrent)
        if caCertificates is not None and not url.startswith("https://"):
            # Verified TLS was asked for, and would silently not be used.
            raise ValueError("a CA bundle needs an https:// URL")
        if secret is not None and not secret:
            # An HMAC keyed with nothing is a signature anyone can make.
            raise ValueError("the webhook secret is empty")
        if secret is not None and not secret.strip():
            # Nor is one keyed with a blank line (a variable left unset).
            raise ValueError("the webhook secret is only white space")
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.url = url
        self._requestURL = requestURL
        self._secret = secret.encode("utf-8") if isinstance(secret, str) else secret
        self._json = format == "json"
        self._timeout = timeout
        self._attemptTimeout = attemptTimeout
        self._spoolDirectory = spoolDirectory
        self._firstRetry = firstRetry
        self._maxRetryDelay = maxRetryDelay
        self._reactor = reactor
        self._threadpool = threadpool
        policy = RenegotiationRefusingPolicy(
            loadTrustRoot(caCertificates) if caCertificates is not None else None
        )
        self._pool = makePool(reactor)
        #: The bodies of 2xx answers being read after the message's reply.
        self._draining: set[Deferred[None]] = set()
        #: The messages being posted for each session.
        self._posting = SessionWork()
        #: The messages posted at once, and the wait of each session's
        #: message for its turn.
        self._bound = DeliveryBound("webhook requests", maxConcurrent, reactor)
        self._turns: dict[str, Deferred[bool]] = {}
        #: The pause of each session's message before its next attempt.
        self._pauses: dict[str, Deferred[None]] = {}
        # A plain Agent: no RedirectAgent, CookieAgent or ContentDecoderAgent.
        self._agent = Agent(reactor, contextFactory=policy, pool=self._pool)

    def _inThread(self, f: Any, *args: Any) -> Deferred[Any]:
        pool = self._threadpool or self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, f, *args)

    def close(self) -> Deferred[None]:
        """
        Let the bodies of 2xx answers still being read end (within
        L{_DRAIN_TIMEOUT} seconds), then close the idle HTTP connections kept
        for the next messages.
        """

        async def closeAll() -> None:
            while self._draining:
                await next(iter(self._draining))
            await self._pool.closeCachedConnections()

        return Deferred.fromCoroutine(closeAll())

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[str]:
        """
        Spool the body, then POST it.

        @return: A L{Deferred} firing with the 250 text, or failing with a
            451 or 550 L{SMTPError}, or with the stream's failure if the body
            did not arrive whole.
        """
        return Deferred.fromCoroutine(self._deliver(stream, session))

    def onClose(self, session: Session) -> None:
        """
        A message of C{session} still being posted is not tried again (one
        pausing before its next attempt is answered at once), and one still
        waiting for its turn is not posted.
        """
        self._posting.close(session.id)
        turn = self._turns.pop(session.id, None)
        if turn is not None:
            turn.cancel()
        pause = self._pauses.pop(session.id, None)
        if pause is not None and not pause.called:
            pause.callback(None)

    async def _deliver(self, stream: IMessageStream, session: Session) -> str:
        self._posting.begin(session.id)
        try:
            return await self._spoolAndPost(stream, session)
        finally:
            self._posting.finish(session.id)

    async def _spoolAndPost(self, stream: IMessageStream, session: Session) -> str:
        fields = envelopeFields(session)
        envelope = envelopeJSON(fields)
        timestamp = str(int(self._reactor.seconds()))
        spool = SignedSpool(
            secret=self._secret,
            timestamp=timestamp,
            envelope=envelope,
            jsonFormat=self._json,
            inThread=self._inThread,
            directory=self._spoolDirectory,
        )
        spooled: SpooledBody | None = None
        try:
            await stream.pipe(spool)
            try:
                spooled = SpooledBody(await spool.finish(), spool.length)
            except OSError:
                raise self._spoolFailed(session) from None
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
            return await self._post(spooled, headers, session)
        finally:
            if spooled is None:
                await spool.close()
            else:
                spooled.closeAfterReads(spool.close)

    def _spoolFailed(self, session: Session) -> SMTPError:
        """
        Log the spool's failure being handled (a full disk, a missing
        directory) in one line, and return its reply: 452 or 451.
        """
        failure = Failure()
        logDiskFailure(
            self._log,
            failure,
            "{session} webhook spooling the message into {directory} failed",
            session=session.id,
            directory=self._spoolDirectory or tempfile.gettempdir(),
        )
        return diskError(failure.value)

    async def _post(self, body: SpooledBody, headers: Headers, session: Session) -> str:
        deadline = self._reactor.seconds() + self._timeout
        await self._turn(session)
        try:
            return await self._attempts(body, headers, session, deadline)
        finally:
            self._bound.release()

    async def _turn(self, session: Session) -> None:
        """
        Wait, for at most C{timeout} seconds, for fewer than C{maxConcurrent} messages
        being posted: a turn that comes with no time left is not taken.

        @raise SMTPError: 451 4.4.5 if none ended in time, 451 4.3.0 if
            the session ended meanwhile.
        """
        if self._posting.ended(session.id):
            raise self._notPosted(session)
        turn = self._turns[session.id] = self._bound.acquire(self._timeout)
        try:
            taken = await turn
        except CancelledError:
            raise self._notPosted(session) from None
        finally:
            if self._turns.get(session.id) is turn:
                del self._turns[session.id]
        if not taken:
            self._log.warn(
                "{session} webhook not posted: no turn in {seconds}s ({limit} requests in flight)",
                session=session.id,
                limit=self._bound.limit,
                seconds=self._timeout,
            )
            raise SMTPError(451, "Error: webhook busy, too many messages in flight", "4.4.5")

    def _notPosted(self, session: Session) -> SMTPError:
        """
        Log that the message of C{session} is not posted, its session
        having ended before its turn came, and return its reply.
        """
        self._log.info(
            "{session} webhook not posted: the session ended before its turn",
            session=session.id,
        )
        return SMTPError(451, "Error: the session ended", "4.3.0")

    async def _attempts(
        self, body: SpooledBody, headers: Headers, session: Session, deadline: float
    ) -> str:
        delay = self._firstRetry
        attempt = 0
        problem = ""
        while True:
            attempt += 1
            remaining = deadline - self._reactor.seconds()
            try:
                return await self._attempt(
                    body, headers, session, min(remaining, self._attemptTimeout)
                )
            except _TemporaryFailure as e:
                problem = str(e)
            if self._posting.ended(session.id):
                raise self._notRetried(session, problem)
            remaining = deadline - self._reactor.seconds()
            if remaining <= delay:
                self._log.warn(
                    "{session} webhook failed {attempts} times, last: {problem}",
                    session=session.id,
                    attempts=attempt,
                    problem=problem,
                )
                raise SMTPError(451, f"Error: webhook unavailable ({problem})", "4.3.0")
            self._log.debug(
                "{session} webhook attempt {attempt} failed ({problem}); again in {delay}s",
                session=session.id,
                attempt=attempt,
                problem=problem,
                delay=delay,
            )
            await self._pause(session, delay)
            if self._posting.ended(session.id):
                raise self._notRetried(session, problem)
            delay = min(delay * 2, self._maxRetryDelay)

    async def _pause(self, session: Session, seconds: float) -> None:
        """
        Wait C{seconds} before the next attempt for C{session}'s message,
        or until the session ends (L{onClose}).
        """
        pause: Deferred[None] = Deferred()
        timer = self._reactor.callLater(seconds, pause.callback, None)
        self._pauses[session.id] = pause
        try:
            await pause
        finally:
            if self._pauses.get(session.id) is pause:
                del self._pauses[session.id]
            if timer.active():
                timer.cancel()

    def _notRetried(self, session: Session, problem: str) -> SMTPError:
        """
        Log that the message of C{session}, whose last attempt failed for
        C{problem}, is not tried again, its session having ended, and
        return its reply.
        """
        self._log.info(
            "{session} webhook not tried again, the session ended: {problem}",
            session=session.id,
            problem=problem,
        )
        return SMTPError(451, f"Error: webhook unavailable ({problem})", "4.3.0")

    async def _drain(self, response: IResponse) -> None:
        """
        Read what is left of a 2xx answer's body, for at most
        L{_DRAIN_TIMEOUT} seconds and L{_READ_LIMIT} bytes, then drop its
        connection unless the body ended.
        """
        with contextlib.suppress(CancelledError):
            await self._within(readBody(response, 0, _READ_LIMIT), _DRAIN_TIMEOUT)

    async def _within(self, d: Deferred[Any], seconds: float) -> Any:
        """
        What C{d} fires with, cancelling it after C{seconds}.

        @raise CancelledError: If it took too long.
        """
        expired = []

        def expire() -> None:
            expired.append(True)
            d.cancel()

        timer = self._reactor.callLater(max(seconds, 0), expire)
        try:
            return await d
        except Exception:
            if expired:
                raise CancelledError() from None
            raise
        finally:
            if timer.active():
                timer.cancel()

    async def _attempt(
        self, body: SpooledBody, headers: Headers, session: Session, seconds: float
    ) -> str:
        """
        Post C{body} once, within C{seconds}; the attempt ends without
        waiting for a read of the spool file still in flight
        (L{SpooledBody.stopped}).
        """
        producer = body.producer(self._inThread)
        try:
            return await self._exchange(producer, headers, session, seconds)
        finally:
            body.stopped(producer)

    async def _exchange(
        self, producer: ThreadedFileBody, headers: Headers, session: Session, seconds: float
    ) -> str:
        started = self._reactor.seconds()
        try:
            response: IResponse = await self._within(
                self._agent.request(b"POST", self._requestURL, headers, producer), seconds
            )
        except CancelledError:
            raise _TemporaryFailure("no answer in time") from None
        except Exception:
            problem, retry = describe(Failure())
            if retry:
                raise _TemporaryFailure(problem) from None
            self._log.warn(
                "{session} webhook failed: {problem}", session=session.id, problem=problem
            )
            raise SMTPError(451, f"Error: webhook unavailable ({problem})", "4.3.0") from None
        code = response.code
        if 200 <= code < 300 and answeredEarly(response):
            # The receiver cannot have taken what it had not read; the
            # connection is cut (the rest of the body is not sent).
            discardBody(response)
            raise _TemporaryFailure(f"HTTP {code} before the whole message was sent")
        if 200 <= code < 300:
            # The status decides: the rest of the body, read meanwhile,
            # only frees the connection for the next message.
            draining = Deferred.fromCoroutine(self._drain(response))
            if not draining.called:
                self._draining.add(draining)
                draining.addBoth(lambda _: self._draining.discard(draining))
            self._log.info(
                "{session} webhook accepted {id}: HTTP {code}",
                session=session.id,
                id=messageId(session),
                code=code,
            )
            return f"OK: queued as {messageId(session)}"
        if not 100 <= code <= 599:
            discardBody(response)
            raise _TemporaryFailure(f"HTTP status {code} out of range")
        if code in (408, 429) or code >= 500:
            discardBody(response)
            raise _TemporaryFailure(f"HTTP {code}")
        left = seconds - (self._reactor.seconds() - started)
        try:
            body = await self._within(readBody(response, _KEEP, _READ_LIMIT), left)
        except CancelledError:
            body = b""
        reason = refusalReason(response, body)
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
