"""
Tests for L{twisted_smtpd._resolve}: client names from the hosts file first,
then DNS, bounded in time.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._resolve import ReverseResolver, pointerName, readHostsFile


class FakeResolver:
    """
    Answers PTR queries from a table; records what was asked.
    """

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def lookupPointer(self, name: str, timeout: Any = None) -> Deferred[Any]:
        self.asked.append(name)
        answer = self.answers.get(name)
        if isinstance(answer, Deferred):
            return answer
        if answer is None:
            return fail(dns.DomainError(name))
        record = dns.RRHeader(name, dns.PTR, payload=dns.Record_PTR(answer))
        return succeed(([record], [], []))


class HostsTests(SynchronousTestCase):
    def hostsFile(self) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# comment\n127.0.0.1 localhost loopback\n::1 ip6-localhost\nbad line\n")
            f.write("192.0.2.9   mail.example.com  # trailing comment\n")
        return path

    def test_read(self) -> None:
        """
        Each address maps to its first name; comments and junk are skipped.
        """
        self.assertEqual(
            readHostsFile(self.hostsFile()),
            {"127.0.0.1": "localhost", "::1": "ip6-localhost", "192.0.2.9": "mail.example.com"},
        )
        self.assertEqual(readHostsFile(self.mktemp()), {})

    def test_knownWithoutWaiting(self) -> None:
        """
        Addresses in the hosts file are known at once; DNS is not asked.
        """
        dnsResolver = FakeResolver({})
        resolver = ReverseResolver(Clock(), dnsResolver, hostsFile=self.hostsFile())
        self.assertEqual(resolver.known("192.0.2.9"), "mail.example.com")
        self.assertEqual(resolver.known("0:0::1"), "ip6-localhost")
        self.assertIsNone(resolver.known("192.0.2.10"))
        self.assertEqual(self.successResultOf(resolver.lookup("127.0.0.1")), "localhost")
        self.assertEqual(dnsResolver.asked, [])


class DNSTests(SynchronousTestCase):
    def test_pointerName(self) -> None:
        """
        The reverse names of IPv4 and IPv6 addresses.
        """
        self.assertEqual(pointerName("192.0.2.1"), "1.2.0.192.in-addr.arpa")
        self.assertTrue(str(pointerName("2001:db8::1")).endswith(".ip6.arpa"))
        self.assertIsNone(pointerName("not an address"))

    def test_answer(self) -> None:
        """
        A PTR answer gives the name, without its trailing dot.
        """
        dnsResolver = FakeResolver({"5.2.0.192.in-addr.arpa": "client.example.net."})
        resolver = ReverseResolver(Clock(), dnsResolver, hostsFile="/nonexistent")
        d = resolver.lookup("192.0.2.5")
        self.assertEqual(self.successResultOf(d), "client.example.net")

    def test_failureIsNone(self) -> None:
        """
        A failed lookup, or a string that is no address, gives None.
        """
        resolver = ReverseResolver(Clock(), FakeResolver({}), hostsFile="/nonexistent")
        self.assertIsNone(self.successResultOf(resolver.lookup("192.0.2.6")))
        self.assertIsNone(self.successResultOf(resolver.lookup("nonsense")))

    def test_timeout(self) -> None:
        """
        A resolver that never answers gives None after the timeout.
        """
        clock = Clock()
        never: Deferred[Any] = Deferred()
        resolver = ReverseResolver(
            clock, FakeResolver({"7.2.0.192.in-addr.arpa": never}), hostsFile="/nonexistent"
        )
        d = resolver.lookup("192.0.2.7")
        self.assertNoResult(d)
        clock.advance(resolver.timeout + 0.5)
        self.assertIsNone(self.successResultOf(d))


class DNSServerOptionTests(SynchronousTestCase):
    """
    C{--dns-server HOST[:PORT]}.
    """

    def test_parse(self) -> None:
        """
        IPv4 and IPv6 addresses, with or without a port (53 by default).
        """
        from twisted_smtpd._resolve import parseDNSServer

        self.assertEqual(parseDNSServer("192.0.2.53"), ("192.0.2.53", 53))
        self.assertEqual(parseDNSServer("192.0.2.53:5353"), ("192.0.2.53", 5353))
        self.assertEqual(parseDNSServer("[2001:db8::53]:54"), ("2001:db8::53", 54))
        self.assertEqual(parseDNSServer("2001:db8::53"), ("2001:db8::53", 53))
        for bad in ["dns.example", "192.0.2.53:0", "192.0.2.53:x", "[::1"]:
            self.assertRaises(ValueError, parseDNSServer, bad)

    def test_resolver(self) -> None:
        """
        The resolver asks only the given server, not /etc/resolv.conf's.
        """
        from twisted_smtpd._resolve import resolverFor

        resolver = resolverFor("192.0.2.53:5353", Clock())
        self.assertEqual(resolver.servers, [("192.0.2.53", 5353)])
        self.assertEqual(list(resolver.dynServers), [])

    def test_flag(self) -> None:
        """
        A bad C{--dns-server} is a usage error naming the flag.
        """
        from twisted.python import usage

        from tests.test_tap import parse

        e = self.assertRaises(usage.UsageError, parse, "--sink", "--dns-server", "dns.example")
        self.assertIn("--dns-server 'dns.example'", str(e))
