# -*- test-case-name: tests.test_tracefields -*-
"""
Tests for L{twisted_smtpd.handlers._tracefields}: the C{Received:} field
and the count of a message's C{Received:} fields, however its body is
split.
"""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core.session import Address, Envelope, Session
from twisted_smtpd.handlers._tracefields import (
    MAX_NAME_SPACE,
    HopCounter,
    receivedField,
    traceHeaderLines,
)

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
        4.5.3) is taken, up to L{MAX_NAME_SPACE} octets; a name merely
        beginning with C{Received} is another field.
        """
        spaced = b"Received" + b" " * MAX_NAME_SPACE + b": from a\r\n"
        tooSpaced = b"Received" + b" " * (MAX_NAME_SPACE + 1) + b": from a\r\n"
        body = b"Received\t: x\r\n" + spaced + tooSpaced + b"Received-SPF: pass\r\n\r\n"
        self.assertEqual(everySplit(body), {2})

    def test_keepsLittle(self) -> None:
        """
        Of a line split between pieces, at most its first octets are kept:
        a long header line in many pieces keeps nothing of it.
        """
        counter = HopCounter()
        counter.feed(b"X-Long: ")
        for _ in range(1000):
            counter.feed(b"a" * 100)
        self.assertIsNone(counter._start)
        counter.feed(b"\r\nReceiv")
        self.assertEqual(counter._start, b"Receiv")
        counter.feed(b"ed: from a\r\n\r\n")
        self.assertEqual(counter.count, 1)

    def test_manyFields(self) -> None:
        """
        Fifty-one fields are fifty-one, in any pieces.
        """
        body = b"Received: from relay.example by relay.example\r\n" * 51 + b"\r\nbody\r\n"
        self.assertEqual(everySplit(body), {51})
