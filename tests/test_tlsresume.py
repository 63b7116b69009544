# -*- test-case-name: tests.test_tlsresume -*-
"""
TLS session resumption by L{ServerTLS}: real handshakes in memory, a client
offering the session of its previous connection.
"""

from __future__ import annotations

import gc
import os
import shutil

from OpenSSL import SSL
from OpenSSL._util import lib
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher

from tests.certs import TLSClient
from tests.test_tls import _Handshake, _TLSTestCase, handshake
from twisted_smtpd._serving.tls import ServerTLS
from twisted_smtpd._serving.tlsgeneration import _Generation


class ResumingClient(TLSClient):
    """
    A L{TLSClient} that offers the session of its previous connection.

    @ivar session: The session to offer next, if any.
    """

    session: SSL.Session | None = None
    _context: SSL.Context | None = None
    _madeBy: SSL.Connection | None = None

    def offerSessionOf(self, previous: _Handshake) -> None:
        """
        Offer the session of C{previous} next (its ticket read after the
        handshake), and keep its connection: OpenSSL marks a session not
        resumable when the connection that made it is freed without having
        sent a close_notify, which the garbage collector may do at any
        point before the next handshake.
        """
        connection = _connection(previous.client)
        self.session = connection.get_session()
        self._madeBy = connection

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
        client.offerSessionOf(first)
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

    def test_offeredSessionOutlivesCollection(self) -> None:
        """
        The session L{ResumingClient.offerSessionOf} takes stays resumable
        when the garbage collector runs before the next handshake, so that
        a test expecting a refusal sees the server's and no other.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        client = ResumingClient()
        client.offerSessionOf(handshake(tls, client))
        gc.collect()
        self.assertTrue(reused(_connection(handshake(tls, client).server)))

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
        client.offerSessionOf(handshake(tls, client))
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
        client.offerSessionOf(
            handshake(ServerTLS(self.default.certificatePath, self.default.keyPath), client)
        )
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


#: RFC 7919's ffdhe2048 group.
FFDHE2048 = """-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""

#: How long the server's ticket keys serve by default: Postfix's
#: C{smtpd_tls_session_cache_timeout}.
HOUR = 3600


class TicketKeyRotationTests(_TLSTestCase):
    """
    The ticket keys are made afresh every L{ServerTLS.ticketKeyLifetime}
    seconds, from the certificates already loaded.
    """

    def newTLS(self, **kwargs: object) -> tuple[ServerTLS, Clock]:
        clock = Clock()
        tls = ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            clock=clock,
            **kwargs,  # type: ignore[arg-type]
        )
        return tls, clock

    def offerSession(self, tls: ServerTLS, client: ResumingClient) -> None:
        first = handshake(tls, client)
        self.assertTrue(first.server.handshakeDone)
        client.offerSessionOf(first)

    def resumes(self, tls: ServerTLS, client: ResumingClient) -> bool:
        second = handshake(tls, client)
        self.assertTrue(second.server.handshakeDone)
        return reused(_connection(second.server))

    def test_ticketBeforeRotationRefused(self) -> None:
        """
        A ticket issued before the keys are renewed no longer resumes after
        it: the client gets a full handshake with the same certificate.
        """
        tls, clock = self.newTLS()
        client = ResumingClient()
        self.offerSession(tls, client)
        clock.advance(HOUR - 1)
        self.assertTrue(self.resumes(tls, client))
        clock.advance(1)
        self.assertFalse(self.resumes(tls, client))

    def test_ticketAfterRotationResumes(self) -> None:
        """
        A ticket issued after the keys are renewed resumes, until they are
        renewed again; no file is read for it.
        """
        tls, clock = self.newTLS()
        clock.advance(HOUR)
        client = ResumingClient()
        self.offerSession(tls, client)
        os.remove(self.default.certificatePath)
        os.remove(self.default.keyPath)
        self.assertTrue(self.resumes(tls, client))
        clock.advance(HOUR)
        self.assertFalse(self.resumes(tls, client))
        self.assertEqual(tls.certificates()[""], self.default.certificate)

    def test_handshakeUnderWayFinishes(self) -> None:
        """
        A handshake under way when the keys are renewed finishes with the
        contexts it started with.
        """
        tls, clock = self.newTLS()
        before = tls.getContext()
        started = handshake(tls, ResumingClient(), steps=1)
        clock.advance(HOUR)
        self.assertTrue(handshake(tls, ResumingClient()).server.handshakeDone)
        self.assertIsNot(tls.getContext(), before)
        started.pump.flush()
        self.assertTrue(started.server.handshakeDone)
        self.assertIs(_connection(started.server).get_context(), before)

    def test_clientCertificatesKeepContexts(self) -> None:
        """
        With client certificates there are no tickets, and the contexts are
        kept.
        """
        tls, clock = self.newTLS(caCertificates=self.ca.certificatePath, requestCert=True)
        before = tls.getContext()
        clock.advance(HOUR * 5)
        self.assertIs(tls.getContext(), before)

    def test_reloadStartsLifetime(self) -> None:
        """
        L{ServerTLS.reload} makes new keys, which serve their full lifetime.
        """
        tls, clock = self.newTLS()
        clock.advance(HOUR - 1)
        tls.reload()
        client = ResumingClient()
        self.offerSession(tls, client)
        clock.advance(HOUR - 1)
        self.assertTrue(self.resumes(tls, client))
        clock.advance(1)
        self.assertFalse(self.resumes(tls, client))

    def test_renewalFailureKeepsKeys(self) -> None:
        """
        Should the contexts not be made again, the old ones stay in use,
        one error line says so, and no renewal is tried again before
        another lifetime.
        """
        tls, clock = self.newTLS()
        before = tls.getContext()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        tries = []

        def refuse() -> _Generation:
            tries.append(None)
            raise ValueError("cannot use certificate x: no")

        self.patch(tls._current(), "renewed", refuse)
        clock.advance(HOUR)
        self.assertIs(tls.getContext(), before)
        self.assertIs(tls.getContext(), before)
        self.assertEqual(len(tries), 1)
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                "Renewing the TLS session ticket keys failed, the old ones are kept:"
                " cannot use certificate x: no"
            ],
        )
