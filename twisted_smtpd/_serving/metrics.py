# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics of a server, built on its observer events
(L{SMTPServer.addObserver}) with the C{prometheus_client} library (the
C{metrics} extra), and the C{/metrics} and C{/healthz} web resources.

Under C{--workers} each worker records into C{prometheus_client}'s
multiprocess files (C{PROMETHEUS_MULTIPROC_DIR}, a private directory the
parent makes) and the parent serves their sum.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from twisted_smtpd._core.optionchecks import AUTH_METHODS
from twisted_smtpd._core.replies import Reply
from twisted_smtpd._core.session import Session
from twisted_smtpd._serving.metricshttp import (
    MAX_CONNECTIONS,
    REQUEST_DEADLINE,
    ConnectionLimit,
    MetricsChannel,
    MetricsRequest,
    noAccessLine,
)
from twisted_smtpd._serving.tlsfailures import REASONS

if TYPE_CHECKING:
    from twisted_smtpd._serving.service import SMTPServer

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: The variables that put C{prometheus_client} into multiprocess mode when
#: it is imported (the second is its older spelling).
MULTIPROC_VARIABLES = (MULTIPROC_ENV, "prometheus_multiproc_dir")

#: Buckets of the latency histograms, in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def mechanismLabel(name: object) -> str:
    """
    The C{mechanism} label of C{smtpd_auth_total}: one of the mechanisms the
    server knows, or C{"other"}, so that no client can add series.
    """
    return name if isinstance(name, str) and name in AUTH_METHODS else "other"


def requirePrometheus(flag: str = "--metrics") -> Any:
    """
    Import C{prometheus_client}.

    @raise ImportError: With one line naming the extra to install.
    """
    try:
        import prometheus_client
    except ImportError:
        raise ImportError(
            f"{flag} needs the prometheus_client library: pip install 'twisted-smtpd[metrics]'"
        ) from None
    return prometheus_client


class ServerMetrics:
    """
    A server observer counting what Prometheus scrapes; add it with
    C{server.addObserver(metrics)}.

    @ivar registry: The C{prometheus_client} registry holding the metrics.
    """

    def __init__(self, registry: Any = None) -> None:
        """
        @param registry: A C{prometheus_client.CollectorRegistry}; a new one
            by default.
        """
        prometheus = requirePrometheus()
        self.registry = registry if registry is not None else prometheus.CollectorRegistry()
        Counter, Gauge, Histogram = prometheus.Counter, prometheus.Gauge, prometheus.Histogram
        r = self.registry
        self.connectionsOpen = Gauge(
            "smtpd_connections_open",
            "SMTP connections open now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections = Counter(
            "smtpd_connections",
            "SMTP connections accepted, those then refused at connect included.",
            registry=r,
        )
        self.sessions = Counter(
            "smtpd_sessions",
            "Sessions ended, by outcome: message (at least one message accepted),"
            " no_message, refused (closed at connect by a limit, onConnect, or a PROXY"
            " header refused or missing).",
            ["outcome"],
            registry=r,
        )
        self.messages = Counter(
            "smtpd_messages",
            "Message replies sent, by class (2xx, 4xx, 5xx) and code; one per recipient in LMTP.",
            ["reply_class", "code"],
            registry=r,
        )
        self.unanswered = Counter(
            "smtpd_messages_unanswered",
            "Messages the handler answered after their session had ended (client gone,"
            " timeout): their replies never sent, not counted in smtpd_messages.",
            registry=r,
        )
        self.bytes = Counter(
            "smtpd_received_bytes", "Message bytes received (decoded bodies).", registry=r
        )
        self.recipients = Counter("smtpd_recipients", "Recipients accepted.", registry=r)
        self.refusals = Counter(
            "smtpd_refusals",
            "Commands refused, by command and code.",
            ["command", "code"],
            registry=r,
        )
        self.tls = Counter(
            "smtpd_tls_sessions",
            "TLS handshakes completed, by protocol version.",
            ["version"],
            registry=r,
        )
        self.tlsFailures = Counter(
            "smtpd_tls_handshake_failures",
            "TLS handshakes that failed, by listener (the endpoint string of an ssl:"
            " listener, starttls after STARTTLS) and reason (timeout, protocol,"
            " certificate, closed, other).",
            ["listener", "reason"],
            registry=r,
        )
        self.auth = Counter(
            "smtpd_auth",
            "AUTH decisions, by mechanism (other for one the server does not know) and result.",
            ["mechanism", "result"],
            registry=r,
        )
        self.hooks = Histogram(
            "smtpd_hook_seconds",
            "Time handler hooks took to answer, by hook.",
            ["hook"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.delivery = Histogram(
            "smtpd_delivery_seconds",
            "Time from the end of a message body to its reply (onData finishing).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "smtpd_handler_errors",
            "Handler hooks that failed unexpectedly, by hook.",
            ["hook"],
            registry=r,
        )
        self.certificateExpiry = Gauge(
            "smtpd_certificate_expiry_timestamp_seconds",
            "When each TLS certificate expires (Unix time), by SNI name ('' for the default)"
            " and ssl: listener with keys of its own ('' for the server's certificates).",
            ["servername", "listener"],
            registry=r,
            # Of the live workers only: a dead worker's file keeps the
            # expiry it last saw, perhaps of a certificate since replaced.
            multiprocess_mode="livemax",
        )
        self._delivered: set[str] = set()
        # Sessions counted in connectionsOpen (one refused by onConnect
        # has a connect event but no close event).
        self._open: set[str] = set()
        self._handlers: dict[str, Callable[[Session, dict[str, Any]], None]] = {
            "connect": self._connect,
            "close": self._close,
            "message": self._message,
            "rcpt": self._rcpt,
            "secure": self._secure,
            "tlsfailed": self._tlsFailed,
            "auth": self._auth,
            "reject": self._reject,
            "hook": self._hook,
            "error": self._error,
        }
        #: The events it counts, the only ones it is told of.
        self.events = frozenset(self._handlers)

    def __call__(self, event: str, session: Session, data: dict[str, Any]) -> None:
        """
        Count one observer event.
        """
        handler = self._handlers.get(event)
        if handler is not None:
            handler(session, data)

    def _connect(self, session: Session, data: dict[str, Any]) -> None:
        if session.id in self._open:
            # XCLIENT tells of the same connection again, as another client.
            return
        self.connections.inc()
        self.connectionsOpen.inc()
        self._open.add(session.id)

    def _gone(self, session: Session) -> None:
        if session.id in self._open:
            self._open.discard(session.id)
            self.connectionsOpen.dec()

    def _close(self, session: Session, data: dict[str, Any]) -> None:
        self._gone(session)
        if session.id in self._delivered:
            self._delivered.discard(session.id)
            self.sessions.labels("message").inc()
        else:
            self.sessions.labels("no_message").inc()

    def _message(self, session: Session, data: dict[str, Any]) -> None:
        replies: tuple[Reply, ...] = data.get("replies", ())
        if data.get("unanswered"):
            # Its replies were never sent (the session had ended): no reply
            # given, and its session does not become a "message" one.
            self.unanswered.inc()
        else:
            for reply in replies:
                self.messages.labels(f"{reply.code // 100}xx", str(reply.code)).inc()
            if any(reply.code < 400 for reply in replies):
                self._delivered.add(session.id)
        self.bytes.inc(data.get("size", 0))
        seconds = data.get("seconds")
        if seconds is not None:
            self.delivery.observe(seconds)

    def _rcpt(self, session: Session, data: dict[str, Any]) -> None:
        self.recipients.inc()

    def _secure(self, session: Session, data: dict[str, Any]) -> None:
        tls = session.tls
        self.tls.labels(str(None if tls is None else tls.protocol)).inc()

    def _tlsFailed(self, session: Session, data: dict[str, Any]) -> None:
        reason = data.get("reason")
        # Both from bounded sets: the server's listeners, and REASONS.
        self.tlsFailures.labels(
            str(data.get("listener", "")), reason if reason in REASONS else "other"
        ).inc()

    def _auth(self, session: Session, data: dict[str, Any]) -> None:
        self.auth.labels(mechanismLabel(data.get("method")), "success").inc()

    def _reject(self, session: Session, data: dict[str, Any]) -> None:
        reply: Reply = data["reply"]
        # A line that did not parse is UNKNOWN: its words are the client's,
        # never a label (every label value is from a bounded set).
        command = data.get("command") or ("CONNECT" if data.get("connect") else "UNKNOWN")
        self.refusals.labels(command, str(reply.code)).inc()
        if command == "AUTH" and data.get("username") is not None:
            self.auth.labels(mechanismLabel(data.get("mechanism")), "failure").inc()
        if data.get("closing") and data.get("connect") and not data.get("began"):
            # Refused at connect: no close event follows (one follows a
            # refusal by onSecure on an implicit TLS connection, whose
            # session began: it ends there, as one without a message).
            if session.id not in self._open:
                # Refused for a limit, before any connect event: still a
                # connection accepted, so that each ends as one session.
                self.connections.inc()
            self.sessions.labels("refused").inc()
            self._gone(session)

    def _hook(self, session: Session, data: dict[str, Any]) -> None:
        self.hooks.labels(data["hook"]).observe(data["seconds"])

    def _error(self, session: Session, data: dict[str, Any]) -> None:
        self.errors.labels(data["hook"]).inc()

    def certificates(self, server: SMTPServer) -> None:
        """
        Set the certificate expiry gauge from C{server}'s TLS configurations,
        those of C{ssl:} listeners with keys of their own included (see
        L{servedCertificates <twisted_smtpd._serving.summary.servedCertificates>}).
        """
        from twisted_smtpd._serving.summary import servedCertificates

        for served in servedCertificates(server):
            expires: datetime.datetime = served.certificate.not_valid_after_utc
            self.certificateExpiry.labels(served.servername, served.listener).set(
                expires.timestamp()
            )


class MetricsResource(Resource):
    """
    C{/metrics}: the registry in Prometheus's text format, as
    C{prometheus_client} writes it.
    """

    isLeaf = True

    def __init__(self, registry: Any) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        prometheus = requirePrometheus()
        request.setHeader(b"Content-Type", prometheus.CONTENT_TYPE_LATEST.encode("ascii"))
        data: bytes = prometheus.generate_latest(self._registry)
        return data


class HealthResource(Resource):
    """
    C{/healthz}: 200 while C{healthy()} says the listeners accept
    connections, else 503.
    """

    isLeaf = True

    def __init__(self, healthy: Callable[[], bool]) -> None:
        super().__init__()
        self._healthy = healthy

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        if self._healthy():
            return b"ok\n"
        request.setResponseCode(503)
        return b"not accepting connections\n"


def metricsSite(registry: Any, healthy: Callable[[], bool], reactor: Any = None) -> Any:
    """
    The web site serving C{/metrics} and C{/healthz}, behind a limit of
    L{MAX_CONNECTIONS} connections; requests other than C{GET} and C{HEAD}
    without a body are refused before any body is read, and each must be
    whole within L{REQUEST_DEADLINE} seconds of its first byte.

    @param reactor: What times the connections out; the global reactor by
        default.
    """
    from twisted.web.server import Site

    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"healthz", HealthResource(healthy))
    site = Site(root, requestFactory=MetricsRequest, timeout=REQUEST_DEADLINE, reactor=reactor)
    # Plain HTTP/1.1 (no HTTP/2 negotiation), with the checks above.
    site.protocol = MetricsChannel  # type: ignore[method-assign,assignment]
    site.noisy = False
    site.displayTracebacks = False
    # No access line per request: a scrape every 15 seconds would be 5,760
    # lines a day in the server's log, each with a User-Agent of up to 16
    # KiB; refusals and limits reached are logged by the listener itself.
    site.log = noAccessLine  # type: ignore[method-assign]
    factory = ConnectionLimit(site, MAX_CONNECTIONS)
    factory.noisy = False
    return factory


def multiprocessRegistry(path: str) -> Any:
    """
    A registry with the sum of every worker's metrics in C{path}; a file
    there that cannot be read fails no scrape (L{MultiprocessCollector
    <twisted_smtpd._serving.metricsfiles.MultiprocessCollector>}).
    """
    from twisted_smtpd._serving.metricsfiles import MultiprocessCollector

    prometheus = requirePrometheus()
    registry = prometheus.CollectorRegistry()
    registry.register(MultiprocessCollector(path))
    return registry


def inMultiprocessMode() -> bool:
    """
    Whether this process records into multiprocess files (a worker).
    """
    return bool(os.environ.get(MULTIPROC_ENV))
