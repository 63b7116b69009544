# -*- test-case-name: tests.test_resolve -*-
"""
Reverse lookups of client addresses, for C{session.clientHostname}.

The hosts file answers first (so loopback and local names never wait on the
network), then C{twisted.names} with a short bound: a client never waits
more than C{timeout} seconds for its greeting because of DNS.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, maybeDeferred, succeed
from twisted.internet.error import DNSLookupError
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.names.error import DomainError, ResolverError
from twisted.python.failure import Failure

from twisted_smtpd._printable import printable, validHostname


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
        Find the name for C{ip}.

        @return: A L{Deferred} firing with the name, or C{None} when there is
            none, the lookup failed or took too long; it never fails.
        """
        try:
            canonical = str(ipaddress.ip_address(ip))
        except ValueError:
            return succeed(None)
        known = self._hosts.get(canonical)
        if known is not None:
            return succeed(known)
        ptr = pointerName(canonical)
        if ptr is None:
            return succeed(None)
        if self._resolver is None:
            from twisted.names.client import createResolver

            self._resolver = createResolver()
        d: Deferred[Any] = maybeDeferred(self._resolver.lookupPointer, ptr, timeout=(self.timeout,))
        d.addTimeout(self.timeout + 0.5, self._clock)

        def found(result: object) -> str | None:
            name = ptrAnswer(result)
            if name is None and _answerNames(result):
                self._log.warn(
                    "reverse lookup of {ip}: invalid host name {names} ignored",
                    ip=canonical,
                    names=", ".join(_answerNames(result)),
                )
            return name

        def failed(failure: Failure) -> None:
            # Every failure, of the lookup or of reading its answer, is
            # "no name": the session must be greeted whatever DNS said.
            if failure.check(*_EXPECTED) is None:
                self._log.failure("reverse lookup of {ip} failed", failure, ip=canonical)
            return None

        d.addCallback(found)
        d.addErrback(failed)
        return d


#: The failures of a lookup that are no news: no such name, no answer in
#: time, a server failure.  Anything else is logged with its traceback.
_EXPECTED = (
    DomainError,
    ResolverError,
    TimeoutError,
    ConnectTimeoutError,
    CancelledError,
    DNSLookupError,
)


def _answerNames(result: object) -> list[str]:
    """
    The names in the answer records of C{result}, made L{printable}, for a
    log line.
    """
    if not isinstance(result, tuple) or not result or not isinstance(result[0], list):
        return []
    names = []
    for record in result[0][:4]:
        raw = getattr(getattr(getattr(record, "payload", None), "name", None), "name", None)
        if isinstance(raw, bytes):
            names.append(printable(raw[:300].decode("ascii", "backslashreplace")))
    return names


def ptrAnswer(result: object) -> str | None:
    """
    The host name in the answer to a PTR query, or C{None} when it has no
    answer record whose name is a valid host name (L{validHostname}: ASCII
    letters, digits and hyphens, length limits), so that no control
    character, non-ASCII byte or numeric name posing as an address is ever
    taken as a client's name.

    @param result: What C{twisted.names} resolvers give:
        C{(answers, authority, additional)}.
    """
    if not isinstance(result, tuple) or not result or not isinstance(result[0], list):
        return None
    for record in result[0]:
        payload = getattr(record, "payload", None)
        raw = getattr(getattr(payload, "name", None), "name", None)
        if not isinstance(raw, bytes):
            continue
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            continue
        if text.endswith("."):
            text = text[:-1]
        if validHostname(text):
            return text
    return None


def parseDNSServer(text: str) -> tuple[str, int]:
    """
    C{HOST[:PORT]} of a DNS server: an IPv4 address, or an IPv6 one in
    brackets when a port follows (C{[2001:db8::53]:5353}); port 53 by
    default.

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
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: bad port {port!r}")
    return str(address), int(port)


def resolverFor(server: str, reactor: Any = None) -> Any:
    """
    A C{twisted.names} resolver asking only C{server} (C{HOST[:PORT]}),
    instead of the servers of C{/etc/resolv.conf}.

    @raise ValueError: If C{server} is not C{HOST[:PORT]}.
    """
    from twisted.names.client import Resolver

    return Resolver(resolv=None, servers=[parseDNSServer(server)], reactor=reactor)
