"""
Text from the network never reaches a reply, a header or a log line
unescaped: one test per sink (the EHLO reply, the C{Received:} header, the
text log line, the JSON log line), and the address literal of IPv6 clients.
"""

from __future__ import annotations

import email
import io
import json
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import eventAsText, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_protocol import RecordingHandler, connect, take
from tests.test_resolve import FakeResolver
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.replies import Reply, formatReply
from twisted_smtpd._core.session import Address, Envelope, Session
from twisted_smtpd._serving.logging import NAMESPACE, SessionLogger, jsonLogObserver
from twisted_smtpd._serving.logwriter import BufferedLogWriter
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd.handlers._tracefields import traceHeaderLines as _traceHeaderLines

EVIL_NAME = "evil.example\r\n250 forged"
ESCAPED_NAME = "evil.example\\x0d\\x0a250 forged"
EVIL_USER = "bob\r\nsid2 auth PLAIN as 'root'\x1b[2J"
ESCAPED_USER = "bob\\x0d\\x0asid2 auth PLAIN as 'root'\\x1b[2J"


class NamingHandler(RecordingHandler):
    """
    Sets the client's name to a text holding a line break, as a name from
    outside would be if it reached the session unchecked.
    """

    def onConnect(self, session: Session) -> object:
        session.clientHostname = EVIL_NAME
        return None


def evilSession(**kwargs: Any) -> Session:
    values: dict[str, Any] = {
        "id": "sid1",
        "remoteAddress": ("192.0.2.7", 4000),
        "localAddress": ("192.0.2.1", 25),
        "clientHostname": EVIL_NAME,
        "hostNameAppearsAs": "helo\u2028X-Injected: 1",
        "transmissionType": "ESMTP",
        "envelope": Envelope(
            mailFrom=Address('"a\x85\r\nX-Evil: 1"@example.com'),
            rcptTo=[Address("b@example.org")],
        ),
    }
    values.update(kwargs)
    return Session(**values)


def assertOneLine(case: SynchronousTestCase, text: str) -> None:
    case.assertTrue(text.isprintable(), repr(text))


class ReplyTests(SynchronousTestCase):
    def test_formatReplyEscapes(self) -> None:
        """
        A reply line holding a line break or another control character is
        written as one line, with the characters escaped.
        """
        self.assertEqual(
            formatReply(Reply(250, "2.0.0", ("a\r\n250 forged\x00",)), True),
            b"250 2.0.0 a\\x0d\\x0a250 forged\\x00\r\n",
        )

    def test_ehloReplyEscapesName(self) -> None:
        """
        A client name holding a line break cannot forge a final C{250} line
        in the EHLO reply.
        """
        proto, transport, clock, _ = connect(NamingHandler())
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        self.assertEqual(
            take(transport),
            replies.EHLO_DEFAULT.replace(b"[192.0.2.7]", ESCAPED_NAME.encode()),
        )

    def test_ptrLineBreakNotInEhloReply(self) -> None:
        """
        A PTR answer holding a line break is no name: the EHLO reply names
        the client by its address.
        """
        clock = Clock()
        factory = SMTPServerFactory(
            RecordingHandler(),
            ServerOptions(name="mx.example.com"),
            reactor=clock,
            resolver=FakeResolver({"7.2.0.192.in-addr.arpa": b"evil.example\r\n250 forged."}),
        )
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 1),
            hostAddress=IPv4Address("TCP", "192.0.2.1", 25),
        )
        proto.makeConnection(transport)
        self.assertEqual(take(transport), replies.GREETING)
        proto.dataReceived(b"EHLO c\r\n")
        self.assertEqual(take(transport), replies.EHLO_DEFAULT)


class ReceivedHeaderTests(SynchronousTestCase):
    def test_receivedHeaderEscapes(self) -> None:
        """
        Control characters, NEL and line separators in the HELO name, the
        client name and the sender are escaped in C{Return-Path:} and
        C{Received:}; the header block is exactly two lines.
        """
        data = _traceHeaderLines(evilSession(), "mx.example").decode("utf-8")
        self.assertTrue(data.endswith("\r\n"))
        lines = data[:-2].split("\r\n")
        self.assertEqual(len(lines), 2)
        for line in lines:
            assertOneLine(self, line)
        self.assertEqual(lines[0], 'Return-Path: <"a\\x85\\x0d\\x0aX-Evil: 1"@example.com>')
        self.assertTrue(
            lines[1].startswith(
                f"Received: from helo\\u2028X-Injected:?1 ({ESCAPED_NAME} [192.0.2.7])"
                " by mx.example with ESMTP id sid1 for <b@example.org>; "
            ),
            lines[1],
        )

    def test_utf8TransmissionTypes(self) -> None:
        """
        A message sent with C{SMTPUTF8} names the RFC 6531 (section 4.3)
        protocol in its C{Received:} field: C{UTF8SMTP}, C{UTF8SMTPSA},
        C{UTF8LMTPS}; one sent without it keeps the RFC 3848 name.
        """
        for kind, utf8, expected in (
            ("ESMTP", True, "UTF8SMTP"),
            ("ESMTPSA", True, "UTF8SMTPSA"),
            ("LMTPS", True, "UTF8LMTPS"),
            ("ESMTPS", False, "ESMTPS"),
        ):
            envelope = Envelope(mailFrom=Address("s@example.com"), smtpUtf8=utf8)
            session = evilSession(transmissionType=kind, envelope=envelope)
            received = _traceHeaderLines(session, "mx.example").split(b"\r\n")[1]
            self.assertIn(b" by mx.example with %s id " % expected.encode(), received)

    def test_longReceivedFolded(self) -> None:
        """
        The longest HELO name whose every character is escaped, with the
        longest client name and an IPv6 client, makes a C{Received:} field
        folded before its clauses: no line is longer than 998 octets (RFC
        5322 section 2.1.1), and the field reads back whole.
        """
        helo = "\u061c" * 127 + "a"
        rdns = ".".join(["a" * 63] * 3 + ["b" * 61])
        session = evilSession(
            remoteAddress=("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 4000),
            clientHostname=rdns,
            hostNameAppearsAs=helo,
        )
        data = _traceHeaderLines(session, "mx.example")
        lines = data.split(b"\r\n")
        self.assertEqual(lines[-1], b"")
        for line in lines:
            self.assertLessEqual(len(line), 998)
        message = email.message_from_bytes(data + b"\r\nbody\r\n")
        received = " ".join(message["Received"].split())
        self.assertTrue(
            received.startswith(
                "from " + "\\u061c" * 127 + "a"
                f" ({rdns} [IPv6:2001:db8:ffff:ffff:ffff:ffff:ffff:ffff])"
                " by mx.example with ESMTP id sid1 for <b@example.org>; "
            ),
            received,
        )

    def test_receivedIPv6Literal(self) -> None:
        """
        An IPv6 client appears in C{Received:} as the RFC 5321 section 4.1.3
        address literal C{[IPv6:2001:db8::7]}.
        """
        session = evilSession(
            remoteAddress=("2001:db8::7", 4000),
            clientHostname="client.example",
            hostNameAppearsAs="helo.example",
        )
        received = _traceHeaderLines(session, "mx.example").split(b"\r\n")[1]
        self.assertTrue(
            received.startswith(
                b"Received: from helo.example (client.example [IPv6:2001:db8::7]) by"
            ),
            received,
        )

    def test_ipv6ClientName(self) -> None:
        """
        An IPv6 client without a name is greeted by its address literal
        C{[IPv6:...]}.
        """
        clock = Clock()
        factory = SMTPServerFactory(
            RecordingHandler(),
            ServerOptions(name="mx.example.com", disableReverseLookup=True),
            reactor=clock,
        )
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(
            peerAddress=IPv6Address("TCP", "2001:db8::7", 1),
            hostAddress=IPv6Address("TCP", "2001:db8::1", 25),
        )
        proto.makeConnection(transport)
        take(transport)
        proto.dataReceived(b"HELO c\r\n")
        self.assertEqual(
            take(transport), b"250 mx.example.com Nice to meet you, [IPv6:2001:db8::7]\r\n"
        )


class LogLineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def log(self) -> None:
        logger = SessionLogger()
        session = evilSession(remoteAddress=("192.0.2.7\n", 4000))
        logger("connect", session, {})
        logger("auth", session, {"method": "PLAIN", "username": EVIL_USER})
        logger(
            "message",
            session,
            {"size": 1, "replies": (Reply(250, "2.0.0", ("OK\r\nforged",)),)},
        )

    def test_textLogLine(self) -> None:
        """
        The text log lines of connect, auth and message carry the client's
        name, the user name, the sender and the reply escaped: each event
        is one line.
        """
        self.log()
        texts = [formatEvent(e) for e in self.events if e.get("log_namespace") == NAMESPACE]
        self.assertEqual(len(texts), 3)
        for text in texts:
            assertOneLine(self, text)
        self.assertEqual(
            texts[0], f"sid1 connect from 192.0.2.7\\x0a:4000 ({ESCAPED_NAME}) to 192.0.2.1:25"
        )
        self.assertEqual(texts[1], f"sid1 auth PLAIN as '{ESCAPED_USER}'")
        self.assertIn('<"a\\x85\\x0d\\x0aX-Evil: 1"@example.com>', texts[2])
        self.assertTrue(texts[2].endswith("250 OK\\x0d\\x0aforged"), texts[2])
        for event in self.events:
            written = eventAsText(event, includeTimestamp=False, includeSystem=False)
            self.assertNotIn("\n", written)

    def test_unixListenerPath(self) -> None:
        """
        The connect line of a session on a UNIX socket listener names the
        socket's path as it is, not as a host with port 0, and its client,
        which has no address, C{unix}; a path with a colon is not taken for
        an IPv6 address.
        """
        logger = SessionLogger()
        for path in ("/run/smtpd/lmtp.sock", "/run/a:b/lmtp.sock"):
            del self.events[:]
            session = evilSession(
                remoteAddress=("", 0), localAddress=(path, 0), clientHostname="localhost"
            )
            logger("connect", session, {})
            [text] = [formatEvent(e) for e in self.events if e.get("log_namespace") == NAMESPACE]
            self.assertEqual(text, f"sid1 connect from unix (localhost) to {path}")

    def test_jsonLogLine(self) -> None:
        """
        In JSON logs, the fields of the same events hold the escaped texts,
        and each event is one line.
        """
        out = io.StringIO()
        observer = jsonLogObserver(out)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.log()
        lines = [
            json.loads(line)
            for line in out.getvalue().splitlines()
            if json.loads(line).get("namespace") == NAMESPACE
        ]
        self.assertEqual(len(lines), 3)
        self.assertEqual(lines[0]["clientHostname"], ESCAPED_NAME)
        self.assertEqual(lines[1]["username"], ESCAPED_USER)
        self.assertEqual(lines[2]["sender"], '"a\\x85\\x0d\\x0aX-Evil: 1"@example.com')
        for fields in lines:
            for value in fields.values():
                if isinstance(value, str):
                    assertOneLine(self, value)


class InvisibleCharacterTests(SynchronousTestCase):
    """
    Invisible characters a client chose (a zero-width space, a byte order
    mark, a joiner beside ASCII letters) are escaped in the lines of the
    log, text and JSON, so that a user name that only looks like another
    reads as what it is.
    """

    USER = "ad\u200bmin\ufeff\u2060x\u00ady\u200dz"
    ESCAPED = "ad\\u200bmin\\ufeff\\u2060x\\xady\\u200dz"

    def failedLogin(self, json: bool) -> str:
        """
        The log line of a failed AUTH of L{USER}, as C{twistd smtpd} writes
        it.
        """
        out = io.StringIO()
        writer = BufferedLogWriter(out, json=json, reactor=Clock())
        SessionLogger(writer=writer)(
            "reject",
            evilSession(clientHostname="client.example"),
            {
                "reply": Reply(535, "5.7.8", ("Authentication credentials invalid",)),
                "command": "AUTH",
                "mechanism": "PLAIN",
                "username": self.USER,
                "authzid": None,
            },
        )
        return out.getvalue()

    def test_textLine(self) -> None:
        """
        The text line names the user with every invisible character
        escaped.
        """
        line = self.failedLogin(json=False)
        self.assertIn(
            f" sid1 auth failed: PLAIN from client.example[192.0.2.7] user=<{self.ESCAPED}>: 535 ",
            line,
        )
        self.assertTrue(line.isascii(), line)

    def test_jsonLine(self) -> None:
        """
        In JSON, the C{username} field and the text hold the escapes, not the
        characters.
        """
        fields = json.loads(self.failedLogin(json=True))
        self.assertEqual(fields["username"], self.ESCAPED)
        self.assertIn(f"user=<{self.ESCAPED}>", fields["text"])
