# -*- test-case-name: tests.test_logging -*-
"""
The log lines of refused commands, failed AUTH, the AUTH lockout, TLS and
messages, read from a real session over a L{StringTransport}; and the JSON
lines.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from cryptography.hazmat.primitives import hashes
from OpenSSL import crypto
from twisted.internet.address import IPv4Address
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from tests.test_auth import PasswordHandler, b64
from tests.test_protocol import RecordingHandler, connect, take
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import Address, Session, TLSInfo
from twisted_smtpd._serving.logging import (
    NAMESPACE,
    SessionLogger,
    jsonEvent,
    jsonLogObserver,
    loggable,
)


class Refusing(RecordingHandler):
    """
    Refuses the recipient C{x@example.com} with 550 5.1.1.
    """

    def onRcptTo(self, address: Address, session: Session) -> object:
        if address.address == "x@example.com":
            raise SMTPError(550, "Recipient address rejected: User unknown", "5.1.1")
        return None


class RefusalLogTests(SynchronousTestCase):
    """
    Every refused command leaves one line naming the client, the command,
    the address it named and the reply.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def session(self, handler: Any = None, **options: Any) -> Any:
        proto, transport, clock, factory = connect(handler or Refusing(), **options)
        factory.addObserver(SessionLogger())
        self.transport = transport
        return proto

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_namespace"] == NAMESPACE]

    def test_rcptRefused(self) -> None:
        """
        A recipient refused by C{onRcptTo} is logged as Postfix logs it,
        with the sender, and the event carries the address and the code.
        """
        proto = self.session()
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.com>\r\n")
        (line,) = [line for line in self.lines() if "reject" in line]
        sid = proto.session.id
        self.assertEqual(
            line,
            f"{sid} reject: RCPT from unknown[192.0.2.7]: 550 5.1.1 <x@example.com>:"
            " Recipient address rejected: User unknown; from=<a@example.org>",
        )
        (event,) = [e for e in self.events if "address" in e]
        self.assertEqual(
            (event["command"], event["address"], event["code"], event["log_level"]),
            ("RCPT", "x@example.com", 550, LogLevel.info),
        )

    def test_mailRefusedBySyntax(self) -> None:
        """
        A MAIL command refused by the grammar is logged with its address.
        """
        proto = self.session()
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<bad address@x>\r\n")
        (line,) = [line for line in self.lines() if "reject" in line]
        self.assertTrue(
            line.startswith(f"{proto.session.id} reject: MAIL from unknown[192.0.2.7]: 5"),
            line,
        )
        self.assertIn("<bad address@x>: ", line)

    def test_emptyPathRefused(self) -> None:
        """
        A MAIL or RCPT command with nothing after its colon is logged with
        the empty address it names, not with its keyword; one without a
        colon is logged with what it holds.
        """
        proto = self.session()
        proto.dataReceived(
            b"EHLO c\r\nMAIL FROM:\r\nMAIL FROM:<a@example.org>\r\nRCPT TO: \r\nRCPT x@y\r\n"
        )
        refused = [line for line in self.lines() if "reject" in line]
        self.assertEqual(
            [re.search(r"[0-9.]+ (<[^>]*>):", line)[1] for line in refused],  # type: ignore[index]
            ["<>", "<>", "<x@y>"],
            refused,
        )

    def test_unknownCommandAndControlCharacters(self) -> None:
        """
        A line that does not parse is logged under its first word, and
        control characters from the client never reach the log line.
        """
        proto = self.session()
        proto.dataReceived(b"FOO\x1b[31m bar\r\n")
        (line,) = [line for line in self.lines() if "reject" in line]
        self.assertIn("reject: FOO\\x1b[31M from unknown[192.0.2.7]: 500", line)
        self.assertNotIn("\x1b", line)
        self.assertEqual(proto.session.id, line.split()[0])

    def test_emptyLineIsNoConnect(self) -> None:
        """
        A blank line refused is logged as an empty line, not as C{CONNECT},
        which names refusals before any line; so is the 421 of a session
        closed after too many of them.
        """
        proto = self.session(maxErrors=2)
        proto.dataReceived(b"EHLO c\r\n\r\n\r\n")
        lines = [line for line in self.lines() if "reject" in line]
        self.assertEqual(len(lines), 3, lines)
        for line in lines:
            self.assertIn("reject: (empty line) from unknown[192.0.2.7]: ", line)
        self.assertIn(": 421 ", lines[-1])

    def test_limitClosing(self) -> None:
        """
        A limit that ends the session (too many errors) leaves its own line.
        """
        proto = self.session(maxErrors=2)
        proto.dataReceived(b"NOOP x\r\nFOO\r\nBAR\r\n")
        lines = [line for line in self.lines() if "reject" in line]
        self.assertEqual(len(lines), 3, lines)
        self.assertIn(": 421 4.7.0 Too many errors", lines[-1])

    def test_connectionLimitOneLine(self) -> None:
        """
        A connection refused for a limit leaves one line, the factory's
        naming the limit, in the sessions' namespace; the C{reject} event
        still reaches the other observers, with the limit.
        """
        proto = self.session(maxClientsPerIp=1)
        factory = proto.server
        seen: list[dict[str, Any]] = []
        factory.addObserver(lambda event, session, data: seen.append(data))
        refused = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40001))
        refused.makeConnection(transport)
        self.assertTrue(transport.value().startswith(b"421 4.7.0 "))
        sid = refused.session.id
        self.assertEqual(
            [line for line in self.lines() if sid in line],
            [f"{sid} 192.0.2.7 refused: connection limit per client address (1) reached"],
        )
        ((reply, limit),) = [(d["reply"].code, d["limit"]) for d in seen if "limit" in d]
        self.assertEqual((reply, limit), (421, "connection limit per client address (1)"))

    def test_lineTooLongOneLine(self) -> None:
        """
        A command line too long is one C{reject} line under its own first
        word, never under the command before it: after a failed AUTH it is
        no failed login, in a transaction no refused MAIL; so is a line
        too long to be read at all.
        """
        proto = self.session(
            PasswordHandler(), allowInsecureAuth=True, authOptional=True, authMethods=["PLAIN"]
        )
        sid = proto.session.id
        proto.dataReceived(b"EHLO c\r\nAUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\n")
        proto.dataReceived(b"NOOP " + b"x" * 3000 + b"\r\n")
        proto.dataReceived(b"MAIL FROM:<a@example.org>\r\nHELP " + b"y" * 3000 + b"\r\n")
        proto.dataReceived(b"RCPT" + b"z" * 13000)
        self.assertEqual(take(self.transport).count(b"500 5.5.6 Error: line too long\r\n"), 3)
        client = "unknown[192.0.2.7]"
        self.assertEqual(
            [formatEvent(e) for e in self.events],
            [
                f"{sid} auth failed: PLAIN from {client} user=<alice>: 535 5.7.8"
                " Error: authentication credentials invalid",
                f"{sid} reject: NOOP from {client}: 500 5.5.6 Error: line too long",
                f"{sid} reject: HELP from {client}: 500 5.5.6 Error: line too long"
                "; from=<a@example.org>",
                f"{sid} reject: RCPTZZZZZZZZZZZZ... from {client}: 500 5.5.6"
                " Error: line too long; from=<a@example.org>",
            ],
        )

    def test_malformedBdatOneLine(self) -> None:
        """
        A BDAT without a readable size, which ends the session, leaves one
        line: its refusal.
        """
        proto = self.session()
        sid = proto.session.id
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n")
        proto.dataReceived(b"BDAT x\r\n")
        self.assertIn(b"521 ", self.transport.value())
        lines = [formatEvent(e) for e in self.events if sid in formatEvent(e)]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("reject: BDAT from unknown[192.0.2.7]: 521 ", lines[0])

    def test_refusedBdatOneLine(self) -> None:
        """
        A BDAT refused with its chunk (here before MAIL) leaves one line,
        its refusal, which names the chunk's size as the command's
        argument; a refused C{BDAT 0} too.
        """
        proto = self.session()
        sid = proto.session.id
        proto.dataReceived(b"EHLO c\r\nBDAT 5\r\nhelloBDAT 0 LAST\r\n")
        self.assertEqual(self.transport.value().count(b"503 5.5.1"), 2)
        lines = [formatEvent(e) for e in self.events if sid in formatEvent(e)]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("reject: BDAT from unknown[192.0.2.7]: 503 5.5.1 <5>: ", lines[0])
        self.assertIn("reject: BDAT from unknown[192.0.2.7]: 503 5.5.1 <0 LAST>: ", lines[1])

    def test_handlerRefusalsOneLine(self) -> None:
        """
        A sender or recipient the ready handlers refuse for what it is (a
        leading hyphen for a command, a name no Maildir can have) leaves
        one line, the session's C{reject}: the handler adds none of its own.
        """
        from tests.test_pipe import ProcessReactor
        from twisted_smtpd.handlers.maildir import MaildirHandler
        from twisted_smtpd.handlers.pipe import PipeHandler

        client = "unknown[192.0.2.7]"
        pipe = self.session(PipeHandler("cat", reactor=ProcessReactor()))
        pipe.dataReceived(b"EHLO c\r\nMAIL FROM:<-oQ@example.org>\r\n")
        pipe.dataReceived(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<-x@example.com>\r\n")
        maildir = self.session(
            MaildirHandler(self.mktemp(), perRecipient=True, hostname="mx.example.com")
        )
        maildir.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.org> SMTPUTF8\r\n")
        maildir.dataReceived(b"RCPT TO:<b\xe2\x80\xaeob@example.com>\r\n")
        first, second = pipe.session.id, maildir.session.id
        self.assertEqual(
            [formatEvent(e) for e in self.events if e["log_level"] >= LogLevel.info],
            [
                f"{first} reject: MAIL from {client}: 553 5.1.7 <-oQ@example.org>:"
                " Error: sender address must not begin with '-'",
                f"{first} reject: RCPT from {client}: 553 5.1.3 <-x@example.com>:"
                " Error: recipient address must not begin with '-'; from=<a@example.org>",
                f"{second} reject: RCPT from {client}: 553 5.1.3 <b\\u202eob@example.com>:"
                " Error: mailbox name not allowed; from=<a@example.org>",
            ],
        )

    def test_acceptedCommandsNotLogged(self) -> None:
        """
        Accepted HELO, MAIL and RCPT commands log nothing.
        """
        proto = self.session()
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n")
        self.assertEqual(self.lines(), [])


class MisTyping(RecordingHandler):
    """
    Puts a text where the envelope holds an L{Address}: a handler's bug.
    """

    def onData(self, stream: Any, session: Session) -> object:
        answer = super().onData(stream, session)
        session.envelope.mailFrom = "a@example.org"  # type: ignore[assignment]
        return answer


class WrongTypesTests(SynchronousTestCase):
    """
    A handler that puts values of the wrong type into the session costs the
    line of that event, not the line's whole existence: one line says so.
    """

    def test_messageLineNotWritten(self) -> None:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proto, transport, clock, factory = connect(MisTyping())
        factory.addObserver(SessionLogger())
        proto.dataReceived(
            b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
            b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
        )
        self.assertIn(b"250 2.0.0 ", transport.value())
        self.assertEqual(self.flushLoggedErrors(), [])
        lines = [formatEvent(e) for e in events if e["log_namespace"] == NAMESPACE]
        (line,) = [line for line in lines if " message " in line]
        self.assertEqual(
            line,
            f"{proto.session.id} message line not written: the session holds a value of"
            " the wrong type (AttributeError: 'str' object has no attribute 'address')",
        )


class AuthLogTests(SynchronousTestCase):
    """
    Failed AUTH and the lockout are logged with the mechanism, the client
    and the user name, never the password.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_namespace"] == NAMESPACE]

    def test_failedAndLockout(self) -> None:
        """
        Each refused credential logs C{auth failed} with the mechanism, the
        client and the user; the last one also logs the lockout.
        """
        proto, transport, clock, factory = connect(
            PasswordHandler(),
            allowInsecureAuth=True,
            authMethods=["PLAIN", "LOGIN"],
            maxAuthFailures=2,
        )
        factory.addObserver(SessionLogger())
        sid = proto.session.id
        proto.dataReceived(b"EHLO c\r\n")
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0mallory\0wrong-pass") + b"\r\n")
        proto.dataReceived(b"AUTH LOGIN\r\n" + b64(b"bob") + b"\r\n" + b64(b"pw2") + b"\r\n")
        self.assertIn(b"421 4.7.0", take(transport))
        lines = [line for line in self.lines() if "auth" in line]
        self.assertEqual(
            lines,
            [
                f"{sid} auth failed: PLAIN from unknown[192.0.2.7] user=<mallory>: 535 5.7.8"
                " Error: authentication credentials invalid",
                f"{sid} auth failed: LOGIN from unknown[192.0.2.7] user=<bob>: 535 5.7.8"
                " Error: authentication credentials invalid",
                f"{sid} auth lockout: unknown[192.0.2.7] after 2 failed attempt(s): 421 4.7.0"
                " Error: too many failed authentication attempts",
            ],
        )
        text = "\n".join(self.lines())
        self.assertNotIn("wrong-pass", text)
        self.assertNotIn(b64(b"\0mallory\0wrong-pass").decode(), text)

    def test_notAuthorizedOneLine(self) -> None:
        """
        Valid credentials asking to act as another identity are one failed
        login naming that identity, and no other line.
        """
        proto, transport, clock, factory = connect(PasswordHandler(), allowInsecureAuth=True)
        factory.addObserver(SessionLogger())
        sid = proto.session.id
        proto.dataReceived(b"EHLO c\r\n")
        proto.dataReceived(b"AUTH PLAIN " + b64(b"bob\0alice\0secret") + b"\r\n")
        self.assertIn(b"535 5.7.8", take(transport))
        self.assertEqual(
            [formatEvent(e) for e in self.events if sid in formatEvent(e)],
            [
                f"{sid} auth failed: PLAIN from unknown[192.0.2.7] user=<alice>"
                " authzid=<bob>: 535 5.7.8 Error: authentication failed: authorization failure"
            ],
        )

    def closedAtLimit(self, data: bytes, **options: Any) -> tuple[str, list[str]]:
        """
        Send C{data} after EHLO; the session must close.

        @return: The session id and its log lines.
        """
        proto, transport, clock, factory = connect(
            PasswordHandler(), allowInsecureAuth=True, authMethods=["PLAIN"], **options
        )
        factory.addObserver(SessionLogger())
        proto.dataReceived(b"EHLO c\r\n" + data)
        self.assertTrue(transport.disconnecting)
        return proto.session.id, self.lines()

    def test_unauthenticatedLimit(self) -> None:
        """
        An AUTH past C{maxAllowedUnauthenticatedCommands} is refused with
        one C{reject} line naming that limit, not as an AUTH lockout.
        """
        good = b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n"
        sid, lines = self.closedAtLimit(b"NOOP\r\n" * 9 + good)
        self.assertEqual(
            lines,
            [
                f"{sid} reject: AUTH from unknown[192.0.2.7]: 421 4.7.0"
                " Error: too many unauthenticated commands"
            ],
        )

    def test_unauthenticatedLimitAfterFailedLogin(self) -> None:
        """
        After a failed login, the AUTH that reaches the unauthenticated
        command limit is neither a second failed login nor a lockout.
        """
        wrong = b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\n"
        sid, lines = self.closedAtLimit(wrong + b"NOOP\r\n" * 8 + wrong)
        self.assertEqual(
            lines,
            [
                f"{sid} auth failed: PLAIN from unknown[192.0.2.7] user=<alice>: 535 5.7.8"
                " Error: authentication credentials invalid",
                f"{sid} reject: AUTH from unknown[192.0.2.7]: 421 4.7.0"
                " Error: too many unauthenticated commands",
            ],
        )

    def test_errorLimitOnAuth(self) -> None:
        """
        A failed login that reaches C{maxErrors} before C{maxAuthFailures}
        is logged once, then the error limit as a C{reject} line, not as a
        lockout.
        """
        wrong = b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\n"
        sid, lines = self.closedAtLimit(wrong * 2, maxErrors=2, authOptional=True)
        failed = (
            f"{sid} auth failed: PLAIN from unknown[192.0.2.7] user=<alice>: 535 5.7.8"
            " Error: authentication credentials invalid"
        )
        self.assertEqual(
            lines,
            [
                failed,
                failed,
                f"{sid} reject: AUTH from unknown[192.0.2.7]: 421 4.7.0"
                " Too many errors, closing connection",
            ],
        )

    def test_mechanismAsParsed(self) -> None:
        """
        The mechanism of a failed login is the one AUTH parsed, whatever
        white space (CR, TAB, VT, FF) separates it from the initial response:
        no control character reaches the line or its C{mechanism} field.
        """
        proto, transport, clock, factory = connect(
            PasswordHandler(), allowInsecureAuth=True, authMethods=["PLAIN"], maxAuthFailures=5
        )
        factory.addObserver(SessionLogger())
        sid = proto.session.id
        proto.dataReceived(b"EHLO c\r\n")
        for separator in (b"\r", b"\t", b"\x0b", b"\x0c"):
            proto.dataReceived(b"AUTH plain" + separator + b64(b"\0alice\0wrong") + b"\r\n")
        self.assertEqual(take(transport).count(b"535 5.7.8 "), 4)
        self.assertEqual(
            [line for line in self.lines() if "auth" in line],
            [
                f"{sid} auth failed: PLAIN from unknown[192.0.2.7] user=<alice>: 535 5.7.8"
                " Error: authentication credentials invalid"
            ]
            * 4,
        )
        self.assertEqual([e["mechanism"] for e in self.events if "mechanism" in e], ["PLAIN"] * 4)

    def test_syntaxErrorIsNoFailedLogin(self) -> None:
        """
        An AUTH refused before any credentials were checked (bad base64) is
        an ordinary refusal, not a failed login, and shows no argument.
        """
        proto, transport, clock, factory = connect(
            PasswordHandler(), allowInsecureAuth=True, authMethods=["PLAIN"]
        )
        factory.addObserver(SessionLogger())
        proto.dataReceived(b"EHLO c\r\nAUTH PLAIN !!!notbase64\r\n")
        (line,) = [line for line in self.lines() if "reject" in line or "auth" in line]
        self.assertIn("reject: AUTH from unknown[192.0.2.7]: 501", line)
        self.assertNotIn("notbase64", line)


def _session(**kwargs: Any) -> Session:
    values: dict[str, Any] = {"id": "sid1", "remoteAddress": ("192.0.2.1", 4000)}
    values.update(kwargs)
    return Session(**values)


class SessionEventTests(SynchronousTestCase):
    """
    TLS and message lines.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_tls(self) -> None:
        """
        A TLS session logs its protocol, cipher and SNI name.
        """
        tls = TLSInfo(servername="mx.example.com", protocol="TLSv1.3", cipher="TLS_AES_256")
        SessionLogger()("secure", _session(tls=tls, clientHostname="c.example"), {})
        (event,) = self.events
        self.assertEqual(
            formatEvent(event),
            "sid1 TLS TLSv1.3 TLS_AES_256 from c.example[192.0.2.1] sni=mx.example.com",
        )
        self.assertEqual((event["protocol"], event["cipher"]), ("TLSv1.3", "TLS_AES_256"))

    def test_tlsClientCertificate(self) -> None:
        """
        A TLS session whose client sent a certificate says whether it
        verified and names it by its SHA-256 fingerprint, as Postfix does
        (C{Trusted}/C{Untrusted}, C{ccert} fingerprints), never by its subject,
        which the client chose.
        """
        issued = CertificateAuthority(self.mktemp()).client("evil\r\n\x1b[31m")
        certificate = crypto.X509.from_cryptography(issued.certificate)
        fingerprint = issued.certificate.fingerprint(hashes.SHA256()).hex(":").upper()
        for verified, word in ((True, "verified"), (False, "unverified")):
            tls = TLSInfo(
                protocol="TLSv1.3",
                cipher="TLS_AES_256",
                peerCertificate=certificate,
                peerCertificateVerified=verified,
            )
            SessionLogger()("secure", _session(tls=tls, clientHostname="c.example"), {})
            event = self.events[-1]
            self.assertEqual(
                formatEvent(event),
                f"sid1 TLS TLSv1.3 TLS_AES_256 from c.example[192.0.2.1] sni=None"
                f" ccert={word} sha256={fingerprint}",
            )
            self.assertEqual(
                (event["clientCertificate"], event["clientCertificateSHA256"]),
                (word, fingerprint),
            )

    def test_unansweredMessage(self) -> None:
        """
        A message answered after its session ended says that its reply was
        not sent.
        """
        from twisted_smtpd._core import replies as catalogue

        logger = SessionLogger()
        data = {"size": 3, "replies": (catalogue.DATA_OK,), "unanswered": True}
        logger("message", _session(), data)
        logger("message", _session(), dict(data, unanswered=False))
        late, sent = (formatEvent(event) for event in self.events)
        self.assertTrue(late.endswith(" (session ended before this answer: not sent)"), late)
        self.assertNotIn("not sent", sent)
        self.assertEqual([event["unanswered"] for event in self.events], [True, False])

    def test_loggable(self) -> None:
        """
        L{loggable} escapes control characters (as L{twisted_smtpd._core.printable.printable} does),
        decodes bytes with undecodable ones escaped, and bounds the length.
        """
        self.assertEqual(loggable(b"a\r\nb\x00"), "a\\x0d\\x0ab\\x00")
        self.assertEqual(loggable("x" * 300, 10), "x" * 10 + "...")
        self.assertEqual(loggable(None), "")
        self.assertEqual(loggable(b"\xff"), "\\udcff")


class JSONLinesTests(SynchronousTestCase):
    """
    JSON lines a log shipper can use as they are.
    """

    def test_flat(self) -> None:
        """
        Each event is one flat object: ISO 8601 time, plain level name,
        namespace, text and the event's fields, without Twisted's keys.
        """
        out = io.StringIO()
        log = Logger(namespace="test", observer=jsonLogObserver(out))
        log.info("{session} to {recipients}", session="abc", recipients=["a@x", "b@y"])
        (line,) = out.getvalue().splitlines()
        event = json.loads(line)
        self.assertEqual(
            set(event), {"time", "level", "namespace", "text", "session", "recipients"}
        )
        self.assertEqual(
            (event["level"], event["namespace"], event["text"], event["recipients"]),
            ("info", "test", "abc to ['a@x', 'b@y']", ["a@x", "b@y"]),
        )
        self.assertRegex(event["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")

    def test_failure(self) -> None:
        """
        A failure's traceback is one string field of the same line.
        """
        try:
            raise ZeroDivisionError("boom")
        except ZeroDivisionError:
            failure = Failure()
        event = jsonEvent(
            {"log_failure": failure, "log_format": "boom", "log_level": LogLevel.critical}
        )
        self.assertEqual((event["level"], event["text"]), ("critical", "boom"))
        self.assertIn("ZeroDivisionError", event["traceback"])
        json.dumps(event)

    def test_textFollowsNamespace(self) -> None:
        """
        C{text} always follows C{namespace}, even when the event has a field
        of that name (C{SessionLogger} without a writer logs its line as
        C{text}), as fail2ban's JSON filter reads them.
        """
        event = jsonEvent(
            {
                "text": "sid close",
                "session": "sid",
                "log_format": "{text}",
                "log_namespace": "twisted_smtpd.session",
                "log_level": LogLevel.info,
                "log_time": 0.0,
            }
        )
        self.assertEqual(list(event), ["session", "time", "level", "namespace", "text"])
        self.assertIn(
            '"namespace": "twisted_smtpd.session", "text": "sid close"', json.dumps(event)
        )
