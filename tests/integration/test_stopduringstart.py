# -*- test-case-name: tests.integration.test_stopduringstart -*-
"""
C{twistd smtpd} told to stop (SIGINT, SIGTERM) while it starts: it stops,
cleanly, however early the signal comes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    TwistdServer,
    twistdCommand,
    twistdEnvironment,
)

#: The handler that signals its own process while it starts.
_STOPPING = "tests.integration.stoppinghandler:make"


class StopDuringStartTests(SynchronousTestCase):
    """
    A signal that comes before the reactor's handlers are in place is acted
    upon once they are: the server stops as it would once running.
    """

    def stopWhileStarting(self, when: str, name: str, *arguments: str) -> tuple[int, str]:
        """
        Run C{twistd smtpd} (with a pid file, in a process group of its
        own, killed with every process in it after the test) whose handler
        sends signal C{name} to its process at C{when}, until it ends.

        @return: Its exit status and its log.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.pidfile = os.path.join(directory, "twistd.pid")
        command = twistdCommand(
            "--nodaemon",
            f"--pidfile={self.pidfile}",
            "--logfile=-",
            "smtpd",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--no-reverse-lookup",
            "--close-timeout",
            "5",
            "--handler",
            _STOPPING,
            "--handler-option",
            f"when={when}",
            "--handler-option",
            f"signal={name}",
            *arguments,
        )
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=twistdEnvironment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.group = process.pid
        self.addCleanup(self.killGroup, process)
        try:
            output, _ = process.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.killGroup(process)
            output, _ = process.communicate()
            self.fail(
                f"SIG{name} at {when} did not stop the server:\n"
                + output.decode("utf-8", "replace")
            )
        return process.returncode, output.decode("utf-8", "replace")

    def killGroup(self, process: subprocess.Popen[bytes]) -> None:
        """
        Kill every process of the server's group still there.
        """
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def assertStopped(self, code: int, output: str, name: str) -> None:
        """
        The server stopped as C{name} stops a running one: the reactor's
        line, its exit by that signal, no traceback, its pid file removed.
        """
        number = int(getattr(signal, "SIG" + name))
        self.assertIn(f"Received SIG{name}, shutting down.", output)
        self.assertIn("Server Shut Down.", output)
        self.assertEqual(code, -number, output)
        self.assertNotIn("Traceback", output)
        self.assertNotIn("Unhandled", output)
        self.assertFalse(os.path.exists(self.pidfile), output)

    def assertNoWorkerLeft(self, output: str) -> None:
        """
        No process of the server's group (a worker) is left.
        """
        try:
            os.killpg(self.group, 0)
        except ProcessLookupError:
            return
        # A worker ends once its parent is gone: give it the bounded time
        # the stop has, then say it was left.
        self.fail(f"a worker outlived its parent:\n{output}")

    def test_sigintAsReactorStarts(self) -> None:
        """
        SIGINT (Ctrl-C) as the reactor starts, before its handlers are in
        place, stops the server; it was lost (the reactor's start swallows
        the C{KeyboardInterrupt} it raised) and the server went on serving.
        """
        code, output = self.stopWhileStarting("startup", "INT")
        self.assertStopped(code, output, "INT")

    def test_sigtermAsReactorStarts(self) -> None:
        """
        SIGTERM as the reactor starts stops the server gracefully, removing
        its pid file; it killed the process at once.
        """
        code, output = self.stopWhileStarting("startup", "TERM")
        self.assertStopped(code, output, "TERM")

    def test_sigintWhileParsing(self) -> None:
        """
        SIGINT while the options are read stops the server once it runs,
        without a C{KeyboardInterrupt} traceback.
        """
        code, output = self.stopWhileStarting("parse", "INT")
        self.assertStopped(code, output, "INT")

    def test_workersSigintAsReactorStarts(self) -> None:
        """
        With C{--workers}, SIGINT as the parent's reactor starts (its
        workers started already) stops the parent and every worker.
        """
        code, output = self.stopWhileStarting("startup", "INT", "--workers", "2")
        self.assertStopped(code, output, "INT")
        self.assertNotIn("restarting in", output)
        self.assertNoWorkerLeft(output)

    def test_workersSigtermAsReactorStarts(self) -> None:
        """
        With C{--workers}, SIGTERM as the parent's reactor starts stops the
        parent gracefully and every worker with it.
        """
        code, output = self.stopWhileStarting("startup", "TERM", "--workers", "2")
        self.assertStopped(code, output, "TERM")
        self.assertNotIn("restarting in", output)
        self.assertNoWorkerLeft(output)


class WorkerStartSignalTests(SynchronousTestCase):
    """
    A worker keeps the signals the server handles from its first moment,
    while Python and C{twistd} load.
    """

    def firstChild(self, server: TwistdServer) -> int:
        """
        The pid of the first process C{server} starts (its worker 0), as
        soon as it exists.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{server.pid}/task/{server.pid}/children") as f:
                    pids = f.read().split()
            except (AssertionError, OSError):
                pids = []
            if pids:
                return int(pids[0])
            time.sleep(0.001)
        self.fail(f"no worker started:\n{server.output}")

    def waitUntilCaught(self, pid: int, number: int) -> None:
        """
        Wait until process C{pid} has a handler of its own for signal
        C{number} (Linux's C{/proc/PID/status} says so).
        """
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"runWorker" not in f.read():
                    # Not the worker's program yet (its parent's copy,
                    # with its parent's handlers, before exec).
                    continue
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("SigCgt:") and int(line.split()[1], 16) >> (number - 1) & 1:
                        return
            time.sleep(0.001)
        self.fail(f"process {pid} never handled signal {number}")

    def test_sigintWhileLoading(self) -> None:
        """
        A SIGINT that reaches a worker just started (the terminal's Ctrl-C
        reaches every process of its group) raises no C{KeyboardInterrupt}
        with its traceback while the worker loads: it is kept, and the
        worker stops gracefully once it runs.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        server = TwistdServer(["--workers", "2", "--no-reverse-lookup", "--sink"], directory)
        self.addCleanup(server.kill)
        children = f"/proc/{os.getpid()}/task/{os.getpid()}/children"
        if not os.path.exists(children):
            raise SkipTest("no /proc/PID/task/TID/children to find a worker at once")
        watcher = threading.Thread(target=server.start, daemon=True)
        watcher.start()
        # The worker's pid as soon as it exists, long before its log says
        # it is there (Python still loading).
        pid = self.firstChild(server)
        # Once Python handles SIGINT (it raises KeyboardInterrupt from then
        # on), while it loads twistd and the server.
        self.waitUntilCaught(pid, signal.SIGINT)
        os.kill(pid, signal.SIGINT)
        watcher.join(START_TIMEOUT)
        server.waitForLog(f"worker 0 ended (pid {pid}, killed by SIGINT, signal 2)")
        server.stop()
        self.assertNotIn("KeyboardInterrupt", server.output)
        self.assertNotIn("Traceback", server.output)
