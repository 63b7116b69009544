# -*- test-case-name: tests.test_resolve -*-
"""
Reverse lookups of client addresses, for C{session.clientHostname}.

The hosts file answers first (so loopback and local names never wait on the
network), then C{twisted.names} with a short bound: a client never waits
more than C{timeout} seconds for its greeting because of DNS.  A name from
DNS is believed only when it is forward-confirmed (FCrDNS, as Postfix and
Exim do): its A (or AAAA) records must hold the client's address.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, maybeDeferred, succeed
from twisted.internet.error import (
    CannotListenError,
    ConnectError,
    ConnectionClosed,
    DNSLookupError,
)
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._core.printable import printable, validHostname


def pointerName(ip: str) -> str | None:
    """
    The C{in-addr.arpa}/C{ip6.arpa} name of an address, or C{None} when
    C{ip} is not an IP address.
    """
    try:
        return ipaddress.ip_address(ip).reverse_pointer
    except ValueError:
        return None


def readHostsFile(path: str) -> dict[str, str]:
    """
    Map each address in a hosts file to its first (canonical) name.
    """
    names: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                fields = raw.split("#", 1)[0].split()
                if len(fields) < 2:
                    continue
                try:
                    address = str(ipaddress.ip_address(fields[0]))
                except ValueError:
                    continue
                names.setdefault(address, fields[1])
    except OSError:
        return {}
    return names


class ReverseResolver:
    """
    Look up the name of a client address.

    @ivar timeout: Seconds to wait for DNS before giving up.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        resolver: Any = None,
        hostsFile: str = "/etc/hosts",
        timeout: float = 3.0,
    ) -> None:
        self._clock = clock
        self._resolver = resolver
        self._hosts = readHostsFile(hostsFile)
        self.timeout = timeout

    def known(self, ip: str) -> str | None:
        """
        The name the hosts file gives C{ip}, or C{None}.
        """
        name = self._hosts.get(ip)
        if name is None and ":" in ip:
            try:
                name = self._hosts.get(str(ipaddress.ip_address(ip)))
            except ValueError:
                return None
        return name

    def lookup(self, ip: str) -> Deferred[str | None]:
        """
        Find the name for C{ip}: the name of its PTR record, once a forward
        lookup of that name (A for an IPv4 address, AAAA for IPv6) gives
        C{ip} back.  Both lookups together take at most C{timeout} seconds
        (and a half-second margin); each asks its servers in two rounds
        (L{attempts}).

        @return: A L{Deferred} firing with the name, or C{None} when there is
            none, it is not confirmed, a lookup failed or took too long; it
            never fails.
        """
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return succeed(None)
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        canonical = str(address)
        known = self._hosts.get(canonical)
        if known is not None:
            return succeed(known)
        ptr = address.reverse_pointer
        expected = _expected()
        if self._resolver is None:
            from twisted_smtpd._serving.dnsclient import defaultResolver

            self._resolver = defaultResolver()
        resolver = self._resolver
        deadline = self._clock.seconds() + self.timeout
        d: Deferred[Any] = maybeDeferred(
            resolver.lookupPointer, ptr, timeout=attempts(self.timeout)
        )

        def found(result: object) -> Deferred[str | None] | None:
            name = ptrAnswer(result, ptr)
            if name is None:
                names = _answerNames(result, ptr)
                if names:
                    self._log.warn(
                        "reverse lookup of {ip}: invalid host name {names} ignored",
                        ip=canonical,
                        names=", ".join(names),
                    )
                return None
            left = deadline - self._clock.seconds()
            if left <= 0:
                unconfirmed(name, "no time left for its forward lookup")
                return None
            if address.version == 6:
                forward = maybeDeferred(resolver.lookupIPV6Address, name, timeout=attempts(left))
            else:
                forward = maybeDeferred(resolver.lookupAddress, name, timeout=attempts(left))

            def answered(result: object) -> str | None:
                if address in forwardAddresses(result, name):
                    return name
                unconfirmed(name, "its addresses do not include it")
                return None

            def notAnswered(failure: Failure) -> Failure | None:
                if failure.check(*expected) is None:
                    return failure
                unconfirmed(name, f"its lookup failed ({failure.value.__class__.__name__})")
                return None

            forward.addCallbacks(answered, notAnswered)
            return forward

        def unconfirmed(name: str, why: str) -> None:
            self._log.warn(
                "reverse lookup of {ip}: host name {name} ignored, {why}",
                ip=canonical,
                name=name,
                why=why,
            )

        def failed(failure: Failure) -> None:
            # Every failure, of the lookups or of reading their answers, is
            # "no name": the session must be greeted whatever DNS said.
            if failure.check(*expected) is not None:
                return None
            if failure.check(*_TROUBLE) is not None:
                self._log.warn(
                    "reverse lookup of {ip} failed: {why}",
                    ip=canonical,
                    why=printable(str(failure.value)[:200]),
                )
            else:
                self._log.failure("reverse lookup of {ip} failed", failure, ip=canonical)
            return None

        d.addCallback(found)
        # One bound for both lookups: cancelling d cancels the forward
        # lookup it waits on.
        d.addTimeout(self.timeout + 0.5, self._clock)
        d.addErrback(failed)
        return d


def attempts(seconds: float) -> tuple[float, float]:
    """
    The seconds each round of queries of a lookup waits (C{twisted.names}
    asks every server once per round): a third of C{seconds}, then the rest.

    A lost datagram is asked again within the bound, and a second or third
    server (C{/etc/resolv.conf}) is asked when the first one is silent,
    instead of the first one alone taking the whole bound.
    """
    return (seconds / 3, seconds - seconds / 3)


class AnswerUnusable(Exception):
    """
    A DNS server's answer that cannot be used (truncated over TCP, or
    malformed).
    """


#: The failures of a lookup that are no news: no such name, no answer in
#: time, a server failure.  Those of L{_TROUBLE} are one warning line;
#: anything else is logged with its traceback.  Set at the first lookup
#: that asks DNS (L{_expected}): a server whose clients the hosts file
#: names never loads C{twisted.names}.
_EXPECTED: tuple[type[BaseException], ...] = ()


def _expected() -> tuple[type[BaseException], ...]:
    """
    L{_EXPECTED}, made at the first call.
    """
    global _EXPECTED
    if not _EXPECTED:
        from twisted.names.error import DomainError, ResolverError

        _EXPECTED = (
            DomainError,
            ResolverError,
            TimeoutError,
            ConnectTimeoutError,
            CancelledError,
            DNSLookupError,
        )
    return _EXPECTED


#: The failures that say a DNS server is unreachable or misbehaves (no TCP
#: listener for a truncated answer, a connection closed, no socket left):
#: one warning line each, without a traceback.
_TROUBLE = (ConnectError, ConnectionClosed, CannotListenError, AnswerUnusable)


def _pointerNames(result: object, pointer: str) -> list[bytes]:
    """
    The names the PTR records of C{pointer} in the answer to its PTR query
    give, in order: the records owned by C{pointer} or by the target of a
    CNAME record leading from it (RFC 2317 classless delegation), never
    those of another owner nor the targets of the CNAME records themselves.

    @param result: What C{twisted.names} resolvers give:
        C{(answers, authority, additional)}.
    """
    if not isinstance(result, tuple) or not result or not isinstance(result[0], list):
        return []
    from twisted.names.dns import Record_PTR, RRHeader

    records = [r for r in result[0][:_MAX_RECORDS] if isinstance(r, RRHeader)]
    owners = _owners(records, pointer)
    names: list[bytes] = []
    for r in records:
        if isinstance(r.payload, Record_PTR) and _key(r.name) in owners:
            raw = getattr(r.payload.name, "name", None)
            if isinstance(raw, bytes):
                names.append(raw)
    return names


def _answerNames(result: object, pointer: str) -> list[str]:
    """
    The names in the PTR records of C{pointer} in C{result}, made
    L{printable}, for a log line.
    """
    return [
        printable(raw[:300].decode("ascii", "backslashreplace"))
        for raw in _pointerNames(result, pointer)[:4]
    ]


def ptrAnswer(result: object, pointer: str) -> str | None:
    """
    The host name in the answer to the PTR query for C{pointer}, or C{None}
    when none of its PTR records (L{_pointerNames}: those of C{pointer} or
    of a CNAME target leading from it) gives a valid host name
    (L{validHostname}: ASCII letters, digits and hyphens, length limits),
    so that no control character, non-ASCII byte, numeric name posing as an
    address, nor a name given for another owner is ever taken as a
    client's name.

    @param result: What C{twisted.names} resolvers give:
        C{(answers, authority, additional)}.
    @param pointer: The name asked for (C{2.0.0.192.in-addr.arpa}).
    """
    for raw in _pointerNames(result, pointer):
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            continue
        if text.endswith("."):
            text = text[:-1]
        if validHostname(text):
            return text
    return None


def _owners(records: list[Any], name: str) -> set[str]:
    """
    C{name} and the targets of the CNAME records among C{records} leading
    from it, at most 8 links away (a loop ends too), as L{_key}s.
    """
    from twisted.names.dns import Record_CNAME

    owners = {_key(name)}
    for _ in range(8):
        more: set[str] = set()
        for r in records:
            if isinstance(r.payload, Record_CNAME) and _key(r.name) in owners:
                more.add(_key(r.payload.name))
        if more <= owners:
            break
        owners |= more
    return owners


def forwardAddresses(
    result: object, name: str
) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """
    The addresses the answer to an A or AAAA query for C{name} gives it:
    those of its A and AAAA records owned by C{name} or by the target of a
    CNAME record in the answer leading from C{name}.

    @param result: What C{twisted.names} resolvers give:
        C{(answers, authority, additional)}.
    """
    if not isinstance(result, tuple) or not result or not isinstance(result[0], list):
        return set()
    # Imported here, where a DNS answer is read: a server whose clients the
    # hosts file names never needs the module (about 1 MiB of memory).
    from twisted.names.dns import Record_A, Record_AAAA, RRHeader

    records = [r for r in result[0][:_MAX_RECORDS] if isinstance(r, RRHeader)]
    owners = _owners(records, name)
    addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for r in records:
        payload = r.payload
        if not isinstance(payload, (Record_A, Record_AAAA)) or _key(r.name) not in owners:
            continue
        try:
            if isinstance(payload, Record_A):
                addresses.add(ipaddress.IPv4Address(payload.address))
            else:
                addresses.add(ipaddress.IPv6Address(payload.address))
        except (ValueError, TypeError):
            continue
    return addresses


#: The most answer records a PTR or forward lookup's answer is searched
#: through.
_MAX_RECORDS = 64


def _key(name: object) -> str:
    """
    A DNS name (C{str} or L{twisted.names.dns.Name}) for comparison: lower
    case, without its trailing dot.
    """
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
    return text.lower().rstrip(".")


#: The limited broadcast address, which C{is_multicast} does not cover.
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def parseDNSServer(text: str) -> tuple[str, int]:
    """
    C{HOST[:PORT]} of a DNS server: an IPv4 address, or an IPv6 one in
    brackets when a port follows (C{[2001:db8::53]:5353}); port 53 by
    default.  One server's address: not a multicast or broadcast address
    (a query sent there gets no answer, or an error, each time), nor an
    unspecified one.

    @raise ValueError: Saying what is wrong.
    """
    host, port = text.strip(), "53"
    if host.startswith("["):
        host, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected HOST[:PORT]")
        port = rest[1:] or port
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: the server must be an IP address") from None
    if address.is_multicast or address.is_unspecified or address == _BROADCAST:
        raise ValueError(f"{text!r}: the server must be one server's address (unicast)")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: bad port {port!r}")
    return str(address), int(port)


def resolverFor(server: str, reactor: Any = None) -> Any:
    """
    A C{twisted.names} resolver asking only C{server} (C{HOST[:PORT]}),
    instead of the servers of C{/etc/resolv.conf}.

    @raise ValueError: If C{server} is not C{HOST[:PORT]}.
    """
    from twisted_smtpd._serving.dnsclient import serverResolver

    return serverResolver(parseDNSServer(server), reactor)
