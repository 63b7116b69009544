# -*- test-case-name: tests.integration.test_metrics -*-
"""
C{twistd smtpd --metrics}: Prometheus metrics scraped over HTTP after a
known sequence of sessions, with one process and with C{--workers 2}; and
C{/healthz}.
"""

from __future__ import annotations

import base64
import datetime
import os
import re
import shutil
import signal
import socket
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.certs import CertificateAuthority, IssuedCertificate
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
from tests.integration.tlsclients import FAILING


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
        expiry = (
            "smtpd_certificate_expiry_timestamp_seconds",
            (("listener", ""), ("servername", "")),
        )
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


class OwnKeysCertificateTests(ServerTestCase):
    """
    The certificate of an C{ssl:} listener with keys of its own is in the
    start summary, with its warning when it has expired or expires soon,
    again after SIGHUP, and in C{smtpd_certificate_expiry_timestamp_seconds}
    under the label C{listener}.
    """

    def setUp(self) -> None:
        self.ca = CertificateAuthority(os.path.abspath(self.mktemp()))

    def startWithOwnKeys(self, own: IssuedCertificate) -> tuple[str, int]:
        """
        Serve C{own} on an C{ssl:} listener with C{--metrics}.

        @return: The listener's endpoint string and the metrics port.
        """
        metricsPort = freePort()
        endpoint = (
            f"ssl:0:interface=127.0.0.1:privateKey={own.keyPath}:certKey={own.certificatePath}"
        )
        self.startServer(
            "--sink",
            "--metrics",
            f"tcp:{metricsPort}:interface=127.0.0.1",
            maildir=False,
            listen=[endpoint],
        )
        self.server.waitForLog(f"metrics: /metrics and /healthz on 127.0.0.1:{metricsPort}")
        return endpoint, metricsPort

    def expiry(self, metricsPort: int, endpoint: str) -> float | None:
        """
        The listener's sample of the expiry gauge, if any.
        """
        status, text = scrape(metricsPort)
        self.assertEqual(status, 200, text)
        key = (
            "smtpd_certificate_expiry_timestamp_seconds",
            (("listener", endpoint), ("servername", "")),
        )
        return samples(text).get(key)

    def test_expiresSoon(self) -> None:
        """
        A certificate that expires in 5 days is logged at start with its
        warning, and its expiry is exported.
        """
        notAfter = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        notAfter += datetime.timedelta(days=5, hours=1)
        own = self.ca.issue("submission.example.com", notAfter=notAfter)
        endpoint, metricsPort = self.startWithOwnKeys(own)
        stamp = notAfter.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.server.waitForLog(
            f"TLS certificate of {endpoint}: CN=submission.example.com,"
            f" expires {stamp} (in 5 days); renew it"
        )
        self.assertEqual(self.expiry(metricsPort, endpoint), notAfter.timestamp())
        self.stopServer()

    def test_expiredThenRenewed(self) -> None:
        """
        An expired certificate is logged at start with its warning; renewed
        in place and reloaded by SIGHUP, the new one is logged and exported.
        """
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        expired = now - datetime.timedelta(days=2, hours=1)
        own = self.ca.issue(
            "submission.example.com",
            notBefore=now - datetime.timedelta(days=30),
            notAfter=expired,
        )
        endpoint, metricsPort = self.startWithOwnKeys(own)
        self.server.waitForLog(
            f"TLS certificate of {endpoint}: CN=submission.example.com,"
            f" expired {expired.strftime('%Y-%m-%dT%H:%M:%SZ')} (2 days ago); renew it"
        )
        self.assertEqual(self.expiry(metricsPort, endpoint), expired.timestamp())
        renewedAt = now + datetime.timedelta(days=60, hours=1)
        renewed = self.ca.issue("renewed.example.com", notAfter=renewedAt)
        shutil.copyfile(renewed.certificatePath, own.certificatePath)
        shutil.copyfile(renewed.keyPath, own.keyPath)
        self.server.signal(signal.SIGHUP)
        self.server.waitForLog(
            f"TLS certificate of {endpoint}: CN=renewed.example.com,"
            f" expires {renewedAt.strftime('%Y-%m-%dT%H:%M:%SZ')} (in 60 days)"
        )
        self.assertEqual(self.expiry(metricsPort, endpoint), renewedAt.timestamp())
        self.stopServer()


class WorkersCertificateTests(ServerTestCase):
    """
    Under C{--workers}, C{smtpd_certificate_expiry_timestamp_seconds} is
    that of the certificate the live workers serve.
    """

    def test_earlierCertificateAfterWorkerReplaced(self) -> None:
        """
        A worker killed and replaced, then the certificate replaced by one
        that expires sooner and reloaded by SIGHUP: the gauge gives the new
        expiry, not the old one the dead worker last recorded.
        """
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        laterAt = now + datetime.timedelta(days=300, hours=1)
        soonerAt = now + datetime.timedelta(days=20, hours=1)
        first = ca.issue("mail.example.com", ("mail.example.com",), notAfter=laterAt)
        metricsPort = freePort()
        self.startServer(
            "--sink",
            "--workers",
            "2",
            "--no-reverse-lookup",
            "--tls-cert",
            first.certificatePath,
            "--tls-key",
            first.keyPath,
            "--metrics",
            f"tcp:{metricsPort}:interface=127.0.0.1",
            maildir=False,
        )
        self.server.waitForLog("worker ready", count=2)
        key = (
            "smtpd_certificate_expiry_timestamp_seconds",
            (("listener", ""), ("servername", "")),
        )
        self.assertEqual(samples(scrape(metricsPort)[1]).get(key), laterAt.timestamp())
        pid = int(re.findall(r"worker \d+ started, pid (\d+)", self.server.output)[0])
        os.kill(pid, signal.SIGKILL)
        self.server.waitForLog("worker ready", count=3)
        sooner = ca.issue("mail.example.com", ("mail.example.com",), notAfter=soonerAt)
        shutil.copyfile(sooner.certificatePath, first.certificatePath)
        shutil.copyfile(sooner.keyPath, first.keyPath)
        self.server.signal(signal.SIGHUP)
        self.server.waitForLog("TLS certificates reloaded", count=2)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            value = samples(scrape(metricsPort)[1]).get(key)
            if value == soonerAt.timestamp() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(
            datetime.datetime.fromtimestamp(value or 0, datetime.UTC),
            soonerAt,
        )
        self.stopServer()


def plain(username: str, password: str) -> str:
    """
    The initial response of C{AUTH PLAIN} (RFC 4616).
    """
    return base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")


class SessionCountsTests(ServerTestCase):
    """
    TLS handshakes, AUTH decisions and the refusals they make, counted as
    C{docs/operator.md} says, after real sessions over STARTTLS.
    """

    def test_tlsAndAuth(self) -> None:
        """
        Two STARTTLS sessions: one AUTH failure (535) then a success and a
        message, and one without AUTH; a plaintext session refused AUTH
        (no TLS).  Each counter moves by exactly that.
        """
        metricsPort = freePort()
        self.startServer(
            "--sink",
            "--no-reverse-lookup",
            "--auth",
            "memory:alice:secret",
            "--auth-optional",
            "--metrics",
            f"tcp:{metricsPort}:interface=127.0.0.1",
            maildir=False,
        )
        self.server.waitForLog(f"metrics: /metrics and /healthz on 127.0.0.1:{metricsPort}")
        client = self.smtp(self.server.port)
        client.starttls(context=unverifiedContext())
        client.ehlo()
        self.assertEqual(client.docmd("AUTH", "PLAIN " + plain("alice", "wrong"))[0], 535)
        self.assertEqual(client.docmd("AUTH", "PLAIN " + plain("alice", "secret"))[0], 235)
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT], message(1)), {})
        client.quit()
        client = self.smtp(self.server.port)
        client.starttls(context=unverifiedContext())
        client.ehlo()
        client.quit()
        client = self.smtp(self.server.port)
        client.ehlo()
        self.assertEqual(client.docmd("AUTH", "PLAIN " + plain("alice", "secret"))[0], 538)
        client.quit()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            found = samples(scrape(metricsPort)[1])
            closed = sum(
                value for (name, _), value in found.items() if name == "smtpd_sessions_total"
            )
            if closed == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        tls = {
            dict(labels)["version"]: value
            for (name, labels), value in found.items()
            if name == "smtpd_tls_sessions_total"
        }
        self.assertEqual(sum(tls.values()), 2, tls)
        expected = {
            ("smtpd_connections_total", ()): 3,
            ("smtpd_auth_total", (("mechanism", "PLAIN"), ("result", "failure"))): 1,
            ("smtpd_auth_total", (("mechanism", "PLAIN"), ("result", "success"))): 1,
            ("smtpd_refusals_total", (("code", "535"), ("command", "AUTH"))): 1,
            ("smtpd_refusals_total", (("code", "538"), ("command", "AUTH"))): 1,
            ("smtpd_sessions_total", (("outcome", "message"),)): 1,
            ("smtpd_sessions_total", (("outcome", "no_message"),)): 2,
            ("smtpd_messages_total", (("code", "250"), ("reply_class", "2xx"))): 1,
        }
        self.assertEqual({key: found.get(key) for key in expected}, expected)
        self.stopServer()


class ForeignMultiprocessDirectoryTests(ServerTestCase):
    """
    C{PROMETHEUS_MULTIPROC_DIR} in the environment, set for some other
    program, does not reach one C{twistd smtpd --metrics} process.
    """

    def test_oneProcessIgnoresIt(self) -> None:
        """
        With the variable naming a directory that does not exist, and with
        it naming another program's directory, the server starts, counts a
        session and writes nothing into that directory.
        """
        foreign = self.makeDirectory()
        for directory in (os.path.join(foreign, "missing"), foreign):
            metricsPort = freePort()
            server = self.spawn(
                "--sink",
                "--no-reverse-lookup",
                "--metrics",
                f"tcp:{metricsPort}:interface=127.0.0.1",
                maildir=False,
                env={"PROMETHEUS_MULTIPROC_DIR": directory},
            )
            server.waitForLog(f"metrics: /metrics and /healthz on 127.0.0.1:{metricsPort}")
            self.smtp(server.port).quit()
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                found = samples(scrape(metricsPort)[1])
                key = ("smtpd_sessions_total", (("outcome", "no_message"),))
                if found.get(key) == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertEqual(found.get(key), 1)
            self.assertEqual(found.get(("smtpd_connections_total", ())), 1)
            self.stopServer(server)
            self.assertEqual(os.listdir(foreign), [])


class HandshakeFailureTests(ServerTestCase):
    """
    C{smtpd_tls_handshake_failures_total} over HTTP, with C{--workers 2}:
    the parent serves the sum of what each worker counted in its
    multiprocess file.
    """

    def test_workers(self) -> None:
        """
        Failing clients of every kind, on an C{ssl:} listener and after
        STARTTLS, spread over two workers, are each counted once under
        their listener and reason.
        """
        metricsPort = freePort()
        implicit = "ssl:0:interface=127.0.0.1"
        self.startServer(
            "--sink",
            "--workers",
            "2",
            "--no-reverse-lookup",
            "--metrics",
            f"tcp:{metricsPort}:interface=127.0.0.1",
            maildir=False,
            listen=[implicit, "tcp:0:interface=127.0.0.1"],
        )
        self.server.waitForLog("worker ready", count=2)
        tlsPort, plainPort = self.server.ports
        assert isinstance(tlsPort, int) and isinstance(plainPort, int)
        rounds = 3
        for _ in range(rounds):
            for client, _reason in FAILING:
                client(tlsPort)
                client(plainPort, starttls=True)
        expected: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for _client, reason in FAILING:
            for listener in (implicit, "starttls"):
                key = (
                    "smtpd_tls_handshake_failures_total",
                    (("listener", listener), ("reason", reason)),
                )
                expected[key] = expected.get(key, 0) + rounds
        total = sum(expected.values())
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            found = samples(scrape(metricsPort)[1])
            failures = {
                key: value
                for key, value in found.items()
                if key[0] == "smtpd_tls_handshake_failures_total"
            }
            if sum(failures.values()) >= total or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(failures, expected)
        self.stopServer()


class HTTPSMetricsTests(ServerTestCase):
    """
    C{--metrics ssl:...} serves over HTTPS to the clients that scrape it.
    """

    def test_clientOfferingALPN(self) -> None:
        """
        A client offering ALPN (C{h2} and C{http/1.1}, as curl and
        Prometheus's HTTP client do) finishes its handshake, is given
        C{http/1.1}, and is answered.
        """
        import ssl

        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = ca.server("localhost")
        metricsPort = freePort()
        self.startServer(
            "--sink",
            "--metrics",
            f"ssl:{metricsPort}:interface=127.0.0.1:privateKey={issued.keyPath}"
            f":certKey={issued.certificatePath}",
            maildir=False,
        )
        self.server.waitForLog(f"metrics: /metrics and /healthz on 127.0.0.1:{metricsPort}")
        context = ssl.create_default_context(cafile=ca.certificatePath)
        context.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection(("127.0.0.1", metricsPort), timeout=CLIENT_TIMEOUT)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            self.assertEqual(tls.selected_alpn_protocol(), "http/1.1")
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := tls.recv(4096):
                response += chunk
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n"), response[:80])
        self.assertTrue(response.endswith(b"\r\n\r\nok\n"), response[-80:])
        self.stopServer()

    def test_filesReadAtStart(self) -> None:
        """
        The key, the certificate and the C{dhParameters} file are read at
        start: removed then (as a file only root may read is, for the
        process under C{twistd --uid}), the first handshake, with a client
        offering only a C{DHE} cipher, still succeeds and is answered.
        """
        import ssl

        from tests.test_dhparameters import DHE_CIPHER
        from tests.test_tlsresume import FFDHE2048

        directory = os.path.abspath(self.mktemp())
        ca = CertificateAuthority(directory)
        issued = ca.issue("localhost", ("localhost",), rsaKey=True)
        parameters = os.path.join(directory, "dh.pem")
        with open(parameters, "w") as f:
            f.write(FFDHE2048)
        metricsPort = freePort()
        self.startServer(
            "--sink",
            "--metrics",
            f"ssl:{metricsPort}:interface=127.0.0.1:privateKey={issued.keyPath}"
            f":certKey={issued.certificatePath}:dhParameters={parameters}",
            maildir=False,
        )
        self.server.waitForLog(f"metrics: /metrics and /healthz on 127.0.0.1:{metricsPort}")
        for path in (issued.keyPath, issued.certificatePath, parameters):
            os.rename(path, path + ".gone")
        context = ssl.create_default_context(cafile=ca.certificatePath)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(DHE_CIPHER)
        raw = socket.create_connection(("127.0.0.1", metricsPort), timeout=CLIENT_TIMEOUT)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            self.assertEqual(tls.cipher()[0], DHE_CIPHER)
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := tls.recv(4096):
                response += chunk
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n"), response[:80])
        self.stopServer()
