# -*- test-case-name: tests.integration.test_dnsanswers -*-
"""
The C{twisted.names} resolvers the reverse lookups ask: the hosts file and
the servers of C{/etc/resolv.conf}, or one C{--dns-server}.

Imported only when a lookup needs DNS: a server whose clients the hosts
file names never loads C{twisted.names} (about 1 MiB of memory).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import isIPv6Address
from twisted.names import client, dns, hosts
from twisted.names.resolve import ResolverChain
from twisted.python.failure import Failure

from twisted_smtpd._serving.resolve import AnswerUnusable


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
