# -*- test-case-name: tests.test_limits -*-
"""
Limits per client address: concurrent connections
(C{maxClientsPerIp}), the connection rate (C{maxConnectionRate}) and the
AUTH command rate (C{maxAuthRate}), in the spirit of Postfix's anvil.

Pure: addresses and times in, the name of the limit reached out.  The tables
are bounded: the concurrency table holds only addresses with a connection open
(at most as many as there are connections), each rate table forgets a window
once it is over and never holds more than L{MAX_TRACKED} addresses.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict

from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.optionvalues import IPNetwork, trusted

#: IPv6 clients are counted by this prefix (Postfix 3.8's
#: C{smtpd_client_ipv6_prefix_length} default): one host or site has many
#: addresses, so counting each alone would not limit it.
IPV6_PREFIX_LENGTH = 84

#: Most client addresses whose connection rate is remembered at once; when an
#: address beyond it arrives, the address whose window began first is
#: forgotten (a flood from many addresses is then limited by C{maxClients}).
MAX_TRACKED = 65536


@functools.lru_cache(maxsize=1024)
def _isAddress(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ClientLimits:
    """
    Count the connections of each client address: an IPv4 address, or the
    IPv6 network of C{ipv6PrefixLength} bits an IPv6 address is in
    (C{2001:db8::/84}).

    @ivar open: Connections now open, by client address (exempt addresses
        are not counted).
    @ivar windows: Per client address, C{[start, count]} of its current rate
        window, oldest window first: an C{OrderedDict}, whose first entry is
        found at once however many were dropped before it (a C{dict} scans
        its deleted entries from its start, up to a hundred thousand for
        each new address of a flood filling the table).
    @ivar authWindows: The same for the AUTH commands of each address.
    """

    def __init__(
        self,
        perAddress: int,
        rate: tuple[int, float] | None,
        exempt: tuple[IPNetwork, ...],
        maxTracked: int = MAX_TRACKED,
        ipv6PrefixLength: int = IPV6_PREFIX_LENGTH,
        authRate: tuple[int, float] | None = None,
    ) -> None:
        self._perAddress = perAddress
        self._rate = rate
        self._authRate = authRate
        self._exempt = exempt
        self._maxTracked = maxTracked
        self._ipv6Mask = ((1 << 128) - 1) ^ ((1 << (128 - ipv6PrefixLength)) - 1)
        self._ipv6Suffix = f"/{ipv6PrefixLength}"
        self.open: dict[str, int] = {}
        self.windows: OrderedDict[str, list[float]] = OrderedDict()
        self.authWindows: OrderedDict[str, list[float]] = OrderedDict()

    @classmethod
    def fromOptions(cls, options: ServerOptions) -> ClientLimits:
        """
        The limits C{options} set: C{maxClientsPerIp}, C{maxConnectionRate},
        C{maxAuthRate}, C{limitExemptions} and C{clientIpv6PrefixLength}.  The C{useXClient}
        networks are exempt too: a front end allowed XCLIENT passes many
        clients over connections from its own address, and Postfix leaves
        C{smtpd_authorized_xclient_hosts} out of its connection count and
        rate limits.
        """
        return cls(
            options.maxClientsPerIp,
            options.maxConnectionRate,
            options.limitExemptions + options.useXClient,
            ipv6PrefixLength=options.clientIpv6PrefixLength,
            authRate=options.maxAuthRate,
        )

    def _key(self, host: str) -> str:
        """
        What C{host} is counted as: itself, or for an IPv6 address its
        network (C{2001:db8::/84}).
        """
        if ":" not in host:
            return host
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return host
        network = ipaddress.IPv6Address(int(address) & self._ipv6Mask)
        return str(network) + self._ipv6Suffix

    @property
    def active(self) -> bool:
        """
        Whether any limit is configured.
        """
        return bool(self._perAddress) or self._rate is not None

    @property
    def tracking(self) -> bool:
        """
        Whether a rate window is remembered, to be forgotten when it is over.
        """
        return bool(self.windows or self.authWindows)

    def connected(self, host: str, now: float) -> tuple[bool, str | None]:
        """
        Count a new connection from C{host}.

        @return: Whether it was counted (then L{disconnected} must be called
            once when it ends), and the limit it exceeds, described for a
            log line, or C{None} when it may go on.
        """
        if not self.active or not _isAddress(host) or trusted(self._exempt, host):
            # UNIX socket clients have no address of their own to count.
            return False, None
        host = self._key(host)
        count = self.open.get(host, 0) + 1
        self.open[host] = count
        if self._rate is not None:
            limit, seconds = self._rate
            attempts = self._attempt(self.windows, host, now, seconds)
            if attempts > limit:
                return True, f"connection rate limit ({limit} per {seconds:g} s)"
        if self._perAddress and count > self._perAddress:
            return True, f"connection limit per client address ({self._perAddress})"
        return True, None

    def disconnected(self, host: str) -> None:
        """
        A connection counted by L{connected} ended.
        """
        host = self._key(host)
        count = self.open.get(host, 0) - 1
        if count > 0:
            self.open[host] = count
        else:
            self.open.pop(host, None)

    def authCommand(self, host: str, now: float) -> str | None:
        """
        Count an AUTH command from C{host}.

        @return: The limit it exceeds, described for a log line, or C{None}
            when it may go on.
        """
        if self._authRate is None or not _isAddress(host) or trusted(self._exempt, host):
            return None
        limit, seconds = self._authRate
        if self._attempt(self.authWindows, self._key(host), now, seconds) > limit:
            return f"AUTH rate limit ({limit} per {seconds:g} s)"
        return None

    def _attempt(
        self, windows: OrderedDict[str, list[float]], host: str, now: float, seconds: float
    ) -> int:
        window = windows.get(host)
        if window is None or _over(window[0], now, seconds):
            if window is not None:
                # Moved to the end: the table stays ordered by window start.
                del windows[host]
            else:
                _expire(windows, now, seconds)
                while len(windows) >= self._maxTracked:
                    windows.popitem(last=False)
            window = windows[host] = [now, 0.0]
        window[1] += 1
        return int(window[1])

    def expire(self, now: float) -> None:
        """
        Forget the rate windows that are over.
        """
        if self._rate is not None:
            _expire(self.windows, now, self._rate[1])
        if self._authRate is not None:
            _expire(self.authWindows, now, self._authRate[1])


def _expire(windows: OrderedDict[str, list[float]], now: float, seconds: float) -> None:
    """
    Forget the windows of C{seconds} that are over, the oldest first.
    """
    while windows:
        host = next(iter(windows))
        if not _over(windows[host][0], now, seconds):
            break
        del windows[host]


def _over(start: float, now: float, seconds: float) -> bool:
    """
    Whether a rate window begun at C{start} is over at C{now}: C{seconds}
    went by, or it begins after C{now}.  The reactor's time is the wall
    clock: set back (by an operator, NTP), a window must not last for as
    long as the clock went back, refusing its client all that time.
    """
    return not 0 <= now - start < seconds
