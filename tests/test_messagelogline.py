# -*- test-case-name: tests.test_messagelogline -*-
"""
The C{message} log line of a message with many long recipients stays one
short line: the first recipients named, the others counted.
"""

from __future__ import annotations

import io
import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core.replies import Reply
from twisted_smtpd._core.session import Address, Envelope, Session
from twisted_smtpd._serving.logging import SessionLogger
from twisted_smtpd._serving.logwriter import BufferedLogWriter

#: The longest a C{message} line may be, however many recipients: ten
#: paths of 256 octets, the sender's, and the rest of the line.
BOUND = 4096


def _recipient(n: int) -> Address:
    """
    Recipient C{n}: a path of 256 octets (RFC 5321 section 4.5.3.1.3).
    """
    local = f"r{n:04d}".ljust(64, "x")
    domain = ".".join(["d" * 61] * 3) + ".example"
    return Address(f"{local}@{domain}"[:254])


def _lines(count: int, asJson: bool, first: Address | None = None, lmtp: bool = False) -> list[str]:
    """
    What C{twistd smtpd}'s writer logs for a message to C{count}
    recipients (C{first} in place of the first one), with one reply per
    recipient for C{lmtp}.
    """
    recipients = [_recipient(n) for n in range(count)]
    if first is not None:
        recipients[0] = first
    session = Session(
        id="m1n2o3p4",
        remoteAddress=("192.0.2.7", 51234),
        envelope=Envelope(Address("alice@example.org"), recipients),
    )
    out = io.StringIO()
    writer = BufferedLogWriter(out, json=asJson, reactor=Clock())
    SessionLogger(writer=writer)(
        "message",
        session,
        {
            "size": 120,
            "replies": (Reply(250, "2.0.0", ("OK: queued as X1",)),) * (count if lmtp else 1),
        },
    )
    writer.flush()
    return out.getvalue().splitlines()


class ManyRecipientsTests(SynchronousTestCase):
    """
    A thousand recipients of 256 octets make a line of a few kilobytes,
    not of 256 KB.
    """

    def test_textLine(self) -> None:
        """
        The text line names the first ten recipients and counts the rest:
        one line, under L{BOUND} characters.
        """
        [line] = _lines(1000, asJson=False)
        self.assertLess(len(line), BOUND)
        named = ",".join(f"<{_recipient(n).address}>" for n in range(10))
        self.assertIn(f" to {named} and 990 more: 250 OK: queued as X1", line)

    def test_jsonLine(self) -> None:
        """
        The JSON line's C{recipients} lists the first ten, its
        C{recipientCount} says how many there were.
        """
        [line] = _lines(1000, asJson=True)
        self.assertLess(len(line), BOUND + 2048)
        event = json.loads(line)
        self.assertEqual(event["recipients"], [_recipient(n).address for n in range(10)])
        self.assertEqual(event["recipientCount"], 1000)
        self.assertIn(" and 990 more: ", event["text"])

    def test_tenOrFewerAllNamed(self) -> None:
        """
        Up to ten recipients, every one is named and nothing is counted.
        """
        [line] = _lines(10, asJson=False)
        named = ",".join(f"<{_recipient(n).address}>" for n in range(10))
        self.assertIn(f" to {named}: 250 ", line)
        self.assertNotIn(" more", line)

    def test_namedEscaped(self) -> None:
        """
        A named recipient holding a line separator (a UTF-8 local part) is
        escaped: the line stays one line.
        """
        hostile = Address("a\u2028m1n2o3p4 reject: RCPT from x[192.0.2.9]: 550@example.com")
        [line] = _lines(1000, asJson=False, first=hostile)
        self.assertIn("<a\\u2028m1n2o3p4 reject:", line)
        self.assertNotIn("\u2028", line)

    def test_lmtpCodes(self) -> None:
        """
        In LMTP, with a reply per recipient, the codes of the first ten are
        named and the others counted too; the JSON C{codes} keep them all.
        """
        [line] = _lines(1000, asJson=False, lmtp=True)
        self.assertLess(len(line), BOUND)
        self.assertIn(" and 990 more: " + ",".join(["250"] * 10) + " and 990 more OK:", line)
        [jsonLine] = _lines(1000, asJson=True, lmtp=True)
        self.assertEqual(json.loads(jsonLine)["codes"], [250] * 1000)


def _lmtpLine(replies: tuple[Reply, ...], asJson: bool) -> str:
    """
    What C{twistd smtpd}'s writer logs for an LMTP message with one of
    C{replies} per recipient.
    """
    session = Session(
        id="m1n2o3p4",
        remoteAddress=("192.0.2.7", 51234),
        envelope=Envelope(
            Address("alice@example.org"),
            [Address(f"r{n}@example.com") for n in range(len(replies))],
        ),
    )
    out = io.StringIO()
    writer = BufferedLogWriter(out, json=asJson, reactor=Clock())
    SessionLogger(writer=writer)("message", session, {"size": 120, "replies": replies})
    writer.flush()
    [line] = out.getvalue().splitlines()
    return line


class PerRecipientReplyTests(SynchronousTestCase):
    """
    In LMTP, the C{message} line tells why each refused recipient was
    refused, not only the first reply's text.
    """

    OK = Reply(250, "2.0.0", ("OK: queued as X1",))
    UNKNOWN = Reply(550, "5.1.1", ("Mailbox unknown",))
    FULL = Reply(452, "4.2.2", ("Mailbox full",))

    def test_everyTextNamed(self) -> None:
        """
        Each reply whose text differs from the first's follows it, once
        and in order, after its code.
        """
        line = _lmtpLine((self.OK, self.UNKNOWN, self.OK, self.FULL, self.UNKNOWN), False)
        self.assertIn(
            ": 250,550,250,452,550 OK: queued as X1; 550 Mailbox unknown; 452 Mailbox full", line
        )

    def test_refusalPastTheTenth(self) -> None:
        """
        A refusal of the twentieth recipient is named too, though its code
        is only counted.
        """
        line = _lmtpLine((self.OK,) * 19 + (self.UNKNOWN,), False)
        self.assertTrue(line.endswith(" and 10 more OK: queued as X1; 550 Mailbox unknown"), line)

    def test_boundedAndEscaped(self) -> None:
        """
        A thousand different texts name ten and count the others; a text
        holding a line separator is escaped.
        """
        replies = tuple(Reply(550, "5.1.1", (f"no {n}\u2028x",)) for n in range(1000))
        line = _lmtpLine(replies, False)
        self.assertLess(len(line), BOUND)
        self.assertNotIn("\u2028", line)
        self.assertTrue(line.endswith("; 550 no 9\\u2028x and 990 more replies"), line[-80:])

    def test_jsonOtherReplies(self) -> None:
        """
        The JSON line keeps the first text in C{reply} and the others in
        C{otherReplies}.
        """
        event = json.loads(_lmtpLine((self.OK, self.UNKNOWN, self.OK), True))
        self.assertEqual(
            (event["reply"], event["otherReplies"]),
            ("OK: queued as X1", ["550 Mailbox unknown"]),
        )
