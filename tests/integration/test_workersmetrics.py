"""
C{twistd smtpd --workers N --metrics ...} over real processes: the
directories the parent makes for its workers (their metrics, the shared
self-signed certificate and its key) do not outlive them.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import smtplib
import socket
import subprocess
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import CLIENT_TIMEOUT, STOP_TIMEOUT, freePort, startWorkers
from tests.integration.test_workers import running


class MetricsDirectoryTests(SynchronousTestCase):
    #: How long the workers may outlive their parent, in seconds.
    exitBound = 20.0

    def startWorkers(self, closeTimeout: int) -> tuple[Any, int, list[int], str]:
        """
        Start two workers serving C{--metrics}, their temporary files (the
        metrics directory, the shared certificate) in a directory of the
        test's, killed at the end of the test if still running.

        @return: The server, its port, the workers' pids, the directory.
        """
        directory = os.path.abspath(self.mktemp())
        temporary = os.path.join(directory, "tmp")
        os.makedirs(temporary)
        server, port = startWorkers(
            self,
            [
                "--sink",
                "--close-timeout",
                str(closeTimeout),
                "--metrics",
                f"tcp:{freePort()}:interface=127.0.0.1",
            ],
            directory,
            env={"TMPDIR": temporary},
        )
        pids = [int(pid) for pid in re.findall(r"worker \d+ started, pid (\d+)", server.output)]
        self.assertEqual(len(pids), 2)

        def killWorkers() -> None:
            for pid in pids:
                if running(pid):
                    os.kill(pid, signal.SIGKILL)

        self.addCleanup(killWorkers)
        return server, port, pids, temporary

    def test_removedWhenParentKilled(self) -> None:
        """
        When the parent of two workers serving C{--metrics} is killed with
        SIGKILL (it cannot remove the metrics directory it made), the
        directory is removed once the last worker has exited, and not while
        a worker still finishing its transactions writes there.
        """
        server, port, pids, temporary = self.startWorkers(closeTimeout=3)
        (metrics,) = glob.glob(os.path.join(temporary, "smtpd-metrics-*"))
        # A session in the middle of a transaction keeps its worker up to
        # the close timeout after the other has exited.
        client = socket.create_connection(("127.0.0.1", port), CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        client.recv(1000)
        client.sendall(b"EHLO client.example.com\r\nMAIL FROM:<a@example.com>\r\n")
        os.kill(server.pid, signal.SIGKILL)
        server.waitForLog("Parent process gone", count=2, timeout=self.exitBound)
        deadline = time.monotonic() + self.exitBound
        while all(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        if any(running(pid) for pid in pids):
            # One worker is gone, the other still ends its transaction.
            self.assertTrue(os.path.isdir(metrics))
        while any(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual([pid for pid in pids if running(pid)], [], server.output[-3000:])
        self.assertEqual(glob.glob(os.path.join(temporary, "smtpd-*")), [])

    def test_removedWhenParentKilledWhileStopping(self) -> None:
        """
        When the parent, stopping (SIGTERM), is killed with SIGKILL while a
        worker still finishes a transaction (systemd's stop timeout, an
        impatient operator), the worker still learns that its parent is
        gone: once it has exited, neither the metrics directory nor the
        shared certificate's private key is left behind.
        """
        server, port, pids, temporary = self.startWorkers(closeTimeout=20)
        self.assertEqual(len(glob.glob(os.path.join(temporary, "smtpd-*"))), 2)
        busy = smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(busy.close)
        busy.ehlo()
        busy.mail("a@example.com")
        busy.rcpt("b@example.com")
        self.assertEqual(busy.docmd("DATA")[0], 354)
        server.signal(signal.SIGTERM)
        server.waitForLog("stopped listening", count=2, timeout=STOP_TIMEOUT)
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + self.exitBound
        while sum(map(running, pids)) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        busy.send(b"Subject: late\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(busy.getreply()[0], 250)
        busy.quit()
        while any(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual([pid for pid in pids if running(pid)], [], server.output[-3000:])
        self.assertEqual(glob.glob(os.path.join(temporary, "smtpd-*")), [])


class FailedStartTests(SynchronousTestCase):
    def test_metricsListenerCannotListen(self) -> None:
        """
        C{--workers 2 --metrics} on an address another program listens on:
        the parent ends with its one line and leaves no directory behind
        in C{$TMPDIR}.
        """
        from tests.integration.helpers import twistdCommand, twistdEnvironment

        temporary = os.path.abspath(self.mktemp())
        os.makedirs(temporary)
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = twistdEnvironment()
        env["TMPDIR"] = temporary
        result = subprocess.run(
            twistdCommand(
                "--nodaemon",
                "--pidfile=",
                "smtpd",
                "--sink",
                "--workers",
                "2",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--metrics",
                f"tcp:{port}:interface=127.0.0.1",
            ),
            env=env,
            cwd=temporary,
            capture_output=True,
            timeout=STOP_TIMEOUT,
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn(b"address already in use", result.stderr)
        self.assertEqual(glob.glob(os.path.join(temporary, "smtpd-*")), [])


class EndedWorkersTests(SynchronousTestCase):
    def test_endedWorkersFilesFolded(self) -> None:
        """
        A worker killed again and again (SIGKILL, the OOM killer): what it
        counted stays in the sums the parent serves, while its own files
        leave the metrics directory, which holds no more files than before
        the first end.
        """
        from tests.integration.test_metrics import scrape

        directory = os.path.abspath(self.mktemp())
        temporary = os.path.join(directory, "tmp")
        os.makedirs(temporary)
        metricsPort = freePort()
        server, port = startWorkers(
            self,
            ["--sink", "--metrics", f"tcp:{metricsPort}:interface=127.0.0.1"],
            directory,
            env={"TMPDIR": temporary},
        )
        (metrics,) = glob.glob(os.path.join(temporary, "smtpd-metrics-*"))
        for _ in range(2):
            with smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT) as client:
                client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nbody\r\n")
        before = len(os.listdir(metrics))
        killed = []
        for turn in range(3):
            pid = int(re.findall(r"worker 0 started, pid (\d+)", server.output)[-1])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            server.waitForLog("worker 0 started, pid", count=turn + 2)
            new = re.findall(r"worker 0 started, pid (\d+)", server.output)[-1]
            server.waitForLog(f"worker ready, pid {new}")
        status, text = scrape(metricsPort)
        self.assertEqual(status, 200)
        self.assertIn("\nsmtpd_connections_total 2.0\n", text)
        self.assertIn("\nsmtpd_workers_alive 2.0\n", text)
        names = os.listdir(metrics)
        self.assertEqual(
            [name for name in names if any(f"_{pid}.db" in name for pid in killed)], [], names
        )
        self.assertLessEqual(len(names), before + 2, names)

    def test_unreadableSumSetAside(self) -> None:
        """
        The sum of the workers that ended found unreadable (cut short,
        garbage): the scrapes of the real C{/metrics} still answer 200 with
        the live workers' counts, one line says it was set aside, and a
        worker killed afterwards starts a new sum.
        """
        from tests.integration.test_metrics import scrape

        directory = os.path.abspath(self.mktemp())
        temporary = os.path.join(directory, "tmp")
        os.makedirs(temporary)
        metricsPort = freePort()
        server, port = startWorkers(
            self,
            ["--sink", "--metrics", f"tcp:{metricsPort}:interface=127.0.0.1"],
            directory,
            env={"TMPDIR": temporary},
        )
        (metrics,) = glob.glob(os.path.join(temporary, "smtpd-metrics-*"))
        with smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT) as client:
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nbody\r\n")
        with open(os.path.join(metrics, "counter_ended.db"), "wb") as f:
            f.write(b"\x10\0\0\0" + b"\xff" * 100)
        for _ in range(2):
            status, text = scrape(metricsPort)
            self.assertEqual(status, 200, text)
            self.assertIn("\nsmtpd_connections_total 1.0\n", text)
            self.assertIn("\nsmtpd_workers_alive 2.0\n", text)
        server.waitForLog("counter_ended.db is unreadable")
        self.assertEqual(server.output.count("counter_ended.db is unreadable"), 1)
        self.assertTrue(os.path.exists(os.path.join(metrics, "counter_ended.unreadable")))
        pid = int(re.findall(r"worker 0 started, pid (\d+)", server.output)[-1])
        os.kill(pid, signal.SIGKILL)
        server.waitForLog("worker 0 started, pid", count=2)
        new = re.findall(r"worker 0 started, pid (\d+)", server.output)[-1]
        server.waitForLog(f"worker ready, pid {new}")
        self.assertTrue(os.path.exists(os.path.join(metrics, "counter_ended.db")))
        status, text = scrape(metricsPort)
        self.assertEqual(status, 200, text)
        self.assertIn("\nsmtpd_connections_total 1.0\n", text)
        self.assertEqual(server.output.count("is unreadable"), 1, server.output[-3000:])
