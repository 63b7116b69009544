# -*- test-case-name: tests.test_server -*-
"""
L{SMTPServerFactory}, the protocol factory for any endpoint, and
L{SMTPServer}, the L{IService} that listens and closes gracefully.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.replies import Reply
from twisted_smtpd._core.session import AuthRequest, AuthResult, Session
from twisted_smtpd._serving.cred import authenticate, offeredMechanisms, portalFromCheckers
from twisted_smtpd._serving.deadlines import check, interval, shutdown
from twisted_smtpd._serving.flow import TurnWriter
from twisted_smtpd._serving.hooks import checkHandler
from twisted_smtpd._serving.limits import ClientLimits
from twisted_smtpd._serving.listeners import _Listener, splitDescription
from twisted_smtpd._serving.logging import NAMESPACE
from twisted_smtpd._serving.observers import Observer, Observers
from twisted_smtpd._serving.protocol import SMTPProtocol
from twisted_smtpd._serving.proxy import HEADER_TIMEOUT, ProxyWrappingFactory
from twisted_smtpd._serving.resolve import ReverseResolver
from twisted_smtpd._serving.tls import ServerTLS
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.interfaces import ISMTPHandler

#: Where a connection refused for a limit is logged: among the sessions' lines.
_sessionLog = Logger(namespace=NAMESPACE)


def _defaultReactor() -> Any:
    from twisted.internet import reactor

    return reactor


class SMTPServerFactory(ServerFactory):
    """
    Builds an L{SMTPProtocol} per connection, all sharing one handler and one
    L{ServerOptions}.

    @ivar handler: The L{ISMTPHandler}.
    @ivar options: The L{ServerOptions}.
    @ivar connections: The sessions now open.
    @ivar closing: Whether L{close} was called.
    """

    _log = Logger()
    protocol = SMTPProtocol
    # No "Starting factory" lines: the server logs its own start.
    noisy = False

    def __init__(
        self,
        handler: ISMTPHandler,
        options: ServerOptions | None = None,
        *,
        reactor: Any = None,
        resolver: Any = None,
        portal: Portal | None = None,
        checkers: Sequence[ICredentialsChecker] = (),
    ) -> None:
        self.handler = checkHandler(handler)
        self.options = options if options is not None else ServerOptions()
        self._reactor = reactor
        self._resolverArg = resolver
        if portal is None and checkers:
            portal = portalFromCheckers(checkers)
        self.portal = portal
        self._tls: ServerTLS | None = None
        o = self.options
        #: The configured mechanisms something can decide: the ones offered.
        self.authMechanisms = offeredMechanisms(
            () if "AUTH" in o.disabledCommands else o.authMethods, portal, _ownsOnAuth(handler)
        )
        #: Whether AUTH is offered (a portal or the handler's own C{onAuth}).
        self.authEnabled = bool(self.authMechanisms)
        #: Whether MAIL needs AUTH first.
        self.authRequired = self.authEnabled and not o.authOptional
        #: Whether STARTTLS can be offered.
        self.startTLSAvailable = "STARTTLS" not in o.disabledCommands
        self._reverse: ReverseResolver | None = None
        self.connections: set[SMTPProtocol] = set()
        self._observing = Observers()
        #: The events at least one observer wants (L{addObserver}): the
        #: session emits no other.
        self.wanted = self._observing.wanted
        self.wireCache: dict[Reply, bytes] = {}
        #: The sessions' replies on plain TCP waiting for the end of the
        #: reactor's turn.
        self.turnWriter = TurnWriter()
        self.closing = False
        self._closed: list[Deferred[None]] = []
        self._forceCall: IDelayedCall | None = None
        self._sweeper: LoopingCall | None = None
        #: Connections per client address and connection rates.
        self.limits = ClientLimits.fromOptions(o)

    @property
    def reactor(self) -> Any:
        """
        The reactor, the global one unless given.
        """
        if self._reactor is None:
            self._reactor = _defaultReactor()
        return self._reactor

    def buildProtocol(self, addr: IAddress | None) -> SMTPProtocol:
        """
        A new session for a connection from C{addr}.
        """
        clock: IReactorTime = self.reactor
        p = SMTPProtocol(self.handler, self.options, clock, self)
        p.factory = self
        return p

    @property
    def tls(self) -> ServerTLS:
        """
        The TLS configuration, built on first use: the configured
        certificates, or a self-signed one for C{name} (with a warning).

        @raise ValueError: A certificate file cannot be read.
        """
        if self._tls is None:
            self._tls = ServerTLS.fromOptions(self.options)
        return self._tls

    def reloadCertificates(self) -> None:
        """
        Read every certificate file again; new handshakes use them.

        @raise ValueError: A file cannot be read; the old ones stay in use.
        """
        if self._tls is not None:
            self._tls.reload()

    def authenticator(self, method: str) -> Callable[[AuthRequest, Session], object]:
        """
        What decides an AUTH request: the portal for the mechanisms it can
        check, else the handler's C{onAuth}.
        """
        portal = self.portal
        if portal is None or (method == "XOAUTH2" and _ownsOnAuth(self.handler)):
            return self.handler.onAuth

        def onAuth(request: AuthRequest, session: Session) -> Deferred[AuthResult]:
            return authenticate(portal, request)

        return onAuth

    def knownName(self, ip: str) -> str | None:
        """
        The client's host name when the hosts file knows it (no waiting), else
        C{None}: then L{reverseLookup} asks DNS.
        """
        if self._reverse is None:
            self._reverse = ReverseResolver(self.reactor, self._resolverArg)
        return self._reverse.known(ip)

    def reverseLookup(self, ip: str) -> Deferred[str | None]:
        """
        The client's host name, or C{None}; never fails.
        """
        if self._reverse is None:
            self._reverse = ReverseResolver(self.reactor, self._resolverArg)
        return self._reverse.lookup(ip)

    @property
    def observers(self) -> tuple[Observer, ...]:
        """
        The observers added with L{addObserver}, in order.
        """
        return self._observing.observers

    def addObserver(self, observer: Observer) -> None:
        """
        Have C{observer} told of every session event, or only of those named
        by its C{events} attribute (a set of event names) when it has one.

        @raise TypeError: If C{events} is not a set, list or tuple of names.
        """
        self._observing.add(observer)
        self.wanted = self._observing.wanted

    def emit(self, event: str, session: Session, data: dict[str, Any]) -> None:
        """
        Tell every observer that wants C{event} of it; an observer that
        raises is logged and does not disturb the session.
        """
        self._observing.emit(event, session, data)

    def watch(self, protocol: SMTPProtocol) -> None:
        """
        Count a new session and watch its deadlines: one timer for all
        sessions, so an idle connection costs no timer of its own.
        """
        self.connections.add(protocol)
        if self._sweeper is None:
            self._sweeper = LoopingCall(self._sweep)
            self._sweeper.clock = self.reactor
            self._sweeper.start(interval(self.options), now=False)

    def admit(self, protocol: SMTPProtocol) -> tuple[Reply, str | None] | None:
        """
        Count and watch a new session (L{watch}) and apply the connection
        limits: C{maxClients}, C{maxClientsPerIp}, C{maxConnectionRate}, and
        refusal while closing.

        @return: The 421 reply refusing it and the limit it reached (C{None}
            for a refusal while closing), or C{None} to serve it.  Each
            refusal for a limit is logged here, in one line of the
            C{twisted_smtpd.session} namespace whether or not sessions are
            logged; the session's C{reject} event carries the C{limit}, and
            L{SessionLogger <twisted_smtpd._serving.logging.SessionLogger>}
            leaves it out.
        """
        self.watch(protocol)
        host = protocol.session.remoteAddress[0]
        counted, limit = self.limits.connected(host, self.reactor.seconds())
        if counted:
            protocol.limitHost = host
        refusal = None
        if self.options.maxClients and len(self.connections) > self.options.maxClients:
            limit = f"connection limit ({self.options.maxClients})"
            refusal = catalogue.TOO_MANY_CLIENTS
        elif limit is not None:
            refusal = (
                catalogue.CONNECTION_RATE
                if limit.startswith("connection rate")
                else catalogue.TOO_MANY_FROM_ADDRESS
            )
        elif self.closing:
            return catalogue.SHUTDOWN, None
        if refusal is None:
            return None
        _sessionLog.info(
            "{session} {client} refused: {limit} reached",
            session=protocol.session.id,
            client=host,
            limit=limit,
        )
        return refusal, limit

    def forget(self, protocol: SMTPProtocol) -> None:
        """
        A session's connection is gone: stop counting it.
        """
        self.connections.discard(protocol)
        host, protocol.limitHost = protocol.limitHost, None
        if host is not None:
            self.limits.disconnected(host)

    def _sweep(self) -> None:
        # Checked once the reactor has read what arrived meanwhile: when it
        # was kept busy, its own delay must not count as a client's silence.
        self.reactor.callLater(0, self._checkDeadlines)

    def _checkDeadlines(self) -> None:
        now = self.reactor.seconds()
        for protocol in list(self.connections):
            check(protocol, now)
        self.limits.expire(now)

    def connectionGone(self, protocol: SMTPProtocol) -> None:
        """
        A session ended; fire L{close}'s Deferreds when it was the last.
        """
        if not self.connections:
            if self._sweeper is not None and self._sweeper.running:
                self._sweeper.stop()
            self._sweeper = None
            if self.closing:
                self._allGone()

    def close(self) -> Deferred[None]:
        """
        Close every session gracefully: idle ones get 421 now, ones inside a
        transaction may finish it, and after C{closeTimeout} the rest get 421
        and are disconnected.

        Listening is not stopped here; L{SMTPServer.close} does both.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} that fires when every connection is
            gone.
        """
        self.closing = True
        d: Deferred[None] = Deferred()
        if not self.connections:
            d.callback(None)
            return d
        self._closed.append(d)
        for protocol in list(self.connections):
            shutdown(protocol, False)
        if self.connections and self._forceCall is None:
            self._forceCall = self.reactor.callLater(self.options.closeTimeout, self._force)
        elif not self.connections:
            self._allGone()
        return d

    def _force(self) -> None:
        self._forceCall = None
        for protocol in list(self.connections):
            shutdown(protocol, True)

    def _allGone(self) -> None:
        if self._forceCall is not None and self._forceCall.active():
            self._forceCall.cancel()
        self._forceCall = None
        waiting, self._closed = self._closed, []
        for d in waiting:
            d.callback(None)


def _ownsOnAuth(handler: ISMTPHandler) -> bool:
    """
    Whether C{handler} decides AUTH itself rather than inheriting the
    refusing default of L{BaseHandler}.
    """
    method = getattr(handler, "onAuth", None)
    return method is not None and getattr(method, "__func__", method) is not BaseHandler.onAuth


class SMTPServer(MultiService):
    """
    An SMTP/LMTP server as a Twisted service: listens on endpoint strings,
    closes gracefully::

        server = SMTPServer(MyHandler(), ServerOptions(size=10_000_000))
        server.listen("tcp:2525:interface=127.0.0.1")

    @ivar factory: The L{SMTPServerFactory} behind every listener.
    """

    _log = Logger()

    def __init__(
        self,
        handler: ISMTPHandler,
        options: ServerOptions | None = None,
        *,
        reactor: Any = None,
        resolver: Any = None,
        portal: Portal | None = None,
        checkers: Sequence[ICredentialsChecker] = (),
    ) -> None:
        super().__init__()
        self._reactor = reactor
        self.factory = SMTPServerFactory(
            handler, options, reactor=reactor, resolver=resolver, portal=portal, checkers=checkers
        )
        self._ports: list[IListeningPort] = []

    @property
    def reactor(self) -> Any:
        """
        The reactor, the global one unless given.
        """
        return self.factory.reactor

    def addObserver(self, observer: Observer) -> None:
        """
        Have C{observer} told of every session event, as
        C{observer(event, session, data)}; it must return quickly and not
        block (a failing observer is logged and the session goes on).
        C{session} is the L{Session}; the events and their C{data} are:

          - C{connect}: a connection is accepted (after the reverse lookup);
          - C{helo}: HELO/EHLO/LHLO accepted; C{hostname};
          - C{secure}: a TLS handshake finished (C{session.tls});
          - C{auth}: AUTH succeeded; C{method}, C{username};
          - C{mail}: MAIL accepted; C{address};
          - C{rcpt}: RCPT accepted; C{address};
          - C{reject}: a command refused (4xx/5xx), or a limit closing the
            session; C{reply}, C{command} (C{None} for a line that did not
            parse, or for a refusal at connect), C{argument} (bytes),
            C{closing}, C{connect} (refused before any line), C{limit} for
            a connection refused for a connection limit (its description),
            and for AUTH C{mechanism}, C{username} (C{None} before
            credentials were checked) and C{failures};
          - C{message}: a message's reply was sent; C{size}, C{replies}
            (one L{Reply} per recipient in LMTP), C{seconds} from the end
            of the body to the reply, C{unanswered}: true when the handler
            answered only after the session had ended (client gone, server
            closing), so that nothing was sent; that event may come after
            C{close}, and the handler may have kept the message;
          - C{hook}: a handler hook answered; C{hook} (its name),
            C{seconds};
          - C{error}: a hook failed unexpectedly; C{hook};
          - C{close}: the session ended.

        Sessions refused at connect (C{maxClients}, shutdown) have a
        C{reject} event only.  New events and data keys may be added.

        An observer with an C{events} attribute, a set of event names, is
        told of those only, and events nobody wants cost nothing (no timing
        of hooks, no call): L{SessionLogger
        <twisted_smtpd._serving.logging.SessionLogger>} wants the six it
        logs, not C{helo}, C{mail}, C{rcpt} or C{hook}.
        """
        self.factory.addObserver(observer)

    def addEndpoint(self, description: str) -> None:
        """
        Listen on C{description} (a Twisted server endpoint string) while the
        service runs.  A listener that cannot start fails the start of
        C{twistd}.

        @raise ValueError: The description is not a valid endpoint string.
        """
        endpoint, factory = self._endpoint(description)
        service = _Listener(endpoint, factory)
        service.description = description
        service._raiseSynchronously = True
        service.setServiceParent(self)

    def startService(self) -> None:
        """
        Read the TLS configuration (the self-signed fallback is announced
        with a warning now and made at its first use), then start listening.
        """
        self._prepareTLS()
        super().startService()

    def _prepareTLS(self) -> None:
        if self.factory.startTLSAvailable:
            self.factory.tls  # noqa: B018 - files read now, not at the first STARTTLS

    def listen(self, description: str) -> Deferred[IListeningPort]:
        """
        Start listening on C{description} now.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the L{IListeningPort
            <twisted.internet.interfaces.IListeningPort>}.
        """
        self._prepareTLS()
        endpoint, factory = self._endpoint(description)
        d: Deferred[IListeningPort] = endpoint.listen(factory)

        def listening(port: IListeningPort) -> IListeningPort:
            self._ports.append(port)
            return port

        d.addCallback(listening)
        return d

    def _endpoint(self, description: str) -> tuple[IStreamServerEndpoint, IProtocolFactory]:
        """
        Parse an endpoint string into the endpoint to listen on and the
        factory, wrapped as L{splitDescription} says.  An C{ssl:} endpoint
        with keys of its own under C{haproxy:} listens on plain TCP, and its
        TLS goes inside the PROXY layer: a proxy sends the header before the
        TLS handshake it passes through.
        """
        base, layers = splitDescription(description)
        endpoint: Any = serverFromString(self.reactor, base)
        ownTLS = self._ownTLS(base, endpoint)
        if ownTLS is None or not layers:
            return endpoint, self._wrap(layers)
        tcp = TCP4ServerEndpoint(
            self.reactor, endpoint._port, endpoint._backlog, endpoint._interface
        )
        return tcp, self._wrap(layers, TLSMemoryBIOFactory(ownTLS, False, self.factory))

    @staticmethod
    def _ownTLS(base: str, endpoint: Any) -> Any:
        """
        The TLS context factory of an C{ssl:} endpoint with keys of its own,
        or C{None} for any other endpoint.
        """
        if base.partition(":")[0].strip().lower() != "ssl":
            return None
        return endpoint._sslContextFactory

    def _wrap(
        self, layers: Sequence[str], inner: IProtocolFactory | None = None
    ) -> IProtocolFactory:
        factory: IProtocolFactory = self.factory if inner is None else inner
        for layer in reversed(layers):
            if layer == "tls":
                factory = TLSMemoryBIOFactory(self.factory.tls.contextFactory(), False, factory)
            else:
                options = self.factory.options
                factory = ProxyWrappingFactory(
                    factory,
                    options.useProxy,
                    self.reactor,
                    headerTimeout=min(HEADER_TIMEOUT, options.socketTimeout),
                    server=self.factory,
                )
            factory.noisy = False
        return factory

    def addInherited(self, description: str, fileno: int, family: int) -> None:
        """
        Serve an inherited listening socket while the service runs (a
        C{--workers} process).
        """
        _AdoptedListener(self, description, fileno, family).setServiceParent(self)

    def adopt(self, description: str, fileno: int, family: int) -> IListeningPort:
        """
        Serve C{description} on a listening socket made elsewhere (by the
        parent of C{--workers} processes), wrapped as it would be by L{listen}.

        @param fileno: The listening socket's file descriptor, closed once
            adopted: the port listens on a duplicate of it, and the socket
            must close with the port.  Left open, it would keep listening
            after the port stopped, for as long as this process lives, its
            backlog filling with connections that nothing accepts.
        @param family: Its address family (C{socket.AF_INET}, ...).
        """
        base, layers = splitDescription(description)
        ownTLS = self._ownTLS(base, serverFromString(self.reactor, base))
        # An ssl: endpoint with keys of its own: its TLS inside any PROXY
        # layer, outermost without one, as listen() would put it.
        inner = None if ownTLS is None else TLSMemoryBIOFactory(ownTLS, False, self.factory)
        factory = self._wrap(layers, inner)
        port: IListeningPort = self.reactor.adoptStreamPort(fileno, family, factory)
        os.close(fileno)
        self._ports.append(port)
        return port

    def listening(self) -> list[tuple[str, IListeningPort]]:
        """
        The listeners of L{addEndpoint} and L{addInherited} that listen now.

        @return: Each one's endpoint string and port, in the order added.
        """
        found = []
        for service in self:
            if isinstance(service, _Listener | _AdoptedListener) and service.port is not None:
                found.append((service.description, service.port))
        return found

    def _stoppedListening(self, listeners: list[tuple[str, IAddress]]) -> None:
        """
        Called by L{stopService} once C{listeners} (endpoint strings and
        addresses) stopped, before the sessions are closed.
        """

    def reloadCertificates(self) -> None:
        """
        Read every certificate file again (SIGHUP under C{twistd}); new
        handshakes, STARTTLS and implicit TLS alike, use the new ones.

        @raise ValueError: A file cannot be read; the old ones stay in use.
        """
        self.factory.reloadCertificates()

    def close(self) -> Deferred[None]:
        """
        Stop accepting, let transactions in flight finish, send 421 to the
        rest after C{closeTimeout}.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} that fires when every connection is
            gone.
        """
        ports, self._ports = self._ports, []
        stopping: list[Deferred[Any]] = [maybeDeferred(port.stopListening) for port in ports]

        def stopped(result: object) -> Deferred[None]:
            return self.factory.close()

        d = DeferredList(stopping, consumeErrors=True)
        return d.addCallback(stopped)

    def stopService(self) -> Deferred[None]:
        """
        Stop the listeners, then close every session gracefully.
        """
        listeners = [(description, port.getHost()) for description, port in self.listening()]
        stopping: Deferred[Any] | None = super().stopService()
        if stopping is None:
            stopping = succeed(None)

        def listenersStopped(result: object) -> Deferred[None]:
            self._stoppedListening(listeners)
            return self.close()

        return stopping.addCallback(listenersStopped)


class _AdoptedListener(Service):
    """
    Serve a listening socket made by another process while running.
    """

    def __init__(self, server: SMTPServer, description: str, fileno: int, family: int) -> None:
        self._server = server
        self.description = description
        self._fileno = fileno
        self._family = family
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        self.port = self._server.adopt(self.description, self._fileno, self._family)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        d: Deferred[Any] = maybeDeferred(port.stopListening)
        return d
