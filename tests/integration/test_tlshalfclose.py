# -*- test-case-name: tests.integration.test_tlshalfclose -*-
"""
A client's close_notify over real sockets, sent right behind the commands
it pipelined (a TLS half-close, RFC 8446 section 6.1): what it sent before
is still answered, a message its handler is still delivering included,
then the server closes with its own close_notify, as after a FIN on plain
TCP.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.integration.test_tlsoperability import ServerCase
from tests.integration.tlsclients import readToClose, startTLS
from twisted_smtpd import Session, SMTPError
from twisted_smtpd._serving.deadlines import CLOSE_GRACE
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

reactor: Any = _reactor

#: Seconds the handler takes to deliver.
DELIVERY = 0.5

MESSAGE = (
    b"EHLO client.example.com\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
    b"DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n"
)


class SlowDelivery(BaseHandler):
    """
    Delivers each message in L{DELIVERY} seconds, then accepts it or, with
    C{refuse}, answers 451.
    """

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.messages: list[bytes] = []

    def onData(self, stream: IMessageStream, session: Session) -> object:
        stream.drain()

        def delivered() -> None:
            self.messages.append(b"delivered")
            if self.refuse:
                raise SMTPError(451, "Error: try again later", "4.3.0")

        return deferLater(reactor, DELIVERY, delivered)


def sendThenCloseNotify(
    port: int, starttls: bool, commands: bytes, header: bytes = b""
) -> tuple[bytes, bool, float]:
    """
    Over TLS (after STARTTLS, or from the start), send C{commands} and the
    client's close_notify in one write, without reading the greeting first,
    then read until the server closes (at most 2 * L{CLOSE_GRACE}).  A
    PROXY C{header}, if any, goes first, in plain text.

    @return: The replies decrypted, whether the server's close_notify came,
        and the seconds until the server closed (C{inf} if it did not).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=2 * CLOSE_GRACE) as raw:
        raw.sendall(header)
        if starttls:
            startTLS(raw)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        tls.write(commands)
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.unwrap()
        raw.sendall(outgoing.read())
        return readToClose(raw, tls, incoming, time.monotonic())


class CloseNotifyAfterQuitTests(ServerCase):
    @inlineCallbacks
    def check(self, starttls: bool, refuse: bool, proxied: bool = False) -> Any:
        """
        The message's reply (250, or the handler's 451) and QUIT's 221
        reach a client whose close_notify followed its QUIT, the handler
        delivered the message once, and the server closed with its own
        close_notify, well before the close's deadline.  With C{proxied},
        on a C{haproxy:ssl:} listener, behind a PROXY header.
        """
        implicit, plain = yield self.serve(useProxy=["127.0.0.0/8"] if proxied else [])
        handler = SlowDelivery(refuse)
        self.server.factory.handler = handler
        header = b""
        port = plain if starttls else implicit
        if proxied:
            listening = yield self.server.listen("haproxy:ssl:0:interface=127.0.0.1")
            self.addCleanup(listening.stopListening)
            port = listening.getHost().port
            header = b"PROXY TCP4 192.0.2.9 192.0.2.1 4000 465\r\n"
        replies, closeNotify, seconds = yield deferToThread(
            sendThenCloseNotify, port, starttls, MESSAGE, header
        )
        outcome = b"451 4.3.0 Error: try again later\r\n" if refuse else b"250 2.0.0 "
        self.assertIn(b"354 ", replies)
        self.assertIn(outcome, replies.partition(b"354 ")[2])
        self.assertTrue(
            replies.endswith(b"221 2.0.0 mx.example.com Closing connection\r\n"), replies[-200:]
        )
        self.assertEqual(handler.messages, [b"delivered"])
        self.assertTrue(closeNotify)
        self.assertLess(seconds, DELIVERY + CLOSE_GRACE / 2)
        yield self.waitForSessionsGone()
        self.assertEqual([line for line in self.lines if "close not done" in line], [])

    def test_implicitTLSAccepted(self) -> Any:
        """
        On an C{ssl:} listener, a message accepted.
        """
        return self.check(starttls=False, refuse=False)

    def test_implicitTLSRefused(self) -> Any:
        """
        On an C{ssl:} listener, a message the handler refuses.
        """
        return self.check(starttls=False, refuse=True)

    def test_afterSTARTTLSAccepted(self) -> Any:
        """
        After STARTTLS on a C{tcp:} listener.
        """
        return self.check(starttls=True, refuse=False)

    def test_behindProxyAccepted(self) -> Any:
        """
        On a C{haproxy:ssl:} listener, TLS inside the PROXY layer.
        """
        return self.check(starttls=False, refuse=False, proxied=True)

    @inlineCallbacks
    def test_idleCloses(self) -> Any:
        """
        A close_notify with nothing left to answer ends the session at once
        with the server's own close_notify.
        """
        implicit, plain = yield self.serve()
        replies, closeNotify, seconds = yield deferToThread(
            sendThenCloseNotify, implicit, False, b""
        )
        self.assertTrue(replies.startswith(b"220 "), replies)
        self.assertTrue(closeNotify)
        self.assertLess(seconds, CLOSE_GRACE / 2)
        yield self.waitForSessionsGone()
