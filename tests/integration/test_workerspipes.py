"""
C{twistd smtpd --workers N} whose handler starts a process that goes on
running and holds what it inherited from its worker (its standard output,
the pipe to the parent): the parent still learns when the worker is ready
and when it has ended, over real processes.
"""

from __future__ import annotations

import os
import re
import signal
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import TwistdServer, startWorkers
from tests.integration.test_workers import running
from twisted_smtpd._twistd.workerprocess import PIPES_DEADLINE

#: Seconds within which the parent must see a worker's end: its pipes
#: closed after L{PIPES_DEADLINE}, with room for a loaded machine; well
#: under the two minutes the held processes run.
_BOUND = PIPES_DEADLINE + 25.0


class HeldPipesTests(SynchronousTestCase):
    def start(self) -> TwistdServer:
        """
        Start two workers whose handlers each started a process holding
        their pipes; those processes are killed at the end of the test.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        pids = os.path.join(directory, "held.pids")
        server, _ = startWorkers(
            self,
            [
                "--handler",
                "tests.integration.pipeholdinghandler:make",
                "--handler-option",
                f"pids={pids}",
            ],
            directory,
        )

        def killHeld() -> None:
            with open(pids) as f:
                for line in f:
                    if running(int(line)):
                        os.kill(int(line), signal.SIGKILL)

        self.addCleanup(killHeld)
        with open(pids) as f:
            self.assertEqual(len(f.read().split()), 2)
        return server

    def test_killedWorkerStartedAgain(self) -> None:
        """
        A worker killed while a process it started runs on, holding its
        standard output: its end is seen within L{PIPES_DEADLINE} (one
        line says its pipes were closed) and it is started again.
        """
        server = self.start()
        pid = int(re.findall(r"worker 0 started, pid (\d+)", server.output)[-1])
        os.kill(pid, signal.SIGKILL)
        server.waitForLog(f"worker 0 ended (pid {pid}, killed by SIGKILL", timeout=_BOUND)
        server.waitForLog(
            f"worker 0 (pid {pid}) ended {PIPES_DEADLINE:g}s ago, but a process it started"
            " still holds its pipes; closed them"
        )
        server.waitForLog("worker 0 started, pid", count=2)
        new = re.findall(r"worker 0 started, pid (\d+)", server.output)[-1]
        server.waitForLog(f"worker ready, pid {new}")

    def test_hangupReachesWorkers(self) -> None:
        """
        SIGHUP reaches workers whose handler started a process before they
        were ready: the end of the pipe that says a worker is ready is not
        held by that process, so the parent does not wait for it for ever.
        """
        server = self.start()
        # The parent learns the workers are ready soon after they say so.
        time.sleep(1.0)
        server.signal(signal.SIGHUP)
        server.waitForLog("TLS certificates reloaded", count=2, timeout=_BOUND)

    def test_stopEnds(self) -> None:
        """
        The parent stops (SIGTERM) within a bound although its workers'
        processes run on: it waits for their pipes no longer than
        L{PIPES_DEADLINE}.
        """
        server = self.start()
        started = time.monotonic()
        self.assertIn(server.stop(), (0, -signal.SIGTERM))
        self.assertLess(time.monotonic() - started, _BOUND)
