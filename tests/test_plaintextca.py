# -*- test-case-name: tests.test_plaintextca -*-
"""
A CA bundle given for a plaintext URL: the operator asked for verified TLS
and would get none, so the configuration is refused at start.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from tests.test_tap import parse
from twisted_smtpd.handlers.webhook import WebhookHandler


class PlaintextCATests(SynchronousTestCase):
    """
    C{--amqp-ca} with C{amqp://}, C{--webhook-ca} with C{http://}.
    """

    def setUp(self) -> None:
        self.ca = CertificateAuthority(self.mktemp()).certificatePath

    def test_webhook(self) -> None:
        """
        L{WebhookHandler} refuses C{caCertificates} with an C{http://} URL,
        in one usage line from C{twistd smtpd}; with C{https://} it takes
        it.
        """
        e = self.assertRaises(
            ValueError,
            WebhookHandler,
            "http://127.0.0.1/in",
            caCertificates=self.ca,
            reactor=MemoryReactorClock(),
        )
        self.assertEqual(str(e), "a CA bundle needs an https:// URL")
        e = self.assertRaises(
            usage.UsageError, parse, "--webhook", "http://127.0.0.1/in", "--webhook-ca", self.ca
        )
        self.assertEqual(str(e), "--webhook-ca needs an https:// --webhook URL")
        WebhookHandler("https://127.0.0.1/in", caCertificates=self.ca, reactor=MemoryReactorClock())

    def test_amqp(self) -> None:
        """
        L{AMQPHandler} refuses C{caCertificates} with an C{amqp://} URL, in
        one usage line from C{twistd smtpd}; with C{amqps://} it takes it.
        """
        from twisted_smtpd.handlers.amqp import AMQPHandler

        url = "amqp://127.0.0.1/%2F"
        e = self.assertRaises(
            ValueError, AMQPHandler, url, caCertificates=self.ca, reactor=MemoryReactorClock()
        )
        self.assertEqual(str(e), "a CA bundle needs an amqps:// URL")
        e = self.assertRaises(usage.UsageError, parse, "--amqp", url, "--amqp-ca", self.ca)
        self.assertEqual(str(e), "--amqp-ca needs an amqps:// --amqp URL")
        AMQPHandler("amqps://127.0.0.1/%2F", caCertificates=self.ca, reactor=MemoryReactorClock())
