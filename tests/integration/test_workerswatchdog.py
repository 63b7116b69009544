"""
C{twistd smtpd --workers 2} with a worker stopped by SIGSTOP: the parent
kills it once it has been silent for C{--worker-timeout} and starts it
again, so that no new connection waits for ever for its greeting; and the
parent's stop does not wait for ever for a stopped worker.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import STOP_TIMEOUT, TwistdServer, startWorkers

_WORKER = re.compile(r"worker (\d+) started, pid (\d+)")

#: How long a connection may wait for its greeting: far more than a
#: worker that runs takes, on a loaded machine too.
_GREETING = 5.0


def workerPids(server: TwistdServer) -> dict[int, int]:
    return {int(m.group(1)): int(m.group(2)) for m in _WORKER.finditer(server.output)}


def greeting(port: int) -> bytes:
    """
    The first line the server sends on a new connection, or C{b""} if none
    comes within L{_GREETING} seconds.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=_GREETING) as s:
        data = b""
        deadline = time.monotonic() + _GREETING
        try:
            while b"\n" not in data and time.monotonic() < deadline:
                chunk = s.recv(512)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
        return data


class StoppedWorkerTests(SynchronousTestCase):
    def stopWorker(self, pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)

        def release() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)

        self.addCleanup(release)

    def test_stoppedWorkerReplaced(self) -> None:
        """
        A worker stopped by SIGSTOP is killed once silent for
        C{--worker-timeout} seconds, with one line naming it, its pid and its
        silence, and started again; from then on every new connection gets
        its greeting.
        """
        server, port = startWorkers(self, ["--sink", "--worker-timeout", "2"])
        pids = workerPids(server)
        self.assertEqual(sorted(pids), [0, 1])
        self.stopWorker(pids[1])
        stopped = time.monotonic()
        server.waitForLog("gave no sign of life", timeout=30)
        self.assertLess(time.monotonic() - stopped, 20)
        server.waitForLog("worker ready", count=3, timeout=30)
        lines = [line for line in server.output.splitlines() if "sign of life" in line]
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(
            lines[0],
            rf"worker 1 \(pid {pids[1]}\) gave no sign of life for \ds;"
            r" killed \(--worker-timeout 2\)$",
        )
        self.assertNotEqual(workerPids(server)[1], pids[1])
        silent = [i for i in range(20) if not greeting(port).startswith(b"220 ")]
        self.assertEqual(silent, [], server.output[-3000:])
        self.assertEqual(len([line for line in server.output.splitlines() if "sign of" in line]), 1)

    def test_stopWithStoppedWorker(self) -> None:
        """
        SIGTERM to the parent while a worker is stopped by SIGSTOP (and the
        watchdog off): the stopped worker is killed after the stop timeout
        (C{--close-timeout} and 10 seconds), and the parent exits.
        """
        server, port = startWorkers(
            self, ["--sink", "--worker-timeout", "0", "--close-timeout", "1"]
        )
        pids = workerPids(server)
        self.stopWorker(pids[1])
        started = time.monotonic()
        server.stop()
        self.assertLess(time.monotonic() - started, min(STOP_TIMEOUT, 30))
        with self.assertRaises(ProcessLookupError):
            os.kill(pids[1], 0)
