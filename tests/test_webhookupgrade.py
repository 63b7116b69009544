# -*- test-case-name: tests.test_webhookupgrade -*-
"""
L{WebhookHandler} and a receiver answering C{101 Switching Protocols} to
its POST, which asks for no upgrade: what follows is in no protocol the
handler speaks, so no answer after it is taken.
"""

from __future__ import annotations

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.test_handlers import ManualThreadPool
from tests.test_webhookexchange import LARGE, Exchange
from twisted_smtpd import SMTPError

UPGRADED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
PROBLEM = "HTTP 101 Switching Protocols to a request asking for no upgrade"


class SwitchingProtocolsTests(SynchronousTestCase):
    """
    A 101 answer is not skipped as other 1xx answers are (RFC 9110 section
    7.8: a server switches only to a protocol the request's C{Upgrade}
    names, and the handler sends none): the message fails at once, not
    tried again, with one line, and the connection is dropped.
    """

    def assertFailed(self, exchange: Exchange, d: object) -> None:
        e = self.failureResultOf(d, SMTPError).value  # type: ignore[arg-type]
        self.assertEqual((e.code, e.message), (451, f"Error: webhook unavailable ({PROBLEM})"))
        self.assertTrue(exchange.transports[-1].disconnecting)
        self.assertEqual(len(exchange.reactor.tcpClients), 1)

    def test_successAfterUpgradeNotTaken(self) -> None:
        """
        A C{200} after a C{101} (bytes of whatever protocol the receiver
        switched to) is not taken as the receiver's acceptance.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        exchange = Exchange(timeout=30)
        d = exchange.deliver()
        exchange.connect()
        exchange.answer(UPGRADED + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertFailed(exchange, d)
        self.assertEqual(
            [formatEvent(e) for e in events if "webhook" in formatEvent(e)],
            [f"s1d webhook failed: {PROBLEM}"],
        )

    def test_upgradeWhileSending(self) -> None:
        """
        A C{101} that comes while the request body is still being sent
        fails the message the same way, at once, with nothing logged as
        unhandled.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        pool = ManualThreadPool()
        exchange = Exchange(timeout=30, threadpool=pool)
        d = exchange.deliver(LARGE)
        pool.runAll()  # the spool's writes
        exchange.connect(pause=True)
        self.assertEqual(exchange.protocols[0]._wrappedProtocol.state, "TRANSMITTING")
        exchange.answer(UPGRADED + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        pool.runAll()
        self.assertFailed(exchange, d)
        loud = [formatEvent(e) for e in events if e["log_level"] > LogLevel.warn]
        self.assertEqual(loud, [])
