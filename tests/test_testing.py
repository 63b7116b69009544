"""
Tests for L{twisted_smtpd.testing}: the helpers users' tests catch mail with.
"""

from __future__ import annotations

import smtplib
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twisted_smtpd import ServerOptions
from twisted_smtpd.testing import MessageRecorder, listenForTests, memorySession


class MemorySessionTests(SynchronousTestCase):
    def test_catchesMail(self) -> None:
        """
        A whole session fed in memory is recorded, envelope and text.
        """
        recorder = MessageRecorder()
        session = memorySession(recorder)
        out = session.send(
            b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            b"RCPT TO:<c@example.com>\r\nDATA\r\n..dot\r\nhi\r\n.\r\nQUIT\r\n"
        )
        self.assertTrue(out.startswith(b"220 mx.test.invalid ESMTP\r\n"), out)
        self.assertIn(b"250 2.0.0 OK: recorded as message 1\r\n", out)
        message = recorder.messages[0]
        self.assertEqual(message.mailFrom, "a@example.com")
        self.assertEqual(message.rcptTo, ("b@example.com", "c@example.com"))
        self.assertEqual(message.data, b".dot\r\nhi\r\n")
        self.assertTrue(session.transport.disconnecting)

    def test_ownOptionsWithoutDNS(self) -> None:
        """
        With options of the test's own that leave reverse lookups on, the
        session is greeted at once, and no DNS query waits on the global
        reactor: the lookup finds no name.
        """
        from twisted.internet import reactor

        pending = list(reactor.getDelayedCalls())
        session = memorySession(None, ServerOptions(name="mx.example", size=100))
        self.assertEqual(session.read(), b"220 mx.example ESMTP\r\n")
        self.assertIn(b"Nice to meet you, [192.0.2.1]", session.send(b"EHLO c\r\n"))
        self.assertEqual(list(reactor.getDelayedCalls()), pending)

    def test_largeMessageWithinServerLimit(self) -> None:
        """
        The recorder keeps any message the server's own size limit lets
        through, even one larger than L{IMessageStream.collect}'s default
        bound.
        """
        recorder = MessageRecorder()
        session = memorySession(
            recorder, ServerOptions(name="mx.test.invalid", size=0, disableReverseLookup=True)
        )
        body = b"x" * 998 + b"\r\n"
        count = 11_000
        out = session.send(
            b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
            + body * count
            + b".\r\n"
        )
        self.assertIn(b"250 2.0.0 OK: recorded as message 1\r\n", out)
        self.assertEqual(len(recorder.messages[0].data), len(body) * count)

    def test_waitForMessages(self) -> None:
        """
        waitForMessages fires once enough messages arrived.
        """
        recorder = MessageRecorder()
        d = recorder.waitForMessages(2)
        session = memorySession(recorder)
        transaction = b"MAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\nDATA\r\nx\r\n.\r\n"
        session.send(b"EHLO c\r\n" + transaction)
        self.assertNoResult(d)
        session.send(transaction)
        self.assertEqual(len(self.successResultOf(d)), 2)

    def test_timeoutWithClock(self) -> None:
        """
        The session's clock drives its idle timeout.
        """
        session = memorySession()
        session.read()
        session.clock.advance(60)
        self.assertTrue(session.read().startswith(b"421 "))


class LoopbackTests(TestCase):
    @inlineCallbacks
    def test_smtplib(self) -> Any:
        """
        A server on 127.0.0.1 records what smtplib sends.
        """
        recorder = MessageRecorder()
        server = yield listenForTests(recorder)
        self.addCleanup(server.close)

        def send() -> None:
            with smtplib.SMTP(server.host, server.port, timeout=30) as s:
                s.sendmail("a@example.com", ["b@example.com"], b"Subject: t\r\n\r\nbody\r\n")

        yield deferToThread(send)
        messages = yield recorder.waitForMessages(1)
        self.assertEqual(messages[0].data, b"Subject: t\r\n\r\nbody\r\n")

    @inlineCallbacks
    def test_noDelay(self) -> Any:
        """
        Every TCP connection has Nagle's algorithm off: replies are small and
        the client waits for each one.
        """
        server = yield listenForTests()
        self.addCleanup(server.close)
        factory = server.server.factory
        seen: list[bool] = []

        def observe(event: str, session: Any, data: Any) -> None:
            if event == "connect":
                for protocol in factory.connections:
                    seen.append(bool(protocol.transport.getTcpNoDelay()))

        factory.addObserver(observe)

        def connect() -> None:
            with smtplib.SMTP(server.host, server.port, timeout=30) as s:
                s.noop()

        yield deferToThread(connect)
        self.assertEqual(seen, [True])
