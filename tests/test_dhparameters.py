# -*- test-case-name: tests.test_dhparameters -*-
"""
The C{dhParameters=} of an C{ssl:} listener with keys of its own: read
once, through the copy the parent of C{--workers} read at start when the
worker cannot open the file, and given to every context made from that
reading, the ones made afresh for new session ticket keys too.
"""

from __future__ import annotations

import os

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from zope.interface import implementer

from tests.test_tls import _TLSTestCase, handshake
from tests.test_tlsresume import FFDHE2048, HOUR
from twisted_smtpd._core.files import forgetStartCopies, useStartCopies
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.listeners import OwnKeys
from twisted_smtpd._serving.listenertls import ListenerTLS

#: A TLS 1.2 cipher that needs the server's Diffie-Hellman parameters.
DHE_CIPHER = "DHE-RSA-AES128-GCM-SHA256"


@implementer(IOpenSSLClientConnectionCreator)
class DHEClient:
    """
    A TLS 1.2 client offering L{DHE_CIPHER} only.
    """

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
        context.set_cipher_list(DHE_CIPHER.encode("ascii"))
        return SSL.Connection(context, None)


class DiffieHellmanTests(_TLSTestCase):
    """
    A listener with Diffie-Hellman parameters of its own serves a client
    that offers only a C{DHE} cipher, whoever can read the file.
    """

    def setUp(self) -> None:
        super().setUp()
        self.issued = self.ca.issue("rsa.example.com", ("rsa.example.com",), rsaKey=True)
        self.parameters = os.path.abspath(self.mktemp())
        with open(self.parameters, "w") as f:
            f.write(FFDHE2048)

    def listener(self, clock: Clock | None = None) -> ListenerTLS:
        keys = OwnKeys(self.issued.keyPath, self.issued.certificatePath, None, self.parameters)
        return ListenerTLS(ServerOptions(), keys, "ssl:465", clock=clock)

    def assertServesDHE(self, tls: ListenerTLS) -> None:
        """
        A client offering only L{DHE_CIPHER} completes its handshake with
        C{tls}, with that cipher.
        """
        result = handshake(tls, DHEClient())  # type: ignore[arg-type]
        self.assertTrue(result.server.handshakeDone)
        assert result.client.transport is not None
        connection = result.client.transport.getHandle()
        self.assertEqual(connection.get_cipher_name(), DHE_CIPHER)

    def test_served(self) -> None:
        """
        The parameters are given to the listener's context: a C{DHE}-only
        TLS 1.2 client is served.
        """
        self.assertServesDHE(self.listener())

    def test_startCopy(self) -> None:
        """
        In a worker that cannot open the file (removed here; a file only
        root may read, under C{twistd --uid}), the listener starts from the
        copy its parent read at start, and serves C{DHE}.
        """
        with open(self.parameters, "rb") as f:
            useStartCopies({self.parameters: f.read()})
        self.addCleanup(forgetStartCopies)
        os.remove(self.parameters)
        tls = self.listener()
        forgetStartCopies()
        self.assertServesDHE(tls)

    def test_renewedWithoutFile(self) -> None:
        """
        The contexts made afresh for new session ticket keys get the
        parameters read at start: no file is read for them, so a file
        unreadable since (a worker past its start) changes nothing, and
        nothing is logged.
        """
        clock = Clock()
        tls = self.listener(clock)
        before = tls.getContext()
        os.remove(self.parameters)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock.advance(HOUR)
        self.assertIsNot(tls.getContext(), before)
        self.assertServesDHE(tls)
        self.assertEqual(list(events), [])

    def test_reloadReadsAgain(self) -> None:
        """
        A reload reads the file again: one that holds no parameters now is
        refused, naming it, and the contexts in use stay.
        """
        tls = self.listener()
        before = tls.getContext()
        with open(self.parameters, "w") as f:
            f.write("no parameters\n")
        error = self.assertRaises(ValueError, tls.reload)
        self.assertEqual(
            str(error), f"ssl:465: cannot use dhParameters {self.parameters}: no start line"
        )
        self.assertIs(tls.getContext(), before)
        self.assertServesDHE(tls)
