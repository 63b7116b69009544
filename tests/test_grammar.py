"""
Tests for L{twisted_smtpd._core.grammar}: command lines, the phase table and
HELO/EHLO/LHLO arguments.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core import address as _address
from twisted_smtpd._core import grammar as _grammar
from twisted_smtpd._core import replies as replies
from twisted_smtpd._core.grammar import (
    Command,
    CommandError,
    Phase,
    Verb,
    checkPhase,
    looksLikeHTTP,
    parseCommand,
    parseHelo,
)

PROPERTY = settings(max_examples=200, deadline=None)


class ParseCommandTests(SynchronousTestCase):
    """
    Tests for L{parseCommand}.
    """

    def assertUnknown(self, line: bytes) -> None:
        with self.assertRaises(CommandError) as e:
            parseCommand(line)
        self.assertEqual(e.exception.reply, replies.UNKNOWN_COMMAND)

    def test_everyVerb(self) -> None:
        """
        Every verb is recognised by its upper-case name alone.
        """
        for verb in Verb:
            self.assertEqual(parseCommand(verb.value.encode()), Command(verb, b""))

    def test_caseInsensitive(self) -> None:
        """
        The verb is recognised in any case; the argument keeps its case.
        """
        self.assertEqual(
            parseCommand(b"mail From:<a@example.com>"),
            Command(Verb.MAIL, b"From:<a@example.com>"),
        )
        self.assertEqual(parseCommand(b"StartTls"), Command(Verb.STARTTLS, b""))

    def test_argumentSpaces(self) -> None:
        """
        The spaces separating verb and argument are not part of the argument,
        nor are trailing spaces and tabs.
        """
        self.assertEqual(
            parseCommand(b"EHLO   client.example \t "), Command(Verb.EHLO, b"client.example")
        )
        self.assertEqual(parseCommand(b"NOOP  "), Command(Verb.NOOP, b""))
        self.assertEqual(parseCommand(b"QUIT\t"), Command(Verb.QUIT, b""))

    def test_argumentInnerSpacesKept(self) -> None:
        """
        Spaces inside the argument are kept.
        """
        self.assertEqual(
            parseCommand(b"MAIL FROM:<a@example.com>  SIZE=10"),
            Command(Verb.MAIL, b"FROM:<a@example.com>  SIZE=10"),
        )

    def test_verbMustEndAtSpace(self) -> None:
        """
        A known verb followed by anything but a space or the end of the line is
        unknown.
        """
        self.assertUnknown(b"MAILX")
        self.assertUnknown(b"MAIL:FROM:<a@example.com>")
        self.assertUnknown(b"MAIL\tFROM:<a@example.com>")
        self.assertUnknown(b"STARTTLSX")

    def test_unknownVerb(self) -> None:
        """
        A verb the server does not know gets 500 5.5.2.
        """
        self.assertUnknown(b"TURN")
        self.assertUnknown(b"EXPN postmaster")
        self.assertUnknown(b"GET / HTTP/1.1")
        self.assertUnknown(b"XVERYLONGVERBNAME argument")

    def test_emptyLine(self) -> None:
        """
        An empty or blank line is an unknown command.
        """
        self.assertUnknown(b"")
        self.assertUnknown(b" ")
        self.assertUnknown(b"  NOOP")

    def test_nonAsciiVerb(self) -> None:
        """
        Bytes outside ASCII in the verb make it unknown, never another error.
        """
        self.assertUnknown(b"MA\xc3\x8fL FROM:<a@example.com>")
        self.assertUnknown(b"\xff\xfe")

    @PROPERTY
    @given(st.binary(max_size=600))
    def test_arbitraryBytes(self, line: bytes) -> None:
        """
        Any bytes give a L{Command} or L{CommandError}, nothing else.
        """
        try:
            command = parseCommand(line)
        except CommandError as e:
            self.assertEqual(e.reply, replies.UNKNOWN_COMMAND)
        else:
            self.assertIsInstance(command.verb, Verb)
            self.assertFalse(command.argument.endswith((b" ", b"\t")))

    @PROPERTY
    @given(st.sampled_from(list(Verb)), st.binary(max_size=100))
    def test_knownVerbAnyArgument(self, verb: Verb, argument: bytes) -> None:
        """
        A known verb in random case, a space and any argument parse to that verb
        and the argument without its surrounding spaces.
        """
        name = "".join(c.lower() if i % 2 else c for i, c in enumerate(verb.value))
        command = parseCommand(name.encode() + b" " + argument)
        self.assertEqual(command, Command(verb, argument.lstrip(b" ").rstrip(b" \t")))


class LooksLikeHTTPTests(SynchronousTestCase):
    """
    Tests for L{looksLikeHTTP}.
    """

    def test_requestLines(self) -> None:
        """
        HTTP request lines are recognised.
        """
        for line in [
            b"GET / HTTP/1.1",
            b"POST /x HTTP/1.0",
            b"CONNECT host.example:443 HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"get /index.html",
            b"DELETE /thing",
            b"PRI * HTTP/2.0",
            b"BREW /pot HTTP/1.1",
        ]:
            self.assertTrue(looksLikeHTTP(line), line)

    def test_headers(self) -> None:
        """
        Common HTTP header lines are recognised, in any case.
        """
        for line in [
            b"Host: mail.example.com",
            b"User-Agent: curl/8.0",
            b"accept: */*",
            b"Content-Length: 10",
            b"Connection: keep-alive",
        ]:
            self.assertTrue(looksLikeHTTP(line), line)

    def test_notHTTP(self) -> None:
        """
        Unknown SMTP-ish commands and mail headers are not taken for HTTP.
        """
        for line in [
            b"",
            b"GET",
            b"GETX /",
            b"TURN",
            b"EXPN postmaster",
            b"From: someone@example.com",
            b"Subject: GET / HTTP",
            b"Hostname: x",
            b"XHTTP/1.1",
        ]:
            self.assertFalse(looksLikeHTTP(line), line)


class CheckPhaseTests(SynchronousTestCase):
    """
    Tests for L{checkPhase}.
    """

    def assertRefused(self, verb: Verb, phase: Phase, lmtp: bool, reply: replies.Reply) -> None:
        with self.assertRaises(CommandError) as e:
            checkPhase(verb, phase, lmtp)
        self.assertEqual(e.exception.reply, reply)

    def test_transactionBeforeHello(self) -> None:
        """
        MAIL, RCPT, DATA and BDAT before the greeting get 503 NEED_HELO, or
        NEED_LHLO in LMTP.
        """
        for verb in (Verb.MAIL, Verb.RCPT, Verb.DATA, Verb.BDAT):
            self.assertRefused(verb, Phase.CONNECTED, False, replies.NEED_HELO)
            self.assertRefused(verb, Phase.CONNECTED, True, replies.NEED_LHLO)

    def test_nestedMail(self) -> None:
        """
        MAIL during a transaction gets 503 NESTED_MAIL.
        """
        for lmtp in (False, True):
            self.assertRefused(Verb.MAIL, Phase.MAIL, lmtp, replies.NESTED_MAIL)
            self.assertRefused(Verb.MAIL, Phase.RCPT, lmtp, replies.NESTED_MAIL)

    def test_rcptNeedsMail(self) -> None:
        """
        RCPT without MAIL gets 503 NEED_MAIL.
        """
        self.assertRefused(Verb.RCPT, Phase.GREETED, False, replies.NEED_MAIL)

    def test_dataNeedsRecipients(self) -> None:
        """
        DATA and BDAT without MAIL get NEED_MAIL, and without a recipient
        NEED_RCPT.
        """
        for verb in (Verb.DATA, Verb.BDAT):
            self.assertRefused(verb, Phase.GREETED, False, replies.NEED_MAIL)
            self.assertRefused(verb, Phase.MAIL, False, replies.NEED_RCPT)
            self.assertRefused(verb, Phase.MAIL, True, replies.NEED_RCPT)

    def test_transactionAllowed(self) -> None:
        """
        The transaction commands are allowed in their own phases.
        """
        for lmtp in (False, True):
            checkPhase(Verb.MAIL, Phase.GREETED, lmtp)
            checkPhase(Verb.RCPT, Phase.MAIL, lmtp)
            checkPhase(Verb.RCPT, Phase.RCPT, lmtp)
            checkPhase(Verb.DATA, Phase.RCPT, lmtp)
            checkPhase(Verb.BDAT, Phase.RCPT, lmtp)

    def test_otherProtocolGreeting(self) -> None:
        """
        HELO and EHLO are unknown in LMTP, and LHLO in SMTP, in every phase.
        """
        for phase in Phase:
            self.assertRefused(Verb.HELO, phase, True, replies.UNKNOWN_COMMAND)
            self.assertRefused(Verb.EHLO, phase, True, replies.UNKNOWN_COMMAND)
            self.assertRefused(Verb.LHLO, phase, False, replies.UNKNOWN_COMMAND)
            checkPhase(Verb.LHLO, phase, True)
            checkPhase(Verb.HELO, phase, False)
            checkPhase(Verb.EHLO, phase, False)

    def test_alwaysAllowed(self) -> None:
        """
        The other commands pass in every phase; their finer rules are the
        protocol's.
        """
        verbs = (
            Verb.RSET,
            Verb.NOOP,
            Verb.QUIT,
            Verb.VRFY,
            Verb.HELP,
            Verb.STARTTLS,
            Verb.AUTH,
            Verb.XCLIENT,
            Verb.XFORWARD,
        )
        for verb in verbs:
            for phase in Phase:
                for lmtp in (False, True):
                    checkPhase(verb, phase, lmtp)


class ParseHeloTests(SynchronousTestCase):
    """
    Tests for L{parseHelo}.
    """

    def assertRefused(self, argument: bytes, reply: replies.Reply, lenient: bool = False) -> None:
        with self.assertRaises(CommandError) as e:
            parseHelo(argument, lenient)
        self.assertEqual(e.exception.reply, reply)

    def test_names(self) -> None:
        """
        Domains, address literals and anything printable are accepted as sent.
        """
        for name in [
            "client.example.com",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "localhost",
            "my_host.example.",
            "WIN-PC",
            "[not-an-address]",
            "bücher.example",
        ]:
            self.assertEqual(parseHelo(name.encode()), name)

    def test_textAfterNameIgnored(self) -> None:
        """
        Text after the first space is ignored, as Postfix does.
        """
        self.assertEqual(parseHelo(b"client.example (it's me)"), "client.example")

    def test_empty(self) -> None:
        """
        An empty argument gets 501 HELO_REQUIRES_DOMAIN, with no enhanced code
        (RFC 2034 section 3).
        """
        self.assertRefused(b"", replies.HELO_REQUIRES_DOMAIN)
        self.assertRefused(b"   ", replies.HELO_REQUIRES_DOMAIN)
        self.assertEqual(replies.HELO_REQUIRES_DOMAIN.code, 501)
        self.assertIsNone(replies.HELO_REQUIRES_DOMAIN.enhanced)

    def test_tooLong(self) -> None:
        """
        A name of more than 255 octets, longer than any domain (RFC 5321
        section 4.5.3.1.2), gets 501 HELO_TOO_LONG; 255 octets are accepted.
        """
        longest = ("\u061c" * 127 + "a").encode()
        self.assertEqual(len(longest), _grammar.MAX_HELO)
        self.assertEqual(parseHelo(longest), longest.decode())
        self.assertEqual(parseHelo(b"a" * 255 + b" " + b"b" * 300), "a" * 255)
        for argument in [b"a" * 256, longest + b"a", b"\xff" * 256]:
            self.assertRefused(argument, replies.HELO_TOO_LONG)
            self.assertRefused(argument, replies.HELO_TOO_LONG, lenient=True)
        self.assertEqual(replies.HELO_TOO_LONG.code, 501)

    def test_controlCharacters(self) -> None:
        """
        Control characters anywhere in the argument get 501.
        """
        for argument in [b"a\x00b", b"host\x7f", b"\x1b[31m", b"host.example x\x00", b"a\tb"]:
            self.assertRefused(argument, replies.BAD_HELO_HOSTNAME)
            self.assertRefused(argument, replies.BAD_HELO_HOSTNAME, lenient=True)

    def test_c1ControlCharacters(self) -> None:
        """
        The C1 controls (U+0080 to U+009F, such as NEL, which some software
        takes for a line break) get 501 anywhere in the argument, as in MAIL
        and RCPT; the characters around them are accepted.
        """
        for char in ["\u0080", "\u0085", "\u009b", "\u009f"]:
            for text in [f"a{char}b", f"host.example x{char}"]:
                self.assertRefused(text.encode(), replies.BAD_HELO_HOSTNAME)
                self.assertRefused(text.encode(), replies.BAD_HELO_HOSTNAME, lenient=True)
        self.assertEqual(parseHelo("h\u00a0\u007e".encode()), "h\u00a0\u007e")
        self.assertEqual(parseHelo("caf\u00e9".encode()), "caf\u00e9")

    def test_invalidUtf8(self) -> None:
        """
        A name that is not UTF-8 gets 501, unless lenient, which replaces the
        bad bytes.
        """
        self.assertRefused(b"caf\xe9", replies.BAD_HELO_HOSTNAME)
        self.assertEqual(parseHelo(b"caf\xe9", lenient=True), "caf\ufffd")


class ExportTests(SynchronousTestCase):
    """
    The MAIL/RCPT parsers are reachable from L{twisted_smtpd._core.grammar}.
    """

    def test_reexports(self) -> None:
        """
        The names re-exported from L{twisted_smtpd._core.address} are the same
        objects.
        """
        for name in ("MailRequest", "parseMail", "parseRcpt", "decodeXtext", "encodeXtext"):
            self.assertIs(getattr(_grammar, name), getattr(_address, name))
        self.assertIs(_grammar.CommandError, replies.CommandError)


class BdatArgumentTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        C{BDAT size [LAST]}: the size in decimal, LAST in any case.
        """
        from twisted_smtpd._core.grammar import parseBdat

        self.assertEqual(parseBdat(b"0 LAST"), (0, True))
        self.assertEqual(parseBdat(b"1024"), (1024, False))
        self.assertEqual(parseBdat(b"7 last"), (7, True))

    def test_refused(self) -> None:
        """
        Anything else is a 501.
        """
        from twisted_smtpd._core.grammar import parseBdat
        from twisted_smtpd._core.replies import BDAT_SYNTAX

        for bad in (b"", b"x", b"-1", b"1 LASTX", b"1 2", b"9" * 19):
            e = self.assertRaises(CommandError, parseBdat, bad)
            self.assertEqual(e.reply, BDAT_SYNTAX)
