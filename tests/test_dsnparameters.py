# -*- test-case-name: tests.test_dsnparameters -*-
"""
What a hostile client can put into the DSN and AUTH parameters of MAIL and
RCPT: the C{\\x{HEX}} escapes of a C{utf-8} C{ORCPT} (RFC 6533 section 3),
checked and decoded before they reach a handler, a DSN or a next hop; and
xtext hex in either case, as Postfix reads it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests import replies as expected
from tests.test_protocol import RecordingHandler, connect, take
from twisted_smtpd._core import replies
from twisted_smtpd._core.address import decodeXtext, parseMail, parseRcpt
from twisted_smtpd._core.dsn import RecipientStatus, buildReport
from twisted_smtpd._core.grammar import XCLIENT_ATTRIBUTES, parseAttributes
from twisted_smtpd._core.replies import CommandError
from twisted_smtpd._core.session import Address, AddressDSN, Session
from twisted_smtpd._serving.logging import NAMESPACE, SessionLogger

#: ORCPT addresses of the utf-8 type that RFC 6533 section 3 refuses, and
#: why: each would reach a handler, a DSN or a next hop that decodes it.
REFUSED_UTF8_ADDRESSES = {
    b"a\\x{00}b@example.com": "NUL",
    b"a\\x{0D}\\x{0A}b@example.com": "CR LF",
    b"a\\x{d}\\x{a}b@example.com": "CR LF, one digit",
    b"a\\x{09}b@example.com": "TAB",
    b"a\\x{1B}b@example.com": "ESC",
    b"a\\x{7F}b@example.com": "DEL",
    b"a\\x{85}b@example.com": "C1 NEL",
    b"a\\x{41}b@example.com": "printable ASCII 'A' escaped",
    b"a\\x{40}example.com": "'@' escaped",
    b"a\\x{00E9}b@example.com": "leading zeros",
    b"a\\x{D800}b@example.com": "surrogate",
    b"a\\x{110000}b@example.com": "past U+10FFFF",
    b"a\\x{1234567}b@example.com": "seven digits",
    b"a\\x{}b@example.com": "empty escape",
    b"a\\x{E9b@example.com": "unclosed escape",
    b"a\\x{GG}b@example.com": "not hex",
    b"a\\xE9b@example.com": "no braces",
    b"a\\b@example.com": "lone backslash",
    b"a+2Bb@example.com": "raw '+' (xtext, not RFC 6533)",
}


class Utf8OrcptTests(SynchronousTestCase):
    """
    A C{utf-8} C{ORCPT} is checked against RFC 6533 section 3 and decoded.
    """

    def test_decoded(self) -> None:
        """
        The escapes of a C{utf-8} address (hex in either case, as Postfix's
        C{uxtext_unquote} reads them) are decoded in C{dsn.orcpt}, as
        C{rfc822} xtext is; C{args} keeps the value as sent.
        """
        address = parseRcpt(b"TO:<a@example.com> ORCPT=utf-8;j\\x{F6}rg@example.com", False)
        self.assertEqual(address.dsn, AddressDSN((), "utf-8;j\u00f6rg@example.com"))
        self.assertEqual(address.args, {"ORCPT": "utf-8;j\\x{F6}rg@example.com"})
        lower = parseRcpt(b"TO:<a@example.com> ORCPT=UTF-8;j\\x{f6}rg@example.com", False)
        self.assertEqual(lower.dsn, AddressDSN((), "UTF-8;j\u00f6rg@example.com"))
        specials = b'TO:<a@example.com> ORCPT=utf-8;"a\\x{20}\\x{2B}\\x{3D}\\x{5C}"@example.com'
        self.assertEqual(
            parseRcpt(specials, False).dsn, AddressDSN((), 'utf-8;"a +=\\"@example.com')
        )
        emoji = parseRcpt(b"TO:<a@example.com> ORCPT=utf-8;\\x{1F600}@example.com", False)
        self.assertEqual(emoji.dsn, AddressDSN((), "utf-8;\U0001f600@example.com"))

    def test_unitext(self) -> None:
        """
        With SMTPUTF8, the address may hold UTF-8 as it is
        (C{utf-8-addr-unitext}), escapes among it.
        """
        argument = "TO:<a@example.com> ORCPT=utf-8;j\u00f6rg\\x{2B}1@example.com".encode()
        address = parseRcpt(argument, True)
        self.assertEqual(address.dsn, AddressDSN((), "utf-8;j\u00f6rg+1@example.com"))

    def test_refused(self) -> None:
        """
        A malformed escape, an escape of a character RFC 6533 does not let
        one stand for, an escaped control character or NUL, and a raw C{+}
        get C{501 5.5.4} (BAD_ORCPT), with or without SMTPUTF8.
        """
        for value, why in REFUSED_UTF8_ADDRESSES.items():
            for smtpUtf8 in (False, True):
                with self.assertRaises(CommandError, msg=why) as e:
                    parseRcpt(b"TO:<a@example.com> ORCPT=utf-8;" + value, smtpUtf8)
                self.assertEqual(e.exception.reply, replies.BAD_ORCPT, why)

    def test_reportEscapes(self) -> None:
        """
        A decoded C{utf-8} ORCPT goes into a DSN's C{Original-Recipient}
        in the 7-bit form again: a space, C{+}, C{=} or backslash it holds
        is escaped there too, never written raw for a reader to decode.
        """
        address = parseRcpt(
            b'TO:<a@example.com> ORCPT=utf-8;"\\x{5C}x{41}\\x{20}\\x{E9}"@example.com', False
        )
        assert address.dsn is not None and address.dsn.orcpt is not None
        report = buildReport(
            reportingMta="mx.example.com",
            sender="s@example.org",
            recipients=[RecipientStatus("a@example.com", address.dsn.orcpt, "failed", "5.1.1")],
        )
        self.assertIn(b'Original-Recipient: utf-8;"\\x{5C}x{41}\\x{20}\\x{E9}"@example.com', report)


class Utf8OrcptSessionTests(SynchronousTestCase):
    """
    A refused C{utf-8} ORCPT in a session: one 501, one log line, nothing
    for the handler.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_refusedOnce(self) -> None:
        """
        RCPT with an ORCPT escaping CR LF gets C{501 5.5.4} and one
        C{reject:} line, its text escaped; C{onRcptTo} never sees it.
        """
        handler = RecordingHandler()
        proto, transport, clock, factory = connect(handler)
        factory.addObserver(SessionLogger())
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@example.org>\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<a@example.com> ORCPT=utf-8;a\\x{0D}\\x{0A}b@example.com\r\n")
        self.assertEqual(take(transport), b"501 5.5.4 Error: bad ORCPT syntax\r\n")
        lines = [formatEvent(e) for e in self.events if e["log_namespace"] == NAMESPACE]
        self.assertEqual(
            lines,
            [
                f"{proto.session.id} reject: RCPT from unknown[192.0.2.7]: 501 5.5.4"
                " <a@example.com>: Error: bad ORCPT syntax; from=<s@example.org>"
            ],
        )
        self.assertEqual(handler.calls, ["helo c", "mail s@example.org"])


class LowerCaseXtextTests(SynchronousTestCase):
    """
    xtext hex in lower case (C{+2b}) reads as in upper case, as Postfix's
    C{xtext_unquote} reads it, in every parameter that holds xtext.
    """

    def test_decode(self) -> None:
        """
        C{+2b} and C{+3d} decode to C{+} and C{=}; mixed case too.
        """
        self.assertEqual(decodeXtext("a+2bb+3dc+c3+A9"), "a+b=c\u00e9")

    def test_parameters(self) -> None:
        """
        ENVID, AUTH and an rfc822 ORCPT in lower-case hex are accepted and
        decoded; one standing for a control character is still refused.
        """
        request = parseMail(b"FROM:<> ENVID=QQ+2b1 AUTH=e+3dmc2@example.com")
        self.assertEqual(request.dsn.envid, "QQ+1")
        self.assertEqual(request.auth, "e=mc2@example.com")
        address = parseRcpt(b"TO:<a@example.com> ORCPT=rfc822;b+2bc@example.com", False)
        self.assertEqual(address.dsn, AddressDSN((), "rfc822;b+c@example.com"))
        for bad in (b"FROM:<> ENVID=a+0d+0ab", b"FROM:<> AUTH=a+0a@b"):
            self.assertRaises(CommandError, parseMail, bad)

    def test_xclient(self) -> None:
        """
        An XCLIENT value in lower-case hex is decoded as Postfix decodes it.
        """
        attributes = parseAttributes(b"LOGIN=a+2bb+40c", XCLIENT_ATTRIBUTES)
        self.assertEqual(attributes, {"LOGIN": "a+b@c"})


class UntrustedAuthTests(SynchronousTestCase):
    """
    RFC 4954 section 5: the C{AUTH=} of a client that has not
    authenticated is accepted, and never taken for an identity.
    """

    def test_unauthenticated(self) -> None:
        """
        C{AUTH=} from a client that has not authenticated gets 250, the
        handler sees it only as sent in C{args} (still xtext), and
        C{session.user} stays C{None}.
        """
        seen: list[tuple[Any, Any]] = []

        class Handler(RecordingHandler):
            def onMailFrom(self, address: Address, session: Session) -> object:
                seen.append((dict(address.args), session.user))
                return None

        proto, transport, clock, factory = connect(Handler())
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"MAIL FROM:<s@example.org> AUTH=boss+40example.org\r\n")
        self.assertEqual(take(transport), expected.MAIL_OK)
        proto.dataReceived(b"RSET\r\nMAIL FROM:<s@example.org> AUTH=<>\r\n")
        self.assertEqual(take(transport), expected.RESET + expected.MAIL_OK)
        self.assertEqual(seen, [({"AUTH": "boss+40example.org"}, None), ({"AUTH": "<>"}, None)])
        self.assertIsNone(proto.session.user)

    def test_malformed(self) -> None:
        """
        An C{AUTH=} that is not xtext gets C{501 5.5.4}; an empty one too.
        """
        proto, transport, clock, factory = connect()
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        for line in (b"MAIL FROM:<s@example.org> AUTH=a+4\r\n", b"MAIL FROM:<> AUTH=\r\n"):
            proto.dataReceived(line)
            self.assertTrue(take(transport).startswith(b"501 5.5.4 "), line)


class Utf8EnvidTests(SynchronousTestCase):
    """
    UTF-8 in C{ENVID}: as it is only with SMTPUTF8 (RFC 6531 section 3.3),
    in xtext hex with or without it; never a control character.
    """

    def test_raw(self) -> None:
        """
        A raw UTF-8 ENVID is accepted with SMTPUTF8 and refused with
        C{501 5.5.4} without it.
        """
        request = parseMail("FROM:<> SMTPUTF8 ENVID=\u00e9t\u00e9-1".encode())
        self.assertEqual(request.dsn.envid, "\u00e9t\u00e9-1")
        with self.assertRaises(CommandError) as e:
            parseMail("FROM:<> ENVID=\u00e9t\u00e9-1".encode())
        self.assertEqual(e.exception.reply, replies.NON_ASCII_PARAMETER)

    def test_hex(self) -> None:
        """
        UTF-8 octets in xtext hex are decoded (the relay sends a UTF-8
        ENVID so to a next hop without SMTPUTF8); a C1 control so written
        (U+0085, C{+C2+85}) is refused.
        """
        self.assertEqual(parseMail(b"FROM:<> ENVID=+C3+A9t+c3+a9").dsn.envid, "\u00e9t\u00e9")
        with self.assertRaises(CommandError) as e:
            parseMail(b"FROM:<> SMTPUTF8 ENVID=a+C2+85b")
        self.assertEqual(e.exception.reply, replies.BAD_ENVID)
