# -*- test-case-name: tests.test_webhooksecret -*-
"""
The webhook's signing secret: an empty one is a configuration error, not a
key.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_tap import parse
from twisted_smtpd.handlers.webhook import WebhookHandler


class EmptySecretTests(SynchronousTestCase):
    """
    An HMAC keyed with nothing is a signature anyone can make: an empty
    secret (C{--webhook-secret "$(cat KEYFILE)"} with an unreadable or empty
    file, say) is refused at start rather than used.
    """

    def test_handlerRefusesEmptySecret(self) -> None:
        """
        C{secret=""} and C{secret=b""} raise L{ValueError}; C{None} (no
        signature) and a real key do not.
        """
        for empty in ("", b""):
            e = self.assertRaises(
                ValueError,
                WebhookHandler,
                "http://127.0.0.1/in",
                secret=empty,
                reactor=MemoryReactorClock(),
            )
            self.assertEqual(str(e), "the webhook secret is empty")
        for usable in (None, "k", b"\x00"):
            WebhookHandler("http://127.0.0.1/in", secret=usable, reactor=MemoryReactorClock())

    def test_emptySecretFlagIsOneUsageLine(self) -> None:
        """
        C{twistd smtpd --webhook-secret ""} is one usage line.
        """
        e = self.assertRaises(
            usage.UsageError, parse, "--webhook", "http://127.0.0.1/in", "--webhook-secret", ""
        )
        self.assertEqual(str(e), "--webhook-secret: the secret is empty")


class BlankSecretTests(SynchronousTestCase):
    """
    A secret of white space alone (C{--webhook-secret " "}, a variable set
    to a blank line) is no more a key than an empty one: refused as well.
    """

    def test_handlerRefusesBlankSecret(self) -> None:
        """
        C{secret=" "}, C{"\\t\\n"} and C{b"  "} raise L{ValueError}; a key
        with spaces around it is a key.
        """
        for blank in (" ", "\t\n", b"  "):
            e = self.assertRaises(
                ValueError,
                WebhookHandler,
                "http://127.0.0.1/in",
                secret=blank,
                reactor=MemoryReactorClock(),
            )
            self.assertEqual(str(e), "the webhook secret is only white space")
        WebhookHandler("http://127.0.0.1/in", secret=" k ", reactor=MemoryReactorClock())

    def test_blankSecretFlagIsOneUsageLine(self) -> None:
        """
        C{twistd smtpd --webhook-secret " "} is one usage line.
        """
        e = self.assertRaises(
            usage.UsageError, parse, "--webhook", "http://127.0.0.1/in", "--webhook-secret", " "
        )
        self.assertEqual(str(e), "--webhook-secret: the secret is only white space")
