"""
Tests for L{twisted_smtpd._serving.resolve}: client names from the hosts file first,
then DNS, bounded in time.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.names import dns
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.resolve import ReverseResolver, pointerName, readHostsFile


def addressOf(pointer: str) -> str:
    """
    The address whose C{in-addr.arpa} or C{ip6.arpa} name is C{pointer}.
    """
    labels = pointer.split(".")
    if pointer.endswith(".in-addr.arpa"):
        return ".".join(reversed(labels[:4]))
    nibbles = "".join(reversed(labels[:32]))
    return str(ipaddress.IPv6Address(int(nibbles, 16)))


class FakeResolver:
    """
    Answers PTR queries from a table, and A and AAAA queries from another;
    records what was asked (C{asked}: PTR names, C{forward}: C{(type,
    name, timeout)} of each forward query).

    @ivar addresses: Host name to a list of addresses, a L{Deferred} or
        C{None} (no such name).  By default every PTR answer that is a
        string or bytes is confirmed: its name has the address reversed.
    """

    def __init__(self, answers: dict[str, Any], addresses: dict[str, Any] | None = None) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.forward: list[tuple[str, str, Any]] = []
        if addresses is None:
            addresses = {}
            for pointer, answer in answers.items():
                if isinstance(answer, bytes):
                    answer = answer.decode("ascii", "replace")
                if isinstance(answer, str):
                    addresses.setdefault(answer.rstrip("."), []).append(addressOf(pointer))
        self.addresses = addresses

    def lookupPointer(self, name: str, timeout: Any = None) -> Deferred[Any]:
        self.asked.append(name)
        answer = self.answers.get(name)
        if isinstance(answer, Deferred):
            return answer
        if answer is None:
            return fail(dns.DomainError(name))
        record = dns.RRHeader(name, dns.PTR, payload=dns.Record_PTR(answer))
        return succeed(([record], [], []))

    def _forward(self, kind: str, name: str, timeout: Any) -> Deferred[Any]:
        self.forward.append((kind, name, timeout))
        answer = self.addresses.get(name)
        if isinstance(answer, Deferred):
            return answer
        if answer is None:
            return fail(dns.DomainError(name))
        records = []
        for address in answer:
            if ":" in address:
                if kind == "AAAA":
                    records.append(dns.RRHeader(name, dns.AAAA, payload=dns.Record_AAAA(address)))
            elif kind == "A":
                records.append(dns.RRHeader(name, dns.A, payload=dns.Record_A(address)))
        return succeed((records, [], []))

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._forward("A", name, timeout)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._forward("AAAA", name, timeout)


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
        self.assertEqual(self.successResultOf(resolver.lookup("192.0.2.9")), "mail.example.com")
        self.assertEqual(dnsResolver.asked, [])
        self.assertEqual(dnsResolver.forward, [])


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

    def test_forwardConfirmed(self) -> None:
        """
        The PTR name is asked for its A records (IPv4 client) with the
        whole timeout left (a third of it for a first round of queries, the
        rest for a second), and kept because they hold the client's
        address.
        """
        dnsResolver = FakeResolver(
            {"5.2.0.192.in-addr.arpa": "client.example.net."},
            {"client.example.net": ["198.51.100.1", "192.0.2.5"]},
        )
        resolver = ReverseResolver(Clock(), dnsResolver, hostsFile="/nonexistent")
        self.assertEqual(self.successResultOf(resolver.lookup("192.0.2.5")), "client.example.net")
        self.assertEqual(dnsResolver.forward, [("A", "client.example.net", (1.0, 2.0))])

    def test_forwardConfirmedIPv6(self) -> None:
        """
        An IPv6 client's PTR name is confirmed by its AAAA records, in any
        spelling of the address; its A records do not count.
        """
        pointer = str(pointerName("2001:db8::25"))
        dnsResolver = FakeResolver(
            {pointer: "v6.example.net."}, {"v6.example.net": ["2001:0db8:0::0025", "192.0.2.5"]}
        )
        resolver = ReverseResolver(Clock(), dnsResolver, hostsFile="/nonexistent")
        self.assertEqual(self.successResultOf(resolver.lookup("2001:db8::25")), "v6.example.net")
        self.assertEqual([kind for kind, name, t in dnsResolver.forward], ["AAAA"])
        dnsResolver = FakeResolver({pointer: "v6.example.net."}, {"v6.example.net": ["192.0.2.5"]})
        resolver = ReverseResolver(Clock(), dnsResolver, hostsFile="/nonexistent")
        self.assertIsNone(self.successResultOf(resolver.lookup("2001:db8::25")))

    def test_mappedClientLookedUpAsIPv4(self) -> None:
        """
        An IPv4-mapped address is looked up as the IPv4 address it maps.
        """
        dnsResolver = FakeResolver({"5.2.0.192.in-addr.arpa": "client.example.net."})
        resolver = ReverseResolver(Clock(), dnsResolver, hostsFile="/nonexistent")
        self.assertEqual(
            self.successResultOf(resolver.lookup("::ffff:192.0.2.5")), "client.example.net"
        )
        self.assertEqual(dnsResolver.asked, ["5.2.0.192.in-addr.arpa"])

    def test_unconfirmedIsNone(self) -> None:
        """
        A PTR name whose A records do not hold the client's address, or
        that has none, gives no name, with one warning saying why.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        dnsResolver = FakeResolver(
            {"5.2.0.192.in-addr.arpa": "mail.bank.example.", "6.2.0.192.in-addr.arpa": "gone."},
            {"mail.bank.example": ["198.51.100.1"]},
        )
        resolver = ReverseResolver(Clock(), dnsResolver, hostsFile="/nonexistent")
        self.assertIsNone(self.successResultOf(resolver.lookup("192.0.2.5")))
        self.assertIsNone(self.successResultOf(resolver.lookup("192.0.2.6")))
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "reverse lookup of 192.0.2.5: host name mail.bank.example ignored,"
                " its addresses do not include it",
                "reverse lookup of 192.0.2.6: host name gone ignored,"
                " its lookup failed (DomainError)",
            ],
        )

    def test_otherOwnersDoNotConfirm(self) -> None:
        """
        Only A records of the PTR name, or of the CNAME targets it leads
        to, confirm it: an extra record for another name does not.
        """

        class Resolver(FakeResolver):
            def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Any]:
                return succeed((self.records, [], []))

        def a(owner: str, address: str) -> dns.RRHeader:
            return dns.RRHeader(owner, dns.A, payload=dns.Record_A(address))

        def cname(owner: str, target: str) -> dns.RRHeader:
            return dns.RRHeader(owner, dns.CNAME, payload=dns.Record_CNAME(target))

        dnsResolver = Resolver({"5.2.0.192.in-addr.arpa": "mail.bank.example."})
        resolver = ReverseResolver(Clock(), dnsResolver, hostsFile="/nonexistent")
        dnsResolver.records = [a("other.example", "192.0.2.5")]
        self.assertIsNone(self.successResultOf(resolver.lookup("192.0.2.5")))
        dnsResolver.records = [
            cname("MAIL.bank.example.", "relay.example"),
            cname("relay.example", "host.example"),
            a("host.example.", "192.0.2.5"),
        ]
        self.assertEqual(self.successResultOf(resolver.lookup("192.0.2.5")), "mail.bank.example")

    def test_forwardTimeoutSharesDeadline(self) -> None:
        """
        A PTR answer after 2 seconds leaves the forward lookup the rest of
        the timeout, in two rounds of queries; if it never answers, the
        whole lookup gives no name at the timeout and its margin, counted
        from the start.
        """
        clock = Clock()
        ptr: Deferred[Any] = Deferred()
        never: Deferred[Any] = Deferred()
        dnsResolver = FakeResolver({"7.2.0.192.in-addr.arpa": ptr}, {"client.example.net": never})
        resolver = ReverseResolver(clock, dnsResolver, hostsFile="/nonexistent")
        d = resolver.lookup("192.0.2.7")
        clock.advance(2)
        record = dns.RRHeader(
            "7.2.0.192.in-addr.arpa", dns.PTR, payload=dns.Record_PTR(b"client.example.net")
        )
        ptr.callback(([record], [], []))
        self.assertEqual(dnsResolver.forward, [("A", "client.example.net", (1 / 3, 1 - 1 / 3))])
        clock.advance(resolver.timeout + 0.5 - 2 - 0.01)
        self.assertNoResult(d)
        clock.advance(0.01)
        self.assertIsNone(self.successResultOf(d))
        self.assertFalse(clock.getDelayedCalls())

    def test_forwardRaisingIsNone(self) -> None:
        """
        A forward lookup that raises gives no name, logged with its
        traceback.
        """

        class Resolver(FakeResolver):
            def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Any]:
                raise RuntimeError("resolver broken")

        dnsResolver = Resolver({"5.2.0.192.in-addr.arpa": "client.example.net."})
        resolver = ReverseResolver(Clock(), dnsResolver, hostsFile="/nonexistent")
        self.assertIsNone(self.successResultOf(resolver.lookup("192.0.2.5")))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

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


class RaisingResolver:
    """
    A resolver whose C{lookupPointer} raises instead of failing its
    L{Deferred}.
    """

    def lookupPointer(self, name: str, timeout: Any = None) -> Deferred[Any]:
        raise RuntimeError("resolver broken")


class BadAnswerTests(SynchronousTestCase):
    def lookup(self, answer: Any) -> Deferred[str | None]:
        dnsResolver = FakeResolver({"9.2.0.192.in-addr.arpa": answer})
        return ReverseResolver(Clock(), dnsResolver, hostsFile="/nonexistent").lookup("192.0.2.9")

    def test_nonASCIIAnswerIsNone(self) -> None:
        """
        A PTR answer holding non-ASCII bytes gives no name (it used to fail
        the L{Deferred}, which left the session without a greeting).
        """
        self.assertIsNone(self.successResultOf(self.lookup(b"\xc3\xa9t\xc3\xa9.example.")))

    def test_invalidHostnameIsNone(self) -> None:
        """
        A PTR answer that is not a syntactically valid host name gives no
        name: control characters, bad labels, over-long names, a numeric
        name posing as an address.
        """
        for bad in (
            b"a\r\n250 forged.example.",
            b"-lead.example.",
            b"trail-.example.",
            b"under_score.example.",
            b"x" * 64 + b".example.",
            b".".join([b"a" * 60] * 5) + b".",
            b"192.0.2.1.",
            b"a..example.",
            b"spa ce.example.",
        ):
            self.assertIsNone(self.successResultOf(self.lookup(bad)), bad)

    def test_invalidHostnameLogged(self) -> None:
        """
        An invalid PTR answer leaves one warning naming it, escaped.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertIsNone(self.successResultOf(self.lookup(b"a\r\nforged.example.")))
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["reverse lookup of 192.0.2.9: invalid host name a\\x0d\\x0aforged.example. ignored"],
        )

    def test_unexpectedFailureLogged(self) -> None:
        """
        A lookup failing with something else than a DNS error gives no name
        and is logged with its traceback; DNS errors are not logged.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertIsNone(self.successResultOf(self.lookup(fail(ZeroDivisionError()))))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIsNone(self.successResultOf(self.lookup(fail(dns.DomainError("x")))))
        self.assertEqual(len(events), 1)

    def test_validHostnameKept(self) -> None:
        """
        A valid answer is kept, without its trailing dot.
        """
        self.assertEqual(
            self.successResultOf(self.lookup(b"mail-1.Example.NET.")), "mail-1.Example.NET"
        )

    def test_raisingResolverIsNone(self) -> None:
        """
        A resolver that raises instead of failing gives no name.
        """
        resolver = ReverseResolver(Clock(), RaisingResolver(), hostsFile="/nonexistent")
        self.assertIsNone(self.successResultOf(resolver.lookup("192.0.2.9")))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_oddResultIsNone(self) -> None:
        """
        A result of an unexpected shape gives no name.
        """
        for odd in (None, ("no list",), ([object()], [], [])):
            d: Deferred[Any] = Deferred()
            resolver = ReverseResolver(
                Clock(), FakeResolver({"9.2.0.192.in-addr.arpa": d}), hostsFile="/nonexistent"
            )
            result = resolver.lookup("192.0.2.9")
            d.callback(odd)
            self.assertIsNone(self.successResultOf(result))


class SessionTests(SynchronousTestCase):
    def test_nonASCIIAnswerGreets(self) -> None:
        """
        A session whose client has a non-ASCII PTR answer is greeted, with
        the address literal as its name.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from tests import replies
        from tests.test_protocol import RecordingHandler
        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.server import SMTPServerFactory

        clock = Clock()
        dnsResolver = FakeResolver({"7.2.0.192.in-addr.arpa": b"\xff\xfe.example."})
        factory = SMTPServerFactory(
            RecordingHandler(),
            ServerOptions(name="mx.example.com"),
            reactor=clock,
            resolver=dnsResolver,
        )
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 40000),
            hostAddress=IPv4Address("TCP", "192.0.2.1", 25),
        )
        proto.makeConnection(transport)
        self.assertEqual(transport.value(), replies.GREETING)
        self.assertEqual(proto.session.clientHostname, "[192.0.2.7]")
        self.assertEqual(dnsResolver.asked, ["7.2.0.192.in-addr.arpa"])
        proto.connectionLost(Failure(ConnectionDone()))


class DNSServerOptionTests(SynchronousTestCase):
    """
    C{--dns-server HOST[:PORT]}.
    """

    def test_parse(self) -> None:
        """
        IPv4 and IPv6 addresses, with or without a port (53 by default).
        """
        from twisted_smtpd._serving.resolve import parseDNSServer

        self.assertEqual(parseDNSServer("192.0.2.53"), ("192.0.2.53", 53))
        self.assertEqual(parseDNSServer("192.0.2.53:5353"), ("192.0.2.53", 5353))
        self.assertEqual(parseDNSServer("[2001:db8::53]:54"), ("2001:db8::53", 54))
        self.assertEqual(parseDNSServer("2001:db8::53"), ("2001:db8::53", 53))
        for bad in ["dns.example", "192.0.2.53:0", "192.0.2.53:x", "[::1"]:
            self.assertRaises(ValueError, parseDNSServer, bad)

    def test_oneServer(self) -> None:
        """
        A multicast, broadcast or unspecified address is refused: no one
        server answers there.
        """
        from twisted_smtpd._serving.resolve import parseDNSServer

        for bad in ["224.0.0.251:5353", "255.255.255.255", "0.0.0.0", "[ff02::fb]:5353", "::"]:
            e = self.assertRaises(ValueError, parseDNSServer, bad)
            self.assertEqual(str(e), f"{bad!r}: the server must be one server's address (unicast)")
        self.assertEqual(parseDNSServer("127.0.0.53"), ("127.0.0.53", 53))

    def test_resolver(self) -> None:
        """
        The resolver asks only the given server, not /etc/resolv.conf's.
        """
        from twisted_smtpd._serving.resolve import resolverFor

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
