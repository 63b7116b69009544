# -*- test-case-name: tests.integration.test_webhook -*-
"""
L{WebhookHandler} against a real C{twisted.web} receiver on 127.0.0.1: the
request it sends, its signature, the SMTP reply each HTTP answer gives,
retries, timeouts and HTTPS; and a whole SMTP dialogue through it.
"""

from __future__ import annotations

import base64
import json
import os
import smtplib
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.threadable import isInIOThread
from twisted.trial.unittest import TestCase

from tests.certs import CertificateAuthority
from tests.integration.helpers import TwistdServer
from tests.integration.webhookreceiver import (
    ReceivedRequest,
    TrackingSite,
    WebhookReceiver,
    stopReceiver,
)
from tests.test_handlers import feed, makeSession
from twisted_smtpd import SMTPError
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers._envelope import envelopeFields
from twisted_smtpd.handlers.webhook import WebhookHandler
from twisted_smtpd.testing import listenForTests

MESSAGE = b"From: alice@example.com\r\nSubject: hook\r\n\r\nhello\r\n.dot\r\n"
SECRET = b"the shared secret"


class _WatchedFile:
    """
    A temporary file that shows every write to C{watch} before making it,
    and every read to C{watchRead} once made.
    """

    def __init__(
        self,
        file: IO[bytes],
        watch: Callable[[bytes], None],
        watchRead: Callable[[bytes], None] | None = None,
    ) -> None:
        self._file = file
        self._watch = watch
        self._watchRead = watchRead

    def read(self, *args: Any) -> bytes:
        data = self._file.read(*args)
        if self._watchRead is not None:
            self._watchRead(data)
        return data

    def write(self, data: bytes) -> int:
        self._watch(bytes(data))
        return self._file.write(data)

    def writelines(self, lines: Iterable[bytes]) -> None:
        lines = list(lines)
        self._watch(b"".join(lines))
        self._file.writelines(lines)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def watchSpoolWrites(case: TestCase, watch: Callable[[bytes], None]) -> None:
    """
    Have every temporary file made during C{case} show its writes to
    C{watch}.
    """
    original = tempfile.TemporaryFile

    def make(*args: Any, **kwargs: Any) -> Any:
        return _WatchedFile(original(*args, **kwargs), watch)

    case.patch(tempfile, "TemporaryFile", make)


def watchSpoolReads(case: TestCase, watch: Callable[[bytes], None]) -> None:
    """
    Have every read of a temporary file made during C{case}, through the
    file or by C{os.pread} on its descriptor, show what it read to C{watch}
    before it returns.
    """
    original = tempfile.TemporaryFile
    descriptors: set[int] = set()

    def make(*args: Any, **kwargs: Any) -> Any:
        file = original(*args, **kwargs)
        descriptors.add(file.fileno())
        return _WatchedFile(file, lambda data: None, watch)

    realPread = os.pread

    def pread(fd: int, size: int, offset: int) -> bytes:
        data = realPread(fd, size, offset)
        if fd in descriptors:
            watch(data)
        return data

    case.patch(tempfile, "TemporaryFile", make)
    case.patch(os, "pread", pread)


class WebhookTests(TestCase):
    """
    The handler posting to a real receiver.
    """

    timeout = 60

    async def receiver(self, receiver: WebhookReceiver, endpoint: str = "tcp:0") -> str:
        """
        Serve C{receiver} on 127.0.0.1 and return its URL.
        """
        site = TrackingSite(receiver)
        port = await serverFromString(reactor, endpoint + ":interface=127.0.0.1").listen(site)
        # Older trial does not await coroutine cleanups: hand it a Deferred.
        self.addCleanup(lambda: Deferred.fromCoroutine(stopReceiver(port, site)))
        scheme = "https" if endpoint.startswith("ssl:") else "http"
        host = "localhost" if scheme == "https" else "127.0.0.1"
        return f"{scheme}://{host}:{port.getHost().port}/hook"

    def handler(self, url: str, **kwargs: Any) -> WebhookHandler:
        kwargs.setdefault("firstRetry", 0.05)
        handler = WebhookHandler(url, **kwargs)
        self.addCleanup(handler.close)
        return handler

    def deliver(self, handler: WebhookHandler, message: bytes = MESSAGE) -> Deferred[str]:
        """
        Hand C{message} to C{handler.onData} as the server would.
        """
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, message, 7)
        return d

    async def test_rawSigned(self) -> None:
        """
        In raw format the body is C{multipart/form-data}: the envelope,
        then the message byte for byte; the timestamp and a valid signature
        (over the body, so over the envelope) are in headers, and no other
        header carries the envelope; a 200 answers 250 with the message id.
        """
        receiver = WebhookReceiver(secret=SECRET)
        handler = self.handler(await self.receiver(receiver), secret=SECRET)
        before = int(time.time())
        self.assertEqual(await self.deliver(handler), "OK: queued as s1d.1")
        [request] = receiver.requests
        self.assertEqual(request.message, MESSAGE)
        self.assertEqual(request.envelope, envelopeFields(makeSession()))
        self.assertTrue(request.header("content-type").startswith("multipart/form-data; "))
        self.assertEqual(request.header("content-length"), str(len(request.body)))
        self.assertNotIn("x-smtpd-envelope", request.headers)
        self.assertLessEqual(before, int(request.header("x-smtpd-timestamp")))
        self.assertTrue(request.header("x-smtpd-signature").startswith("v2="))

    async def test_jsonSigned(self) -> None:
        """
        In JSON format the body holds the envelope and the message in
        base64, and is signed.
        """
        receiver = WebhookReceiver(secret=SECRET)
        handler = self.handler(await self.receiver(receiver), secret=SECRET, format="json")
        self.assertEqual(await self.deliver(handler), "OK: queued as s1d.1")
        [request] = receiver.requests
        self.assertEqual(request.header("content-type"), "application/json")
        document = json.loads(request.body)
        self.assertEqual(base64.b64decode(document["message"]), MESSAGE)
        self.assertEqual(
            document["envelope"]["recipients"], ["bob@example.org", "carol@example.net"]
        )

    async def test_wrongSecretRefused(self) -> None:
        """
        A receiver that verifies signatures refuses a request signed with
        another key: 4xx becomes 550 with the first line of its text.
        """
        receiver = WebhookReceiver(secret=SECRET)
        handler = self.handler(await self.receiver(receiver), secret=b"another key")
        e = await self.assertFailure(self.deliver(handler), SMTPError)
        self.assertEqual((e.code, e.enhanced), (550, "5.7.1"))
        self.assertEqual(e.message, "Error: refused by the receiver: bad signature")
        self.assertEqual(len(receiver.requests), 1)

    async def test_refusalNotRetriedAndSanitised(self) -> None:
        """
        A 404 is not tried again; its reason reaches the reply without
        control characters.
        """
        body = b"\x1b[2J\x07no such\x00 mailbox\r\nsecond line"
        receiver = WebhookReceiver([(404, "text/plain; charset=utf-8", body)])
        handler = self.handler(await self.receiver(receiver))
        e = await self.assertFailure(self.deliver(handler), SMTPError)
        self.assertEqual(e.code, 550)
        self.assertEqual(e.message, "Error: refused by the receiver: [2J no such mailbox")
        self.assertEqual(len(receiver.requests), 1)

    async def test_reasonPhrase(self) -> None:
        """
        Without a plain-text body, the reason is the HTTP reason phrase.
        """
        receiver = WebhookReceiver([(403, "text/html", b"<h1>no</h1>")])
        handler = self.handler(await self.receiver(receiver))
        e = await self.assertFailure(self.deliver(handler), SMTPError)
        self.assertEqual(e.message, "Error: refused by the receiver: Forbidden")

    async def test_serverErrorThenSuccess(self) -> None:
        """
        A 500 is tried again; the second attempt's 200 answers 250, and
        both requests carried the whole body.
        """
        receiver = WebhookReceiver([(500, "text/plain", b"oops")], secret=SECRET)
        handler = self.handler(await self.receiver(receiver), secret=SECRET)
        self.assertEqual(await self.deliver(handler), "OK: queued as s1d.1")
        self.assertEqual([r.message for r in receiver.requests], [MESSAGE, MESSAGE])
        # The same request again, byte for byte.
        self.assertEqual(receiver.requests[0].body, receiver.requests[1].body)

    async def test_tooManyRequests(self) -> None:
        """
        429 and 408 are tried again.
        """
        receiver = WebhookReceiver([(429, "text/plain", b""), (408, "text/plain", b"")])
        handler = self.handler(await self.receiver(receiver))
        self.assertEqual(await self.deliver(handler), "OK: queued as s1d.1")
        self.assertEqual(len(receiver.requests), 3)

    async def test_alwaysUnavailable(self) -> None:
        """
        A receiver answering 503 until the timeout gives 451, after several
        attempts with growing pauses.
        """
        receiver = WebhookReceiver([(503, "text/plain", b"")] * 1000)
        handler = self.handler(await self.receiver(receiver), timeout=1.0)
        started = time.monotonic()
        e = await self.assertFailure(self.deliver(handler), SMTPError)
        self.assertEqual((e.code, e.enhanced), (451, "4.3.0"))
        self.assertEqual(e.message, "Error: webhook unavailable (HTTP 503)")
        self.assertLess(time.monotonic() - started, 5)
        # Pauses of 0.05, 0.1, 0.2, 0.4 s fit in one second; 0.8 s more do not.
        self.assertTrue(3 <= len(receiver.requests) <= 6, len(receiver.requests))

    async def test_slowReceiver(self) -> None:
        """
        A receiver that never answers gives 451 once the timeout has passed.
        """
        receiver = WebhookReceiver([None] * 100)
        handler = self.handler(await self.receiver(receiver), timeout=0.5)
        started = time.monotonic()
        e = await self.assertFailure(self.deliver(handler), SMTPError)
        self.assertEqual(e.code, 451)
        self.assertEqual(e.message, "Error: webhook unavailable (no answer in time)")
        self.assertLess(time.monotonic() - started, 5)

    async def test_connectionRefused(self) -> None:
        """
        No receiver listening gives 451.
        """
        receiver = WebhookReceiver()
        site = TrackingSite(receiver)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        await port.stopListening()
        handler = self.handler(url, timeout=3)
        e = await self.assertFailure(self.deliver(handler), SMTPError)
        self.assertEqual(e.code, 451)
        self.assertIn("ConnectionRefusedError", e.message)

    async def test_largeMessageStreamed(self) -> None:
        """
        A 4 MiB message goes through the spool with its length announced
        (no chunked encoding) and arrives intact.
        """
        message = b"Subject: big\r\n\r\n" + b"0123456789abcdef" * 262144
        receiver = WebhookReceiver()
        handler = self.handler(await self.receiver(receiver))
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, message, 65536)
        self.assertEqual(await d, "OK: queued as s1d.1")
        [request] = receiver.requests
        self.assertEqual(request.header("content-length"), str(len(request.body)))
        self.assertEqual(request.message, message)

    async def test_httpsWithCA(self) -> None:
        """
        An HTTPS receiver is verified against C{caCertificates}; against the
        system's CAs its private CA fails (451).
        """
        ca = CertificateAuthority(self.mktemp())
        issued = ca.server("localhost")
        endpoint = f"ssl:0:privateKey={issued.keyPath}:certKey={issued.certificatePath}"
        receiver = WebhookReceiver()
        url = await self.receiver(receiver, endpoint)
        trusted = self.handler(url, caCertificates=ca.certificatePath)
        self.assertEqual(await self.deliver(trusted), "OK: queued as s1d.1")
        untrusted = self.handler(url, timeout=0.3)
        e = await self.assertFailure(self.deliver(untrusted), SMTPError)
        self.assertEqual(e.code, 451)
        self.assertEqual(len(receiver.requests), 1)

    async def test_untrustedNamedNotRetried(self) -> None:
        """
        A certificate that does not verify is 451 at once, naming
        OpenSSL's reason in the reply and in the one log line, without
        further attempts.
        """
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        ca = CertificateAuthority(self.mktemp())
        issued = ca.server("localhost")
        endpoint = f"ssl:0:privateKey={issued.keyPath}:certKey={issued.certificatePath}"
        url = await self.receiver(WebhookReceiver(), endpoint)
        handler = self.handler(url, timeout=30)
        started = time.monotonic()
        e = await self.assertFailure(self.deliver(handler), SMTPError)
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(e.code, 451)
        self.assertEqual(e.message, "Error: webhook unavailable (TLS: certificate verify failed)")
        lines = [
            formatEvent(event)
            for event in logs
            if event["log_level"] >= LogLevel.info and "webhook" in event.get("log_format", "")
        ]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("certificate verify failed", lines[0])

    async def dialogue(self) -> ReceivedRequest:
        """
        Send L{MESSAGE} through a real SMTP server to a receiver checking
        signatures, and return the request it got.
        """
        receiver = WebhookReceiver(secret=SECRET)
        handler = self.handler(await self.receiver(receiver), secret=SECRET)
        server = await listenForTests(handler)
        self.addCleanup(server.close)

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
                client.ehlo("client.example")
                return client.sendmail("a@example.com", ["x@example.org"], MESSAGE)

        await deferToThread(send)
        [request] = receiver.requests
        return request

    async def test_smtpDialogue(self) -> None:
        """
        Through a real SMTP server, the client's envelope reaches the
        receiver, and the receiver's 200 is the client's 250.
        """
        request = await self.dialogue()
        envelope = request.envelope
        self.assertEqual(envelope["sender"], "a@example.com")
        self.assertEqual(envelope["recipients"], ["x@example.org"])
        self.assertEqual(envelope["helo"], "client.example")
        self.assertEqual(request.message, MESSAGE)

    async def test_smtpRefusal(self) -> None:
        """
        Through a real SMTP server, a receiver's 422 is the client's 550.
        """
        receiver = WebhookReceiver([(422, "text/plain", b"unknown recipient")])
        handler = self.handler(await self.receiver(receiver))
        server = await listenForTests(handler)
        self.addCleanup(server.close)

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
                client.ehlo("client.example")
                client.mail("a@example.com")
                client.rcpt("x@example.org")
                return client.data(MESSAGE)

        code, text = await deferToThread(send)
        self.assertEqual(code, 550)
        self.assertEqual(text, b"5.7.1 Error: refused by the receiver: unknown recipient")

    async def test_twistd(self) -> None:
        """
        C{twistd smtpd --webhook URL --webhook-secret S --webhook-format
        json} posts signed JSON that the receiver verifies.
        """
        receiver = WebhookReceiver(secret=SECRET)
        url = await self.receiver(receiver)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        server = TwistdServer(
            [
                "--no-reverse-lookup",
                "--webhook",
                url,
                "--webhook-secret",
                SECRET.decode(),
                "--webhook-format",
                "json",
            ],
            directory,
        )
        self.addCleanup(server.kill)
        await deferToThread(server.start)

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
                client.ehlo("client.example")
                client.mail("a@example.com")
                client.rcpt("x@example.org")
                return client.data(MESSAGE)

        code, text = await deferToThread(send)
        self.assertEqual(code, 250, text)
        [request] = receiver.requests
        document = json.loads(request.body)
        self.assertEqual(base64.b64decode(document["message"]), MESSAGE)
        self.assertEqual(document["envelope"]["sender"], "a@example.com")
        self.assertEqual(text.decode(), f"2.0.0 OK: queued as {document['envelope']['messageId']}")
        await deferToThread(server.stop)


class SpoolThreadTests(TestCase):
    """
    The request body is written to its spool file in a thread pool, never
    on the reactor thread: a slow disk under the spool stalls its own
    message only, not every session of the server.
    """

    timeout = 60
    receiver = WebhookTests.receiver
    handler = WebhookTests.handler
    dialogue = WebhookTests.dialogue

    async def test_spoolWritesOffReactorThread(self) -> None:
        """
        Through a real SMTP server, no write to the spool file of a
        message runs on the reactor thread, and the message arrives whole.
        """
        onReactor: list[bool] = []
        watchSpoolWrites(self, lambda data: onReactor.append(isInIOThread()))
        request = await self.dialogue()
        self.assertEqual(request.message, MESSAGE)
        self.assertTrue(onReactor)
        self.assertNotIn(True, onReactor)

    async def test_stalledSpoolKeepsServing(self) -> None:
        """
        While the spool write of one session's message is blocked (a stalled
        disk), another session of the same server gets its greeting and its
        250s, its message included; the stalled one is answered 250 once
        the write goes through.
        """
        await self.stalledKeepsServing(watchSpoolWrites)

    async def test_spoolReadsOffReactorThread(self) -> None:
        """
        Through a real SMTP server, no read of the spool file of a message,
        as its request body is sent, runs on the reactor thread, and the
        message arrives whole.
        """
        onReactor: list[bool] = []
        watchSpoolReads(self, lambda data: onReactor.append(isInIOThread()))
        request = await self.dialogue()
        self.assertEqual(request.message, MESSAGE)
        self.assertTrue(onReactor)
        self.assertNotIn(True, onReactor)

    async def test_stalledSpoolReadKeepsServing(self) -> None:
        """
        While the read of one message's spool file, as its request body is
        sent, is blocked (a stalled disk), another session of the same
        server gets its greeting and its 250s, its message included; the
        stalled one is answered 250 once the read goes through.
        """
        await self.stalledKeepsServing(watchSpoolReads)

    async def stalledKeepsServing(
        self, watchSpool: Callable[[TestCase, Callable[[bytes], None]], None]
    ) -> None:
        """
        Block the spool I/O that C{watchSpool} shows for one message, and
        check that a second session is served meanwhile.
        """
        entered, release = threading.Event(), threading.Event()

        def watch(data: bytes) -> None:
            if b"stall here" in data:
                entered.set()
                release.wait(20)

        watchSpool(self, watch)
        receiver = WebhookReceiver()
        handler = self.handler(await self.receiver(receiver))
        server = await listenForTests(handler)
        self.addCleanup(server.close)

        def stalled() -> Any:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
                client.ehlo("client.example")
                client.mail("a@example.com")
                client.rcpt("x@example.org")
                return client.data(b"Subject: stall here\r\n\r\nbody\r\n")

        def other() -> list[int]:
            try:
                if not entered.wait(10):
                    raise AssertionError("the stalled spool I/O never started")
                client = smtplib.SMTP(timeout=5)
                try:
                    codes = [client.connect("127.0.0.1", server.port)[0]]
                    codes.append(client.ehlo("other.example")[0])
                    codes.append(client.mail("b@example.com")[0])
                    codes.append(client.rcpt("y@example.org")[0])
                    codes.append(client.data(MESSAGE)[0])
                    client.quit()
                finally:
                    client.close()
                return codes
            finally:
                release.set()

        first = deferToThread(stalled)
        self.assertEqual(await deferToThread(other), [220, 250, 250, 250, 250])
        code, _ = await first
        self.assertEqual(code, 250)
        self.assertEqual(len(receiver.requests), 2)
