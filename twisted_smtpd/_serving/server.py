# -*- test-case-name: tests.test_limits,tests.test_deadlines -*-
"""
L{SMTPServerFactory}, the protocol factory for any endpoint: one handler,
its options, the sessions' observers, the connection limits and the
graceful close of every session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorTime,
)
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.replies import Reply
from twisted_smtpd._core.session import AuthRequest, AuthResult, Session
from twisted_smtpd._serving.authmechanisms import decidableMechanisms, ownsOnAuth
from twisted_smtpd._serving.deadlines import check, interval, shutdown
from twisted_smtpd._serving.flow import TurnWriter
from twisted_smtpd._serving.hooks import checkHandler
from twisted_smtpd._serving.limits import ClientLimits
from twisted_smtpd._serving.logging import NAMESPACE, clientAddress
from twisted_smtpd._serving.observers import Observer, Observers
from twisted_smtpd._serving.output import disabledVerbs, fixedReplies
from twisted_smtpd._serving.protocol import SMTPProtocol
from twisted_smtpd._serving.proxied import namesNoClient
from twisted_smtpd._serving.resolve import ReverseResolver
from twisted_smtpd._serving.sni import TLSPolicy
from twisted_smtpd._serving.tls import ServerTLS
from twisted_smtpd.interfaces import ISMTPHandler

if TYPE_CHECKING:
    # twisted.cred is loaded only for checkers or a portal
    # (twisted_smtpd._serving.cred).
    from twisted.cred.checkers import ICredentialsChecker
    from twisted.cred.portal import Portal

#: Where a connection refused for a limit is logged: among the sessions' lines.
_sessionLog = Logger(namespace=NAMESPACE)


#: L{twisted_smtpd._serving.cred.authenticate}, set at the first AUTH a
#: portal decides (L{_loadAuthenticate}).
_authenticate: Callable[[Portal, AuthRequest], Deferred[AuthResult]] | None = None


def _loadAuthenticate() -> Callable[[Portal, AuthRequest], Deferred[AuthResult]]:
    """
    Load L{twisted_smtpd._serving.cred} and keep its C{authenticate} in
    L{_authenticate}.
    """
    global _authenticate
    from twisted_smtpd._serving.cred import authenticate

    _authenticate = authenticate
    return authenticate


def _defaultReactor() -> Any:
    from twisted.internet import reactor

    return reactor


class SMTPServerFactory(ServerFactory):
    """
    Builds an L{SMTPProtocol} per connection, all sharing one handler and one
    L{ServerOptions}.  Making it raises L{ValueError} for a C{tlsCiphers} or
    C{tlsMinVersion} no TLS context can be made with (L{TLSPolicy.check}),
    and for checkers (or a portal) with which no AUTH mechanism would be
    offered (L{checkPortalOffered
    <twisted_smtpd._serving.cred.checkPortalOffered>}).

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
        # Checked now: with no certificate, the TLS contexts are made only
        # at the first STARTTLS, too late to refuse the configuration.
        TLSPolicy.check(self.options)
        self._reactor = reactor
        self._resolverArg = resolver
        if portal is None and checkers:
            from twisted_smtpd._serving.cred import portalFromCheckers

            portal = portalFromCheckers(checkers)
        self.portal = portal
        self._tls: ServerTLS | None = None
        o = self.options
        methods = () if "AUTH" in o.disabledCommands else o.authMethods
        #: The configured mechanisms something can decide: the ones offered.
        self.authMechanisms = decidableMechanisms(methods, None, ownsOnAuth(handler))
        if portal is not None:
            from twisted_smtpd._serving.cred import checkPortalOffered, offeredMechanisms

            checkPortalOffered(o, portal, ownsOnAuth(handler))
            self.authMechanisms = offeredMechanisms(methods, portal, ownsOnAuth(handler))
        #: Whether AUTH is offered (a portal or the handler's own C{onAuth}).
        self.authEnabled = bool(self.authMechanisms)
        #: Whether MAIL needs AUTH first.
        self.authRequired = self.authEnabled and not o.authOptional
        #: Whether STARTTLS can be offered.
        self.startTLSAvailable = "STARTTLS" not in o.disabledCommands
        self._reverse: ReverseResolver | None = None
        self.connections: set[SMTPProtocol] = set()
        #: The connections refused at connect and not yet gone (an implicit
        #: TLS one waits up to CLOSE_GRACE for the handshake its 421 needs):
        #: they take no slot of C{maxClients}.
        self.refusing: set[SMTPProtocol] = set()
        self._observing = Observers()
        #: What L{emit} calls, for the sessions to call without it.
        self.tellObservers = self._observing.emit
        #: The events at least one observer wants (L{addObserver}): the
        #: session emits no other.
        self.wanted = self._observing.wanted
        #: The commands disabled, for the sessions (L{disabledVerbs}).
        self.disabledVerbs = disabledVerbs(o)
        #: The encoded fixed replies (L{fixedReplies}), shared by the sessions.
        self.wireCache: dict[Reply, bytes] = fixedReplies(o)
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
        if portal is None or (method == "XOAUTH2" and ownsOnAuth(self.handler)):
            return self.handler.onAuth
        authenticate = _authenticate or _loadAuthenticate()

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

    def refusingTooMany(self) -> bool:
        """
        Whether more connections are being refused than C{maxClients}
        allows sessions (never without that limit): a refused implicit TLS
        connection then goes at once, its 421 unsent, instead of waiting up
        to C{CLOSE_GRACE} for a handshake, so that a flood of refused
        connections holds no more sockets than the sessions may.
        """
        limit = self.options.maxClients
        return bool(limit) and len(self.refusing) > limit

    def admit(self, protocol: SMTPProtocol) -> tuple[Reply, str | None] | None:
        """
        Count and watch a new session (L{watch}) and apply the connection
        limits: C{maxClients}, C{maxClientsPerIp}, C{maxConnectionRate}
        (which leave out a PROXY connection naming no client, the front
        end's own), and refusal while closing.

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
        counted, limit = False, None
        if self.limits.active and not namesNoClient(protocol.transport):
            # A front end's own connection (its health checks) is no
            # client's: counted under its address, frequent checks would
            # reach the limits and have the front end take the server down.
            counted, limit = self.limits.connected(host, self.reactor.seconds())
        if counted:
            protocol.limitHost = host
        refusal = None
        # Connections being refused do not count: else one address over its
        # own limit, flooding an implicit TLS listener whose refusals wait
        # for a handshake, would hold every slot and lock every other
        # client out.
        active = len(self.connections) - len(self.refusing)
        if self.options.maxClients and active > self.options.maxClients:
            limit = f"connection limit ({self.options.maxClients})"
            refusal = catalogue.TOO_MANY_CLIENTS
        elif limit is not None:
            refusal = (
                catalogue.CONNECTION_RATE
                if limit.startswith("connection rate")
                else catalogue.TOO_MANY_FROM_ADDRESS
            )
        elif self.closing:
            self.refusing.add(protocol)
            return catalogue.SHUTDOWN, None
        if refusal is None:
            return None
        self.refusing.add(protocol)
        _sessionLog.info(
            "{session} {client} refused: {limit} reached",
            session=protocol.session.id,
            client=clientAddress(protocol.session.remoteAddress),
            limit=limit,
        )
        return refusal, limit

    def forget(self, protocol: SMTPProtocol) -> None:
        """
        A session's connection is gone: stop counting it.
        """
        self.connections.discard(protocol)
        self.refusing.discard(protocol)
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
            try:
                check(protocol, now)
            except Exception:
                self._checkFailed(protocol)
        self.limits.expire(now)
        if not self.connections and not self.limits.tracking:
            self._stopSweeper()

    def _checkFailed(self, protocol: SMTPProtocol) -> None:
        """
        The deadlines of C{protocol}'s session could not be checked: its
        handler put something that is not an address in
        C{session.remoteAddress} (C{None}, a text), which every check
        reads.  Logged with the traceback and dropped, and left out of
        the sweep from then on: left in, it would fail every second, and
        the sessions after it would go unchecked, past their deadlines.
        """
        self._log.failure(
            "{session} deadlines could not be checked (session.remoteAddress is {kind}):"
            " connection aborted",
            session=protocol.session.id,
            kind=type(protocol.session.remoteAddress).__name__,
        )
        self.connections.discard(protocol)
        transport: Any = protocol.transport
        if transport is not None:
            transport.abortConnection()

    def _stopSweeper(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None

    def connectionGone(self, protocol: SMTPProtocol) -> None:
        """
        A session ended; fire L{close}'s Deferreds when it was the last.
        The timer goes on, with no session left, until the connection
        rate windows are over and forgotten: an idle server keeps no table
        of the addresses that came (unless it is closing: then it keeps
        no timer).
        """
        if not self.connections:
            if self.closing or not self.limits.tracking:
                self._stopSweeper()
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
