# -*- test-case-name: tests.test_alpn -*-
"""
Clients offering ALPN (RFC 7301) get their TLS session, with no protocol
selected, over implicit TLS and STARTTLS alike, with real TLS clients on
127.0.0.1.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet.defer import inlineCallbacks
from twisted.internet.ssl import CertificateOptions
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.certs import CertificateAuthority, IssuedCertificate
from tests.tlsserving import IMPLICIT, PLAIN, listen, logLines, sessionsGone, tlsServer

#: What clients offer: HTTP's protocols (a client library's defaults) and
#: SMTP's name.
OFFERED = ["h2", "http/1.1", "smtp"]


def _clientContext(offered: list[str] = OFFERED) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(offered)
    return context


class _NamedImplicitClient(smtplib.SMTP_SSL):
    """
    An implicit TLS client connecting to 127.0.0.1 and sending C{servername}
    as its SNI name.
    """

    servername: str | None = None

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        plain = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(plain, server_hostname=self.servername)


def _implicit(
    port: int, servername: str | None = None, offered: list[str] = OFFERED
) -> tuple[int, str | None]:
    client = _NamedImplicitClient(context=_clientContext(offered), timeout=10)
    client.servername = servername
    with client:
        client.connect("127.0.0.1", port)
        code = client.ehlo("client.example")[0]
        selected = client.sock.selected_alpn_protocol()  # type: ignore[union-attr]
        return code, selected


def _starttls(
    port: int, servername: str | None = None, offered: list[str] = OFFERED
) -> tuple[int, str | None]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example")
        if servername is not None:
            client._host = servername  # type: ignore[attr-defined]
        client.starttls(context=_clientContext(offered))
        code = client.ehlo("client.example")[0]
        selected = client.sock.selected_alpn_protocol()  # type: ignore[union-attr]
        return code, selected


def _options(issued: IssuedCertificate, protocols: list[bytes] | None = None) -> Any:
    return CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(issued.key),
        certificate=crypto.X509.from_cryptography(issued.certificate),
        acceptableProtocols=protocols,
    )


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


class CallbackContextTests(TestCase):
    """
    Contexts an C{sniCallback} answers, made with Twisted's
    C{CertificateOptions}, answer a client offering ALPN as the server's
    own do when they name no protocol, and keep the protocols they name.
    """

    def setUp(self) -> None:
        self.ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        self.other = self.ca.server("other.example.com")

    def _server(self, answer: Any) -> Any:
        return tlsServer(
            self, sniCallback=lambda name: answer if name == "other.example.com" else None
        )

    @inlineCallbacks
    def test_noProtocols(self) -> Any:
        """
        A C{CertificateOptions} naming no protocol: a client offering ALPN
        and asking for its name gets its session, over implicit TLS and
        after STARTTLS, with no protocol selected.
        """
        server = self._server(_options(self.other))
        implicit, plain = yield listen(self, server, IMPLICIT, PLAIN)
        for port, client in [(implicit, _implicit), (plain, _starttls)]:
            result = yield deferToThread(client, port, "other.example.com")
            self.assertEqual(result, (250, None))
        yield sessionsGone(self, server)

    @inlineCallbacks
    def test_answeredAgainAfterReload(self) -> Any:
        """
        The same C{CertificateOptions} answered again after a reload, its
        context already used, still answers without a protocol.
        """
        server = self._server(_options(self.other))
        (implicit,) = yield listen(self, server, IMPLICIT)
        for _ in range(2):
            result = yield deferToThread(_implicit, implicit, "other.example.com")
            self.assertEqual(result, (250, None))
            server.reloadCertificates()
        yield sessionsGone(self, server)

    @inlineCallbacks
    def test_usedElsewhere(self) -> Any:
        """
        A context one of the user's own connections used first is served as
        made (pyOpenSSL 26 refuses to change it), with a warning naming the
        name.
        """
        probe = SSL.Context(SSL.TLS_METHOD)
        SSL.Connection(probe, None)
        try:
            probe.set_alpn_select_callback(lambda connection, offered: b"")
        except ValueError:
            pass
        else:
            raise SkipTest("this pyOpenSSL changes a context a connection used")
        lines = logLines(self)
        options = _options(self.other)
        SSL.Connection(options.getContext(), None)
        server = self._server(options)
        (implicit,) = yield listen(self, server, IMPLICIT)
        result = yield deferToThread(_implicit, implicit, "other.example.com", [])
        self.assertEqual(result, (250, None))
        self.assertEqual(
            [line for line in lines if "already used" in line],
            [
                "sniCallback('other.example.com') answered a context already used for a"
                " connection: served as made, its ALPN selection may refuse clients"
                " offering ALPN"
            ],
        )
        yield sessionsGone(self, server)

    @inlineCallbacks
    def test_bareContext(self) -> Any:
        """
        A bare context with no ALPN selection: no protocol is selected.
        """
        context = SSL.Context(SSL.TLS_METHOD)
        context.use_certificate(crypto.X509.from_cryptography(self.other.certificate))
        context.use_privatekey(crypto.PKey.from_cryptography_key(self.other.key))
        server = self._server(context)
        implicit, plain = yield listen(self, server, IMPLICIT, PLAIN)
        for port, client in [(implicit, _implicit), (plain, _starttls)]:
            result = yield deferToThread(client, port, "other.example.com")
            self.assertEqual(result, (250, None))
        yield sessionsGone(self, server)

    @inlineCallbacks
    def test_ownProtocols(self) -> Any:
        """
        A C{CertificateOptions} naming protocols keeps them: the one the
        client offers too is selected.
        """
        server = self._server(_options(self.other, [b"smtp"]))
        implicit, plain = yield listen(self, server, IMPLICIT, PLAIN)
        for port, client in [(implicit, _implicit), (plain, _starttls)]:
            result = yield deferToThread(client, port, "other.example.com")
            self.assertEqual(result, (250, "smtp"))
        yield sessionsGone(self, server)

    @inlineCallbacks
    def test_ownCallback(self) -> Any:
        """
        A context with a selection of its own keeps it.
        """
        context = _options(self.other).getContext()
        context.set_alpn_select_callback(lambda connection, offered: offered[-1])
        server = self._server(context)
        implicit, plain = yield listen(self, server, IMPLICIT, PLAIN)
        for port, client in [(implicit, _implicit), (plain, _starttls)]:
            result = yield deferToThread(client, port, "other.example.com")
            self.assertEqual(result, (250, "smtp"))
        yield sessionsGone(self, server)
