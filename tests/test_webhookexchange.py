# -*- test-case-name: tests.test_webhookexchange -*-
"""
L{WebhookHandler}'s HTTP exchanges in memory: the request it writes and
the SMTP reply each answer gives, on a L{MemoryReactorClock} whose
connections are L{StringTransport}s.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from typing import IO, Any
from unittest import skipIf

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IHostnameResolver,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
)
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http_headers
from twisted.web._newclient import ResponseNeverReceived
from zope.interface import implementer

from tests.disklog import DiskErrorLog
from tests.test_handlers import ManualThreadPool, Upstream, feed, makeSession
from tests.test_mbox import ImmediateThreadPool
from twisted_smtpd import SMTPError
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import _spool
from twisted_smtpd.handlers._spool import SPOOL_THRESHOLD
from twisted_smtpd.handlers._webhookclient import (
    HEADER_LIMIT,
    HEADER_LINE_LIMIT,
    IDLE_TIMEOUT,
    MAX_INFORMATIONAL,
    describe,
)
from twisted_smtpd.handlers.webhook import WebhookHandler

MESSAGE = b"From: alice@example.com\r\nSubject: hook\r\n\r\nhello\r\n"
URL = "http://receiver.example:8080/hook"


@implementer(IHostnameResolver)
class _Resolver:
    """
    Resolves every name to 127.0.0.1 at once.
    """

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> IResolutionReceiver:
        resolutionReceiver.resolutionBegan(None)  # type: ignore[arg-type]
        resolutionReceiver.addressResolved(IPv4Address("TCP", "127.0.0.1", portNumber))
        resolutionReceiver.resolutionComplete()
        return resolutionReceiver


@implementer(IReactorPluggableNameResolver)
class _Reactor(MemoryReactorClock):
    """
    A memory reactor resolving every name to 127.0.0.1 and running thread
    pool jobs (the spool's writes) at once.
    """

    nameResolver = _Resolver()

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        raise NotImplementedError()

    def getThreadPool(self) -> ImmediateThreadPool:
        return ImmediateThreadPool()

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class Exchange:
    """
    A handler on a memory reactor, and the connections it opened.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.reactor = _Reactor()
        kwargs.setdefault("timeout", 50.0)
        self.handler = WebhookHandler(URL, reactor=self.reactor, **kwargs)
        self.transports: list[StringTransport] = []
        self.protocols: list[Any] = []

    def deliver(self, message: bytes = MESSAGE) -> Deferred[str]:
        """
        Hand C{message} to the handler as the server would.
        """
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession())
        feed(stream, message, 7 if message is MESSAGE else 65536)
        self.reactor.advance(0)
        return d

    def connect(self, pause: bool = False) -> StringTransport:
        """
        Complete every connection the handler started, and return the last.

        @param pause: Whether to pause the request body's producer at once,
            as a receiver that does not read would: the request then stays
            unsent.
        """
        while len(self.transports) < len(self.reactor.tcpClients):
            factory = self.reactor.tcpClients[len(self.transports)][2]
            protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8080))
            transport = StringTransport(
                hostAddress=IPv4Address("TCP", "127.0.0.1", 40000 + len(self.transports)),
                peerAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            )
            protocol.makeConnection(transport)
            if pause:
                transport.producer.pauseProducing()
            self.transports.append(transport)
            self.protocols.append(protocol)
        for _ in range(10):
            self.reactor.advance(0)  # the body, a cooperator's steps
        return self.transports[-1]

    def answer(self, data: bytes, index: int = -1) -> None:
        """
        Deliver C{data} from the receiver on connection C{index}.
        """
        self.protocols[index].dataReceived(data)
        self.reactor.advance(0)


def requestHead(transport: StringTransport) -> bytes:
    """
    The request line and headers written to C{transport}, lower-cased.
    """
    return transport.value().partition(b"\r\n\r\n")[0].lower()


class RedirectTests(SynchronousTestCase):
    """
    A redirect answers the POST: it is never followed nor retried.
    """

    def test_seeOtherNotFollowed(self) -> None:
        """
        A 303 to the POST is 451 naming the status; no GET goes to its
        C{Location}, so the signed headers go nowhere else.
        """
        exchange = Exchange(secret=b"k")
        d = exchange.deliver()
        exchange.connect()
        exchange.answer(
            b"HTTP/1.1 303 See Other\r\nLocation: http://other.example/login\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        e = self.failureResultOf(d, SMTPError).value
        self.assertEqual((e.code, e.enhanced), (451, "4.3.0"))
        self.assertEqual(e.message, "Error: unexpected answer from the receiver (HTTP 303)")
        self.assertEqual(len(exchange.reactor.tcpClients), 1)

    def test_redirectsAnsweredAtOnce(self) -> None:
        """
        301, 302, 307 and 308 are 451 at once, naming the status, with one
        log line that names it too.
        """
        for code in (301, 302, 307, 308):
            logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            exchange = Exchange()
            d = exchange.deliver()
            exchange.connect()
            exchange.answer(
                b"HTTP/1.1 %d Moved\r\nLocation: http://127.0.0.1:1/moved\r\n"
                b"Content-Length: 0\r\n\r\n" % code
            )
            e = self.failureResultOf(d, SMTPError).value
            self.assertEqual(e.code, 451)
            self.assertIn(f"HTTP {code}", e.message)
            self.assertEqual(len(exchange.reactor.tcpClients), 1)
            lines = [event for event in logs if event["log_level"] >= LogLevel.info]
            self.assertEqual(len(lines), 1)
            self.assertEqual(lines[0]["code"], code)


class RequestTests(SynchronousTestCase):
    """
    The request carries no state from earlier answers and asks for no
    content coding.
    """

    def test_noCookies(self) -> None:
        """
        A C{Set-Cookie} in an answer is not sent back with the next message.
        """
        exchange = Exchange()
        d = exchange.deliver()
        exchange.connect()
        exchange.answer(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Max-Age=999999\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        self.assertEqual(self.successResultOf(d), "OK: queued as s1d.1")
        exchange.handler._pool.closeCachedConnections()
        d = exchange.deliver()
        transport = exchange.connect()
        self.assertEqual(len(exchange.transports), 2)
        self.assertNotIn(b"cookie", requestHead(transport))
        self.assertNotIn(b"session=abc", transport.value())

    def test_noContentCoding(self) -> None:
        """
        No C{Accept-Encoding} is sent, and a gzip body is not inflated: a
        refusal's reason is then the reason phrase.
        """
        exchange = Exchange()
        d = exchange.deliver()
        transport = exchange.connect()
        self.assertNotIn(b"accept-encoding", requestHead(transport))
        body = gzip.compress(b"inflated reason\r\n")
        exchange.answer(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        e = self.failureResultOf(d, SMTPError).value
        self.assertEqual(e.message, "Error: refused by the receiver: Bad Request")


class ResponseBoundTests(SynchronousTestCase):
    """
    What is read of an answer is bounded, and the status decides.
    """

    def test_headersBounded(self) -> None:
        """
        Header lines that never end drop the connection once they pass
        L{HEADER_LIMIT} octets; the attempt fails naming the bound.
        """
        exchange = Exchange(timeout=0.1)
        d = exchange.deliver()
        transport = exchange.connect()
        exchange.answer(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Pad: " + b"v" * 200 + b"\r\n"
        sent = 0
        while not transport.disconnecting and sent < 10 * HEADER_LIMIT:
            exchange.answer(line * 10)
            sent += len(line) * 10
        self.assertTrue(transport.disconnecting)
        self.assertLessEqual(sent, HEADER_LIMIT + len(line) * 10)
        e = self.failureResultOf(d, SMTPError).value
        self.assertEqual(e.code, 451)
        self.assertEqual(
            e.message, f"Error: webhook unavailable (response headers over {HEADER_LIMIT} octets)"
        )

    def test_headerLineBounded(self) -> None:
        """
        A status or header line longer than L{HEADER_LINE_LIMIT} octets
        drops the connection, and the attempt fails naming that bound, not
        as if the receiver had closed it.
        """
        for head in [b"HTTP/1.1 200 ", b"HTTP/1.1 200 OK\r\nX-Pad: "]:
            exchange = Exchange(timeout=0.1)
            d = exchange.deliver()
            transport = exchange.connect()
            exchange.answer(head + b"v" * (HEADER_LINE_LIMIT + 1))
            self.assertTrue(transport.disconnecting)
            e = self.failureResultOf(d, SMTPError).value
            self.assertEqual(
                e.message,
                "Error: webhook unavailable"
                f" (a response header line over {HEADER_LINE_LIMIT} octets)",
            )

    def test_informationalAnswersCount(self) -> None:
        """
        More than C{MAX_INFORMATIONAL} 1xx answers before the final one drop
        the connection and fail the message at once, not tried again, with
        at most that many of Twisted's lines for them.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        exchange = Exchange(timeout=30)
        d = exchange.deliver()
        transport = exchange.connect()
        exchange.answer(b"HTTP/1.1 100 Continue\r\n\r\n" * 2500 + b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        e = self.failureResultOf(d, SMTPError).value
        self.assertEqual(
            (e.code, e.message),
            (451, f"Error: webhook unavailable (more than {MAX_INFORMATIONAL} 1xx answers)"),
        )
        ignored = [x for x in events if "Ignoring unexpected" in formatEvent(x)]
        self.assertLessEqual(len(ignored), MAX_INFORMATIONAL)
        self.assertEqual(len(exchange.reactor.tcpClients), 1)

    def test_fewInformationalAnswers(self) -> None:
        """
        Up to C{MAX_INFORMATIONAL} 1xx answers are skipped; the final
        answer decides.
        """
        exchange = Exchange(timeout=30)
        d = exchange.deliver()
        exchange.connect()
        head = b"HTTP/1.1 102 Processing\r\n\r\n" * MAX_INFORMATIONAL
        exchange.answer(head + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(self.successResultOf(d).startswith("OK"))

    def test_successBodyStalls(self) -> None:
        """
        A 2xx whose body stops short is 250 at once, from its status; the
        body then has its few seconds, and its connection is dropped.
        Closing the handler waits for that.
        """
        exchange = Exchange()
        d = exchange.deliver()
        transport = exchange.connect()
        exchange.answer(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"ok":'
        )
        self.assertEqual(self.successResultOf(d), "OK: queued as s1d.1")
        closing = exchange.handler.close()
        exchange.reactor.advance(4.9)
        self.assertNotEqual(transport.producerState, "stopped")
        self.assertNoResult(closing)
        exchange.reactor.advance(0.1)
        self.assertEqual(transport.producerState, "stopped")
        self.successResultOf(closing)
        self.assertEqual(len(exchange.reactor.tcpClients), 1)

    def test_statusOutOfRange(self) -> None:
        """
        A status outside 100-599 is a protocol failure, tried again, and
        named as such when the time is up.
        """
        exchange = Exchange(timeout=0.1)
        d = exchange.deliver()
        exchange.connect()
        exchange.answer(b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n")
        e = self.failureResultOf(d, SMTPError).value
        self.assertEqual(e.message, "Error: webhook unavailable (HTTP status 600 out of range)")

        exchange = Exchange(firstRetry=1)
        d = exchange.deliver()
        exchange.connect()
        exchange.answer(b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n")
        self.assertNoResult(d)
        exchange.reactor.advance(1)
        exchange.connect()
        posts = sum(t.value().count(b"POST /hook ") for t in exchange.transports)
        self.assertEqual(posts, 2)
        exchange.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(d), "OK: queued as s1d.1")

    def test_statusNotThreeDigits(self) -> None:
        """
        A status code that is not three ASCII digits (RFC 9112 section 4),
        although Python's C{int} reads it as 200, is a malformed answer,
        tried again, never a 250.
        """
        for code in [b"0200", b"+200", b"2_00", b"200\t", b"20"]:
            exchange = Exchange(timeout=0.1)
            d = exchange.deliver()
            exchange.connect()
            exchange.answer(b"HTTP/1.1 " + code + b" OK\r\nContent-Length: 0\r\n\r\n")
            e = self.failureResultOf(d, SMTPError).value
            self.assertEqual(
                e.message,
                "Error: webhook unavailable"
                " (malformed HTTP response: status code not three digits)",
                code,
            )

    def test_malformedHeadersNamed(self) -> None:
        """
        Headers Twisted cannot make sense of (an unknown transfer coding,
        two lengths, a header name that is not a token) are named as a
        malformed answer saying what is wrong, not by a bare exception
        class name.
        """
        cases = [
            (b"Transfer-Encoding: gzip", "unknown transfer coding gzip"),
            # Twisted's own words, which vary with its version.
            (b"Content-Length: 5\r\nContent-Length: 7", ""),
        ]
        if hasattr(http_headers, "InvalidHeaderName"):
            # Older Twisted versions (the floor, 23.10) take both.
            cases.append((b"Content-Length: -1", ""))
            cases.append((b"X-\x1b[2J: x\r\nContent-Length: 0", "invalid header name"))
        for head, problem in cases:
            exchange = Exchange(timeout=0.1)
            d = exchange.deliver()
            exchange.connect()
            exchange.answer(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n\r\nhello")
            e = self.failureResultOf(d, SMTPError).value
            self.assertTrue(
                e.message.startswith(
                    f"Error: webhook unavailable (malformed HTTP response: {problem}"
                ),
                e.message,
            )
            self.assertNotIn("Error)", e.message)


class AttemptTests(SynchronousTestCase):
    """
    Each attempt has its own deadline within the message's.
    """

    def test_silentConnectionRetried(self) -> None:
        """
        An attempt with no answer gives up after C{attemptTimeout} (20
        seconds by default), and the next attempt, on a new connection,
        can still succeed within the message's 50 seconds.
        """
        exchange = Exchange(firstRetry=0.25)
        d = exchange.deliver()
        first = exchange.connect()
        exchange.reactor.advance(20)
        self.assertTrue(first.disconnecting or getattr(first, "aborted", False))
        self.assertNoResult(d)
        exchange.reactor.advance(0.25)
        exchange.connect()
        self.assertEqual(len(exchange.transports), 2)
        exchange.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(d), "OK: queued as s1d.1")

    def test_idleConnectionsClosed(self) -> None:
        """
        A connection left idle in the pool is closed after L{IDLE_TIMEOUT}
        seconds, not reused for a later message.
        """
        exchange = Exchange()
        d = exchange.deliver()
        transport = exchange.connect()
        exchange.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.successResultOf(d)
        self.assertFalse(transport.disconnecting)
        exchange.reactor.advance(IDLE_TIMEOUT)
        self.assertTrue(transport.disconnecting)

    def test_oneLinePerFailedMessage(self) -> None:
        """
        A message that fails after several attempts leaves one line at
        info level or above; each attempt leaves a debug line.
        """
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        exchange = Exchange(timeout=2, firstRetry=0.25, maxRetryDelay=0.25)
        d = exchange.deliver()
        attempts = 0
        while not d.called:
            exchange.connect()
            exchange.answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
            attempts += 1
            exchange.reactor.advance(0.25)
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)
        self.assertGreater(attempts, 3)
        levels = [event["log_level"] for event in logs]
        self.assertEqual([level for level in levels if level >= LogLevel.info], [LogLevel.warn])
        self.assertEqual(levels.count(LogLevel.debug), attempts - 1)


class SessionEndTests(SynchronousTestCase):
    """
    A message whose session ended is not posted again.
    """

    def test_noRetryOnceSessionEnded(self) -> None:
        """
        An attempt that fails after the session ended (its client left,
        or the server timed it out) is not tried again: that client was
        never told 250 and sends the message again.  The message is
        answered 451 (unsent) with one line at info level.
        """
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        exchange = Exchange(firstRetry=0.25)
        stream = MessageStream()
        session = makeSession()
        d = exchange.handler.onData(stream, session)
        feed(stream, MESSAGE, 7)
        exchange.reactor.advance(0)
        exchange.connect()
        exchange.handler.onClose(session)
        exchange.answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
        exchange.reactor.advance(0.25)
        exchange.connect()
        # Before the fix: a second attempt, which the receiver could take.
        posts = sum(t.value().count(b"POST /hook ") for t in exchange.transports)
        self.assertEqual(posts, 1)
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)
        lines = [formatEvent(e) for e in logs if e["log_level"] >= LogLevel.info]
        self.assertEqual(lines, ["s1d webhook not tried again, the session ended: HTTP 503"])
        work = exchange.handler._posting
        self.assertEqual((work._running, work._ended), ({}, set()))

    def test_sessionEndedAnsweredAtOnce(self) -> None:
        """
        An attempt that fails after the session ended ends the message at
        once, with its one line, rather than after a pause for an attempt
        that will not come: a server stopping once its sessions are closed
        would end before that line.
        """
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        exchange = Exchange(firstRetry=0.25)
        stream = MessageStream()
        session = makeSession()
        d = exchange.handler.onData(stream, session)
        feed(stream, MESSAGE, 7)
        exchange.reactor.advance(0)
        exchange.connect()
        exchange.handler.onClose(session)
        exchange.answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)
        lines = [formatEvent(e) for e in logs]
        self.assertEqual(lines, ["s1d webhook not tried again, the session ended: HTTP 503"])

    def test_sessionEndCutsPause(self) -> None:
        """
        A session that ends during the pause before the next attempt ends
        its message at once, with its one line.
        """
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        exchange = Exchange(firstRetry=5, maxRetryDelay=5)
        stream = MessageStream()
        session = makeSession()
        d = exchange.handler.onData(stream, session)
        feed(stream, MESSAGE, 7)
        exchange.reactor.advance(0)
        exchange.connect()
        exchange.answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
        self.assertNoResult(d)
        exchange.handler.onClose(session)
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)
        lines = [formatEvent(e) for e in logs if e["log_level"] >= LogLevel.info]
        self.assertEqual(lines, ["s1d webhook not tried again, the session ended: HTTP 503"])
        self.assertEqual(exchange.handler._pauses, {})
        exchange.reactor.advance(5)
        self.assertEqual(len(exchange.reactor.tcpClients), 1)

    def test_otherSessionsRetried(self) -> None:
        """
        The end of a session that has no message being posted changes
        nothing for the others: their failed attempts are tried again.
        """
        exchange = Exchange(firstRetry=0.25)
        d = exchange.deliver()
        exchange.connect()
        exchange.handler.onClose(makeSession(id="other"))
        exchange.answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
        exchange.reactor.advance(0.25)
        exchange.connect()
        exchange.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(d), "OK: queued as s1d.1")
        work = exchange.handler._posting
        self.assertEqual((work._running, work._ended), ({}, set()))


class DescribeTests(SynchronousTestCase):
    """
    L{describe} names the cause inside Twisted's wrapper exceptions.
    """

    def test_certificateNotVerified(self) -> None:
        """
        A certificate that does not verify is named with OpenSSL's reason,
        and not worth another attempt.
        """
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        failure = Failure(ResponseNeverReceived([Failure(error)]))
        self.assertEqual(describe(failure), ("TLS: certificate verify failed", False))

    def test_otherTLSError(self) -> None:
        """
        Any other TLS error is named and worth another attempt.
        """
        error = SSL.Error([("SSL routines", "", "unexpected eof while reading")])
        failure = Failure(ResponseNeverReceived([Failure(error)]))
        self.assertEqual(describe(failure), ("TLS: unexpected eof while reading", True))


class SpoolFailureTests(SynchronousTestCase):
    """
    A request body that cannot be spooled is a local disk failure: no
    request is made, and the reply and log line say so, as for the other
    handlers that spool.
    """

    @skipIf(not os.path.exists("/dev/full"), "no /dev/full")
    def test_diskFull(self) -> None:
        """
        A spool on a full disk (C{/dev/full}: every write that reaches it
        fails with C{ENOSPC}, the last one when the spool is closed too) is
        answered 452 4.3.1 with one error line naming the directory and the
        error, no traceback, and no connection to the receiver.
        """
        log = DiskErrorLog(self)

        def full(dir: str | None = None) -> IO[bytes]:
            return open("/dev/full", "w+b")

        self.patch(tempfile, "TemporaryFile", full)
        exchange = Exchange()
        d = exchange.deliver()
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (452, "4.3.1"))
        self.assertEqual(exchange.reactor.tcpClients, [])
        log.assertLines(1, "s1d webhook spooling the message into ", "(ENOSPC)")

    def test_directoryMissing(self) -> None:
        """
        A spool directory that is gone is answered 451 4.3.0 with one error
        line, no traceback, and no connection to the receiver.
        """
        log = DiskErrorLog(self)
        missing = os.path.join(self.mktemp(), "missing")
        exchange = Exchange(spoolDirectory=missing)
        d = exchange.deliver()
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(exchange.reactor.tcpClients, [])
        log.assertLines(1, f"spooling the message into {missing} failed", "(ENOENT)")


class SpoolFlowTests(SynchronousTestCase):
    """
    The request body is written in the thread pool, a few chunks at a
    time: while the disk is behind, the client is paused.
    """

    def test_boundedWhileDiskBehind(self) -> None:
        """
        A 4 MiB message, its writes run only when the client is paused (a
        slow disk), keeps at most one write job in flight, holding at most
        a threshold's worth of chunks, plus a chunk; the request then
        carries the whole message.
        """
        pool = ManualThreadPool()
        exchange = Exchange(threadpool=pool)
        upstream = Upstream()
        stream = MessageStream(upstream)
        d = exchange.handler.onData(stream, makeSession())
        chunk = b"x" * 65534 + b"\r\n"
        held: list[tuple[int, int]] = []
        for _ in range(64):
            while upstream.paused:
                queued = sum(len(c) for _, _, args in pool.jobs for c in args[1])
                held.append((len(pool.jobs), queued))
                pool.runOne()
            stream._write(chunk)
        stream._finish()
        pool.runAll()
        self.assertTrue(held)
        self.assertLessEqual(max(jobs for jobs, _ in held), 1)
        self.assertLessEqual(max(queued for _, queued in held), SPOOL_THRESHOLD + len(chunk))
        transport = exchange.connect()
        for _ in range(1000):
            pool.runAll()  # the body's reads
            exchange.reactor.advance(0)
        self.assertIn(b"\r\n\r\n" + chunk * 64 + b"\r\n--", transport.value())
        exchange.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        pool.runAll()
        self.assertEqual(self.successResultOf(d), "OK: queued as s1d.1")
        self.assertEqual(pool.jobs, [])

    def test_closedOnEveryEnd(self) -> None:
        """
        A body that does not arrive whole (the connection lost, the size
        limit, the session ended by the server stopping) while a spool
        write is in flight is answered once that write is done, with the
        stream's failure; the spool file is closed, and nothing is posted.
        """
        made: list[IO[bytes]] = []
        real = _spool._createSpool

        def record(directory: str | None) -> IO[bytes]:
            made.append(real(directory))
            return made[-1]

        self.patch(_spool, "_createSpool", record)
        for reason in [ConnectionLost(), SMTPError(552, "Error: too big", "5.3.4"), None]:
            pool = ManualThreadPool()
            exchange = Exchange(threadpool=pool)
            stream = MessageStream()
            session = makeSession()
            d = exchange.handler.onData(stream, session)
            stream._write(b"x" * 600000)
            self.assertEqual(len(pool.jobs), 1)
            if reason is None:
                exchange.handler.onClose(session)
                reason = ConnectionLost()
            stream._fail(reason)
            self.assertNoResult(d)
            pool.runAll()
            self.failureResultOf(d, type(reason))
            self.assertTrue(made[-1].closed)
            self.assertEqual(exchange.reactor.tcpClients, [])
        self.assertEqual(len(made), 3)


#: A message whose request body takes more than one write.
LARGE = b"Subject: large\r\n\r\n" + b"x" * (2 * 1024 * 1024) + b"\r\n"


class AnswerWhileSendingTests(SynchronousTestCase):
    """
    An answer that comes, or goes wrong, while the request body is still
    being sent ends the attempt at once, with its own reason, and nothing
    is logged as unhandled.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        # The body's reads run only when told: the first stays in flight.
        self.pool = ManualThreadPool()
        self.exchange = Exchange(firstRetry=0.25, threadpool=self.pool)
        self.result = self.exchange.deliver(LARGE)
        self.pool.runAll()  # the spool's writes
        self.transport = self.exchange.connect(pause=True)
        self.assertEqual(self.exchange.protocols[0]._wrappedProtocol.state, "TRANSMITTING")

    def assertNothingUnhandled(self) -> None:
        """
        Nothing was logged above a warning.
        """
        loud = [formatEvent(e) for e in self.events if e["log_level"] > LogLevel.warn]
        self.assertEqual(loud, [])

    def assertRetried(self, problem: str) -> None:
        """
        The first attempt failed at once, its connection cut, for
        C{problem}; the second, answered 200 once its body is sent, is the
        one accepted.
        """
        self.assertTrue(self.transport.disconnecting)
        self.assertNoResult(self.result)
        # The read in flight of the ended attempt comes back, dropped.
        self.pool.runAll()
        debug = [formatEvent(e) for e in self.events if e["log_level"] == LogLevel.debug]
        self.assertEqual(len(debug), 1, debug)
        self.assertIn(f"attempt 1 failed ({problem})", debug[0])
        self.exchange.reactor.advance(0.25)
        self.exchange.connect()
        while self.exchange.protocols[1]._wrappedProtocol.state == "TRANSMITTING":
            self.pool.runAll()
            self.exchange.reactor.advance(0)
        self.exchange.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.pool.runAll()  # the spool's close
        self.assertEqual(self.successResultOf(self.result), "OK: queued as s1d.1")
        self.assertNothingUnhandled()

    def test_successHeadBeforeBody(self) -> None:
        """
        A 2xx status and headers that come before the request body was all
        sent, the answer's body still to come, cannot mean the receiver
        took the message, no more than a whole answer would: the
        connection is cut and the attempt counts as failed.
        """
        self.exchange.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        self.assertRetried("HTTP 200 before the whole message was sent")

    def test_headersBounded(self) -> None:
        """
        Headers past L{HEADER_LIMIT} octets while the body is being sent
        fail the attempt at once, naming the bound.
        """
        line = b"X-Pad: " + b"v" * 200 + b"\r\n"
        self.exchange.answer(b"HTTP/1.1 200 OK\r\n" + line * (HEADER_LIMIT // len(line) + 1))
        self.assertRetried(f"response headers over {HEADER_LIMIT} octets")

    def test_malformed(self) -> None:
        """
        A malformed status line while the body is being sent fails the
        attempt at once, saying so.
        """
        self.exchange.answer(b"garbage\r\n")
        self.assertRetried("malformed HTTP response: wrong number of parts")

    def test_informationalAnswersCount(self) -> None:
        """
        More than C{MAX_INFORMATIONAL} 1xx answers while the body is being
        sent fail the message at once, not tried again.
        """
        self.exchange.answer(b"HTTP/1.1 102 Processing\r\n\r\n" * (MAX_INFORMATIONAL + 1))
        self.assertTrue(self.transport.disconnecting)
        self.pool.runAll()
        e = self.failureResultOf(self.result, SMTPError).value
        self.assertEqual(
            (e.code, e.message),
            (451, f"Error: webhook unavailable (more than {MAX_INFORMATIONAL} 1xx answers)"),
        )
        self.assertNothingUnhandled()


class StalledReadTests(SynchronousTestCase):
    """
    A read of the spool file that never returns (a stalled disk) holds
    neither the reply past the message's C{timeout} nor the spool file open
    once it returns.
    """

    def test_replyWithinTimeout(self) -> None:
        """
        An attempt whose read of the request body is stuck in the thread
        pool gives up after C{attemptTimeout}, and the message is answered
        451 once its C{timeout} is over, with one log line, though the read
        is still in flight; the spool file is closed once it returns.
        """
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        made: list[IO[bytes]] = []
        real = _spool._createSpool

        def record(directory: str | None) -> IO[bytes]:
            made.append(real(directory))
            return made[-1]

        self.patch(_spool, "_createSpool", record)
        pool = ManualThreadPool()
        exchange = Exchange(timeout=30, attemptTimeout=20, firstRetry=0.25, threadpool=pool)
        d = exchange.deliver(LARGE)
        pool.runAll()  # the spool's writes
        exchange.connect()
        self.assertEqual(len(pool.jobs), 1)  # the first read, stuck
        exchange.reactor.advance(20)
        exchange.reactor.advance(0.25)
        exchange.connect()
        exchange.reactor.advance(10)
        e = self.failureResultOf(d, SMTPError).value
        self.assertEqual(
            (e.code, e.message), (451, "Error: webhook unavailable (no answer in time)")
        )
        warnings = [formatEvent(e) for e in logs if e["log_level"] >= LogLevel.info]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("webhook failed 2 times, last: no answer in time", warnings[0])
        self.assertFalse(made[0].closed)
        pool.runAll()  # the reads come back, then the spool's close
        self.assertTrue(made[0].closed)
        self.assertEqual(pool.jobs, [])


class _TrackingPool(ManualThreadPool):
    """
    A L{ManualThreadPool} saying whether one of its jobs is running (not
    what its result is handed to).
    """

    running = False

    def runOne(self) -> None:
        onResult, func, args = self.jobs.pop(0)
        self.running = True
        try:
            result = func(*args)
        except BaseException:
            self.running = False
            onResult(False, Failure())
        else:
            self.running = False
            onResult(True, result)


class ReactorThreadTests(SynchronousTestCase):
    """
    The spool file is reached in the thread pool only.
    """

    def test_noFileSystemCallOnReactorThread(self) -> None:
        """
        Outside the spool's jobs in the thread pool, nothing asks the file
        system about the spool file, not even its size: on NFS an C{fstat}
        writes the file's dirty pages back first, and blocks while the
        server is away, stalling the whole server.  The request still
        carries the whole body.
        """
        pool = _TrackingPool()
        outside: list[int] = []
        real = os.fstat

        def fstat(fd: int) -> os.stat_result:
            if not pool.running:
                outside.append(fd)
            return real(fd)

        self.patch(os, "fstat", fstat)
        exchange = Exchange(threadpool=pool)
        d = exchange.deliver(LARGE)
        pool.runAll()  # the spool's writes
        transport = exchange.connect()
        while exchange.protocols[0]._wrappedProtocol.state == "TRANSMITTING":
            pool.runAll()
            exchange.reactor.advance(0)
        self.assertIn(LARGE + b"\r\n--", transport.value())
        exchange.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        pool.runAll()  # the spool's close
        self.assertEqual(self.successResultOf(d), "OK: queued as s1d.1")
        self.assertEqual(outside, [])


class SpoolCloseTests(SynchronousTestCase):
    """
    The receiver's answer is the reply at once: closing the spool file, a
    job in the thread pool, does not hold it back.
    """

    def test_acceptedWhilePoolBusy(self) -> None:
        """
        A message the receiver took is answered 250 while the job closing
        its spool file still waits for a thread (the pool taken by jobs on
        a stalled disk): the client, told 421 at the server's deadline
        instead, would send it again.  The file is closed once the job runs.
        """
        made: list[IO[bytes]] = []
        real = _spool._createSpool

        def record(directory: str | None) -> IO[bytes]:
            made.append(real(directory))
            return made[-1]

        self.patch(_spool, "_createSpool", record)
        pool = ManualThreadPool()
        exchange = Exchange(threadpool=pool)
        d = exchange.deliver(LARGE)
        pool.runAll()  # the spool's writes
        exchange.connect()
        while exchange.protocols[0]._wrappedProtocol.state == "TRANSMITTING":
            pool.runAll()
            exchange.reactor.advance(0)
        exchange.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(d), "OK: queued as s1d.1")
        self.assertEqual(len(pool.jobs), 1)
        self.assertFalse(made[0].closed)
        pool.runAll()
        self.assertTrue(made[0].closed)

    def test_refusedWhilePoolBusy(self) -> None:
        """
        A refusal is the reply at once too.
        """
        pool = ManualThreadPool()
        exchange = Exchange(threadpool=pool)
        d = exchange.deliver()
        pool.runAll()
        exchange.connect()
        pool.runAll()
        exchange.reactor.advance(0)
        exchange.answer(b"HTTP/1.1 403 No\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 550)
        self.assertEqual(len(pool.jobs), 1)
        pool.runAll()
