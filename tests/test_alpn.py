# -*- test-case-name: tests.test_alpn -*-
"""
Clients offering ALPN (RFC 7301) get their TLS session, with no protocol
selected, over implicit TLS and STARTTLS alike, with real TLS clients on
127.0.0.1.
"""

from __future__ import annotations

import smtplib
import ssl
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.tlsserving import IMPLICIT, PLAIN, listen, sessionsGone, tlsServer

#: What clients offer: HTTP's protocols (a client library's defaults) and
#: SMTP's name.
OFFERED = ["h2", "http/1.1", "smtp"]


def _clientContext() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(OFFERED)
    return context


def _implicit(port: int) -> tuple[int, str | None]:
    with smtplib.SMTP_SSL("127.0.0.1", port, context=_clientContext(), timeout=10) as client:
        code = client.ehlo("client.example")[0]
        selected = client.sock.selected_alpn_protocol()  # type: ignore[union-attr]
        return code, selected


def _starttls(port: int) -> tuple[int, str | None]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example")
        client.starttls(context=_clientContext())
        code = client.ehlo("client.example")[0]
        selected = client.sock.selected_alpn_protocol()  # type: ignore[union-attr]
        return code, selected


class ALPNTests(TestCase):
    """
    ALPN offered by the client is ignored, never a failed handshake.
    """

    @inlineCallbacks
    def test_offered(self) -> Any:
        """
        Over implicit TLS and after STARTTLS, a client offering ALPN gets
        its session, EHLO is answered 250, and no protocol is selected.
        """
        server = tlsServer(self)
        implicit, plain = yield listen(self, server, IMPLICIT, PLAIN)
        self.assertEqual((yield deferToThread(_implicit, implicit)), (250, None))
        self.assertEqual((yield deferToThread(_starttls, plain)), (250, None))
        yield sessionsGone(self, server)
