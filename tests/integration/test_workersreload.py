"""
C{twistd smtpd --workers 2} over real sockets: a worker's certificate
reload failure names the worker in the parent's log, and a worker killed
while it holds sessions is logged with how many.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from tests.integration.helpers import CLIENT_TIMEOUT, START_TIMEOUT, startWorkers

_WORKER = re.compile(r"worker (\d+) started, pid (\d+)")
_FAILED = re.compile(r"Reloading TLS certificates failed in worker (\d+), pid (\d+), the old ones")
_HOLDING = re.compile(r"worker (\d+) \(pid (\d+)\) held (\d+) sessions at its last sign")


def workerPids(output: str) -> dict[int, int]:
    return {int(index): int(pid) for index, pid in _WORKER.findall(output)}


class WorkerReloadTests(SynchronousTestCase):
    def test_reloadFailureNamesWorker(self) -> None:
        """
        SIGHUP with a certificate file broken since the start: each worker
        fails to reload it and its line in the parent's log names it, by
        index and pid, so the operator knows which process still serves the
        old certificate.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        issued = CertificateAuthority(directory).server("mail.example.com")
        server, _ = startWorkers(
            self,
            ["--sink", "--tls-cert", issued.certificatePath, "--tls-key", issued.keyPath],
            directory,
        )
        with open(issued.certificatePath, "wb") as f:
            f.write(b"not a certificate")
        server.signal(signal.SIGHUP)
        server.waitForLog("Reloading TLS certificates failed", count=2, timeout=START_TIMEOUT)
        output = server.output
        named = sorted((int(i), int(p)) for i, p in _FAILED.findall(output))
        self.assertEqual(named, sorted(workerPids(output).items()), output[-3000:])
        server.stop()


class DeadWorkerSessionsTests(SynchronousTestCase):
    def test_killedWorkerSessionsCounted(self) -> None:
        """
        Workers killed (SIGKILL, as the OOM killer does) while clients hold
        three sessions: the parent logs, for each worker that held any, how
        many it held; together, the three.
        """
        server, port = startWorkers(self, ["--sink", "--worker-timeout", "4"])
        clients = []
        try:
            for _ in range(3):
                client = smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
                clients.append(client)
                self.assertEqual(client.ehlo("client.example")[0], 250)
            # Signs of life come every second (--worker-timeout 4): let
            # each worker give one after the sessions began.
            time.sleep(2.5)
            pids = workerPids(server.output)
            for pid in pids.values():
                os.kill(pid, signal.SIGKILL)
            server.waitForLog("restarting", count=2, timeout=START_TIMEOUT)
            output = server.output
            held = {int(i): int(n) for i, _, n in _HOLDING.findall(output)}
            self.assertEqual(sum(held.values()), 3, output[-3000:])
            for index, pid, _ in _HOLDING.findall(output):
                self.assertEqual(pids[int(index)], int(pid))
        finally:
            for client in clients:
                client.close()
        server.waitForLog("worker ready", count=4, timeout=START_TIMEOUT)
        server.stop()
