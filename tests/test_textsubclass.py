# -*- test-case-name: tests.test_textsubclass -*-
"""
A text setting given as a C{str} subclass is kept as a plain C{str} of the
characters its validator checked: the server never writes what the
subclass's C{__str__}, C{__format__} or C{__mod__} would make of it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_protocol import connect
from twisted_smtpd._core.optionchecks import DEFAULT_HELO_RESPONSE
from twisted_smtpd._core.options import ServerOptions

#: What the subclass below shows instead of its characters.
INJECTED = "injected\r\n250 forged"


class _Shifty(str):
    """
    A string whose characters pass the checks of a reply text but which
    shows another text when formatted.
    """

    def __str__(self) -> str:
        return INJECTED

    def __format__(self, spec: str) -> str:
        return INJECTED

    def __mod__(self, values: Any) -> str:
        return INJECTED


class TextSubclassTests(SynchronousTestCase):
    """
    C{name}, C{banner}, C{heloResponse} and C{authRequiredMessage}.
    """

    def test_keptAsPlainText(self) -> None:
        """
        Each setting is a plain C{str} with the subclass's characters.
        """
        options = ServerOptions(
            name=_Shifty("mx.example.com"),
            banner=_Shifty("welcome"),
            heloResponse=_Shifty(DEFAULT_HELO_RESPONSE),
            authRequiredMessage=_Shifty("log in first"),
        )
        self.assertIs(type(options.name), str)
        self.assertIs(type(options.banner), str)
        self.assertIs(type(options.heloResponse), str)
        self.assertIs(type(options.authRequiredMessage), str)
        self.assertEqual(
            (options.name, options.banner, options.heloResponse, options.authRequiredMessage),
            ("mx.example.com", "welcome", DEFAULT_HELO_RESPONSE, "log in first"),
        )

    def test_repliesShowTheCheckedText(self) -> None:
        """
        The greeting and the EHLO reply hold the names and texts as
        checked, not the subclass's formatted text.
        """
        proto, transport, _, _ = connect(
            name=_Shifty("mx.example.com"),
            banner=_Shifty("welcome"),
            heloResponse=_Shifty(DEFAULT_HELO_RESPONSE),
        )
        proto.dataReceived(b"EHLO client.example\r\n")
        written = transport.value()
        self.assertNotIn(b"injected", written)
        self.assertNotIn(b"forged", written)
        self.assertTrue(written.startswith(b"220 mx.example.com ESMTP welcome\r\n"), written)
        self.assertIn(b"250-mx.example.com", written)
        proto.connectionLost(Failure(ConnectionDone()))
