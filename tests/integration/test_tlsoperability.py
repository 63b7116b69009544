# -*- test-case-name: tests.integration.test_tlsoperability -*-
"""
TLS as an operator sees it, over real sockets: failed handshakes (an old
client, plaintext, a client closing mid-handshake, one refusing the
server's certificate) on an C{ssl:} listener and after STARTTLS are each
logged once and counted in C{smtpd_tls_handshake_failures_total}.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.integration.test_metrics import samples
from tests.integration.tlsclients import FAILING
from tests.tlsserving import IMPLICIT, PLAIN, listen, logLines, tlsServer
from twisted_smtpd._serving.metrics import ServerMetrics

reactor: Any = _reactor


class ServerCase(TestCase):
    timeout = 60

    def serve(self, **options: Any) -> Any:
        """
        Start a server with a certificate of a CA made for the test, metrics
        and a log catcher; fire with the ports of its C{ssl:} and C{tcp:}
        listeners.

        @param options: More L{ServerOptions}.
        """
        self.server = tlsServer(self, **options)
        self.metrics = ServerMetrics()
        self.server.addObserver(self.metrics)
        self.lines = logLines(self)
        return listen(self, self.server, IMPLICIT, PLAIN)

    def found(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """
        The metrics, as Prometheus scrapes them.
        """
        return samples(generate_latest(self.metrics.registry).decode("utf-8"))

    @inlineCallbacks
    def waitForSessionsGone(self) -> Any:
        """
        Wait until the server holds no connection (each failure is counted
        as its connection is lost, just after the client went), at most
        10 seconds.
        """
        for _ in range(200):
            if not self.server.factory.connections:
                return
            yield deferLater(reactor, 0.05, lambda: None)
        self.fail(f"connections still open: {self.server.factory.connections}")


class HandshakeFailureTests(ServerCase):
    @inlineCallbacks
    def test_countedAndLoggedOnce(self) -> Any:
        """
        Each failing client, on the C{ssl:} listener and after STARTTLS, is
        counted once under its listener and reason, and leaves exactly one
        log line with its session, its address and OpenSSL's reason.
        """
        implicit, plain = yield self.serve()
        for client, _ in FAILING:
            yield deferToThread(client, implicit)
            yield deferToThread(client, plain, starttls=True)
        yield self.waitForSessionsGone()
        found = self.found()
        failures = {
            labels: value
            for (name, labels), value in found.items()
            if name == "smtpd_tls_handshake_failures_total"
        }
        expected: dict[tuple[tuple[str, str], ...], float] = {}
        for _, reason in FAILING:
            for listener in (IMPLICIT, "starttls"):
                key = (("listener", listener), ("reason", reason))
                expected[key] = expected.get(key, 0) + 1
        self.assertEqual(failures, expected)
        logged = [line for line in self.lines if "TLS handshake failed" in line]
        self.assertEqual(len(logged), 2 * len(FAILING), logged)
        for line in logged:
            session, address, rest = line.split(" ", 2)
            self.assertEqual(len(session), 8, line)
            self.assertEqual(address, "127.0.0.1", line)
            self.assertTrue(rest.startswith("TLS handshake failed: "), line)
        whys = sorted(line.split(": ", 1)[1] for line in logged)
        self.assertIn("unsupported protocol", whys)
        # Garbage instead of a ClientHello: OpenSSL's words differ between
        # releases (3.0 to 3.2: a record too long; later: a wrong version).
        self.assertTrue(
            {"wrong version number", "packet length too long; record layer failure"} & set(whys),
            whys,
        )
        self.assertIn("tlsv1 alert unknown ca", whys)
        # No handshake finished, and no session was counted as secure.
        self.assertFalse([key for key in found if key[0] == "smtpd_tls_sessions_total"])
