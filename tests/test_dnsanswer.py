# -*- test-case-name: tests.test_dnsanswer -*-
"""
Tests for L{twisted_smtpd._serving.dnsanswer}: a message with the query's
id is its answer only when it is a response repeating the query's
question; an answer whose records do not fit in it fails the query; a
label holding a dot never reads as two labels.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.names import dns
from twisted.names.error import DNSQueryRefusedError
from twisted.trial.unittest import SynchronousTestCase

from tests.test_dnsdatagrams import POINTER, SERVER, _Reactor, answer, lines
from twisted_smtpd._serving.dnsanswer import NotTheAnswer, readAnswer
from twisted_smtpd._serving.dnsclient import serverResolver
from twisted_smtpd._serving.resolve import AnswerUnusable, ReverseResolver

QUERY = dns.Query(POINTER, dns.PTR)


def header(queryID: int, flags: int, *counts: int) -> bytes:
    """
    A message header: C{counts} are QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT.
    """
    return struct.pack("!HHHHHH", queryID, flags, *counts)


def wireName(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def question(name: bytes = wireName(*POINTER.encode().split(b".")), kind: int = dns.PTR) -> bytes:
    return name + struct.pack("!HH", kind, dns.IN)


def record(kind: int, rdata: bytes, rdlength: int | None = None) -> bytes:
    """
    A record owned by the question's name (a pointer to offset 12).
    """
    size = len(rdata) if rdlength is None else rdlength
    return b"\xc0\x0c" + struct.pack("!HHIH", kind, dns.IN, 60, size) + rdata


def ptrAnswer(queryID: int, *records: bytes, flags: int = 0x8180) -> bytes:
    return header(queryID, flags, 1, len(records), 0, 0) + question() + b"".join(records)


class Lookup:
    """
    A PTR lookup of L{POINTER} through L{serverResolver} on an in-memory
    reactor: C{send} gives a datagram to its port.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events = EventLoggingObserver.createWithCleanup(case, globalLogPublisher)
        self.reactor = _Reactor()
        self.d = serverResolver(SERVER, self.reactor).lookupPointer(POINTER, timeout=(3,))
        [self.port] = self.reactor.ports
        sent = dns.Message()
        sent.fromStr(self.port.written[0])
        self.id = sent.id

    def send(self, data: bytes) -> None:
        self.port.protocol.datagramReceived(data, SERVER)


class QuestionTests(SynchronousTestCase):
    """
    As glibc's C{res_queriesmatch}: a datagram with the query's id that is
    not a response, or whose question is not the query's, is dropped (one
    line for the query) and the query waits on for its answer.
    """

    def assertDropped(self, forge: Callable[[int], bytes], why: str) -> None:
        """
        A datagram C{forge} makes of the query's id is dropped with the
        line saying C{why}, and the answer after it is taken.
        """
        lookup = Lookup(self)
        lookup.send(forge(lookup.id))
        self.assertNoResult(lookup.d)
        lookup.send(answer(lookup.id))
        answers, _, _ = self.successResultOf(lookup.d)
        self.assertEqual([str(r.payload.name) for r in answers], ["c.example.net"])
        self.assertEqual(
            lines(lookup.events),
            [
                f"DNS answer from 192.0.2.53:53 to the query for {POINTER} ignored: {why};"
                " no more such are logged for this query"
            ],
        )

    def forged(self, queryID: int, name: str, kind: int = dns.PTR, flags: int = 1) -> bytes:
        message = dns.Message(id=queryID, answer=flags)
        message.queries = [dns.Query(name, kind)]
        message.answers = [dns.RRHeader(name, dns.PTR, payload=dns.Record_PTR("forged.example"))]
        return message.toStr()

    def test_otherNameDropped(self) -> None:
        """
        An answer with the query's id whose question is another name is
        not taken.
        """
        other = "8.2.0.192.in-addr.arpa"
        self.assertDropped(
            lambda queryID: self.forged(queryID, other),
            f"its question is not the query's ({other} type 12 class 1)",
        )

    def test_otherTypeDropped(self) -> None:
        """
        An answer whose question is the query's name with another type is
        not taken.
        """
        self.assertDropped(
            lambda queryID: self.forged(queryID, POINTER, dns.A),
            f"its question is not the query's ({POINTER} type 1 class 1)",
        )

    def test_queryDropped(self) -> None:
        """
        A message with the query's id and question whose QR bit is 0 (a
        query, not a response) is not taken.
        """
        self.assertDropped(
            lambda queryID: self.forged(queryID, POINTER, flags=0), "it is a query, not a response"
        )

    def test_noQuestionDropped(self) -> None:
        """
        An answer without a question section (QDCOUNT 0) is not taken.
        """
        self.assertDropped(
            lambda queryID: (
                header(queryID, 0x8180, 0, 1, 0, 0)
                + wireName(*POINTER.encode().split(b"."))
                + struct.pack("!HHIH", dns.PTR, dns.IN, 60, 11)
                + wireName(b"f", b"example")
            ),
            "its question section holds 0 questions, not the query's",
        )

    def test_questionCaseIgnored(self) -> None:
        """
        The question's name is compared without regard to case (RFC 4343).
        """
        lookup = Lookup(self)
        upper = dns.Message()
        upper.fromStr(answer(lookup.id))
        upper.queries = [dns.Query(POINTER.upper(), dns.PTR)]
        lookup.send(upper.toStr())
        answers, _, _ = self.successResultOf(lookup.d)
        self.assertEqual([str(r.payload.name) for r in answers], ["c.example.net"])

    def test_bareRefusalTaken(self) -> None:
        """
        A REFUSED answer of the header alone (QDCOUNT 0), which some
        resolvers send, ends the query at once, as glibc takes it.
        """
        lookup = Lookup(self)
        lookup.send(header(lookup.id, 0x8180 | dns.EREFUSED, 0, 0, 0, 0))
        message = self.successResultOf(lookup.d.addErrback(lambda f: f.value))
        self.assertIsInstance(message, DNSQueryRefusedError)


class MalformedTests(SynchronousTestCase):
    """
    An answer whose records do not fit in it, without the TC flag, fails
    the query at once (glibc: C{NO_RECOVERY}), rather than keeping what
    could be read of it.
    """

    def assertMalformed(self, forge: Callable[[int], bytes], why: str) -> None:
        """
        The answer C{forge} makes of the query's id fails the query at
        once, saying C{why}, with no line of its own (the lookup's failure
        is the one line).
        """
        lookup = Lookup(self)
        lookup.send(forge(lookup.id))
        failure = self.failureResultOf(lookup.d, AnswerUnusable)
        self.assertEqual(str(failure.value), f"the DNS server's answer is malformed ({why})")
        self.assertFalse(lookup.port.listening)
        self.assertEqual(lines(lookup.events), [])

    def test_rdlengthPastEnd(self) -> None:
        """
        A PTR record whose RDLENGTH runs past the end of the message fails
        the query, though its name could be read.
        """
        self.assertMalformed(
            lambda queryID: ptrAnswer(queryID, record(dns.PTR, wireName(b"c", b"example"), 200)),
            "the data of a record (RDLENGTH 200) runs past the end of the message",
        )

    def test_rdlengthShorterThanName(self) -> None:
        """
        A PTR record whose name runs past its RDLENGTH fails the query.
        """
        self.assertMalformed(
            lambda queryID: ptrAnswer(queryID, record(dns.PTR, wireName(b"c", b"example"), 3)),
            "the data of a record of type 12 does not fill its RDLENGTH 3",
        )

    def test_cutShortWithoutTC(self) -> None:
        """
        An answer cut short inside its second record's header, without the TC flag,
        fails the query: its first record is not taken.
        """

        def cut(queryID: int) -> bytes:
            whole = ptrAnswer(
                queryID,
                record(dns.PTR, wireName(b"c", b"example")),
                record(dns.PTR, wireName(b"d", b"example")),
            )
            return whole[:-18]  # inside the second record's header

        self.assertMalformed(cut, "cut short, without the TC flag")

    def test_cutShortWithTC(self) -> None:
        """
        An answer cut short with the TC flag is read as far as it goes (it
        is asked again over TCP).
        """
        whole = ptrAnswer(
            7,
            record(dns.PTR, wireName(b"c", b"example")),
            record(dns.PTR, wireName(b"d", b"example")),
            flags=0x8380,
        )
        message = readAnswer(whole[:-6], QUERY)
        self.assertTrue(message.trunc)
        self.assertEqual([str(r.payload.name) for r in message.answers], ["c.example"])

    def test_questionCutShortDropped(self) -> None:
        """
        A message whose question section is cut short is not the answer.
        """
        data = ptrAnswer(7)
        with self.assertRaises(NotTheAnswer) as raised:
            readAnswer(data[:-3], QUERY)
        self.assertEqual(str(raised.exception), "its question section is malformed (cut short)")


class DottedLabelTests(SynchronousTestCase):
    """
    A label holding a dot is read in presentation form (C{evil\\.com}), as
    glibc writes it, never as more labels: no host name has one.
    """

    def test_dottedLabelNamesNoClient(self) -> None:
        """
        A PTR name of the labels C{evil.com} and C{example} does not name
        the client, even when C{evil.com.example} would be confirmed: the
        client is unnamed, with the line for an invalid host name.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reactor = _Reactor()
        resolver = ReverseResolver(
            reactor, serverResolver(SERVER, reactor), hostsFile="/nonexistent"
        )
        d = resolver.lookup("192.0.2.7")
        for index, rdata in enumerate([wireName(b"evil.com", b"example"), b"\xc0\x02\x00\x07"]):
            if index >= len(reactor.ports):
                break
            port = reactor.ports[index]
            sent = dns.Message()
            sent.fromStr(port.written[0])
            kind = dns.PTR if index == 0 else dns.A
            reply = header(sent.id, 0x8180, 1, 1, 0, 0) + port.written[0][12:] + record(kind, rdata)
            port.protocol.datagramReceived(reply, SERVER)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(reactor.ports), 1)
        self.assertEqual(
            lines(events),
            ["reverse lookup of 192.0.2.7: invalid host name evil\\.com.example ignored"],
        )

    def test_presentationForm(self) -> None:
        """
        The PTR name and the owner with a dotted label are read with the
        dot (and a backslash) escaped; names without one as they are.
        """
        owner = wireName(b"a.b", b"c")
        data = (
            header(7, 0x8180, 1, 2, 0, 0)
            + question()
            + record(dns.PTR, wireName(b"x\\y", b"z.w"))
            + owner
            + struct.pack("!HHIH", dns.PTR, dns.IN, 60, 4)
            + b"\x01c\xc0\x0c"[:4]
        )
        message = readAnswer(data, QUERY)
        names: list[Any] = [(r.name.name, r.payload.name.name) for r in message.answers]
        self.assertEqual(
            names,
            [
                (POINTER.encode(), b"x\\\\y.z\\.w"),
                (b"a\\.b.c", b"c." + POINTER.encode()),
            ],
        )


class OverTCPTests(SynchronousTestCase):
    """
    Answers over TCP are read as over UDP.
    """

    def test_otherQuestionOverTCPDropped(self) -> None:
        """
        A message over TCP with the query's id and another question is
        dropped with one line for the connection; the answer is taken.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reactor = _Reactor()
        client = serverResolver(SERVER, reactor)
        protocol = dns.DNSProtocol(client, reactor=reactor)
        transport = StringTransport(peerAddress=None)
        protocol.makeConnection(transport)
        d = protocol.query([QUERY])
        sent = dns.Message()
        sent.fromStr(transport.value()[2:])
        other = dns.Message()
        other.fromStr(answer(sent.id))
        other.queries = [dns.Query("8.2.0.192.in-addr.arpa", dns.PTR)]
        for data in (other.toStr(), other.toStr(), answer(sent.id)):
            protocol.dataReceived(struct.pack("!H", len(data)) + data)
        message = self.successResultOf(d)
        self.assertEqual([str(r.payload.name) for r in message.answers], ["c.example.net"])
        self.assertEqual(len(lines(events)), 1)
        self.assertIn(
            "over TCP ignored: its question is not the query's (8.2.0.192.in-addr.arpa"
            " type 12 class 1); no more such are logged for this connection",
            lines(events)[0],
        )

    def test_cutShortOverTCPFails(self) -> None:
        """
        An answer over TCP cut short (its length prefix saying so) fails
        the query.
        """
        reactor = _Reactor()
        protocol = dns.DNSProtocol(serverResolver(SERVER, reactor), reactor=reactor)
        transport = StringTransport()
        protocol.makeConnection(transport)
        d = protocol.query([QUERY])
        sent = dns.Message()
        sent.fromStr(transport.value()[2:])
        data = ptrAnswer(sent.id, record(dns.PTR, wireName(b"c", b"example")))[:-4]
        protocol.dataReceived(struct.pack("!H", len(data)) + data)
        self.failureResultOf(d, AnswerUnusable)
