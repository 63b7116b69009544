# -*- test-case-name: tests.test_replyascii -*-
"""
Non-ASCII text in a reply (a handler's refusal, its C{onData} text, a next
hop's words it passes on) is sent as UTF-8 only inside a mail transaction
whose MAIL carried C{SMTPUTF8} (RFC 6531 section 3.7.4.1); anywhere else
each such character is written as its escape, reply text being US-ASCII
(RFC 5321 section 4.2).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_protocol import RecordingHandler, connect, take
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.replies import MAX_TEXT_OCTETS, Reply, asciiEscaped, formatReply
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd.interfaces import IMessageStream

#: A refusal text in German, as a handler may well write it.
TEXT = "Benutzer unbekannt: M\u00fcller"
ESCAPED = b"Benutzer unbekannt: M\\xfcller"


class Refusing(RecordingHandler):
    """
    Refuses C{hook} with C{SMTPError(550, text, "5.1.1")}; C{onData}
    answers C{dataText}.
    """

    def __init__(self, hook: str, text: str = TEXT, dataText: str = "OK") -> None:
        super().__init__()
        self.hook = hook
        self.text = text
        self.dataText = dataText

    def _maybe(self, hook: str) -> None:
        if hook == self.hook:
            raise SMTPError(550, self.text, "5.1.1")

    def onConnect(self, session: Session) -> object:
        self._maybe("onConnect")
        return None

    def onHelo(self, hostname: str, session: Session) -> object:
        self._maybe("onHelo")
        return None

    def onMailFrom(self, address: Address, session: Session) -> object:
        self._maybe("onMailFrom")
        return None

    def onRcptTo(self, address: Address, session: Session) -> object:
        self._maybe("onRcptTo")
        return None

    def onData(self, stream: IMessageStream, session: Session) -> object:
        stream.drain()
        self._maybe("onData")
        return self.dataText


def refusal(text: bytes) -> bytes:
    return b"550 5.1.1 " + text + b"\r\n"


class HandlerReplyTests(SynchronousTestCase):
    """
    A handler's reply text through a whole session.
    """

    def test_rcptRefusalEscapedWithoutSMTPUTF8(self) -> None:
        """
        A refusal of RCPT in a transaction without C{SMTPUTF8} has its
        non-ASCII characters escaped: the reply line is US-ASCII.
        """
        proto, transport, clock, factory = connect(Refusing("onRcptTo"))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<b@example.com>\r\n")
        self.assertEqual(take(transport), refusal(ESCAPED))

    def test_rcptRefusalUTF8WithSMTPUTF8(self) -> None:
        """
        In a transaction whose MAIL carried C{SMTPUTF8}, whose client takes
        UTF-8 in replies, the text is sent as UTF-8; after the transaction
        (RSET) it is escaped again.
        """
        proto, transport, clock, factory = connect(Refusing("onRcptTo"))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.com> SMTPUTF8\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<b@example.com>\r\n")
        self.assertEqual(take(transport), refusal(TEXT.encode("utf-8")))
        proto.dataReceived(b"RSET\r\nMAIL FROM:<a@example.com>\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<b@example.com>\r\n")
        self.assertEqual(take(transport), refusal(ESCAPED))

    def test_outsideTransactions(self) -> None:
        """
        Refusals of the connection, of HELO and of MAIL (even one carrying
        C{SMTPUTF8}: refused, it began no transaction) are escaped.
        """
        proto, transport, clock, factory = connect(Refusing("onConnect"))
        self.assertEqual(take(transport), refusal(ESCAPED))
        proto, transport, clock, factory = connect(Refusing("onHelo"))
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        self.assertEqual(take(transport), refusal(ESCAPED))
        proto, transport, clock, factory = connect(Refusing("onMailFrom"))
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"MAIL FROM:<a@example.com> SMTPUTF8\r\n")
        self.assertEqual(take(transport), refusal(ESCAPED))

    def test_dataTexts(self) -> None:
        """
        C{onData}'s accepting text and its refusal, at the end of the
        transaction they belong to: escaped without C{SMTPUTF8}, UTF-8
        with it.
        """
        message = b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
        for smtpUtf8, accepted, refused in [
            (b"", b"250 2.0.0 Eingereiht als \\xe4\\xf6\\xfc\r\n", refusal(ESCAPED)),
            (
                b" SMTPUTF8",
                "250 2.0.0 Eingereiht als \u00e4\u00f6\u00fc\r\n".encode(),
                refusal(TEXT.encode("utf-8")),
            ),
        ]:
            for hook, expected in [("", accepted), ("onData", refused)]:
                handler = Refusing(hook, dataText="Eingereiht als \u00e4\u00f6\u00fc")
                proto, transport, clock, factory = connect(handler)
                proto.dataReceived(
                    b"EHLO c\r\nMAIL FROM:<a@example.com>" + smtpUtf8 + b"\r\n"
                    b"RCPT TO:<b@example.com>\r\n"
                )
                take(transport)
                proto.dataReceived(message)
                self.assertEqual(take(transport), replies.START_DATA + expected, (smtpUtf8, hook))

    def test_asciiUnchanged(self) -> None:
        """
        An ASCII text is sent as it is, with or without C{SMTPUTF8}.
        """
        proto, transport, clock, factory = connect(Refusing("onRcptTo", text="No such user"))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<b@example.com>\r\n")
        self.assertEqual(take(transport), refusal(b"No such user"))


class FormatTests(SynchronousTestCase):
    """
    L{formatReply} with C{utf8} false, and L{asciiEscaped}.
    """

    def test_escapes(self) -> None:
        """
        Each non-ASCII character is written as Python writes its escape,
        a control character as L{printable} writes it; ASCII is unchanged.
        """
        self.assertEqual(
            asciiEscaped("M\u00fcller \u4f8b \U0001f600"), r"M\xfcller \u4f8b \U0001f600"
        )
        self.assertEqual(asciiEscaped("a\u202eb"), r"a\u202eb")
        self.assertEqual(asciiEscaped("plain"), "plain")

    def test_formatReply(self) -> None:
        """
        C{utf8=False} escapes every line of a multi-line reply, enhanced
        code prefixes kept; C{utf8=True} (the default) sends UTF-8.
        """
        reply = Reply(550, "5.1.1", ("\u00e4", "ok"))
        self.assertEqual(
            formatReply(reply, True, utf8=False), b"550-5.1.1 \\xe4\r\n550 5.1.1 ok\r\n"
        )
        self.assertEqual(formatReply(reply, True), "550-5.1.1 \u00e4\r\n550 5.1.1 ok\r\n".encode())

    def test_escapedLineBounded(self) -> None:
        """
        A line at the longest a handler's text may be (480 octets of UTF-8),
        six times longer escaped, is cut again: the reply line stays
        within RFC 5321's 512 octets (section 4.5.3.1.5), marked with
        C{...}.
        """
        line = "\u4f8b" * (MAX_TEXT_OCTETS // 3)
        data = formatReply(Reply(550, "5.1.1", (line,)), True, utf8=False)
        self.assertTrue(data.isascii())
        self.assertLessEqual(len(data), 512)
        self.assertTrue(data.endswith(b"...\r\n"), data)
