# -*- test-case-name: tests.integration.test_handlerlines -*-
"""
What the webhook and AMQP handlers log over real sockets: a message
posted, or a failed connection attempt to a broker, is one line of the
handler's, with no line of Twisted's per connection the handler makes.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.integration.helpers import freePort
from tests.integration.webhookreceiver import TrackingSite, WebhookReceiver, stopReceiver
from tests.test_handlers import feed, makeSession
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers.webhook import WebhookHandler


class HandlerLinesTests(TestCase):
    """
    Lines at C{info} and above while a handler works.
    """

    timeout = 60

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def lines(self, namespaces: tuple[str, ...]) -> list[str]:
        """
        The lines at C{info} or above logged from C{namespaces}.
        """
        return [
            formatEvent(event)
            for event in self.events
            if event["log_level"] >= LogLevel.info
            and event.get("log_namespace", "").startswith(namespaces)
        ]

    async def test_webhookMessageOneLine(self) -> None:
        """
        A message posted over a new HTTP connection, which is then closed,
        leaves the one line saying it was accepted: no C{Starting factory}
        and C{Stopping factory} lines for the connection.
        """
        site = TrackingSite(WebhookReceiver())
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(lambda: Deferred.fromCoroutine(stopReceiver(port, site)))
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        handler = WebhookHandler(url)
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, b"Subject: x\r\n\r\nx\r\n")
        self.assertEqual(await d, "OK: queued as s1d.1")
        await handler.close()
        self.assertEqual(
            self.lines(("twisted_smtpd", "twisted.internet", "twisted.web.client")),
            ["s1d webhook accepted s1d.1: HTTP 200"],
        )

    async def test_brokerAttemptOneLine(self) -> None:
        """
        Each failed connection attempt to a broker is one warning, without
        lines of Twisted's for the factory of each attempt.
        """
        from twisted_smtpd.handlers.amqp import AMQPHandler

        url = f"amqp://guest:guest@127.0.0.1:{freePort()}/%2F"
        handler = AMQPHandler(url, firstRetry=0.05, maxRetryDelay=0.05)
        failed: Deferred[None] = Deferred()
        waiting: list[object] = []

        def observe(event: dict[str, object]) -> None:
            text = formatEvent(event)
            if text.startswith("message broker connection failed") and not waiting:
                attempts = [line for line in self.lines(("twisted_smtpd",)) if "failed" in line]
                if len(attempts) >= 3:
                    # Not from within the handler's own call to the logger.
                    waiting.append(reactor.callLater(0, failed.callback, None))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        handler.start()
        await failed
        await handler.close()
        lines = self.lines(("twisted_smtpd", "twisted.internet"))
        self.assertGreaterEqual(len(lines), 3)
        for line in lines:
            self.assertTrue(line.startswith("message broker connection failed: "), line)
