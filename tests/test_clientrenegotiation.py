# -*- test-case-name: tests.test_clientrenegotiation -*-
"""
Every TLS client context the project makes (the relay's and the LMTP
client's, verified or not, the AMQP handler's for C{amqps://}, the
webhook's for C{https://}) refuses a renegotiation its server starts, as
the server's contexts refuse a client's (L{tests.test_renegotiation}): a
real TLS 1.2 server on 127.0.0.1 asks for one and sees the no_renegotiation
alert.
"""

from __future__ import annotations

import contextlib
from typing import Any

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate
from twisted.trial.unittest import TestCase

from tests.certs import CertificateAuthority
from twisted_smtpd._smtpclient.client import deliver
from twisted_smtpd.handlers._webhookclient import RenegotiationRefusingPolicy
from twisted_smtpd.handlers.amqp import AMQPHandler
from twisted_smtpd.handlers.relay import RelayHandler

#: What the server concludes: the client refused, or renegotiated.
REFUSED = "refused"
RENEGOTIATED = "renegotiated"


class RenegotiatingServer(Protocol):
    """
    A TLS 1.2 server (pyOpenSSL over memory BIOs) that asks its client to
    renegotiate (a HelloRequest) as soon as the client's first data comes
    over TLS, and reports whether the client refused (a no_renegotiation
    alert) or renegotiated.  With C{smtp}, an SMTP prelude first: a 220
    greeting, EHLO answered with STARTTLS, then STARTTLS.
    """

    factory: RenegotiatingFactory

    def __init__(self) -> None:
        self.tls: SSL.Connection | None = None
        self.plain = b""
        self.handshaken = False
        self.requested = False

    def connectionMade(self) -> None:
        if self.factory.smtp:
            self.transport.write(b"220 hop.example ESMTP\r\n")  # type: ignore[union-attr]
        else:
            self.startTLS()

    def startTLS(self) -> None:
        self.tls = SSL.Connection(self.factory.context, None)
        self.tls.set_accept_state()

    def dataReceived(self, data: bytes) -> None:
        if self.tls is not None:
            self.tls.bio_write(data)
            self.drive()
            return
        self.plain += data
        while b"\r\n" in self.plain:
            line, _, self.plain = self.plain.partition(b"\r\n")
            verb = line[:8].upper()
            if verb.startswith(b"EHLO"):
                self.transport.write(b"250-hop.example\r\n250 STARTTLS\r\n")  # type: ignore[union-attr]
            elif verb.startswith(b"STARTTLS"):
                self.transport.write(b"220 2.0.0 Ready to start TLS\r\n")  # type: ignore[union-attr]
                self.startTLS()
                return
            else:
                self.transport.write(b"502 5.5.2 Not here\r\n")  # type: ignore[union-attr]

    def drive(self) -> None:
        tls = self.tls
        assert tls is not None
        try:
            if not self.handshaken:
                tls.do_handshake()
                self.handshaken = True
            received = b""
            while True:
                try:
                    received += tls.recv(65536)
                except SSL.WantReadError:
                    break
            if received and not self.requested:
                self.requested = True
                assert tls.get_protocol_version_name() == "TLSv1.2"
                assert tls.renegotiate()
                with contextlib.suppress(SSL.WantReadError):
                    tls.do_handshake()
            elif self.requested and not tls.renegotiate_pending():
                self.report(RENEGOTIATED)
        except SSL.WantReadError:
            pass
        except SSL.Error as e:
            self.report(REFUSED if "no renegotiation" in str(e) else f"failed: {e}")
        self.flush()

    def flush(self) -> None:
        tls = self.tls
        assert tls is not None
        while True:
            try:
                data = tls.bio_read(65536)
            except SSL.WantReadError:
                return
            if not data or self.transport is None:
                return
            self.transport.write(data)

    def report(self, outcome: str) -> None:
        if not self.factory.outcome.called:
            self.factory.outcome.callback(outcome)
        self.transport.abortConnection()  # type: ignore[union-attr]


class RenegotiatingFactory(Factory):
    protocol = RenegotiatingServer

    def __init__(self, context: SSL.Context, smtp: bool) -> None:
        self.context = context
        self.smtp = smtp
        self.outcome: Deferred[str] = Deferred()


class SpeakFirst(Protocol):
    """
    A client that writes one line once connected (over TLS: once the
    handshake allows), as AMQP and HTTP clients speak first.
    """

    def connectionMade(self) -> None:
        self.transport.write(b"hello\r\n")  # type: ignore[union-attr]


class ClientRenegotiationTests(TestCase):
    """
    The project's TLS clients against a server asking to renegotiate.
    """

    def setUp(self) -> None:
        self.ca = CertificateAuthority(self.mktemp())
        issued = self.ca.server("localhost")
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
        context.use_certificate_file(issued.certificatePath)
        context.use_privatekey_file(issued.keyPath)
        self.context = context
        with open(self.ca.certificatePath, "rb") as f:
            self.trustRoot = Certificate.loadPEM(f.read())

    def serve(self, smtp: bool) -> tuple[RenegotiatingFactory, int]:
        factory = RenegotiatingFactory(self.context, smtp)
        port: IListeningPort = reactor.listenTCP(  # type: ignore[attr-defined]
            0, factory, interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port  # type: ignore[attr-defined]

    async def outcome(self, factory: RenegotiatingFactory, work: Deferred[Any]) -> str:
        """
        The server's conclusion, within 10 seconds; C{work} (the client's
        side) may then fail, as the server drops the connection.
        """
        work.addErrback(lambda failure: None)

        def late() -> None:
            factory.outcome.cancel()
            work.cancel()

        timer = reactor.callLater(10, late)  # type: ignore[attr-defined]
        try:
            return await factory.outcome
        finally:
            await work
            if timer.active():
                timer.cancel()

    async def viaDeliver(self, verify: bool) -> str:
        factory, port = self.serve(smtp=True)
        work = deliver(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
            sender="a@example.com",
            recipients=["b@example.org"],
            stream=b"Subject: x\r\n\r\nbody\r\n",
            heloName="client.example",
            tls="required",
            tlsHostname="localhost",
            trustRoot=self.trustRoot if verify else None,
            verify=verify,
            timeout=10,
        )
        return await self.outcome(factory, work)

    async def viaCreator(self, creator: Any) -> str:
        factory, port = self.serve(smtp=False)
        endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        # The server drops the connection once it has its answer.
        work = connectProtocol(endpoint, SpeakFirst())
        return await self.outcome(factory, work)

    async def test_verifiedSMTPClient(self) -> None:
        """
        The SMTP/LMTP client verifying the server (the relay's default, the
        LMTP-delivery handler's) refuses the server's renegotiation.
        """
        self.assertEqual(await self.viaDeliver(verify=True), REFUSED)

    async def test_unverifiedSMTPClient(self) -> None:
        """
        So does the client that does not verify the server.
        """
        self.assertEqual(await self.viaDeliver(verify=False), REFUSED)

    async def test_relayCreator(self) -> None:
        """
        So does the relay handler's connection creator, verifying or not.
        """
        for verify in (True, False):
            handler = RelayHandler(
                "localhost",
                25,
                tls="required",
                verify=verify,
                caCertificates=self.ca.certificatePath,
                heloName="relay.example",
            )
            self.assertEqual(await self.viaCreator(handler._creator), REFUSED)

    async def test_amqpsCreator(self) -> None:
        """
        The AMQP handler's connection for an C{amqps://} URL refuses it.
        """
        factory, port = self.serve(smtp=False)
        handler = AMQPHandler(
            f"amqps://u:p@localhost:{port}/%2F", caCertificates=self.ca.certificatePath
        )
        work = connectProtocol(handler._endpoint(), SpeakFirst())
        self.assertEqual(await self.outcome(factory, work), REFUSED)

    async def test_webhookCreator(self) -> None:
        """
        The webhook's HTTPS policy gives creators that refuse it, the same
        one for each request to the same host and port.
        """
        policy = RenegotiationRefusingPolicy(self.trustRoot)
        creator = policy.creatorForNetloc(b"localhost", 443)
        self.assertIs(policy.creatorForNetloc(b"localhost", 443), creator)
        self.assertEqual(await self.viaCreator(creator), REFUSED)
