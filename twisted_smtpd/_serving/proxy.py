# -*- test-case-name: tests.test_proxy -*-
"""
PROXY protocol support for listeners (C{haproxy:} endpoint strings): the
session starts only once the header has arrived, so it sees the real client
from its first moment, and the header is believed only from C{useProxy}
networks.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocol,
    IReactorTime,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.optionvalues import IPNetwork, trusted
from twisted_smtpd._core.proxyheader import ProxyHeader, ProxyHeaderError, parseProxyHeader
from twisted_smtpd._core.replies import Reply, formatReply
from twisted_smtpd._core.session import Session, hostPort, newSessionId
from twisted_smtpd._serving.logging import NAMESPACE, clientAddress, formatPeer, refusal
from twisted_smtpd._serving.proxied import registerWrapper

#: Where a connection refused for C{maxClients} is logged: among the
#: sessions' lines, as the server logs its own refusals for a limit.
_sessionLog = Logger(namespace=NAMESPACE)

#: Seconds a front end has to send its header.
HEADER_TIMEOUT = 10.0


def _address(hostPort: tuple[str, int]) -> IAddress:
    host, port = hostPort
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class ProxyProtocolWrapper(ProtocolWrapper):
    """
    Reads the PROXY header, then hands the connection to the wrapped
    protocol with C{getPeer}/C{getHost} saying what the header said.

    @ivar proxyHeader: The header, once read.
    @ivar proxyPeer: The address of the front end itself.
    """

    factory: ProxyWrappingFactory
    #: Once the header is read, a write is its transport's write, unchanged:
    #: a session over this wrapper straight over a TCP connection writes to
    #: the connection itself (L{SMTPProtocol}).
    passesWritesOn = True

    def __init__(self, factory: Any, wrappedProtocol: IProtocol) -> None:
        super().__init__(factory, wrappedProtocol)
        self.proxyHeader: ProxyHeader | None = None
        self.proxyPeer: IAddress | None = None
        self._buffer = b""
        self._timer: IDelayedCall | None = None
        self._refused = False
        #: Whether it is counted among the factory's connections waiting
        #: for their header.
        self._pending = False

    def makeConnection(self, transport: Any) -> None:
        """
        Take the connection; the wrapped protocol gets it after the header.
        """
        self.connected = True
        self.transport = transport
        self.factory.registerProtocol(self)
        self.proxyPeer = transport.getPeer()
        networks = self.factory.trustedNetworks
        # A front end on a UNIX socket has no address to match: the socket
        # file's permissions decide who reaches it.
        if (
            networks
            and not isinstance(self.proxyPeer, UNIXAddress)
            and not trusted(networks, getattr(self.proxyPeer, "host", ""))
        ):
            self._refuseAtConnect(
                catalogue.UNTRUSTED_PROXY,
                "untrusted front end",
                "{session} PROXY connection from untrusted {peer}",
            )
            return
        limit = self.factory.clientLimit()
        if limit is not None:
            self._refuseForLimit(limit)
            return
        self._pending = True
        self.factory.pending += 1
        self._timer = self.factory.clock.callLater(self.factory.headerTimeout, self._timedOut)

    def _refuseForLimit(self, limit: int) -> None:
        """
        Refuse a connection past C{maxClients} as the server refuses one at
        connect (L{SMTPServerFactory.admit
        <twisted_smtpd._serving.server.SMTPServerFactory.admit>}): one line
        in the sessions' namespace, with a session id and the front end's
        address, and a C{reject} event at connect carrying the C{limit}, so
        that the metrics count a connection refused.
        """
        assert self.transport is not None
        session = Session(
            id=newSessionId(),
            remoteAddress=hostPort(self.proxyPeer),
            localAddress=hostPort(self.transport.getHost()),
        )
        described = f"connection limit ({limit})"
        _sessionLog.info(
            "{session} {client} refused: {limit} reached, PROXY header pending",
            session=session.id,
            client=clientAddress(session.remoteAddress),
            limit=described,
        )
        server = self.factory.server
        if server is not None and "reject" in server.wanted:
            data = refusal(catalogue.TOO_MANY_CLIENTS, None, None, None, True)
            data["limit"] = described
            server.emit("reject", session, data)
        self._refuse(catalogue.TOO_MANY_CLIENTS)

    def _notPending(self) -> None:
        if self._pending:
            self._pending = False
            self.factory.pending -= 1

    def _peerText(self) -> str:
        return formatPeer(hostPort(self.proxyPeer))

    def _timedOut(self) -> None:
        self._timer = None
        self._refuseAtConnect(
            catalogue.PROXY_TIMEOUT,
            "header timeout",
            "{session} no PROXY header from {peer} within {timeout:g} seconds",
            timeout=self.factory.headerTimeout,
        )

    def _refuseAtConnect(self, reply: Reply, reason: str, format: str, **fields: Any) -> None:
        """
        Refuse the connection with C{reply} for C{reason} at the PROXY
        layer: one line at level warn (C{format}, with the C{session} id and
        the front end's C{peer}), and a C{reject} event at connect carrying
        the C{proxy} reason, so that the metrics count a connection refused
        (the session logger leaves it to this line).
        """
        assert self.transport is not None
        session = Session(
            id=newSessionId(),
            remoteAddress=hostPort(self.proxyPeer),
            localAddress=hostPort(self.transport.getHost()),
        )
        _sessionLog.warn(format, session=session.id, peer=self._peerText(), **fields)
        server = self.factory.server
        if server is not None and "reject" in server.wanted:
            data = refusal(reply, None, None, None, True)
            data["proxy"] = reason
            server.emit("reject", session, data)
        self._refuse(reply)

    def _refuse(self, reply: Reply) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._notPending()
        self._buffer = b""
        self._refused = True
        assert self.transport is not None
        self.transport.write(formatReply(reply, True))
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """
        Read the header, then pass everything through.
        """
        if self.proxyHeader is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._refused:
            return
        self._buffer += data
        try:
            header, length = parseProxyHeader(self._buffer)
        except ProxyHeaderError as e:
            self._refuseAtConnect(
                catalogue.MALFORMED_PROXY,
                "malformed header",
                "{session} malformed PROXY header from {peer}: {error}",
                error=str(e),
            )
            return
        if header is None:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._notPending()
        self.proxyHeader = header
        rest, self._buffer = self._buffer[length:], b""
        self.wrappedProtocol.makeConnection(self)  # type: ignore[arg-type]
        if rest:
            self.wrappedProtocol.dataReceived(rest)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Pass the loss on only to a protocol that was started.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._notPending()
        self.factory.unregisterProtocol(self)
        if self.proxyHeader is not None:
            self.wrappedProtocol.connectionLost(reason)

    def readConnectionLost(self) -> None:
        """
        The front end shut its sending side down: tell a session that can
        still answer what it read (L{SMTPProtocol.readConnectionLost}),
        else close.
        """
        # Only a protocol whose class tells of half-closes: a wrapper inside
        # (TLS under C{haproxy:ssl:}) provides what its transport, this
        # object, provides, and would hand the call straight back.
        if self.proxyHeader is not None and IHalfCloseableProtocol.implementedBy(
            type(self.wrappedProtocol)
        ):
            IHalfCloseableProtocol(self.wrappedProtocol).readConnectionLost()
            return
        assert self.transport is not None
        self.transport.loseConnection()

    def handshakeCompleted(self) -> None:
        """
        A TLS layer started under this wrapper (STARTTLS on a C{haproxy:tcp:}
        listener) finished its handshake: tell the session, which answers
        nothing until then.
        """
        # As for half-closes, only a protocol whose class listens: a TLS
        # wrapper inside would hand the call straight back.
        if self.proxyHeader is not None and IHandshakeListener.implementedBy(
            type(self.wrappedProtocol)
        ):
            IHandshakeListener(self.wrappedProtocol).handshakeCompleted()

    def writeConnectionLost(self) -> None:
        """
        The server never shuts its own sending side down alone.
        """

    def getPeer(self) -> IAddress:
        """
        The real client, when the header named one.
        """
        header = self.proxyHeader
        if header is not None and header.source is not None:
            return _address(header.source)
        assert self.transport is not None
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        """
        The address the real client connected to, when the header named it.
        """
        header = self.proxyHeader
        if header is not None and header.destination is not None:
            return _address(header.destination)
        assert self.transport is not None
        return self.transport.getHost()


# Sessions find it under their transport (proxied.proxyDetails).
registerWrapper(ProxyProtocolWrapper)


class ProxyWrappingFactory(WrappingFactory):
    """
    Wrap a factory's protocols in L{ProxyProtocolWrapper}.
    """

    protocol = ProxyProtocolWrapper

    def __init__(
        self,
        wrappedFactory: Any,
        trustedNetworks: tuple[IPNetwork, ...],
        clock: IReactorTime,
        headerTimeout: float = HEADER_TIMEOUT,
        server: Any = None,
    ) -> None:
        """
        @param headerTimeout: Seconds a connection may take to send its
            header.
        @param server: The L{SMTPServerFactory} whose C{maxClients} counts
            the connections still waiting for their header too, or C{None}.
        """
        super().__init__(wrappedFactory)
        self.trustedNetworks = trustedNetworks
        self.clock = clock
        self.headerTimeout = headerTimeout
        self.server = server
        #: Connections waiting for their header.
        self.pending = 0

    def clientLimit(self) -> int | None:
        """
        The server's C{maxClients} when a new connection would pass it, its
        sessions and the connections still waiting for their header
        counted together; else C{None}.  The connections being refused take
        no slot, as the server counts them (L{SMTPServerFactory.admit
        <twisted_smtpd._serving.server.SMTPServerFactory.admit>}): one
        address flooding past its own limits, its refusals waiting for a
        handshake, must not lock every other client out.
        """
        server = self.server
        if server is None:
            return None
        limit: int | None = server.options.maxClients
        active = len(server.connections) - len(server.refusing)
        if limit and self.pending + active >= limit:
            return limit
        return None
