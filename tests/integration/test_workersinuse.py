# -*- test-case-name: tests.integration.test_workersinuse -*-
"""
A second C{twistd smtpd --workers 2} on the address of one running refuses
to start, as a second single-process server does, instead of sharing its
connections with the first.
"""

from __future__ import annotations

import os
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import START_TIMEOUT, startWorkers, twistdCommand, twistdEnvironment


class SecondServerTests(SynchronousTestCase):
    def test_secondParentRefused(self) -> None:
        """
        The second parent exits with status 1 and one line naming the
        C{--listen} endpoint and saying the address is in use; the first
        keeps serving.
        """
        first, port = startWorkers(self, ["--sink"])
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        description = f"tcp:{port}:interface=127.0.0.1"
        command = twistdCommand(
            "--nodaemon", "--pidfile=", "--logfile=-", "smtpd", "--sink", "--workers", "2",
            "--listen", description,
        )  # fmt: skip
        try:
            second = subprocess.run(
                command,
                cwd=directory,
                env=twistdEnvironment(),
                capture_output=True,
                timeout=START_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            self.fail(f"the second server started on the first's port: {e.stdout!r}")
        self.assertEqual(second.returncode, 1, second.stdout + second.stderr)
        self.assertEqual(
            second.stderr.decode().splitlines(),
            [
                f"twistd smtpd: --listen {description!r}: address already in use"
                " (another program listens on it); see --help"
            ],
        )
        self.assertNotIn(b"listening:", second.stdout)
        first.stop()
        self.assertNotIn("Traceback", first.output)
