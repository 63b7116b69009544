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
from twisted_smtpd._serving.dnsanswer import NotTheAnswer, readAnswer
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

    A datagram that cannot be the query's answer (truncated, of another
    id, not a response, or with another question: L{readAnswer}) is
    dropped with one line for the first of each query
    (L{_oneLinePerQuery}), not Twisted's line for each, as many as the
    server, or anyone sending as it, sends while the query waits.  The
    answer is read by L{readAnswer}, over TCP too: a malformed one fails
    the query.
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
        protocol.datagramReceived = _oneLinePerQuery(
            protocol, f"{address[0]}:{address[1]}", queries[0]
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

    def connectionMade(self, protocol: Any) -> None:
        """
        Read the answers over the TCP connection C{protocol} as those over
        UDP (L{readAnswer}): a message that is not the answer to a query
        asked on it is dropped, with one line for the first.
        """
        protocol.writeMessage, protocol.dataReceived = _overTCPChecked(protocol)
        super().connectionMade(protocol)

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
    protocol: dns.DNSDatagramProtocol, server: str, query: dns.Query
) -> Callable[[bytes, Any], None]:
    """
    C{protocol}'s C{datagramReceived}: the answer to C{query}, read by
    L{readAnswer}, ends the query; a datagram that cannot be its answer
    is dropped, with one line for the first only: one that is not a whole
    DNS message, whose id is of no query asked, that is not a response,
    or whose question is not the query's (Twisted logs a line for each
    datagram it cannot read, C{Truncated packet}, C{Invalid packet},
    C{Unexpected message}, and takes any message with the query's id).
    An answer that is malformed fails the query (L{AnswerUnusable}).
    """
    dropped = _firstOnly(
        "DNS answer from {server} to the query for {name} ignored: {why};"
        " no more such are logged for this query",
        server=server,
        name=printable(str(query.name)[:300]),
    )

    def checked(data: bytes, address: Any) -> None:
        messageID = _idOf(data) if len(data) >= 12 else None
        if messageID not in protocol.liveMessages and messageID in protocol.resends:
            return  # a late duplicate, as Twisted ignores it
        _take(protocol, data, query, dropped)

    return checked


def _overTCPChecked(
    protocol: Any,
) -> tuple[Callable[[dns.Message], None], Callable[[bytes], None]]:
    """
    C{protocol}'s C{writeMessage}, keeping the question of each query it
    sends, and its C{dataReceived}, which reads each message (after its
    two-octet length, RFC 1035 section 4.2.2) as the answer to the query
    of its id (L{readAnswer}), or drops it with one line for the first of
    the connection.  Its own framing: the C{DNSProtocol} of Twisted 23.10
    frames messages in its C{dataReceived}, with no C{stringReceived} to
    wrap.
    """
    write = protocol.writeMessage
    questions: dict[int, dns.Query] = {}
    buffer = b""
    dropped = _firstOnly(
        "DNS answer from {server} over TCP ignored: {why};"
        " no more such are logged for this connection",
        server=_peer(protocol),
    )

    def dataReceived(data: bytes) -> None:
        nonlocal buffer
        buffer += data
        while len(buffer) >= 2:
            end = 2 + int.from_bytes(buffer[:2], "big")
            if len(buffer) < end:
                return
            message, buffer = buffer[2:end], buffer[end:]
            stringReceived(message)

    def writeMessage(message: dns.Message) -> None:
        for asked in [i for i in questions if i not in protocol.liveMessages]:
            del questions[asked]
        if message.queries:
            questions[message.id] = message.queries[0]
        write(message)

    def stringReceived(data: bytes) -> None:
        query = questions.get(_idOf(data)) if len(data) >= 12 else None
        _take(protocol, data, query, dropped)

    return writeMessage, dataReceived


def _firstOnly(format: str, **fields: str) -> Callable[[str], None]:
    """
    A function logging C{format} with C{fields} and the reason it is given
    (C{why}) the first time it is called, and nothing after.
    """
    logged = False

    def dropped(why: str) -> None:
        nonlocal logged
        if not logged:
            logged = True
            _log.warn(format, why=why, **fields)

    return dropped


def _take(
    protocol: Any, data: bytes, query: dns.Query | None, dropped: Callable[[str], None]
) -> None:
    """
    End the query of C{protocol} that the message C{data} answers with the
    answer L{readAnswer} reads from it, or fail it when the answer is
    malformed (L{AnswerUnusable}); a message that cannot be the answer to
    C{query} (the query asked with its id, if any) is dropped, its reason
    given to C{dropped}.
    """
    try:
        if len(data) < 12:
            raise NotTheAnswer(f"truncated ({len(data)} octets)")
        if query is None or _idOf(data) not in protocol.liveMessages:
            raise NotTheAnswer("its id is of no query asked")
        _answered(protocol, _idOf(data), readAnswer(data, query))
    except NotTheAnswer as e:
        dropped(str(e))
    except AnswerUnusable as e:
        _answered(protocol, _idOf(data), Failure(e))


def _peer(protocol: Any) -> str:
    peer = protocol.transport.getPeer() if protocol.transport is not None else None
    host, port = getattr(peer, "host", "?"), getattr(peer, "port", "?")
    return f"{host}:{port}"


def _idOf(data: bytes) -> int:
    return int.from_bytes(data[:2], "big")


def _answered(protocol: Any, messageID: int, result: dns.Message | Failure) -> None:
    """
    End the query C{messageID} of C{protocol} (a C{twisted.names}
    L{dns.DNSDatagramProtocol} or L{dns.DNSProtocol}) with C{result}, as
    Twisted ends it with the message it reads: its timeout cancelled, its
    L{Deferred} fired.
    """
    pending = protocol.liveMessages.pop(messageID, None)
    if pending is None:
        return
    deferred, timeout = pending
    timeout.cancel()
    # Twisted since twisted/twisted#12696 keeps the address each UDP
    # query's answer must come from.
    expected = getattr(protocol, "_addressValidation", None)
    if isinstance(expected, dict):
        expected.pop(messageID, None)
    if isinstance(result, Failure):
        deferred.errback(result)
    else:
        deferred.callback(result)


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
