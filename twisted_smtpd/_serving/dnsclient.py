# -*- test-case-name: tests.integration.test_dnsanswers -*-
"""
The C{twisted.names} resolvers the reverse lookups ask: the hosts file and
the servers of C{/etc/resolv.conf}, or one C{--dns-server}.

Imported only when a lookup needs DNS: a server whose clients the hosts
file names never loads C{twisted.names} (about 1 MiB of memory).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.abstract import isIPv6Address
from twisted.logger import Logger
from twisted.names import client, dns, hosts
from twisted.names.resolve import ResolverChain
from twisted.python.failure import Failure

from twisted_smtpd._core.printable import printable
from twisted_smtpd._serving.resolve import AnswerUnusable

_log = Logger(namespace="twisted_smtpd._serving.resolve.ReverseResolver")


class DNSClient(client.Resolver):
    """
    A C{twisted.names} client whose UDP queries take answers from the
    server asked only, and whose answer truncated over UDP is asked again
    over TCP once only.

    C{client.Resolver} asks again over TCP for every truncated answer, TCP
    ones included: a server answering every TCP query truncated made it
    ask forever, as fast as the server answered, and the chain of
    L{Deferred}s it built overflowed the stack when the lookup's deadline
    cancelled it, so that the lookup never ended.

    Each UDP query has a port of its own, as in C{client.Resolver},
    I{connected} to the server it asks: the system drops a datagram from
    any other address or port, so that an answer forged with the query's
    id is never taken, even with a Twisted released before the fix of
    twisted/twisted#12696 (2026), whose C{twisted.names} matched answers by
    their id alone.

    A datagram that cannot be the query's answer (truncated, malformed, or
    of another id) is dropped with one line for the first of each query
    (L{_oneLinePerQuery}), not Twisted's line for each, as many as the
    server, or anyone sending as it, sends while the query waits.
    """

    def _query(
        self, address: tuple[str, int], queries: list[dns.Query], timeout: float, *args: Any
    ) -> Any:
        """
        Ask C{queries} of the server at C{address} from a new port connected
        to it, closed once answered or timed out.
        """
        interface = "::" if isIPv6Address(address[0]) else ""
        protocol = self._connectedProtocol(interface=interface)
        try:
            protocol.transport.connect(*address)
        except BaseException:
            protocol.transport.stopListening()
            raise
        name = queries[0].name if queries else ""
        protocol.datagramReceived = _oneLinePerQuery(
            protocol, f"{address[0]}:{address[1]}", str(name)
        )
        d = protocol.query(address, queries, timeout, *args)

        def queried(result: object) -> object:
            # A server that refuses (an ICMP port unreachable read as
            # ECONNREFUSED) makes the reactor close the port at once: its
            # transport is gone, and the query ends with its timeout, after
            # which the next server is asked.
            if protocol.transport is not None:
                protocol.transport.stopListening()
            return result

        d.addBoth(queried)
        return d

    def filterAnswers(self, message: dns.Message) -> Any:
        """
        The records of C{message}, or of its TCP answer when it was
        truncated.
        """
        if message.trunc:
            return self.queryTCP(message.queries).addCallback(self._overTCP)
        return super().filterAnswers(message)

    def _overTCP(self, message: dns.Message) -> Any:
        if message.trunc:
            return Failure(AnswerUnusable("the DNS server's answer over TCP is truncated"))
        return super().filterAnswers(message)


def _oneLinePerQuery(
    protocol: dns.DNSDatagramProtocol, server: str, name: str
) -> Callable[[bytes, Any], None]:
    """
    C{protocol}'s C{datagramReceived}, dropping first a datagram that
    cannot answer its query, with one line for the first only: one that is
    not a whole DNS message, or whose id is of no query asked (Twisted
    logs a line for each such datagram: C{Truncated packet}, C{Invalid
    packet}, C{Unexpected message}).
    """
    received = protocol.datagramReceived
    logged = False

    def checked(data: bytes, address: Any) -> None:
        nonlocal logged
        message = dns.Message()
        try:
            message.fromStr(data)
        except EOFError:
            why = f"truncated ({len(data)} octets)"
        except Exception as e:
            why = f"malformed ({printable(str(e)[:100])})"
        else:
            if message.id in protocol.liveMessages or message.id in protocol.resends:
                received(data, address)
                return
            why = "its id is of no query asked"
        if not logged:
            logged = True
            _log.warn(
                "DNS answer from {server} to the query for {name} ignored: {why};"
                " no more such are logged for this query",
                server=server,
                name=printable(name[:300]),
                why=why,
            )

    return checked


def defaultResolver(reactor: Any = None) -> ResolverChain:
    """
    The hosts file, then the servers of C{/etc/resolv.conf}, as
    C{twisted.names.client.createResolver} gives on POSIX (without its
    cache, which only a DNS server fills), through L{DNSClient}.
    """
    return ResolverChain(
        [hosts.Resolver(b"/etc/hosts"), DNSClient(b"/etc/resolv.conf", reactor=reactor)]
    )


def serverResolver(address: tuple[str, int], reactor: Any = None) -> DNSClient:
    """
    A L{DNSClient} asking only the server at C{address}, instead of those
    of C{/etc/resolv.conf}.
    """
    return DNSClient(resolv=None, servers=[address], reactor=reactor)
