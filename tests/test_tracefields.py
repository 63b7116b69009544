# -*- test-case-name: tests.test_tracefields -*-
"""
Tests for L{twisted_smtpd.handlers._tracefields}: the C{Received:} field
and the count of a message's C{Received:} fields, however its body is
split.
"""

from __future__ import annotations

import re

from attrs import evolve
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core.session import Address, Envelope, Session
from twisted_smtpd.handlers._tracefields import HopCounter, receivedField, traceHeaderLines

#: The date of a C{Received:} field (RFC 5322 section 3.3, as
#: L{email.utils.formatdate} writes it).
DATE = rb"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}"


def session() -> Session:
    """
    A session from 192.0.2.7 that said EHLO, with a transaction begun.
    """
    return Session(
        id="S1",
        remoteAddress=("192.0.2.7", 4321),
        clientHostname="client.example",
        openingCommand="EHLO",
        hostNameAppearsAs="helo.example",
        transmissionType="ESMTP",
        envelope=Envelope(mailFrom=Address("alice@example.com")),
    )


def envelope(*recipients: str) -> Envelope:
    """
    The envelope of L{session} with C{recipients}.
    """
    return Envelope(mailFrom=Address("alice@example.com"), rcptTo=[Address(r) for r in recipients])


def count(*pieces: bytes) -> int:
    """
    The C{Received:} fields a L{HopCounter} counts in the body fed as
    C{pieces}.
    """
    counter = HopCounter()
    for piece in pieces:
        counter.feed(piece)
    return counter.count


def everySplit(body: bytes) -> set[int]:
    """
    The counts of C{body} fed in two pieces, split at every offset, and
    in pieces of one octet.
    """
    counts = {count(body[:i], body[i:]) for i in range(len(body) + 1)}
    counts.add(count(*(body[i : i + 1] for i in range(len(body)))))
    return counts


class ReceivedFieldTests(SynchronousTestCase):
    """
    L{receivedField} and L{traceHeaderLines}.
    """

    def test_field(self) -> None:
        """
        The field names the client by its HELO name, reverse DNS name and
        address, this server by the name given, the protocol, the session
        id and the date, on one line.
        """
        field = receivedField(session(), "relay.example")
        self.assertRegex(
            field,
            rb"\AReceived: from helo\.example \(client\.example \[192\.0\.2\.7\]\)"
            rb" by relay\.example with ESMTP id S1; " + DATE + rb"\r\n\Z",
        )

    def test_sameLength(self) -> None:
        """
        The field's length depends on the session only: the one built at
        MAIL, for the SIZE passed on, is as long as the one written.
        """
        lengths = {len(receivedField(session(), "relay.example")) for _ in range(3)}
        self.assertEqual(len(lengths), 1)

    def test_forOneRecipient(self) -> None:
        """
        With exactly one recipient, the field names it in a C{for} clause
        after the id (RFC 5321 section 4.4), as Postfix's C{smtpd} does;
        so does the field of final delivery (C{--maildir-trace}).
        """
        one = evolve(session(), envelope=envelope("bob@example.org"))
        pattern = (
            rb" by relay\.example with ESMTP id S1 for <bob@example\.org>; " + DATE + rb"\r\n\Z"
        )
        self.assertRegex(receivedField(one, "relay.example"), pattern)
        self.assertRegex(traceHeaderLines(one, "relay.example"), pattern)

    def test_noForSeveral(self) -> None:
        """
        With several recipients (the same one twice among them) the field
        names none, which would disclose them all (a Bcc among them) to
        each, as Postfix names none.
        """
        for recipients in (("bob@example.org", "carol@example.net"), ("b@x.example",) * 2):
            several = evolve(session(), envelope=envelope(*recipients))
            field = receivedField(several, "relay.example")
            self.assertRegex(field, rb" id S1; " + DATE + rb"\r\n\Z")
            self.assertNotIn(b" for ", field)

    def test_forHostileRecipient(self) -> None:
        """
        The recipient is text from outside: its controls are escaped, and
        the field stays one line; a UTF-8 address (SMTPUTF8) is written in
        UTF-8, or escaped when the field must be ASCII.
        """
        hostile = evolve(session(), envelope=envelope('"b\r\nX-Evil: 1\x00"@example.org'))
        field = receivedField(hostile, "relay.example")
        self.assertIn(b' for <"b\\x0d\\x0aX-Evil: 1\\x00"@example.org>; ', field)
        self.assertEqual(field.count(b"\n"), 1)
        utf8 = evolve(session(), envelope=envelope("j\u00f6rg@b\u00fccher.example"))
        self.assertIn(" for <jörg@bücher.example>; ".encode(), receivedField(utf8, "r.example"))
        self.assertIn(
            b" for <j\\xf6rg@b\\xfccher.example>; ",
            receivedField(utf8, "r.example", ascii=True),
        )

    def test_forFolded(self) -> None:
        """
        A field too long for a line is folded before its C{for} clause too.
        """
        long = evolve(
            session(), hostNameAppearsAs="\x01" * 220, envelope=envelope("bob@example.org")
        )
        lines = receivedField(long, "relay.example").split(b"\r\n")
        self.assertRegex(lines[-2], rb"\A\tfor <bob@example\.org>; " + DATE + rb"\Z")
        for line in lines:
            self.assertLessEqual(len(line), 998)

    def test_traceHeaderLines(self) -> None:
        """
        L{traceHeaderLines} is the C{Return-Path:} of final delivery, then
        the C{Received:} field.
        """
        lines = traceHeaderLines(session(), "mx.example")
        returnPath, received = lines.split(b"\r\n", 1)
        self.assertEqual(returnPath, b"Return-Path: <alice@example.com>")
        self.assertTrue(re.match(rb"Received: from helo\.example ", received), received)


class HopCounterTests(SynchronousTestCase):
    """
    L{HopCounter} counts the C{Received:} fields of the header section,
    whatever the pieces.
    """

    def test_count(self) -> None:
        """
        Each C{Received:} field of the header section counts once, its
        name in any case, however the body is split.
        """
        body = (
            b"Received: from a\r\n"
            b"RECEIVED: from b\r\n"
            b"Subject: received: not a field of its own\r\n"
            b"received:from c\r\n"
            b"\r\n"
            b"body\r\n"
        )
        self.assertEqual(everySplit(body), {3})

    def test_foldedLines(self) -> None:
        """
        A folded field's continuation lines are not fields, even when they
        begin with C{Received:} after their white space.
        """
        body = (
            b"Received: from a\r\n\tby b\r\n"
            b"X-Note: one\r\n Received: folded\r\n"
            b"Received: from c\r\n\r\nbody\r\n"
        )
        self.assertEqual(everySplit(body), {2})

    def test_bodyNotCounted(self) -> None:
        """
        C{Received:} lines after the empty line are the body's: not
        counted, and once the header section ended nothing more is.
        """
        body = b"Received: from a\r\n\r\nReceived: from b\r\nReceived: from c\r\n"
        self.assertEqual(everySplit(body), {1})
        counter = HopCounter()
        counter.feed(body)
        self.assertFalse(counter.inHeader)
        counter.feed(b"Received: from d\r\n")
        self.assertEqual(counter.count, 1)

    def test_noHeaderSection(self) -> None:
        """
        A body beginning with the empty line has no header section.
        """
        self.assertEqual(everySplit(b"\r\nReceived: from a\r\n"), {0})
        self.assertEqual(everySplit(b"\nReceived: from a\n"), {0})

    def test_bareLineFeeds(self) -> None:
        """
        Lines ended by a bare LF, as a BDAT body may hold them, count the
        same; so does the empty line ending the header section.
        """
        body = b"Received: from a\nReceived: from b\nSubject: x\n\nReceived: from c\n"
        self.assertEqual(everySplit(body), {2})

    def test_spaceBeforeColon(self) -> None:
        """
        White space between the name and its colon (RFC 5322 section
        4.5.3's obsolete syntax) is taken, however much, as Postfix's
        C{is_header()} takes it; a name merely beginning with C{Received}
        is another field.
        """
        body = (
            b"Received\t: x\r\n"
            + b"Received \t : from a\r\n"
            + b"Received-SPF: pass\r\n"
            + b"Received"
            + b" " * 40
            + b": from b\r\n"
            + b"\r\n"
        )
        self.assertEqual(everySplit(body), {3})

    def test_muchSpaceBeforeColon(self) -> None:
        """
        Fifty-one fields each with more than sixteen spaces before the
        colon are fifty-one: the limit is not evaded by the obsolete
        syntax, which Postfix counts.
        """
        body = b"Received" + b" " * 17 + b": from a\r\n"
        self.assertEqual(count(body * 51 + b"\r\n"), 51)
        self.assertEqual(count(*(body[i : i + 1] for i in range(len(body))), b"\r\n"), 1)

    def test_nonFieldLineEndsHeader(self) -> None:
        """
        The header section ends at the first line that is not a field nor
        a continuation, even when no empty line follows (RFC 5322 section
        2.1, and Postfix's C{cleanup}): the C{Received:} lines after it are
        the body's.
        """
        received = b"Received: from a.example by b.example\r\n"
        body = b"Received: from x\r\nSubject: hi\r\nnot a field\r\n" + received * 60
        self.assertEqual(everySplit(body), {1})

    def test_badNames(self) -> None:
        """
        A line whose name has a space, a control (NUL, DEL, a bare CR), an
        8-bit octet in it, or no colon after it ends the header section, as
        Postfix's C{is_header()} ends it: it is not a field, and the
        C{Received:} fields after it do not count.
        """
        after = b"Received: from b\r\nReceived: from c\r\n\r\n"
        for line in (
            b"Re ceived: from a\r\n",
            b"Received\x00: from a\r\n",
            b"Rece\x7fived: from a\r\n",
            b"Received\r: from a\r\n",
            b"X-B\xc3\xbccher: yes\r\n",
            b"R\xc3\xa9ceived: from a\r\n",
            b"Received from a\r\n",
            b"Received\r\n",
            b"Received\n",
            b"\x00\r\n",
            b":no name\r\n",
            b"\r\r\n",
        ):
            self.assertEqual(everySplit(b"Received: from a\r\n" + line + after), {1}, line)

    def test_firstLineWhiteSpace(self) -> None:
        """
        A first line beginning with white space continues no field: the
        header section ends before it (Postfix's C{cleanup}; the relays
        write an empty line after their field there, so that the next hop
        takes it as the body too).
        """
        self.assertEqual(everySplit(b" Received: from a\r\nReceived: from b\r\n\r\n"), {0})
        self.assertEqual(everySplit(b"\tx\r\nReceived: from b\r\n"), {0})

    def test_valuesMayHoldAnything(self) -> None:
        """
        A field's value (and its continuations) may hold controls, NUL,
        bare CR and 8-bit octets: the line is a field all the same, and the
        next ones count.  A bare CR ends no line, as for Postfix, whose
        lines end at LF: a C{Received:} after one, on the same line, is not
        a field of its own.
        """
        body = (
            b"Subject: \x00\x7f\xff caf\xc3\xa9\r\n"
            b" \x00 folded\r\r\n"
            b"X-Note: a\rReceived: from hidden\r\n"
            b"rEcEiVeD: from a\r\n"
            b"\r\n"
        )
        self.assertEqual(everySplit(body), {1})

    def test_longFoldedField(self) -> None:
        """
        A long field folded over many long lines, fed one octet at a time
        (as BDAT chunks of one octet bring it), is one field, and the
        fields after it count; what is kept between pieces stays a few
        octets.
        """
        body = (
            b"X-Long: "
            + b"a" * 3000
            + b"\r\n"
            + (b"\t" + b"b" * 1000 + b"\r\n") * 3
            + b"Received: from a\r\n"
            + b"X-"
            + b"n" * 2000
            + b": long name\r\n"
            + b"Received"
            + b" " * 2000
            + b": from b\r\n"
            + b"\r\nReceived: from body\r\n"
        )
        counter = HopCounter()
        kept = 0
        for i in range(len(body)):
            counter.feed(body[i : i + 1])
            kept = max(kept, len(counter._start or b""))
        self.assertEqual(counter.count, 2)
        self.assertLessEqual(kept, 9)
        self.assertEqual(count(body), 2)

    def test_emptyPieces(self) -> None:
        """
        Empty pieces (C{BDAT 0}, C{BDAT 0 LAST}) change nothing, before,
        within and after the header section.
        """
        body = b"Received: from a\r\nRecei", b"ved: from b\r\n", b"\r\nReceived: c\r\n"
        self.assertEqual(count(b"", body[0], b"", body[1], b"", body[2], b""), 2)
        self.assertEqual(count(b""), 0)

    def test_keepsLittle(self) -> None:
        """
        Of a line split between pieces, at most its first octets are kept:
        a long header line in many pieces keeps nothing of it, and neither
        does a long name still without its colon.
        """
        counter = HopCounter()
        counter.feed(b"X-Long: ")
        for _ in range(1000):
            counter.feed(b"a" * 100)
        self.assertIsNone(counter._start)
        counter.feed(b"\r\nX-Name-")
        for _ in range(1000):
            counter.feed(b"n" * 100)
        self.assertEqual(counter._start, b"x")
        counter.feed(b": v\r\nReceiv")
        self.assertEqual(counter._start, b"Receiv")
        counter.feed(b"ed \t ")
        self.assertEqual(counter._start, b"Received ")
        counter.feed(b"  : from a\r\n\r\n")
        self.assertEqual(counter.count, 1)

    def test_manyFields(self) -> None:
        """
        Fifty fields are fifty and fifty-one are fifty-one, in any pieces,
        with CRLF or bare LF.
        """
        for hops in (50, 51):
            field = b"Received: from relay.example by relay.example\r\n"
            body = field * hops + b"\r\nbody\r\n"
            self.assertEqual(everySplit(body), {hops})
            self.assertEqual(everySplit(body.replace(b"\r\n", b"\n")), {hops})
