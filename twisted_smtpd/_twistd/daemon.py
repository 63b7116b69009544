# -*- test-case-name: tests.test_tap -*-
"""
L{SMTPDaemon}: the L{SMTPServer} that C{twistd smtpd} runs, with session
logs, certificate reloading on SIGHUP, the log file reopened on SIGUSR1 and
the JSON log observer.
"""

from __future__ import annotations

import gc
import signal
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure

from twisted_smtpd._core.printable import printable
from twisted_smtpd._serving.listeners import ListenFailed, _Listener, abandonPort
from twisted_smtpd._serving.logging import SessionLogger
from twisted_smtpd._serving.logwriter import BufferedLogWriter
from twisted_smtpd._serving.service import SMTPServer, _AdoptedListener
from twisted_smtpd._serving.summary import logCertificates, logStopped, logSummary
from twisted_smtpd._twistd.eventdispatch import withoutContext
from twisted_smtpd._twistd.heldsignals import HELD
from twisted_smtpd._twistd.logfile import GivesLogObserver, ReopenOnSignal
from twisted_smtpd._twistd.stopsignals import StopOnce
from twisted_smtpd._twistd.tapconfig import exitWithError, reason
from twisted_smtpd._twistd.threadstop import boundReactorThreads


def settleStartupHeap() -> None:
    """
    Collect what starting left behind, then move every object left to
    the garbage collector's permanent generation (C{gc.freeze}).

    A server's start-up heap (modules, classes, its configuration) lives
    as long as the process, yet every full collection walks it again; a
    server whose messages stay in memory until their delivery answers (the
    Maildir's group commit) runs one every few thousand messages.  Frozen, a full collection walks
    only what was made since: the reactor is not held up for the whole
    heap.  Frozen objects are still freed by their reference counts; one
    that ends up in a reference cycle is never collected, a cost bounded by
    the start-up heap, since only what exists now is frozen.
    """
    gc.collect()
    gc.freeze()


#: The most seconds the handler's C{close} may take when C{twistd smtpd} stops.
HANDLER_CLOSE_TIMEOUT = 10.0


class SMTPDaemon(GivesLogObserver, SMTPServer):
    """
    The L{SMTPServer} that C{twistd smtpd} runs: logs sessions, reloads the
    certificates on SIGHUP, reopens the log file on SIGUSR1, and gives
    C{twistd} the JSON log observer when asked for one.

    @ivar logObserver: The observer to log through instead of C{twistd}'s
        own, or C{None}.
    @ivar settleHeap: Whether to L{settle <settleStartupHeap>} the heap once
        the reactor runs: C{twistd smtpd} does, a test process must not.
    @ivar stopOnce: Whether a second SIGTERM or SIGINT while the reactor
        stops is ignored (L{StopOnce}), and the stop of the reactor's
        thread pool bounded (L{boundReactorThreads}): C{twistd smtpd} does.
    @ivar dispatchWithoutContext: Whether the reactor is to dispatch I/O
        events without a legacy log context (L{withoutContext}) from the
        start on: C{twistd smtpd} does; an embedding program keeps
        Twisted's dispatch unless it asks.
    """

    _log = Logger()

    def __init__(
        self,
        *args: Any,
        logObserver: ILogObserver | None = None,
        logSessions: bool = True,
        delivery: str = "",
        settleHeap: bool = False,
        dispatchWithoutContext: bool = False,
        stopOnce: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.logObserver = logObserver
        self.settleHeap = settleHeap
        self.dispatchWithoutContext = dispatchWithoutContext
        self.stopOnce = stopOnce
        self._delivery = delivery or type(self.factory.handler).__name__
        writer = logObserver if isinstance(logObserver, BufferedLogWriter) else None
        self._writer = writer
        # Without the lines of every session (--quiet), its refusals are
        # still logged: fail2ban and audits read them.
        self.factory.addObserver(
            SessionLogger(self.factory.options.ignoredHosts, writer, refusalsOnly=not logSessions)
        )
        self._previousHandler: Any = None
        self._reopener: ReopenOnSignal | None = None
        #: Whether the certificate configured is the self-signed one the
        #: parent of C{--workers} made for its workers (its lines say so).
        self.sharedSelfSigned = False
        #: How this process's lines name it when it is a worker of
        #: C{--workers} (C{"worker 1, pid 4242"}), else C{None}.
        self.workerName: str | None = None

    def serveMetrics(self, description: str | None) -> None:
        """
        Count the server's events as Prometheus metrics, served with
        C{/healthz} on C{description}; with C{None} (a worker of
        C{--workers}) only recorded for the parent to serve.
        """
        from twisted_smtpd._serving.metrics import ServerMetrics
        from twisted_smtpd._twistd.metricsservice import MetricsListener

        self.metrics = metrics = ServerMetrics()
        self.addObserver(metrics)
        if description is not None:
            MetricsListener(description, metrics.registry, self._healthy).setServiceParent(self)

    def _healthy(self) -> bool:
        """
        Whether every SMTP listener accepts connections.
        """
        return bool(
            self.running
            and not self.factory.closing
            and len(self.listening()) == self._listenerCount()
            and self._listenerCount() > 0
        )

    def _listenerCount(self) -> int:
        return sum(1 for service in self if isinstance(service, _Listener | _AdoptedListener))

    def privilegedStartService(self) -> None:
        """
        Listen (before C{twistd} drops privileges); a listener that cannot
        start ends C{twistd} with one line on standard error and status 1.
        """
        try:
            super().privilegedStartService()
        except BaseException as e:
            self._abandonListeners()
            if isinstance(e, ListenFailed):
                exitWithError(f"--listen {e.description!r}: {e.why}")
            raise

    def _abandonListeners(self) -> None:
        """
        The start failed (a listener could not start, and the process
        ends now): remove the files of the listeners this process bound
        (L{abandonPort}), which the reactor will not run to stop.  A socket
        made by another (systemd's, or the parent's of C{--workers}) is
        left alone.
        """
        for service in self:
            port = getattr(service, "port", None)
            endpoint: Any = getattr(service, "endpoint", None)
            while hasattr(endpoint, "_wrappedEndpoint"):
                endpoint = endpoint._wrappedEndpoint
            if port is None or endpoint is None:
                continue
            if not isinstance(endpoint, AdoptedStreamServerEndpoint):
                abandonPort(port)

    def startService(self) -> None:
        """
        Start listening, reload the certificates on SIGHUP, reopen the log
        file on SIGUSR1 (until stopped), settle the heap
        once the reactor runs (with C{settleHeap}) and dispatch I/O events
        without a log context (with C{dispatchWithoutContext}).
        """
        if self.dispatchWithoutContext:
            withoutContext()
        try:
            super().startService()
        except BaseException as e:
            self._abandonListeners()
            if isinstance(e, ListenFailed):
                exitWithError(f"--listen {e.description!r}: {e.why}")
            raise
        logSummary(self, self._delivery)
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.certificates(self)
        if self.usesOwnCertificates():
            # The self-signed certificate, made at its first use.
            self.factory.tls.whenMade(self._certificatesChanged)
        self._previousHandler = HELD.handle(signal.SIGHUP, self._hangup)
        self._reopener = ReopenOnSignal(self._writer, self.reactor)
        self._reopener.install()
        if self.settleHeap:
            self.reactor.callWhenRunning(settleStartupHeap)
        if self.stopOnce:
            StopOnce(self.reactor).install()
            boundReactorThreads(self.reactor)

    def _certificatesChanged(self) -> None:
        logCertificates(self)
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.certificates(self)

    def stopService(self) -> Any:
        """
        Close gracefully; the buffered log lines are written when the
        process exits.  Until the sessions and the handler are closed,
        SIGHUP reloads the certificates and SIGUSR1 reopens the log file;
        then their previous handlers come back (under C{twistd}, those of
        L{HELD}, which keep the signals: they never end the process).
        """
        d = super().stopService()
        d.addBoth(self._closeHandler)

        def stopped(result: object) -> object:
            if self._previousHandler is not None:
                signal.signal(signal.SIGHUP, self._previousHandler)
                self._previousHandler = None
            if self._reopener is not None:
                self._reopener.uninstall()
                self._reopener = None
            return result

        return d.addBoth(stopped)

    def _closeHandler(self, result: object) -> object:
        """
        Once the sessions are closed, close the handler's own connections
        (a broker's, a next hop's pool, an HTTP pool) when it has a
        C{close} method, within L{HANDLER_CLOSE_TIMEOUT} seconds.
        """
        close = getattr(self.factory.handler, "close", None)
        if not callable(close):
            return result
        closing: Deferred[object] = maybeDeferred(close)
        closing.addTimeout(HANDLER_CLOSE_TIMEOUT, self.reactor)

        def failed(failure: Failure) -> None:
            self._log.warn(
                "Closing the delivery's connections failed: {error}",
                error=printable(failure.getErrorMessage()),
            )

        return closing.addErrback(failed).addBoth(lambda _: result)

    def _stoppedListening(self, listeners: list[tuple[str, Any]]) -> None:
        for description, address in listeners:
            logStopped(description, address)

    def _hangup(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """
        Read the certificate files again; success is logged by the TLS
        configuration, each failure here, one line apiece (the server's
        own, each C{ssl:} listener's own: one failing leaves the others
        reloaded).  Then the certificates in use, new and old alike, are
        logged and exported as after the start.  A worker of C{--workers}
        serving the self-signed certificate its parent made skips the
        reload while it stops, with one line: that certificate never
        changes, and a worker that stopped first removes its files.
        """
        # A worker names itself: its parent's log says which of its
        # workers the signal reached.
        where = f" in {self.workerName}" if self.workerName else ""
        if self.sharedSelfSigned and not self.running:
            # Its parent passed the signal on during the stop: the
            # certificate it made, which never changes, may be gone already
            # (a worker that stopped first removes it).
            self._log.info(
                "Reloading TLS certificates{where} skipped: the worker is stopping, and its"
                " certificate is the self-signed one its parent made",
                where=where,
            )
            return
        self._log.info("Reloading TLS certificates{where}", where=where)
        errors: list[str] = []
        if self.factory.options.certificate is not None:
            try:
                self.factory.tls  # noqa: B018 -- read them now if not yet used
            except ValueError as e:
                # The listeners' own are reloaded all the same.
                errors.append(reason(e))
        errors.extend(reason(e) for e in self._reloadEach())
        for error in errors:
            # A worker's line goes into its parent's log among the others'.
            self._log.error(
                "Reloading TLS certificates failed{where}, the old ones stay in use: {error}",
                where=where,
                error=error,
            )
        # The server's own and those of ssl: listeners with keys of their
        # own (STARTTLS may be off), those a failure left in use included.
        self._certificatesChanged()
