"""
Tests for L{twisted_smtpd._serving.resolve}: which records of a DNS answer
name a client, whatever else a hostile or unusual answer holds.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.dnsclient import DNSClient
from twisted_smtpd._serving.resolve import AnswerUnusable, ReverseResolver

POINTER = "7.2.0.192.in-addr.arpa"


def ptr(owner: str, name: str) -> dns.RRHeader:
    return dns.RRHeader(owner, dns.PTR, payload=dns.Record_PTR(name))


def cname(owner: str, target: str) -> dns.RRHeader:
    return dns.RRHeader(owner, dns.CNAME, payload=dns.Record_CNAME(target))


class AnswerResolver:
    """
    Answers the PTR query with C{answers} (answer records) and every A
    query with an A record of 192.0.2.7 for the name asked; records the
    names of the A queries in C{forward}.
    """

    def __init__(self, answers: list[dns.RRHeader]) -> None:
        self.answers = answers
        self.forward: list[str] = []

    def lookupPointer(self, name: str, timeout: Any = None) -> Deferred[Any]:
        if name != POINTER:
            return fail(dns.DomainError(name))
        return succeed((self.answers, [], []))

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Any]:
        self.forward.append(name)
        return succeed(([dns.RRHeader(name, dns.A, payload=dns.Record_A("192.0.2.7"))], [], []))


class FailingResolver:
    """
    Fails every PTR query with C{error}.
    """

    def __init__(self, error: Exception) -> None:
        self.error = error

    def lookupPointer(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return fail(self.error)


class PointerOwnerTests(SynchronousTestCase):
    """
    Only the PTR records of the name asked, or of the CNAME targets leading
    from it (RFC 2317 classless delegation), name the client.
    """

    def lookup(self, answers: list[dns.RRHeader]) -> tuple[str | None, list[str]]:
        dnsResolver = AnswerResolver(answers)
        resolver = ReverseResolver(Clock(), dnsResolver, hostsFile="/nonexistent")
        return self.successResultOf(resolver.lookup("192.0.2.7")), dnsResolver.forward

    def test_classlessDelegation(self) -> None:
        """
        An answer through an RFC 2317 CNAME (C{7.2.0.192.in-addr.arpa} to
        C{7.0-25.2.0.192.in-addr.arpa}, whose PTR names the client) names
        the client by the PTR record's name, not by the CNAME's target.
        """
        delegated = "7.0-25.2.0.192.in-addr.arpa"
        name, forward = self.lookup(
            [cname(POINTER, delegated), ptr(delegated, "client.example.net")]
        )
        self.assertEqual((name, forward), ("client.example.net", ["client.example.net"]))

    def test_otherOwnerIgnored(self) -> None:
        """
        A PTR record of another owner in the answer, before the client's
        own, never names the client.
        """
        name, forward = self.lookup(
            [
                ptr("8.2.0.192.in-addr.arpa", "mail.bank.example"),
                ptr(POINTER, "client.example.net"),
            ]
        )
        self.assertEqual((name, forward), ("client.example.net", ["client.example.net"]))

    def test_onlyOtherOwnersIsNone(self) -> None:
        """
        An answer whose PTR records all belong to other names gives no
        name, asks no forward lookup, and logs no invalid name.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        name, forward = self.lookup(
            [ptr("8.2.0.192.in-addr.arpa", "mail.bank.example"), cname("x.example", POINTER)]
        )
        self.assertEqual((name, forward), (None, []))
        self.assertEqual([formatEvent(e) for e in events], [])

    def test_cnameTargetNotAName(self) -> None:
        """
        A CNAME answer without the PTR record of its target gives no name:
        the target of a CNAME is never taken for the client's name.
        """
        name, forward = self.lookup([cname(POINTER, "client.example.net")])
        self.assertEqual((name, forward), (None, []))

    def test_cnameLoop(self) -> None:
        """
        A loop of CNAME records gives no name, and ends.
        """
        name, forward = self.lookup(
            [
                cname(POINTER, "a.example"),
                cname("a.example", "b.example"),
                cname("b.example", POINTER),
            ]
        )
        self.assertEqual((name, forward), (None, []))

    def test_longChainFollowedAtMostEightLinks(self) -> None:
        """
        A PTR record at the end of 8 CNAME links names the client; one 9
        links away does not.
        """
        for links, expected in ((8, "client.example.net"), (9, None)):
            owners = [POINTER] + [f"c{i}.example" for i in range(links)]
            answers = [cname(a, b) for a, b in itertools.pairwise(owners)]
            answers.append(ptr(owners[-1], "client.example.net"))
            self.assertEqual(self.lookup(answers)[0], expected, links)

    def test_ownerCaseAndDotIgnored(self) -> None:
        """
        Owners are compared without regard to case or a trailing dot, as
        DNS names are.
        """
        name, _ = self.lookup([ptr(POINTER.upper() + ".", "client.example.net")])
        self.assertEqual(name, "client.example.net")

    def test_invalidNameOfOwnerLogged(self) -> None:
        """
        The warning about an invalid PTR name names the client's PTR
        records only, escaped.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        name, _ = self.lookup(
            [ptr("8.2.0.192.in-addr.arpa", "other.example"), ptr(POINTER, "bad\r\nname.example")]
        )
        self.assertIsNone(name)
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["reverse lookup of 192.0.2.7: invalid host name bad\\x0d\\x0aname.example ignored"],
        )


class DNSClientTests(SynchronousTestCase):
    """
    L{DNSClient} asks again over TCP for a truncated UDP answer, once.
    """

    def client(self, overTCP: dns.Message) -> tuple[DNSClient, list[Any]]:
        resolver = DNSClient(resolv=None, servers=[("127.0.0.1", 53)], reactor=Clock())
        asked: list[Any] = []

        def queryTCP(queries: Any, timeout: Any = 10) -> Deferred[dns.Message]:
            asked.append(queries)
            return succeed(overTCP)

        resolver.queryTCP = queryTCP  # type: ignore[method-assign]
        return resolver, asked

    def test_truncatedOverTCPFails(self) -> None:
        """
        A TCP answer truncated too fails the lookup with L{AnswerUnusable},
        after one TCP query.
        """
        query = dns.Query(POINTER, dns.PTR)
        resolver, asked = self.client(dns.Message(answer=1, trunc=1))
        udp = dns.Message(answer=1, trunc=1)
        udp.queries = [query]
        d = resolver.filterAnswers(udp)
        self.failureResultOf(d, AnswerUnusable)
        self.assertEqual(asked, [[query]])

    def test_truncatedOverUDPAnsweredOverTCP(self) -> None:
        """
        A truncated UDP answer gives the records of the TCP answer.
        """
        full = dns.Message(answer=1)
        full.answers = [ptr(POINTER, "client.example.net")]
        resolver, asked = self.client(full)
        d = resolver.filterAnswers(dns.Message(answer=1, trunc=1))
        self.assertEqual(self.successResultOf(d), (full.answers, [], []))
        self.assertEqual(len(asked), 1)


class TroubleTests(SynchronousTestCase):
    """
    A DNS server that cannot be reached or misbehaves leaves one warning
    line, without a traceback.
    """

    def test_connectionRefusedOneLine(self) -> None:
        """
        A refused TCP connection (for a truncated answer) is one warning.
        """
        for error in (
            ConnectionRefusedError("111: Connection refused."),
            ConnectionLost(),
            AnswerUnusable("the DNS server's answer over TCP is truncated"),
        ):
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            resolver = ReverseResolver(Clock(), FailingResolver(error), hostsFile="/nonexistent")
            self.assertIsNone(self.successResultOf(resolver.lookup("192.0.2.7")))
            self.assertEqual(
                [formatEvent(e) for e in events],
                [f"reverse lookup of 192.0.2.7 failed: {error}"],
            )
            self.assertEqual([e.get("log_failure") for e in events], [None])
