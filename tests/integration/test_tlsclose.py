# -*- test-case-name: tests.integration.test_tlsclose -*-
"""
The end of a TLS session over real sockets: a client that says QUIT and
never sends its close_notify (most do not) gets its 221 and the server's
close_notify, and the server closes the connection at once, as Postfix's
smtpd does, instead of waiting for the client's alert until the close's
deadline.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from tests.integration.test_tlsoperability import ServerCase
from tests.integration.tlsclients import quitWithoutCloseNotify
from twisted_smtpd._serving.deadlines import CLOSE_GRACE

#: Seconds after QUIT within which the server must have closed: well
#: before the close's deadline (L{CLOSE_GRACE}), which is what a client
#: sending no close_notify waited for.
PROMPT = CLOSE_GRACE / 2


class QuitWithoutCloseNotifyTests(ServerCase):
    @inlineCallbacks
    def check(self, starttls: bool) -> Any:
        """
        Over TLS, QUIT's 221 and the server's close_notify reach a client
        that sends none of its own, and the server closes the connection at
        once, with no line saying its close timed out.
        """
        implicit, plain = yield self.serve()
        replies, closeNotify, seconds = yield deferToThread(
            quitWithoutCloseNotify, plain if starttls else implicit, starttls, 2 * CLOSE_GRACE
        )
        self.assertTrue(replies.endswith(b"221 2.0.0 mx.example.com Closing connection\r\n"))
        self.assertTrue(closeNotify)
        self.assertLess(seconds, PROMPT)
        yield self.waitForSessionsGone()
        self.assertEqual([line for line in self.lines if "close not done" in line], [])
        self.assertEqual([line for line in self.lines if "TLS error" in line], [])

    def test_implicitTLS(self) -> Any:
        """
        On an C{ssl:} listener.
        """
        return self.check(starttls=False)

    def test_afterSTARTTLS(self) -> Any:
        """
        After STARTTLS on a C{tcp:} listener.
        """
        return self.check(starttls=True)


class RefusedWithoutCloseNotifyTests(ServerCase):
    @inlineCallbacks
    def test_refusedAtConnect(self) -> Any:
        """
        An implicit TLS client refused at connect (C{maxClients} reached)
        that finishes the handshake gets its 421 and the server's
        close_notify, and the server closes at once, although the client
        sends no close_notify.
        """
        implicit, plain = yield self.serve(maxClients=2)
        held = []
        for _ in range(2):
            s = yield deferToThread(socket.create_connection, ("127.0.0.1", plain), 10)
            self.addCleanup(s.close)
            greeting = yield deferToThread(s.recv, 1000)
            self.assertTrue(greeting.startswith(b"220 "))
            held.append(s)
        replies, closeNotify, seconds = yield deferToThread(
            quitWithoutCloseNotify, implicit, False, 2 * CLOSE_GRACE, quit=False
        )
        self.assertTrue(replies.startswith(b"421 4.7.0 "), replies)
        self.assertTrue(closeNotify)
        self.assertLess(seconds, PROMPT)
        for s in held:
            s.close()
        yield self.waitForSessionsGone()
        self.assertEqual([line for line in self.lines if "close not done" in line], [])


class BehindProxyTests(ServerCase):
    @inlineCallbacks
    def test_quitOnProxiedTLS(self) -> Any:
        """
        On a C{haproxy:ssl:} listener, the connection under the PROXY and
        TLS layers closes at once after QUIT's 221 and the server's
        close_notify.
        """
        yield self.serve(useProxy=["127.0.0.0/8"])
        port = yield self.server.listen("haproxy:ssl:0:interface=127.0.0.1")
        self.addCleanup(port.stopListening)
        replies, closeNotify, seconds = yield deferToThread(
            quitWithoutCloseNotify,
            port.getHost().port,
            False,
            2 * CLOSE_GRACE,
            header=b"PROXY TCP4 192.0.2.9 192.0.2.1 4000 465\r\n",
        )
        self.assertTrue(replies.endswith(b"221 2.0.0 mx.example.com Closing connection\r\n"))
        self.assertTrue(closeNotify)
        self.assertLess(seconds, PROMPT)
        yield self.waitForSessionsGone()
        self.assertEqual([line for line in self.lines if "close not done" in line], [])

    @inlineCallbacks
    def test_quitAfterSTARTTLSBehindProxy(self) -> Any:
        """
        On a C{haproxy:tcp:} listener, after STARTTLS, the same.
        """
        yield self.serve(useProxy=["127.0.0.0/8"])
        port = yield self.server.listen("haproxy:tcp:0:interface=127.0.0.1")
        self.addCleanup(port.stopListening)
        replies, closeNotify, seconds = yield deferToThread(
            quitWithoutCloseNotify,
            port.getHost().port,
            True,
            2 * CLOSE_GRACE,
            header=b"PROXY TCP4 192.0.2.9 192.0.2.1 4000 25\r\n",
        )
        self.assertTrue(replies.endswith(b"221 2.0.0 mx.example.com Closing connection\r\n"))
        self.assertTrue(closeNotify)
        self.assertLess(seconds, PROMPT)
        yield self.waitForSessionsGone()
        self.assertEqual([line for line in self.lines if "close not done" in line], [])
