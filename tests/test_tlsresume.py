# -*- test-case-name: tests.test_tlsresume -*-
"""
TLS session resumption by L{ServerTLS}: real handshakes in memory, a client
offering the session of its previous connection.
"""

from __future__ import annotations

import shutil

from OpenSSL import SSL
from OpenSSL._util import lib

from tests.certs import TLSClient
from tests.test_tls import _Handshake, _TLSTestCase, handshake
from twisted_smtpd._serving.tls import ServerTLS


class ResumingClient(TLSClient):
    """
    A L{TLSClient} that offers the session of its previous connection.

    @ivar session: The session to offer next, if any.
    """

    session: SSL.Session | None = None
    _context: SSL.Context | None = None

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        # OpenSSL resumes a session only with the context that made it.
        if self._context is None:
            connection = super().clientConnectionForTLS(tlsProtocol)
            self._context = connection.get_context()
            return connection
        connection = SSL.Connection(self._context, None)
        if self.servername is not None:
            connection.set_tlsext_host_name(self.servername.encode("ascii"))
        if self.session is not None:
            connection.set_session(self.session)
        return connection


def reused(connection: SSL.Connection) -> bool:
    """
    Whether the handshake of C{connection} resumed a session (pyOpenSSL has
    no method for C{SSL_session_reused}; its binding has the function).
    """
    return bool(lib.SSL_session_reused(connection._ssl))


def _connection(recorder: object) -> SSL.Connection:
    transport = getattr(recorder, "transport", None)
    assert transport is not None
    handle = transport.getHandle()
    assert isinstance(handle, SSL.Connection)
    return handle


class ResumptionTests(_TLSTestCase):
    """
    Session tickets let a returning client skip the full handshake.
    """

    def connectTwice(self, tls: ServerTLS, client: ResumingClient) -> tuple[_Handshake, _Handshake]:
        """
        Two connections of C{client}, the second offering the session of the
        first (its ticket read after the handshake).
        """
        first = handshake(tls, client)
        self.assertTrue(first.server.handshakeDone)
        client.session = _connection(first.client).get_session()
        second = handshake(tls, client)
        self.assertTrue(second.server.handshakeDone)
        return first, second

    def test_resumed(self) -> None:
        """
        A client offering its previous session resumes it (TLS 1.3 ticket):
        the server reports the session reused, and served the same
        certificate.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        first, second = self.connectTwice(tls, ResumingClient())
        self.assertFalse(reused(_connection(first.server)))
        self.assertTrue(reused(_connection(second.server)))
        self.assertEqual(_connection(second.server).get_protocol_version_name(), "TLSv1.3")

    def test_resumedTLS12(self) -> None:
        """
        A TLS 1.2 client resumes with an RFC 5077 ticket too.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        client = ResumingClient(maximumVersion=SSL.TLS1_2_VERSION)
        first, second = self.connectTwice(tls, client)
        self.assertEqual(_connection(second.server).get_protocol_version_name(), "TLSv1.2")
        self.assertTrue(reused(_connection(second.server)))

    def test_resumedAcrossServerNames(self) -> None:
        """
        A session made under an SNI certificate resumes under that name: the
        session id context is the same for every context of the server.
        """
        other = self.ca.server("mail.example.org")
        tls = ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            sniOptions={"mail.example.org": (other.certificatePath, other.keyPath)},
        )
        first, second = self.connectTwice(tls, ResumingClient(servername="mail.example.org"))
        self.assertEqual(first.serverCertificate, other.certificate)
        self.assertTrue(reused(_connection(second.server)))

    def test_reloadEndsResumption(self) -> None:
        """
        After L{ServerTLS.reload} (SIGHUP), a session made before does not
        resume: the client gets a full handshake with the reloaded
        certificate.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        client = ResumingClient()
        first = handshake(tls, client)
        client.session = _connection(first.client).get_session()
        renewed = self.ca.server("default.example.com")
        shutil.copyfile(renewed.certificatePath, self.default.certificatePath)
        shutil.copyfile(renewed.keyPath, self.default.keyPath)
        tls.reload()
        second = handshake(tls, client)
        self.assertTrue(second.server.handshakeDone)
        self.assertFalse(reused(_connection(second.server)))
        self.assertEqual(second.serverCertificate, renewed.certificate)

    def test_otherServerSessionRefused(self) -> None:
        """
        A session from another L{ServerTLS} (another process, or a forged
        ticket) is not resumed.
        """
        client = ResumingClient()
        first = handshake(ServerTLS(self.default.certificatePath, self.default.keyPath), client)
        client.session = _connection(first.client).get_session()
        second = handshake(ServerTLS(self.default.certificatePath, self.default.keyPath), client)
        self.assertTrue(second.server.handshakeDone)
        self.assertFalse(reused(_connection(second.server)))

    def test_noResumptionWithClientCertificates(self) -> None:
        """
        When client certificates are requested, every handshake is a full
        one, so that every client chain is verified.
        """
        tls = ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            caCertificates=self.ca.certificatePath,
            requestCert=True,
        )
        client = ResumingClient(certificate=self.ca.client("alice"))
        first, second = self.connectTwice(tls, client)
        self.assertFalse(reused(_connection(second.server)))
