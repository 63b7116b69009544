# -*- test-case-name: tests.test_dnsdatagrams -*-
"""
Tests for L{twisted_smtpd._serving.dnsclient}: datagrams a DNS server (or
anyone sending as it) answers a query with that cannot be its answer leave
one line per query, however many come.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import TimeoutError
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.dnsclient import serverResolver

POINTER = "7.2.0.192.in-addr.arpa"
SERVER = ("192.0.2.53", 53)


class _Port:
    """
    A UDP port of L{_Reactor}: what is written to it is kept.
    """

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.written: list[bytes] = []
        self.connected: tuple[str, int] | None = None
        self.listening = True

    def connect(self, host: str, port: int) -> None:
        self.connected = (host, port)

    def write(self, data: bytes, address: object = None) -> None:
        self.written.append(data)

    def stopListening(self) -> None:
        self.listening = False
        self.protocol.doStop()


class _Reactor(Clock):
    """
    A clock that also opens UDP ports in memory.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[_Port] = []

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 0
    ) -> _Port:
        udp = _Port(protocol)
        self.ports.append(udp)
        protocol.makeConnection(udp)
        return udp


def lines(events: Any) -> list[str]:
    """
    The lines of C{events}, without Twisted's about the UDP port's protocol
    starting and stopping (which the server's log writer leaves out).
    """
    texts = [formatEvent(e) for e in events]
    return [t for t in texts if not t.startswith(("Starting protocol", "Stopping protocol"))]


def answer(queryID: int) -> bytes:
    """
    A well-formed answer to the PTR query C{queryID}.
    """
    message = dns.Message(id=queryID, answer=1)
    message.queries = [dns.Query(POINTER, dns.PTR)]
    message.answers = [dns.RRHeader(POINTER, dns.PTR, payload=dns.Record_PTR("c.example.net"))]
    return message.toStr()


class UnusableDatagramTests(SynchronousTestCase):
    """
    Twisted writes a line for each datagram it cannot use (C{Truncated
    packet}, C{Invalid packet}, C{Unexpected message}), so that a flood of
    them, which a server or anyone able to send as it can send while a
    query waits, was as many lines; now the first of a query is one line
    of the server's own, and the others none.
    """

    def test_floodOneLine(self) -> None:
        """
        Truncated datagrams, malformed ones and answers to another query
        id, a thousand of each, leave one line; the answer that comes
        after them is still taken.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reactor = _Reactor()
        resolver = serverResolver(SERVER, reactor)
        d = resolver.lookupPointer(POINTER, timeout=(3,))
        [port] = reactor.ports
        self.assertEqual(port.connected, SERVER)
        queryID = dns.Message()
        queryID.fromStr(port.written[0])
        good = answer(queryID.id)
        loop = good[:12] + b"\xc0\x0c" + good[14:]
        for _ in range(1000):
            port.protocol.datagramReceived(b"\xff" * 7, SERVER)
            port.protocol.datagramReceived(loop, SERVER)
            port.protocol.datagramReceived(answer((queryID.id + 1) % 65536), SERVER)
        self.assertNoResult(d)
        port.protocol.datagramReceived(good, SERVER)
        answers, _, _ = self.successResultOf(d)
        self.assertEqual([str(r.payload.name) for r in answers], ["c.example.net"])
        self.assertFalse(port.listening)
        self.assertEqual(
            lines(events),
            [
                "DNS answer from 192.0.2.53:53 to the query for 7.2.0.192.in-addr.arpa"
                " ignored: truncated (7 octets); no more such are logged for this query"
            ],
        )

    def test_eachQueryOneLine(self) -> None:
        """
        Each query (each has a port of its own) has its own line: an answer
        to another id is named so.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reactor = _Reactor()
        resolver = serverResolver(SERVER, reactor)
        names = [POINTER, "8.2.0.192.in-addr.arpa"]
        lookups = []
        for name in names:
            lookups.append(resolver.lookupPointer(name, timeout=(3,)))
            port = reactor.ports[-1]
            sent = dns.Message()
            sent.fromStr(port.written[0])
            for _ in range(5):
                port.protocol.datagramReceived(answer((sent.id + 1) % 65536), SERVER)
        self.assertEqual(len(reactor.ports), 2)
        self.assertEqual(
            lines(events),
            [
                f"DNS answer from 192.0.2.53:53 to the query for {name} ignored:"
                " its id is of no query asked; no more such are logged for this query"
                for name in names
            ],
        )
        reactor.advance(3)
        for d in lookups:
            self.failureResultOf(d, TimeoutError)
