# -*- test-case-name: tests.integration.test_scaleout -*-
"""
The documented scale-out deployment (docs/scaling.md), built on 127.0.0.1:
a real HAProxy with C{send-proxy-v2} in front of two C{twistd smtpd
--workers 2} instances publishing into one RabbitMQ queue.  One instance is
killed with SIGKILL under load; no acknowledged message is lost.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import smtplib
import subprocess
import threading
import time

from tests.integration.helpers import (
    CLIENT_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    ServerFailed,
    ServerTestCase,
    TwistdServer,
    freePort,
    requireProgram,
)
from tests.integration.rabbitmq import sharedBroker

_WORKER = re.compile(rb"worker (\d+) started, pid (\d+)")
_MESSAGE_ID = re.compile(rb"Message-ID: <([^>]+)>")


def haproxyConfig(frontend: int, backends: list[int]) -> str:
    """
    The HAProxy configuration of the deployment: TCP mode, PROXY protocol
    version 2 to each instance (health checks included), a failed
    connection tried again on the other instance.
    """
    servers = "".join(
        f"    server smtpd{i} 127.0.0.1:{port} send-proxy-v2 check check-send-proxy "
        "inter 200ms fall 1 rise 2\n"
        for i, port in enumerate(backends)
    )
    return (
        "global\n"
        "    maxconn 256\n"
        "defaults\n"
        "    mode tcp\n"
        "    timeout connect 2s\n"
        "    timeout client 60s\n"
        "    timeout server 60s\n"
        "    retries 3\n"
        "    option redispatch\n"
        f"frontend smtp\n    bind 127.0.0.1:{frontend}\n    default_backend smtpd\n"
        f"backend smtpd\n    balance roundrobin\n{servers}"
    )


class ScaleOutTests(ServerTestCase):
    """
    HAProxy, two instances, one queue.
    """

    clients = 8
    perClient = 15
    killAfter = 30

    def instance(self, url: str, queue: str) -> TwistdServer:
        return self.spawn(
            "--workers",
            "2",
            "--no-reverse-lookup",
            "--quiet",
            "--proxy-trusted",
            "127.0.0.1/32",
            "--amqp",
            url,
            "--amqp-queue",
            queue,
            maildir=False,
            listen=["haproxy:tcp:0:interface=127.0.0.1"],
        )

    def test_instanceKilledUnderLoad(self) -> None:
        """
        Clients send through HAProxy to two instances; one instance (its
        parent and workers) is killed with SIGKILL.  Its clients get a 4xx
        or a dropped connection and send again through HAProxy to the
        survivor; every message any client got 250 for is in the queue.
        """
        haproxy = requireProgram(self, "haproxy", "haproxy")
        broker = sharedBroker()
        queue = f"scaleout-{os.getpid()}-{time.monotonic_ns()}"
        first = self.instance(broker.url, queue)
        second = self.instance(broker.url, queue)
        for server in (first, second):
            server.waitForLog("worker 1 started")
        frontend = freePort()
        config = os.path.join(self.makeDirectory(), "haproxy.cfg")
        with open(config, "w") as f:
            f.write(haproxyConfig(frontend, [first.port, second.port]))
        proxy = subprocess.Popen(
            [haproxy, "-db", "-f", config],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(self._stop, proxy)
        self._waitListening(proxy, frontend)

        accepted: dict[str, bytes] = {}
        afterKill: list[str] = []
        failures: list[Exception] = []
        killed = threading.Event()
        changed = threading.Condition()

        def client(index: int) -> None:
            number = 0
            deadline = time.monotonic() + 4 * START_TIMEOUT
            while number < self.perClient and time.monotonic() < deadline:
                try:
                    with smtplib.SMTP("127.0.0.1", frontend, timeout=CLIENT_TIMEOUT) as smtp:
                        smtp.ehlo("client.example")
                        while number < self.perClient:
                            messageId = f"{index}.{number}.scaleout@example.com"
                            message = (
                                f"Message-ID: <{messageId}>\r\nSubject: {number}\r\n\r\n".encode()
                                + b"line of text\r\n" * 20
                            )
                            smtp.sendmail("a@example.com", ["b@example.com"], message)
                            with changed:
                                accepted[messageId] = message
                                if killed.is_set():
                                    afterKill.append(messageId)
                                changed.notify_all()
                            number += 1
                except (OSError, smtplib.SMTPException) as e:
                    with changed:
                        failures.append(e)
                    time.sleep(0.1)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(self.clients)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + START_TIMEOUT
            with changed:
                while len(accepted) < self.killAfter and time.monotonic() < deadline:
                    changed.wait(max(deadline - time.monotonic(), 0))
            pids = [first.pid] + [int(m.group(2)) for m in _WORKER.finditer(first.output.encode())]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed.set()
        finally:
            for thread in threads:
                thread.join(8 * CLIENT_TIMEOUT)
        first.kill()

        self.assertEqual(len(accepted), self.clients * self.perClient, failures[:5])
        self.assertTrue(failures, "no client of the killed instance noticed")
        for failure in failures:
            # A dropped connection, or a temporary (4xx) refusal; never 5xx.
            if isinstance(failure, smtplib.SMTPResponseException):
                self.assertEqual(failure.smtp_code // 100, 4, repr(failure))
            else:
                self.assertIsInstance(
                    failure, (OSError, smtplib.SMTPServerDisconnected), repr(failure)
                )
        self.assertTrue(afterKill, "nothing was accepted after the kill")

        depth = broker.depth(queue)
        seen: dict[str, int] = {}
        for _, body in broker.consume(queue, depth):
            match = _MESSAGE_ID.search(body)
            assert match is not None
            name = match.group(1).decode()
            seen[name] = seen.get(name, 0) + 1
            if name in accepted:
                self.assertEqual(body, accepted[name])
        lost = sorted(set(accepted) - set(seen))
        self.assertEqual(lost, [])
        duplicates = sum(count - 1 for count in seen.values())
        print(
            f"\nscale-out: {len(accepted)} accepted, {len(afterKill)} after the kill, "
            f"{len(failures)} client failures, {depth} in the queue, {duplicates} duplicates"
        )
        self.stopServer(second)

    def _waitListening(self, proxy: subprocess.Popen[bytes], port: int) -> None:
        import socket

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proxy.poll() is not None:
                raise ServerFailed(f"haproxy exited with {proxy.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise ServerFailed("haproxy is not listening") from None
                time.sleep(0.05)

    def _stop(self, proxy: subprocess.Popen[bytes]) -> None:
        if proxy.poll() is None:
            proxy.terminate()
            proxy.wait(STOP_TIMEOUT)
