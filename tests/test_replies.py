"""
Tests for L{twisted_smtpd._core.replies} (reply serialisation and text
sanitising) and L{twisted_smtpd._core.errors.SMTPError}.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core import replies as replies
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.printable import UNSAFE
from twisted_smtpd._core.replies import (
    MAX_TEXT_LINES,
    MAX_TEXT_OCTETS,
    Reply,
    formatReply,
    sanitiseText,
)

PROPERTY = settings(max_examples=200, deadline=None)


def readReply(data: bytes, enhancedCodes: bool) -> Reply:
    """
    Read one serialised reply back, as a client would (RFC 5321 section
    4.2.1): every line C{code} C{"-"} text CRLF, the last C{code} C{" "} text
    CRLF, each text prefixed with the enhanced code when announced.
    """
    if not data.endswith(b"\r\n"):
        raise ValueError("reply does not end with CRLF")
    rawLines = data[:-2].split(b"\r\n")
    code = None
    enhanced = None
    lines = []
    for index, raw in enumerate(rawLines):
        last = index == len(rawLines) - 1
        if raw[3:4] != (b" " if last else b"-"):
            raise ValueError(f"bad separator in {raw!r}")
        lineCode = int(raw[:3])
        if code is not None and lineCode != code:
            raise ValueError("code changed within a reply")
        code = lineCode
        text = raw[4:].decode("utf-8")
        if enhancedCodes:
            lineEnhanced, space, text = text.partition(" ")
            if not space or (enhanced is not None and lineEnhanced != enhanced):
                raise ValueError(f"bad enhanced code in {raw!r}")
            enhanced = lineEnhanced
        lines.append(text)
    assert code is not None
    return Reply(code, enhanced, tuple(lines))


# What formatReply sends as it is: not the controls, separators and
# bidirectional format controls it escapes (printable.UNSAFE).
_safeText = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
    max_size=40,
).filter(lambda text: UNSAFE.search(text) is None)
_replies = st.builds(
    lambda code, detail, lines: Reply(code, f"{code // 100}.{detail[0]}.{detail[1]}", lines),
    st.integers(200, 599),
    st.tuples(st.integers(0, 999), st.integers(0, 999)),
    st.lists(_safeText, min_size=1, max_size=5).map(tuple),
)


class SessionRepliesTests(SynchronousTestCase):
    """
    The replies made for every session from a few texts (greeting, HELO,
    EHLO, QUIT) are made once per text: the same object comes back, which
    the protocol's cache of encoded replies finds by identity.
    """

    def test_sameObject(self) -> None:
        """
        The same texts give the very same reply object.
        """
        self.assertIs(
            replies.greeting("mx.example", None, False),
            replies.greeting("mx.example", None, False),
        )
        self.assertIs(replies.closing("mx.example"), replies.closing("mx.example"))
        self.assertIs(replies.helo("mx.example hi"), replies.helo("mx.example hi"))
        extensions = ("PIPELINING", "SIZE")
        self.assertIs(
            replies.ehlo("mx.example", "mx.example hi", extensions),
            replies.ehlo("mx.example", "mx.example hi", tuple(extensions)),
        )

    def test_distinctTexts(self) -> None:
        """
        Replies for other texts are other replies, with their own texts.
        """
        self.assertEqual(
            replies.greeting("mx.example", None, True), Reply(220, None, ("mx.example LMTP",))
        )
        self.assertEqual(
            replies.greeting("mx.example", "hello", False),
            Reply(220, None, ("mx.example ESMTP hello",)),
        )
        self.assertEqual(
            replies.closing("other.example"),
            Reply(221, "2.0.0", ("other.example Closing connection",)),
        )
        self.assertEqual(replies.helo("b"), Reply(250, None, ("b",)))
        self.assertEqual(replies.ehlo("mx.example", "a", ("DSN",)), Reply(250, None, ("a", "DSN")))
        self.assertEqual(
            replies.ehlo("mx.example", "a", ("DSN", "SMTPUTF8")),
            Reply(250, None, ("a", "DSN", "SMTPUTF8")),
        )


class FormatReplyTests(SynchronousTestCase):
    """
    Tests for L{formatReply}.
    """

    def test_singleLine(self) -> None:
        """
        A one-line reply is the code, a space, the enhanced code and the text.
        """
        self.assertEqual(formatReply(replies.MAIL_OK, True), b"250 2.1.0 Accepted\r\n")
        self.assertEqual(formatReply(replies.MAIL_OK, False), b"250 Accepted\r\n")

    def test_multiLine(self) -> None:
        """
        Every line but the last has a hyphen after the code.
        """
        reply = Reply(250, None, ("mail.example", "PIPELINING", "SIZE 10"))
        self.assertEqual(
            formatReply(reply, True), b"250-mail.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        )

    def test_noEnhancedCode(self) -> None:
        """
        Replies without an enhanced code get none even when codes are on.
        """
        self.assertEqual(
            formatReply(replies.HELO_REQUIRES_DOMAIN, True), b"501 Syntax: EHLO hostname\r\n"
        )

    def test_controlsEscaped(self) -> None:
        """
        A line holding a control character, C0, DEL or C1 (U+0085, which
        some software takes for a line break), is sent escaped.
        """
        for text, escaped in (
            ("a\rb", b"a\\x0db"),
            ("a\x7fb", b"a\\x7fb"),
            ("a\x85b", b"a\\x85b"),
            ("a\x9fb", b"a\\x9fb"),
        ):
            reply = Reply(250, None, (text,))
            self.assertEqual(formatReply(reply, False), b"250 " + escaped + b"\r\n")

    @PROPERTY
    @given(_replies, st.booleans())
    def test_roundTrip(self, reply: Reply, enhancedCodes: bool) -> None:
        """
        A client reading the serialised reply gets the same code, enhanced code
        and lines; every line ends with CRLF.
        """
        data = formatReply(reply, enhancedCodes)
        expected = reply if enhancedCodes else Reply(reply.code, None, reply.lines)
        self.assertEqual(readReply(data, enhancedCodes), expected)
        self.assertEqual(data.count(b"\r\n"), len(reply.lines))
        self.assertEqual(data.count(b"\n"), len(reply.lines))
        self.assertEqual(data.count(b"\r"), len(reply.lines))


class SanitiseTextTests(SynchronousTestCase):
    """
    Tests for L{sanitiseText}.
    """

    def test_lineBreaks(self) -> None:
        """
        CRLF, CR and LF each end a line.
        """
        self.assertEqual(sanitiseText("a\r\nb\rc\nd"), ("a", "b", "c", "d"))
        self.assertEqual(sanitiseText("one"), ("one",))
        self.assertEqual(sanitiseText(""), ("",))

    def test_controls(self) -> None:
        """
        Other control characters become spaces, C1 ones (U+0085, which some
        software takes for a line break) too.
        """
        self.assertEqual(sanitiseText("a\x00b\tc\x1b[0m\x7f"), ("a b c [0m ",))
        self.assertEqual(sanitiseText("a\x85b\x80c\x9f"), ("a b c ",))

    def test_separatorsAndBidi(self) -> None:
        """
        The line and paragraph separators and the bidirectional controls
        become spaces too: they could break or disguise a line.
        """
        self.assertEqual(
            sanitiseText("250 ok\u2028250 forged\u2029 \u202egnirts\u202c"),
            ("250 ok 250 forged   gnirts ",),
        )

    def test_bounded(self) -> None:
        """
        At most C{MAX_TEXT_LINES} lines are kept, each cut to
        C{MAX_TEXT_OCTETS} octets of UTF-8; a cut is marked.
        """
        lines = sanitiseText("x" * 60000 + "\n" + "y\n" * 5000)
        self.assertEqual(len(lines), MAX_TEXT_LINES)
        self.assertEqual(lines[0], "x" * (MAX_TEXT_OCTETS - 3) + "...")
        self.assertEqual(lines[-1], "y...")
        (line,) = sanitiseText("\u00e9" * 1000)
        self.assertLessEqual(len(line.encode("utf-8")), MAX_TEXT_OCTETS)
        self.assertTrue(line.endswith("\u00e9..."))
        self.assertEqual(sanitiseText("z" * MAX_TEXT_OCTETS), ("z" * MAX_TEXT_OCTETS,))

    @PROPERTY
    @given(st.text())
    def test_noControlSurvives(self, text: str) -> None:
        """
        No output line contains CR, LF or another character that could break
        or disguise it, none is longer than C{MAX_TEXT_OCTETS} octets, and
        the number of lines follows the line breaks up to C{MAX_TEXT_LINES}.
        """
        lines = sanitiseText(text)
        self.assertGreaterEqual(len(lines), 1)
        for line in lines:
            self.assertIsNone(UNSAFE.search(line), line)
            self.assertLessEqual(len(line.encode("utf-8")), MAX_TEXT_OCTETS)
        breaks = text.replace("\r\n", "\n").count("\n") + text.replace("\r\n", "").count("\r")
        self.assertEqual(len(lines), min(breaks + 1, MAX_TEXT_LINES))

    @PROPERTY
    @given(st.text())
    def test_onlyControlsChange(self, text: str) -> None:
        """
        Nothing else changes in text within the bounds: the lines joined
        with LF are the text with its line breaks made LF and every other
        unsafe character (C0, DEL, C1, surrogates, separators, bidi
        controls) made a space.
        """
        lines = sanitiseText(text)
        broken = text.replace("\r\n", "\n").replace("\r", "\n")
        expected = "".join(" " if c != "\n" and UNSAFE.match(c) else c for c in broken)
        parts = expected.split("\n")
        if len(parts) > MAX_TEXT_LINES or any(len(p.encode()) > MAX_TEXT_OCTETS for p in parts):
            return
        self.assertEqual("\n".join(lines), expected)

    @PROPERTY
    @given(st.text(), st.booleans())
    def test_formattedNoInjection(self, text: str, enhancedCodes: bool) -> None:
        """
        Untrusted text, sanitised and formatted, gives exactly one CRLF per
        line and no bare CR or LF.
        """
        lines = sanitiseText(text)
        data = formatReply(Reply(550, "5.0.0", lines), enhancedCodes)
        self.assertEqual(data.count(b"\r"), len(lines))
        self.assertEqual(data.count(b"\n"), len(lines))
        self.assertEqual(data.count(b"\r\n"), len(lines))


class SMTPErrorTests(SynchronousTestCase):
    """
    Tests for L{SMTPError.toReply}.
    """

    def test_toReply(self) -> None:
        """
        Code, enhanced code and text become a L{Reply}.
        """
        self.assertEqual(
            SMTPError(550, "No such user", "5.1.1").toReply(),
            Reply(550, "5.1.1", ("No such user",)),
        )

    def test_defaultEnhanced(self) -> None:
        """
        Without an enhanced code, the generic one of the class is used.
        """
        self.assertEqual(SMTPError(451, "Later").toReply(), Reply(451, "4.0.0", ("Later",)))
        self.assertEqual(SMTPError(250, "Fine").toReply().enhanced, "2.0.0")

    def test_invalidEnhanced(self) -> None:
        """
        An enhanced code that is malformed or of another class is replaced by
        the generic one.
        """
        for enhanced in ["4.1.1", "5.1", "5.1.1.1", "x.1.1", "5.1.1000", "", "5.1.a"]:
            self.assertEqual(SMTPError(550, "No", enhanced).toReply().enhanced, "5.0.0", enhanced)

    def test_multiLine(self) -> None:
        """
        Line breaks in the message make a multi-line reply; no CR or LF reaches
        the text.
        """
        reply = SMTPError(554, "first\r\nsecond\nthird\r").toReply()
        self.assertEqual(reply.lines, ("first", "second", "third", ""))
        data = formatReply(reply, True)
        self.assertEqual(
            data, b"554-5.0.0 first\r\n554-5.0.0 second\r\n554-5.0.0 third\r\n554 5.0.0 \r\n"
        )

    def test_injectionAttempt(self) -> None:
        """
        A message trying to smuggle a whole reply stays inside the error's own
        lines, each prefixed with its code.
        """
        data = formatReply(SMTPError(550, "no\r\n250 2.0.0 OK").toReply(), False)
        self.assertEqual(data, b"550-no\r\n550 250 2.0.0 OK\r\n")

    def test_codeRange(self) -> None:
        """
        A code outside 200 to 599 is refused at construction.
        """
        for code in (0, 199, 600, 1000, -550):
            self.assertRaises(ValueError, SMTPError, code, "x")

    @PROPERTY
    @given(st.integers(200, 599), st.text(), st.one_of(st.none(), st.text(max_size=8)))
    def test_anyInputSafe(self, code: int, message: str, enhanced: str | None) -> None:
        """
        Any message and enhanced code give a reply that formats to well-formed
        lines of the error's code.
        """
        reply = SMTPError(code, message, enhanced).toReply()
        data = formatReply(reply, True)
        read = readReply(data, True)
        self.assertEqual(read.code, code)
        self.assertEqual(read.lines, reply.lines)
        assert read.enhanced is not None
        self.assertEqual(read.enhanced.split(".")[0], str(code // 100))
