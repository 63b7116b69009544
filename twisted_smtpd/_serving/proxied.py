# -*- test-case-name: tests.test_proxy -*-
"""
What the PROXY header of a connection said (L{proxyDetails}), asked of
every connection, without loading the PROXY code
(L{twisted_smtpd._serving.proxy}) into a server that has no C{haproxy:}
listener: until that module is loaded, no connection can have come
through its wrapper, and the answer is C{None} at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress

    from twisted_smtpd._core.proxyheader import ProxyHeader

#: The wrapper class of C{haproxy:} listeners, set when their module is
#: loaded (L{registerWrapper}).
_wrapperType: type | None = None


def registerWrapper(wrapperType: type) -> None:
    """
    Have L{proxyDetails} look for C{wrapperType}, the PROXY wrapper, whose
    instances have C{proxyPeer} and C{proxyHeader} attributes.
    """
    global _wrapperType
    _wrapperType = wrapperType


def proxyDetails(transport: Any) -> tuple[IAddress, ProxyHeader] | None:
    """
    Find the PROXY wrapper under a transport (perhaps below TLS).

    @return: The front end's address and the header, or C{None}.
    """
    wrapperType = _wrapperType
    if wrapperType is None:
        return None
    for _ in range(4):
        if transport is None:
            return None
        if isinstance(transport, wrapperType):
            wrapper: Any = transport
            peer: IAddress | None = wrapper.proxyPeer
            header: ProxyHeader | None = wrapper.proxyHeader
            if peer is None or header is None:
                return None
            return peer, header
        transport = getattr(transport, "transport", None)
    return None


def namesNoClient(transport: Any) -> bool:
    """
    Whether C{transport} is a PROXY connection whose header names no client
    (C{LOCAL}, C{UNKNOWN}, or a family other than TCP over IPv4 or IPv6):
    the front end's own connection, a health check, which the per-address
    limits do not count, as they do not count a UNIX socket's clients.
    """
    details = proxyDetails(transport)
    return details is not None and details[1].source is None
