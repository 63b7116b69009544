# -*- test-case-name: tests.test_amqp -*-
"""
Unit tests for L{AMQPHandler}: its settings, the C{--amqp} flags, and the
refusals it makes without a broker.  Publishing to a real RabbitMQ is in
L{tests.integration.test_broker}.
"""

from __future__ import annotations

import sys

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_handlers import makeSession
from tests.test_tap import parse
from twisted_smtpd import SMTPError
from twisted_smtpd._session import Address
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers.amqp import DEFAULT_MAX_MESSAGE_SIZE, AMQPHandler

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


class AMQPHandlerTests(SynchronousTestCase):
    """
    What L{AMQPHandler} decides on its own.
    """

    def test_defaults(self) -> None:
        """
        By default messages go through the default exchange to the durable
        queue C{smtpd}, up to RabbitMQ's own 128 MiB limit.
        """
        handler = AMQPHandler(URL, reactor=MemoryReactorClock())
        self.assertEqual(
            (handler.exchange, handler.routingKey, handler.queue), ("", "smtpd", "smtpd")
        )
        self.assertEqual(handler.maxMessageSize, DEFAULT_MAX_MESSAGE_SIZE)
        self.assertEqual(DEFAULT_MAX_MESSAGE_SIZE, 134217728)
        self.assertFalse(handler.ready)

    def test_badValues(self) -> None:
        """
        A URL that is not AMQP, or a size that is not positive, is refused.
        """
        self.assertRaises(ValueError, AMQPHandler, "http://127.0.0.1/")
        self.assertRaises(ValueError, AMQPHandler, URL, maxMessageSize=0)

    def test_declaredSizeRefused(self) -> None:
        """
        A C{SIZE} over the limit is 552 at MAIL, without connecting.
        """
        reactor = MemoryReactorClock()
        handler = AMQPHandler(URL, maxMessageSize=1000, reactor=reactor)
        failure = self.failureResultOf(
            handler.onMailFrom(Address("a@example.com", {"SIZE": "1001"}), makeSession()),
            SMTPError,
        )
        self.assertEqual((failure.value.code, failure.value.enhanced), (552, "5.3.4"))
        self.assertEqual(reactor.tcpClients, [])

    def test_bodyOverLimit(self) -> None:
        """
        A body over the limit fails C{onData} with 552 once it has ended.
        """
        handler = AMQPHandler(URL, maxMessageSize=10, reactor=MemoryReactorClock())
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        stream._write(b"0123456789")
        self.assertNoResult(d)
        stream._write(b"x")
        stream._finish()
        failure = self.failureResultOf(d, SMTPError)
        self.assertEqual(failure.value.code, 552)

    def test_notConnectedAtEndOfData(self) -> None:
        """
        If the broker is not connected when the body ends, the reply is
        451: nothing is acknowledged that the broker does not hold.
        """
        handler = AMQPHandler(URL, reactor=MemoryReactorClock())
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        stream._write(b"Subject: x\r\n\r\nx\r\n")
        stream._finish()
        failure = self.failureResultOf(d, SMTPError)
        self.assertEqual((failure.value.code, failure.value.enhanced), (451, "4.3.0"))


class AMQPOptionsTests(SynchronousTestCase):
    """
    The C{--amqp} flags of C{twistd smtpd}.
    """

    def test_flags(self) -> None:
        """
        C{--amqp URL} with exchange, routing key and queue builds an
        L{AMQPHandler}; C{--size} lowers its limit.
        """
        config = parse(
            "--amqp",
            URL,
            "--amqp-exchange",
            "amq.direct",
            "--amqp-routing-key",
            "mail",
            "--amqp-queue",
            "inbox",
            "--size",
            "5000",
        )
        handler = config["handler"]
        self.assertIsInstance(handler, AMQPHandler)
        self.assertEqual(
            (handler.url, handler.exchange, handler.routingKey, handler.queue),
            (URL, "amq.direct", "mail", "inbox"),
        )
        self.assertEqual(handler.maxMessageSize, 5000)

    def test_modifiersNeedAMQP(self) -> None:
        """
        C{--amqp-queue} without C{--amqp} is a usage error.
        """
        e = self.assertRaises(usage.UsageError, parse, "--amqp-queue", "x")
        self.assertEqual(str(e), "--amqp-queue needs --amqp")

    def test_badURL(self) -> None:
        """
        A URL that is not AMQP is one usage line.
        """
        e = self.assertRaises(usage.UsageError, parse, "--amqp", "http://127.0.0.1/")
        self.assertIn("not an amqp:// or amqps:// URL", str(e))

    def test_missingExtra(self) -> None:
        """
        Without pika, C{--amqp} says which extra to install.
        """
        saved = dict(sys.modules)

        def restore() -> None:
            sys.modules.clear()
            sys.modules.update(saved)

        self.addCleanup(restore)
        sys.modules["pika"] = None  # type: ignore[assignment]
        sys.modules.pop("twisted_smtpd.handlers.amqp", None)
        e = self.assertRaises(usage.UsageError, parse, "--amqp", URL)
        self.assertEqual(
            str(e),
            "--amqp needs the amqp extra (pika is missing): pip install 'twisted-smtpd[amqp]'",
        )
