# -*- test-case-name: tests.test_amqpurl -*-
"""
The numbers of an C{--amqp} URL (its port and the query parameters pika
reads as numbers) are ASCII digits, as every other number of the
configuration, and the seconds among them finite; a URL refused so is one
line naming C{--amqp}, which never shows the password, not even where the
URL misses its C{@HOST} and the password stands where the port would.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_tap import parse
from twisted_smtpd.handlers.amqp import AMQPHandler

PASSWORD = "s3cretpw"
BASE = f"amqp://user:{PASSWORD}@127.0.0.1/%2F"

#: Query numbers written as C{int()} or C{float()} take them, not as the
#: rest of the configuration does, or not finite: each with the parameter
#: the refusal names.
REFUSED = [
    ("heartbeat=%2B5", "heartbeat"),
    ("heartbeat=%D9%A1%D9%A2", "heartbeat"),
    ("heartbeat=%EF%BC%91%EF%BC%92", "heartbeat"),
    ("connection_attempts=1_0", "connection_attempts"),
    ("frame_max=%2013107", "frame_max"),
    ("channel_max=0x10", "channel_max"),
    ("heartbeat=", "heartbeat"),
    ("socket_timeout=nan", "socket_timeout"),
    ("retry_delay=inf", "retry_delay"),
    ("blocked_connection_timeout=1e400", "blocked_connection_timeout"),
    ("stack_timeout=1_5", "stack_timeout"),
    ("socket_timeout=%D9%A1", "socket_timeout"),
]


class AMQPURLNumberTests(SynchronousTestCase):
    """
    L{AMQPHandler} and C{twistd smtpd --amqp}.
    """

    def test_libraryRefuses(self) -> None:
        """
        L{AMQPHandler} refuses each with a C{ValueError} naming the
        parameter, without the password.
        """
        for query, name in REFUSED:
            e = self.assertRaises(
                ValueError, AMQPHandler, f"{BASE}?{query}", reactor=MemoryReactorClock()
            )
            self.assertIn(f"the query's {name} must be", str(e))
            self.assertNotIn(PASSWORD, str(e))

    def test_commandLineRefuses(self) -> None:
        """
        C{--amqp} with each is one line naming the flag, the password
        hidden.
        """
        for query, name in REFUSED:
            e = self.assertRaises(usage.UsageError, parse, "--amqp", f"{BASE}?{query}")
            message = str(e)
            self.assertTrue(message.startswith("--amqp 'amqp://user:***@127.0.0.1/"), message)
            self.assertIn(f"the query's {name} must be", message)
            self.assertNotIn(PASSWORD, message)
            self.assertNotIn("\n", message)

    def test_port(self) -> None:
        """
        A port in other digits is refused; a URL missing its C{@HOST}, the
        password where the port would be, is refused without showing it.
        """
        for url in [
            f"amqp://user:{PASSWORD}@127.0.0.1:%D9%A1%D9%A2/%2F",
            "amqp://user:p@127.0.0.1:\uff15\uff16\uff17\uff12/%2F",
            f"amqp://user:{PASSWORD}/%2F",
            f"amqps://user:{PASSWORD}/%2F",
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--amqp", url)
            self.assertIn("the port is not ASCII digits", str(e))
            self.assertNotIn(PASSWORD, str(e))

    def test_webhookMissingHost(self) -> None:
        """
        A C{--webhook} URL missing its C{@HOST} does not show its password
        either.
        """
        e = self.assertRaises(usage.UsageError, parse, "--webhook", f"https://user:{PASSWORD}/in")
        self.assertTrue(str(e).startswith("--webhook "), str(e))
        self.assertNotIn(PASSWORD, str(e))

    def test_accepted(self) -> None:
        """
        Numbers in ASCII digits are taken as pika reads them.
        """
        url = f"{BASE}?heartbeat=30&frame_max=8192&connection_attempts=2&socket_timeout=2.5"
        handler = parse("--amqp", url)["handler"]
        parameters = handler._parameters
        self.assertEqual(
            (
                parameters.heartbeat,
                parameters.frame_max,
                parameters.connection_attempts,
                parameters.socket_timeout,
            ),
            (30, 8192, 2, 2.5),
        )

    def test_portZero(self) -> None:
        """
        Port 0, which pika keeps and no broker listens on (every connection
        attempt would fail, every message be refused 451), is refused at
        start, as C{--relay} and C{--webhook} refuse it.
        """
        for port in ("0", "00"):
            url = f"amqp://user:{PASSWORD}@127.0.0.1:{port}/%2F"
            e = self.assertRaises(ValueError, AMQPHandler, url, reactor=MemoryReactorClock())
            self.assertEqual(str(e), f"the port must be from 1 to 65535, got {port}")
            e = self.assertRaises(usage.UsageError, parse, "--amqp", url)
            self.assertEqual(
                str(e),
                f"--amqp 'amqp://user:***@127.0.0.1:{port}/%2F': the port must be from 1 to"
                f" 65535, got {port}",
            )

    def test_vhostWithSlash(self) -> None:
        """
        A path of more than one segment (C{/mail/in}), of which pika takes
        the first alone as the virtual host (C{mail}), is refused saying
        how to write a virtual host holding a slash; C{%2F} is one.
        """
        for path, vhost in [("/mail/in", "mail/in"), ("/mail/", "mail/"), ("//", "/")]:
            url = f"amqp://user:{PASSWORD}@127.0.0.1{path}"
            e = self.assertRaises(usage.UsageError, parse, "--amqp", url)
            self.assertEqual(
                str(e),
                f"--amqp 'amqp://user:***@127.0.0.1{path}': the virtual host {vhost!r}"
                " holds a '/': write it as %2F",
            )
        handler = parse("--amqp", "amqp://user:p@127.0.0.1/mail%2Fin")["handler"]
        self.assertEqual(handler._parameters.virtual_host, "mail/in")
