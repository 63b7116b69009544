"""
Tests for the original client a trusted XFORWARD names
(L{twisted_smtpd._core.xclient.forwardedClient}): it appears, neutered and
escaped, in its message's log line, as Postfix logs it; the C{Received:}
field names the client that connected, as Postfix's does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_protocol import RecordingHandler, connect, take
from twisted_smtpd._core.session import Session
from twisted_smtpd._core.xclient import ForwardedClient, forwardedClient, parseXForward
from twisted_smtpd._serving.logging import NAMESPACE, SessionLogger
from twisted_smtpd.handlers._tracefields import traceHeaderLines
from twisted_smtpd.interfaces import IMessageStream

NOT_AUTHORIZED = b"550 5.7.0 Error: insufficient authorization\r\n"
MESSAGE = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nx\r\n.\r\n"


class TracingHandler(RecordingHandler):
    """
    Keeps the C{Received:} field of each message as C{onData} sees it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.received: list[str] = []

    def onData(self, stream: IMessageStream, session: Session) -> object:
        header = traceHeaderLines(session, "mx.example.com").decode("utf-8")
        self.received.append(" ".join(header.split("\r\n")[1].split()))
        return super().onData(stream, session)


class ForwardedClientTests(SynchronousTestCase):
    def test_clientAttributes(self) -> None:
        """
        The original client is the one the client attributes (C{NAME},
        C{ADDR}, C{PORT}, C{PROTO}, C{HELO}) describe; those not given are
        unknown, never the connected client's (Postfix's
        C{FORWARD_CLIENT_ATTR}); C{IDENT} and C{SOURCE} alone describe none.
        """
        self.assertEqual(
            forwardedClient(parseXForward(b"NAME=orig.example ADDR=IPV6:2001:db8::5 PORT=2525")),
            ForwardedClient("orig.example", "2001:db8::5", 2525, None),
        )
        self.assertEqual(
            forwardedClient(parseXForward(b"HELO=orig ADDR=IPV6:::ffff:198.51.100.2")),
            ForwardedClient("unknown", "198.51.100.2", None, "orig"),
        )
        self.assertEqual(
            forwardedClient(parseXForward(b"NAME=[TEMPUNAVAIL] ADDR=[UNAVAILABLE] PROTO=SMTP")),
            ForwardedClient("unknown", "unknown", None, None),
        )
        self.assertEqual(
            forwardedClient(parseXForward(b"ADDR=2001:0DB8:0:0:0:0:0:5")),
            ForwardedClient("unknown", "2001:db8::5", None, None),
        )
        self.assertIsNone(forwardedClient(parseXForward(b"IDENT=ABC123 SOURCE=REMOTE")))
        self.assertIsNone(forwardedClient({}))

    def test_freeTextNeutered(self) -> None:
        """
        C{HELO}, C{IDENT} and C{PROTO} have Postfix's C{NEUTER_CHARACTERS}
        (space, angle brackets, parentheses, backslash, double quote,
        semicolon, at sign) replaced with C{?}, as Postfix's
        C{xforward_cmd} stores them.
        """
        self.assertEqual(
            parseXForward(
                b"HELO=a+20(forged.example+20[192.0.2.99])+20by+20<x@y>;+5C+22"
                b" IDENT=q@1 PROTO=E(SMTP)"
            ),
            {
                "HELO": "a??forged.example?[192.0.2.99]??by??x?y????",
                "IDENT": "q?1",
                "PROTO": "E?SMTP?",
            },
        )


class ReceivedTests(SynchronousTestCase):
    def deliver(self, *commands: bytes, **options: Any) -> tuple[TracingHandler, bytes]:
        handler = TracingHandler()
        options.setdefault("useXForward", ["192.0.2.0/24"])
        proto, transport, clock, factory = connect(handler, **options)
        proto.session.clientHostname = "filter.example"
        proto.dataReceived(b"EHLO filter-helo\r\n")
        take(transport)
        for command in commands:
            proto.dataReceived(command + b"\r\n")
        proto.dataReceived(MESSAGE)
        return handler, take(transport)

    def test_receivedNamesConnectedClient(self) -> None:
        """
        After a trusted XFORWARD, the message's C{Received:} field still
        names the client that connected (the front end), as Postfix's
        does: the original client is named in the log line only.
        """
        handler, written = self.deliver(
            b"XFORWARD NAME=orig.example ADDR=IPV6:2001:db8::5 PORT=2525 HELO=orig-helo"
        )
        self.assertTrue(written.startswith(replies.OK), written)
        (received,) = handler.received
        self.assertTrue(
            received.startswith(
                "Received: from filter-helo (filter.example [192.0.2.7]) by mx.example.com"
                " with ESMTP id "
            ),
            received,
        )
        self.assertNotIn("orig", received)
        self.assertNotIn("2001:db8::5", received)

    def test_hostileHeloNotInReceived(self) -> None:
        """
        A HELO name the original client chose, passed on by the front end,
        never reaches the C{Received:} field.
        """
        handler, _ = self.deliver(
            b"XFORWARD HELO=x+20(trusted.example+20[192.0.2.1])+20by+20mx.example.com"
            b" ADDR=198.51.100.2"
        )
        (received,) = handler.received
        self.assertNotIn("trusted.example", received)
        self.assertNotIn("198.51.100.2", received)

    def test_heloNeutered(self) -> None:
        """
        The client's own HELO name is written into the C{Received:} field
        with Postfix's C{NEUTER_CHARACTERS} (space, angle brackets,
        parentheses, backslash, double quote, semicolon, at sign) replaced
        with C{?}, as Postfix's C{helo_cmd} stores it: a parenthesis cannot
        open a comment that swallows the rest of the field, nor a semicolon
        end its clauses before the date.
        """
        handler, written = self.deliver(b'EHLO (a)<b>;c@d"e\\f')
        self.assertTrue(written.endswith(b"250 2.0.0 OK: queued as X1\r\n"), written)
        (received,) = handler.received
        self.assertTrue(
            received.startswith(
                "Received: from ?a??b??c?d?e?f (filter.example [192.0.2.7]) by mx.example.com"
                " with ESMTP id "
            ),
            received,
        )

    def test_untrustedNotUsed(self) -> None:
        """
        XFORWARD from outside C{useXForward} is refused and names no one.
        """
        handler, written = self.deliver(
            b"XFORWARD NAME=victim.example ADDR=203.0.113.9", useXForward=["10.0.0.0/8"]
        )
        self.assertTrue(written.startswith(NOT_AUTHORIZED), written)
        (received,) = handler.received
        self.assertNotIn("victim", received)
        self.assertNotIn("203.0.113.9", received)


class LogLineTests(SynchronousTestCase):
    def messageLines(self, *commands: bytes, **options: Any) -> tuple[str, list[str]]:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        options.setdefault("useXForward", ["192.0.2.0/24"])
        proto, transport, clock, factory = connect(**options)
        factory.addObserver(SessionLogger())
        proto.dataReceived(b"EHLO filter-helo\r\n")
        for command in commands:
            proto.dataReceived(command + b"\r\n")
        proto.dataReceived(MESSAGE)
        lines = [formatEvent(e) for e in events if e["log_namespace"] == NAMESPACE]
        self.events = [e for e in events if e["log_namespace"] == NAMESPACE]
        return proto.session.id, [line for line in lines if " message " in line]

    def test_originalClientLogged(self) -> None:
        """
        The message's log line names the original client, its HELO name
        and its queue id at the front end, as Postfix's C{orig_client=} and
        C{orig_queue_id=}; the JSON fields carry them too.
        """
        sid, lines = self.messageLines(
            b"XFORWARD NAME=orig.example ADDR=198.51.100.2 HELO=orig-helo IDENT=4XyZ1"
        )
        self.assertEqual(
            lines,
            [
                f"{sid} message 3 bytes from <a@example.org> to <b@example.com>"
                " orig_client=orig.example[198.51.100.2] orig_helo=orig-helo"
                " orig_queue_id=4XyZ1: 250 OK: queued as X1"
            ],
        )
        (event,) = [e for e in self.events if "size" in e]
        self.assertEqual(event["origClient"], "orig.example[198.51.100.2]")
        self.assertEqual(event["origHelo"], "orig-helo")
        self.assertEqual(event["origQueueId"], "4XyZ1")

    def test_escaped(self) -> None:
        """
        Forwarded values cannot break or disguise the log line: those with
        characters that are not printable are refused (501), the others
        neutered, so that no space in them starts a field of its own.
        """
        sid, (line,) = self.messageLines(
            b"XFORWARD HELO=a+E2+80+AEb",
            b"XFORWARD HELO=a+20b+20orig_client=x[203.0.113.1] IDENT=x+20reject:+20y",
        )
        self.assertIn(
            " orig_client=unknown[unknown] orig_helo=a?b?orig_client=x[203.0.113.1]"
            " orig_queue_id=x?reject:?y: 250",
            line,
        )
        self.assertNotIn("\u202e", line)

    def test_oneTransactionOnly(self) -> None:
        """
        The next message, without XFORWARD, names no original client.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proto, transport, clock, factory = connect(useXForward=["192.0.2.0/24"])
        factory.addObserver(SessionLogger())
        proto.dataReceived(b"EHLO filter-helo\r\nXFORWARD NAME=orig.example\r\n" + MESSAGE)
        proto.dataReceived(MESSAGE)
        lines = [formatEvent(e) for e in events if e["log_namespace"] == NAMESPACE]
        messages = [line for line in lines if " message " in line]
        self.assertEqual(len(messages), 2, lines)
        self.assertIn(" orig_client=orig.example[unknown]", messages[0])
        self.assertNotIn("orig_", messages[1])

    def test_withoutXForward(self) -> None:
        """
        Without XFORWARD the line is as before: no origin.
        """
        sid, lines = self.messageLines()
        self.assertEqual(
            lines,
            [
                f"{sid} message 3 bytes from <a@example.org> to <b@example.com>:"
                " 250 OK: queued as X1"
            ],
        )
