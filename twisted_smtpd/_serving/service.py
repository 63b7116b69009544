# -*- test-case-name: tests.test_tap,tests.test_configerrors -*-
"""
L{SMTPServer}, the L{IService} that listens on endpoint strings (and on
sockets inherited from a C{--workers} parent) and closes gracefully.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.python.failure import Failure

from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.listeners import (
    OwnKeys,
    _Listener,
    releaseOwnLock,
    servesServerTLS,
    splitDescription,
)
from twisted_smtpd._serving.observers import Observer
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd._serving.tlsfailures import ListenerTLSFactory
from twisted_smtpd.interfaces import ISMTPHandler

if TYPE_CHECKING:
    # twisted.cred is loaded only for checkers or a portal
    # (twisted_smtpd._serving.cred).
    from twisted.cred.checkers import ICredentialsChecker
    from twisted.cred.portal import Portal


class SMTPServer(MultiService):
    """
    An SMTP/LMTP server as a Twisted service: listens on endpoint strings,
    closes gracefully::

        server = SMTPServer(MyHandler(), ServerOptions(size=10_000_000))
        server.listen("tcp:2525:interface=127.0.0.1")

    A server serves once: after L{close} (or L{stopService}, which calls
    it), every session it accepted would be refused with C{421}, so it
    refuses to listen again (L{listen}, L{addEndpoint}, L{addInherited},
    L{adopt}, L{startService} raise L{RuntimeError}, and a port made after
    the close is stopped at once); make a new one.

    @ivar factory: The L{SMTPServerFactory} behind every listener.
    @ivar closed: Whether L{close} was called.
    """

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
        #: The TLS configurations of C{ssl:} listeners with keys of their own.
        self._listenerTLS: list[Any] = []
        #: The endpoint strings L{listen} and L{adopt} listen on.
        self._listened: list[str] = []
        self.closed = False

    def _checkOpen(self) -> None:
        """
        @raise RuntimeError: If L{close} was called.
        """
        if self.closed:
            raise RuntimeError("this SMTPServer was closed and cannot listen again; make a new one")

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

          - C{connect}: a connection is accepted (after the reverse lookup),
            or a trusted XCLIENT started the session over as another
            client's: then C{previousAddress}, the client's address before;
          - C{helo}: HELO/EHLO/LHLO accepted; C{hostname};
          - C{secure}: a TLS handshake finished (C{session.tls});
          - C{auth}: AUTH succeeded; C{method}, C{username};
          - C{mail}: MAIL accepted; C{address};
          - C{rcpt}: RCPT accepted; C{address};
          - C{reject}: a command refused (4xx/5xx), or a limit closing the
            session; C{reply}, C{command} (C{None} for a line that did not
            parse, or for a refusal at connect), C{argument} (bytes),
            C{closing}, C{connect} (refused before any line), C{began} with
            C{connect}: whether the session had begun, its C{close} event to
            follow (refused by C{onSecure} on an implicit TLS connection,
            not at connect by a limit or C{onConnect}), C{limit} for
            a connection refused for a connection limit (its description),
            C{proxy} for one refused at the PROXY layer of a C{haproxy:}
            listener (C{"untrusted front end"}, C{"malformed header"},
            C{"header timeout"}), and for AUTH C{mechanism}, C{username} (C{None} before
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
          - C{tlsfailed}: a TLS handshake failed (implicit TLS or after
            STARTTLS); C{reason} (C{timeout}, C{protocol}, C{certificate},
            C{closed} or C{other}), C{listener} (the endpoint string of the
            C{ssl:} listener, C{starttls} after STARTTLS), C{error}
            (OpenSSL's reason, as logged: too varied for a label);
          - C{close}: the session ended.

        Sessions refused at connect for a connection limit or at the PROXY
        layer have a C{reject} event only, and those refused while the server closes none; an
        implicit TLS connection whose handshake never finished has a
        C{tlsfailed} event only (none when the server cut it at shutdown), and one
        gone during the reverse lookup of its client none (its session
        never began).  New
        events and data keys may be added.

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
        @raise RuntimeError: The server was closed.
        """
        self._checkOpen()
        endpoint, factory = self._endpoint(description)
        service = _Listener(endpoint, factory)
        service.description = description
        service._raiseSynchronously = True
        service.setServiceParent(self)

    def privilegedStartService(self) -> None:
        """
        Read the TLS configuration and start the listeners that bind before
        C{twistd} drops privileges: as Postfix's C{smtpd}, the certificate
        and key files are read as root, so a key only root can read serves
        a server that then runs as another user (C{twistd --uid}).

        @raise RuntimeError: The server was closed (stopped before).
        """
        self._checkOpen()
        self._prepareTLS()
        super().privilegedStartService()

    def startService(self) -> None:
        """
        Read the TLS configuration (the self-signed fallback is announced
        with a warning now and made at its first use), then start listening.

        @raise RuntimeError: The server was closed (stopped before).
        """
        self._checkOpen()
        self._prepareTLS()
        super().startService()

    def _prepareTLS(self) -> None:
        if self.usesOwnCertificates():
            self.factory.tls  # noqa: B018 - files read now, not at the first STARTTLS

    def usesOwnCertificates(self) -> bool:
        """
        Whether the server's own certificates are read at start, logged
        and reloaded: when a listener can serve them
        (L{servesOwnCertificates}), and configured ones whenever STARTTLS is
        offered.  The self-signed fallback is made (and announced) only
        when a listener can serve it.
        """
        return self.servesOwnCertificates() or self._configuredInUse()

    def _configuredInUse(self) -> bool:
        return self.factory.startTLSAvailable and self.factory.options.certificate is not None

    def servesOwnCertificates(self) -> bool:
        """
        Whether a client can be served the server's own certificates (the
        configured ones, or the self-signed fallback): some listener offers
        STARTTLS, or is an C{ssl:} listener without keys of its own.  An
        C{ssl:} listener with keys of its own serves only those (STARTTLS is
        not offered inside TLS).  Before any listener is added, whether
        STARTTLS is offered.
        """
        startTLS = self.factory.startTLSAvailable
        descriptions = [
            service.description
            for service in self
            if isinstance(service, _Listener | _AdoptedListener)
        ] + self._listened
        if not descriptions:
            return startTLS
        return any(servesServerTLS(description, startTLS) for description in descriptions)

    def listen(self, description: str) -> Deferred[IListeningPort]:
        """
        Start listening on C{description} now.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the L{IListeningPort
            <twisted.internet.interfaces.IListeningPort>}.
        @raise ValueError: The description is not a valid endpoint string.
        @raise RuntimeError: The server was closed: it would refuse every
            session with C{421}.  The L{Deferred
            <twisted.internet.defer.Deferred>} fails with it, the port
            stopped, when the server is closed before the endpoint made the
            port.
        """
        self._checkOpen()
        endpoint, factory = self._endpoint(description)
        if servesServerTLS(description, self.factory.startTLSAvailable) or self._configuredInUse():
            self.factory.tls  # noqa: B018 - files read now, not at the first STARTTLS
        d: Deferred[IListeningPort] = endpoint.listen(factory)

        def listening(port: IListeningPort) -> IListeningPort:
            if self.closed:
                # Closed while the endpoint made the port: nothing would
                # stop it, and it would answer every client 421.
                port.stopListening()
                self._checkOpen()
            self._ports.append(port)
            self._listened.append(description)
            return port

        def failed(reason: Failure) -> Failure:
            releaseOwnLock(endpoint, reason.value)
            return reason

        d.addCallbacks(listening, failed)
        return d

    def _endpoint(self, description: str) -> tuple[IStreamServerEndpoint, IProtocolFactory]:
        """
        Parse an endpoint string into the endpoint to listen on and the
        factory, wrapped as L{splitDescription} says: every C{ssl:} endpoint
        listens on TCP, its TLS inside any C{haproxy:} layer (a proxy sends
        the header before the TLS handshake it passes through).

        @raise ValueError: The description does not parse, or the files of
            an C{ssl:} endpoint with keys of its own cannot be used.
        """
        base, layers = splitDescription(description)
        endpoint: Any = serverFromString(self.reactor, base)
        return endpoint, self._wrap(layers, description)

    def _wrap(self, layers: Sequence[str | OwnKeys], description: str) -> IProtocolFactory:
        factory: IProtocolFactory = self.factory
        for layer in reversed(layers):
            if isinstance(layer, OwnKeys):
                from twisted_smtpd._serving.listenertls import ListenerTLS

                own = ListenerTLS(self.factory.options, layer, description)
                self._listenerTLS.append(own)
                factory = ListenerTLSFactory(own.contextFactory(), factory, description)
            elif layer == "tls":
                factory = ListenerTLSFactory(
                    self.factory.tls.contextFactory(), factory, description
                )
            else:
                # Loaded for a haproxy: listener only.
                from twisted_smtpd._serving.proxy import HEADER_TIMEOUT, ProxyWrappingFactory

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

        @raise RuntimeError: The server was closed.
        """
        self._checkOpen()
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
        @raise RuntimeError: The server was closed (C{fileno} is closed).
        """
        if self.closed:
            os.close(fileno)
            self._checkOpen()
        _, layers = splitDescription(description)
        factory = self._wrap(layers, description)
        port: IListeningPort = self.reactor.adoptStreamPort(fileno, family, factory)
        os.close(fileno)
        self._ports.append(port)
        self._listened.append(description)
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

    def listenerTLS(self) -> list[Any]:
        """
        The TLS configurations of the C{ssl:} listeners with keys of their
        own (C{ListenerTLS}), in the order added, one per endpoint string.
        """
        return list({tls.label: tls for tls in self._listenerTLS}.values())

    def _stoppedListening(self, listeners: list[tuple[str, IAddress]]) -> None:
        """
        Called by L{stopService} once C{listeners} (endpoint strings and
        addresses) stopped, before the sessions are closed.
        """

    def reloadCertificates(self) -> None:
        """
        Read every certificate file again (SIGHUP under C{twistd}), those
        of C{ssl:} listeners with keys of their own included; new
        handshakes, STARTTLS and implicit TLS alike, use the new ones.

        @raise ValueError: A file cannot be read; the old ones stay in use
            where one could not (the others are reloaded all the same).
        """
        errors = self._reloadEach()
        if errors:
            raise ValueError("; ".join(str(e) for e in errors))

    def _reloadEach(self) -> list[ValueError]:
        """
        Reload the server's own certificates, then each C{ssl:} listener's
        own, whatever fails before.

        @return: Why each that failed did (its old files stay in use).
        """
        errors = []
        for reload in [self.factory.reloadCertificates] + [t.reload for t in self._listenerTLS]:
            try:
                reload()
            except ValueError as e:
                errors.append(e)
        return errors

    def close(self) -> Deferred[None]:
        """
        Stop accepting, let transactions in flight finish, send 421 to the
        rest after C{closeTimeout}.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} that fires when every connection is
            gone.
        """
        self.closed = True
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
