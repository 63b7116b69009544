# -*- test-case-name: tests.test_xclientignored -*-
"""
A session XCLIENT starts over as a client of C{ignoredHosts}: the lines
logged for its front end still end with a C{close} line, and none are
written for the ignored client.
"""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_protocol import PEER, RecordingHandler, _ipv4, take
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.logging import NAMESPACE, SessionLogger
from twisted_smtpd._serving.logwriter import BufferedLogWriter
from twisted_smtpd._serving.protocol import SMTPProtocol
from twisted_smtpd._serving.server import SMTPServerFactory

FRONT_END = PEER[0]
IGNORED = "192.0.2.99"
OTHER = "192.0.2.50"


class XClientToIgnoredClientTests(SynchronousTestCase):
    """
    Every C{connect} line the sessions' logger writes is followed by one
    C{close} line, even when XCLIENT hands the session to a client whose
    lines are not written.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_namespace"] == NAMESPACE]

    def connect(
        self, ignored: tuple[str, ...], logger: SessionLogger | None = None
    ) -> tuple[SMTPProtocol, StringTransport]:
        """
        A session from L{FRONT_END}, trusted for XCLIENT, logged from its
        start by a L{SessionLogger} ignoring C{ignored}, as C{twistd smtpd}
        makes it.
        """
        factory = SMTPServerFactory(
            RecordingHandler(),
            ServerOptions(
                name="mx.example.com",
                disableReverseLookup=True,
                useXClient=["192.0.2.0/24"],
                ignoredHosts=ignored,
            ),
            reactor=Clock(),
        )
        factory.addObserver(logger if logger is not None else SessionLogger(ignored))
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(peerAddress=_ipv4(*PEER), hostAddress=_ipv4("192.0.2.1", 25))
        proto.makeConnection(transport)
        self.assertEqual(take(transport), replies.GREETING)
        return proto, transport

    def test_handedOverToIgnoredClient(self) -> None:
        """
        The front end's C{connect} line gets a C{close} line naming the
        ignored client when XCLIENT names one; the ignored client's
        commands and its end of the session leave no line.
        """
        proto, transport = self.connect((IGNORED,))
        sid = proto.session.id
        proto.dataReceived(b"XCLIENT ADDR=" + IGNORED.encode() + b"\r\n")
        self.assertEqual(take(transport), replies.GREETING)
        proto.dataReceived(b"EHLO c\r\nRCPT TO:<b@example.com>\r\nQUIT\r\n")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.lines(),
            [
                f"{sid} connect from {FRONT_END}:{PEER[1]} ([{FRONT_END}]) to 192.0.2.1:25",
                f"{sid} close (XCLIENT: the session goes on as ignored client {IGNORED})",
            ],
        )

    def test_ignoredIPv6ClientAnyForm(self) -> None:
        """
        An ignored IPv6 client that XCLIENT names in another form (upper
        case, zeros spelt out) is the same client: the session goes on as
        it, and its lines are not written.
        """
        proto, transport = self.connect(("2001:db8::5",))
        sid = proto.session.id
        proto.dataReceived(b"XCLIENT ADDR=IPV6:2001:DB8:0:0:0:0:0:5\r\n")
        self.assertEqual(take(transport), replies.GREETING)
        proto.dataReceived(b"EHLO c\r\nRCPT TO:<b@example.com>\r\n")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.lines(),
            [
                f"{sid} connect from {FRONT_END}:{PEER[1]} ([{FRONT_END}]) to 192.0.2.1:25",
                f"{sid} close (XCLIENT: the session goes on as ignored client 2001:db8::5)",
            ],
        )

    def test_notIgnoredClientUnchanged(self) -> None:
        """
        XCLIENT naming a client that is logged leaves its own C{connect}
        line and one C{close} at the end, as before.
        """
        proto, transport = self.connect((IGNORED,))
        sid = proto.session.id
        proto.dataReceived(b"XCLIENT ADDR=" + OTHER.encode() + b"\r\n")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.lines(),
            [
                f"{sid} connect from {FRONT_END}:{PEER[1]} ([{FRONT_END}]) to 192.0.2.1:25",
                f"{sid} connect from {OTHER}:{PEER[1]} ([{OTHER}]) to 192.0.2.1:25",
                f"{sid} close",
            ],
        )

    def test_ignoredFrontEndLeavesNoHandOver(self) -> None:
        """
        A front end that is itself ignored wrote no C{connect} line: XCLIENT
        naming another ignored client leaves no line at all, and one naming
        a logged client leaves that client's C{connect} and C{close}.
        """
        proto, transport = self.connect((FRONT_END, IGNORED))
        proto.dataReceived(b"XCLIENT ADDR=" + IGNORED.encode() + b"\r\n")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.lines(), [])

        proto, transport = self.connect((FRONT_END,))
        sid = proto.session.id
        proto.dataReceived(b"XCLIENT ADDR=" + OTHER.encode() + b"\r\n")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.lines(),
            [f"{sid} connect from {OTHER}:{PEER[1]} ([{OTHER}]) to 192.0.2.1:25", f"{sid} close"],
        )

    def test_refusalsOnly(self) -> None:
        """
        With C{refusalsOnly} (C{--quiet}) no C{connect} line was written,
        so no C{close} line is written for the hand-over either.
        """
        proto, transport = self.connect((IGNORED,), SessionLogger((IGNORED,), refusalsOnly=True))
        proto.dataReceived(b"XCLIENT ADDR=" + IGNORED.encode() + b"\r\n")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.lines(), [])

    def test_jsonFields(self) -> None:
        """
        The JSON line of the hand-over carries the session id and the
        ignored client's address (C{handedOverTo}).
        """
        out = StringIO()
        writer = BufferedLogWriter(out, json=True, reactor=Clock())
        proto, transport = self.connect((IGNORED,), SessionLogger((IGNORED,), writer=writer))
        sid = proto.session.id
        proto.dataReceived(b"XCLIENT ADDR=" + IGNORED.encode() + b"\r\n")
        proto.connectionLost(Failure(ConnectionDone()))
        writer.flush()
        records: list[dict[str, Any]] = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual(
            [record.get("handedOverTo") for record in records if record.get("session") == sid],
            [None, IGNORED],
        )
