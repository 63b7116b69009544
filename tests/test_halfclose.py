"""
Tests for a client that shuts its sending side down (a FIN on plain TCP,
L{SMTPProtocol.readConnectionLost}): what it sent before is answered, slow
hooks included, then the session closes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.certs import CertificateAuthority
from tests.test_protocol import RecordingHandler, SlowData, SlowMail, connect, take
from tests.test_proxy import proxied
from twisted_smtpd._serving.proxy import ProxyProtocolWrapper
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd._serving.tls import ServerTLS


class HalfCloseTests(SynchronousTestCase):
    def test_idleClosesAtOnce(self) -> None:
        """
        A FIN with nothing left to answer closes the session at once.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_slowHookAnsweredThenClosed(self) -> None:
        """
        A FIN read while a hook has not answered leaves the session open
        until it answers; its reply and those of the commands pipelined
        behind it are written, then the session closes.
        """
        pending: Deferred[None] = Deferred()
        proto, transport, clock, _ = connect(SlowMail(pending))
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nNOOP\r\n")
        proto.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        pending.callback(None)
        self.assertEqual(transport.value(), replies.MAIL_OK + replies.RCPT_OK + replies.OK)
        self.assertTrue(transport.disconnecting)

    def test_noReadingAfterTheEnd(self) -> None:
        """
        Once the client's side is shut, the transport is never asked to read
        again: each read would see the end once more.
        """
        pending: Deferred[None] = Deferred()
        proto, transport, clock, _ = connect(SlowMail(pending))
        proto.dataReceived(b"EHLO c\r\n")
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\n")
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(transport.producerState, "paused")
        proto.readConnectionLost()
        pending.callback(None)
        self.assertEqual(transport.producerState, "paused")
        self.assertTrue(transport.disconnecting)

    def test_quitAfterTheEndReadsNoMore(self) -> None:
        """
        A QUIT kept back behind a slow hook, answered after the client's
        FIN, closes without asking the stopped transport to read again.
        """
        pending: Deferred[None] = Deferred()
        proto, transport, clock, _ = connect(SlowMail(pending))
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nQUIT\r\n")
        self.assertEqual(transport.producerState, "paused")
        proto.readConnectionLost()
        pending.callback(None)
        self.assertTrue(transport.value().startswith(replies.MAIL_OK + b"221 "))
        self.assertEqual(transport.producerState, "paused")
        self.assertTrue(transport.disconnecting)

    def test_slowDataAnsweredThenClosed(self) -> None:
        """
        A FIN right after the final dot: the message's reply is written once
        C{onData} answers, then the session closes.
        """
        handler = SlowData()
        proto, transport, clock, _ = connect(handler)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n")
        proto.dataReceived(b"DATA\r\nx\r\n.\r\n")
        take(transport)
        proto.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        handler.pending.callback("OK: id 1")
        self.assertEqual(transport.value(), b"250 2.0.0 OK: id 1\r\n")
        self.assertTrue(transport.disconnecting)

    def test_midBodyAbandons(self) -> None:
        """
        A FIN in the middle of a body ends the session: the message can
        never end, and its stream fails when the connection goes.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\nDATA\r\n")
        proto.dataReceived(b"Subject: cut\r\n")
        proto.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        proto.connectionLost()
        self.assertEqual(handler.messages, [])
        self.assertEqual(len(handler.closed), 1)

    def test_unreadRepliesFirst(self) -> None:
        """
        Commands kept back while the client did not read its replies are
        still answered after its FIN, once it reads again.
        """
        proto, transport, clock, _ = connect()
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.pauseProducing()
        proto.dataReceived(b"NOOP\r\nNOOP\r\n")
        proto.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        proto.resumeProducing()
        self.assertEqual(transport.value(), replies.OK + replies.OK)
        self.assertTrue(transport.disconnecting)

    def test_closedSessionIgnoresIt(self) -> None:
        """
        A FIN on a session already closing changes nothing.
        """
        proto, transport, clock, _ = connect()
        proto.dataReceived(b"QUIT\r\n")
        self.assertTrue(transport.disconnecting)
        written = transport.value()
        proto.readConnectionLost()
        self.assertEqual(transport.value(), written)


class ProxiedHalfCloseTests(SynchronousTestCase):
    def _proxied(
        self, handler: object, tls: bool = False
    ) -> tuple[ProxyProtocolWrapper, StringTransport]:
        inner = None
        if tls:
            # haproxy:ssl: TLS inside the PROXY layer.
            issued = CertificateAuthority(self.mktemp()).server("mx.example.com")
            context = ServerTLS(issued.certificatePath, issued.keyPath).contextFactory()

            def inner(factory: SMTPServerFactory) -> Any:
                return TLSMemoryBIOFactory(context, False, factory)

        wrapper, transport, _ = proxied(
            "127.0.0.1", handler=handler, inner=inner, useProxy=["127.0.0.0/8"]
        )
        assert isinstance(wrapper, ProxyProtocolWrapper)
        return wrapper, transport

    def test_forwardedToTheSession(self) -> None:
        """
        Behind a PROXY header, the front end's FIN reaches the session,
        which answers its slow hook before closing.
        """
        pending: Deferred[None] = Deferred()
        wrapper, transport = self._proxied(SlowMail(pending))
        wrapper.dataReceived(b"PROXY TCP4 192.0.2.9 192.0.2.1 4000 25\r\nEHLO c\r\n")
        transport.clear()
        wrapper.dataReceived(b"MAIL FROM:<a@example.com>\r\n")
        wrapper.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        pending.callback(None)
        self.assertEqual(transport.value(), replies.MAIL_OK)
        self.assertTrue(transport.disconnecting)

    def test_tlsInsideCloses(self) -> None:
        """
        Behind a PROXY header with TLS inside it (C{haproxy:ssl:}), where
        no half-close can be told to the session, the front end's FIN
        closes the connection, as a FIN on a TLS listener does.
        """
        wrapper, transport = self._proxied(RecordingHandler(), tls=True)
        wrapper.dataReceived(b"PROXY TCP4 192.0.2.9 192.0.2.1 4000 25\r\n")
        wrapper.readConnectionLost()
        self.assertTrue(transport.disconnecting)

    def test_beforeTheHeaderCloses(self) -> None:
        """
        A FIN before the whole header closes the connection.
        """
        wrapper, transport = self._proxied(RecordingHandler())
        wrapper.dataReceived(b"PROXY TCP4 192.0.2.9")
        wrapper.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
