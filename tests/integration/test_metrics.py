# -*- test-case-name: tests.integration.test_metrics -*-
"""
C{twistd smtpd --metrics}: Prometheus metrics scraped over HTTP after a
known sequence of sessions, with one process and with C{--workers 2}; and
C{/healthz}.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import (
    CLIENT_TIMEOUT,
    RECIPIENT,
    SENDER,
    START_TIMEOUT,
    ServerTestCase,
    freePort,
    message,
    unverifiedContext,
)


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """
    GET C{path} on 127.0.0.1:C{port}.

    @return: The status and the body.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=CLIENT_TIMEOUT) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of an exposition, by name and sorted labels.
    """
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class MetricsTests(ServerTestCase):
    """
    Exact counter values after known sessions.
    """

    def sessions(self, port: int) -> None:
        """
        Three connections: two messages on the first (one recipient
        refused by the grammar), one message on the second, nothing on the
        third.
        """
        client = self.smtp(port)
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT], message(1)), {})
        client.mail(SENDER)
        self.assertEqual(client.rcpt("<bad address>")[0], 501)
        self.assertEqual(client.rcpt(RECIPIENT)[0], 250)
        self.assertEqual(client.data(message(2))[0], 250)
        client.quit()
        client = self.smtp(port)
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT, "b@example.com"], message(3)), {})
        client.quit()
        client = self.smtp(port)
        client.ehlo()
        client.quit()

    def waitFor(
        self, port: int, key: tuple[str, tuple[tuple[str, str], ...]], value: float
    ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """
        Scrape until C{key} has C{value} (sessions are counted as they
        close, just after the client saw QUIT's reply).
        """
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            status, text = scrape(port)
            self.assertEqual(status, 200, text)
            found = samples(text)
            if found.get(key) == value or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def assertCounts(self, found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> None:
        expected = {
            ("smtpd_connections_total", ()): 3,
            ("smtpd_connections_open", ()): 0,
            ("smtpd_sessions_total", (("outcome", "message"),)): 2,
            ("smtpd_sessions_total", (("outcome", "no_message"),)): 1,
            ("smtpd_messages_total", (("code", "250"), ("reply_class", "2xx"))): 3,
            ("smtpd_recipients_total", ()): 4,
            ("smtpd_refusals_total", (("code", "501"), ("command", "RCPT"))): 1,
            ("smtpd_delivery_seconds_count", ()): 3,
            ("smtpd_received_bytes_total", ()): sum(
                len(message(n).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) for n in (1, 2, 3)
            ),
        }
        actual = {key: found.get(key) for key in expected}
        self.assertEqual(actual, expected)

    def test_oneProcess(self) -> None:
        """
        One process: exact counts, and C{/healthz} answers 200.
        """
        metricsPort = freePort()
        self.startServer(
            "--sink", "--metrics", f"tcp:{metricsPort}:interface=127.0.0.1", maildir=False
        )
        self.server.waitForLog(f"metrics: /metrics and /healthz on 127.0.0.1:{metricsPort}")
        self.assertEqual(scrape(metricsPort, "/healthz"), (200, "ok\n"))
        self.sessions(self.server.port)
        self.waitFor(metricsPort, ("smtpd_sessions_total", (("outcome", "no_message"),)), 1)
        # The last worker to see its client go may count it a moment later.
        found = self.waitFor(metricsPort, ("smtpd_connections_open", ()), 0)
        self.assertCounts(found)
        # The self-signed certificate is made at the first STARTTLS.
        expiry = ("smtpd_certificate_expiry_timestamp_seconds", (("servername", ""),))
        self.assertNotIn(expiry, found)
        client = self.smtp(self.server.port)
        client.starttls(context=unverifiedContext())
        client.quit()
        found = samples(scrape(metricsPort)[1])
        self.assertLess(abs(found[expiry] - (time.time() + 365 * 86400)), 2 * 3600)
        self.stopServer()

    def test_workers(self) -> None:
        """
        With C{--workers 2} the parent serves the sum of both workers and
        the number of workers alive.
        """
        metricsPort = freePort()
        self.startServer(
            "--sink",
            "--workers",
            "2",
            "--no-reverse-lookup",
            "--metrics",
            f"tcp:{metricsPort}:interface=127.0.0.1",
            maildir=False,
        )
        self.server.waitForLog("] ready: ", count=2)
        self.assertEqual(scrape(metricsPort, "/healthz"), (200, "ok\n"))
        # Enough connections that both workers take some (the kernel
        # spreads them over the two listening sockets).
        self.sessions(self.server.port)
        self.waitFor(metricsPort, ("smtpd_sessions_total", (("outcome", "no_message"),)), 1)
        # The last worker to see its client go may count it a moment later.
        found = self.waitFor(metricsPort, ("smtpd_connections_open", ()), 0)
        self.assertCounts(found)
        self.assertEqual(found[("smtpd_workers_alive", ())], 2)
        self.stopServer()

    def test_workerKilledWithConnectionsOpen(self) -> None:
        """
        Workers killed with SIGKILL while connections are open (the OOM
        killer) no longer count them as open once they have ended; what
        they counted stays.
        """
        metricsPort = freePort()
        self.startServer(
            "--sink",
            "--workers",
            "2",
            "--no-reverse-lookup",
            "--metrics",
            f"tcp:{metricsPort}:interface=127.0.0.1",
            maildir=False,
        )
        self.server.waitForLog("worker ready", count=2)
        pids = [
            int(pid) for pid in re.findall(r"worker \d+ started, pid (\d+)", self.server.output)
        ]
        self.assertEqual(len(pids), 2)
        clients = []
        for _ in range(4):
            client = socket.create_connection(("127.0.0.1", self.server.port), CLIENT_TIMEOUT)
            self.addCleanup(client.close)
            client.recv(1000)
            clients.append(client)
        found = self.waitFor(metricsPort, ("smtpd_connections_open", ()), 4)
        self.assertEqual(found[("smtpd_connections_open", ())], 4)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.server.waitForLog("worker ready", count=4)
        found = self.waitFor(metricsPort, ("smtpd_connections_open", ()), 0)
        self.assertEqual(found[("smtpd_connections_open", ())], 0)
        self.assertEqual(found[("smtpd_connections_total", ())], 4)
        self.assertEqual(found[("smtpd_workers_alive", ())], 2)
        self.stopServer()
