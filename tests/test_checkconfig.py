"""
Tests for C{twistd smtpd --check-config}: the options, the configuration
file and the files they name checked, then an exit without listening.
"""

from __future__ import annotations

import io
import os
import socket
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import runToEnd, twistdCommand
from twisted_smtpd._twistd.tap import Options
from twisted_smtpd._twistd.taphost import checkPidFile


class _Parent(dict[str, Any]):
    """
    C{twistd}'s own options, as the parent of C{smtpd}'s.
    """


def _parse(*arguments: str, pidfile: str | None = None) -> tuple[int | str | None, str, str]:
    """
    Parse C{arguments} as C{twistd} would.

    @return: The exit status, standard output and standard error.
    """
    config = Options()
    config.parent = _Parent(pidfile=pidfile)  # type: ignore[attr-defined]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            config.parseOptions(list(arguments))
        except SystemExit as e:
            return e.code, out.getvalue(), err.getvalue()
    raise AssertionError("the options did not end the process")


def _check(*arguments: str, pidfile: str | None = None) -> tuple[int | str | None, str, str]:
    """
    Parse C{arguments} with C{--check-config} as C{twistd} would.
    """
    return _parse("--check-config", *arguments, pidfile=pidfile)


class CheckConfigTests(SynchronousTestCase):
    def test_ok(self) -> None:
        """
        A configuration that would start ends with status 0 and one line
        on standard output; each flag that has no effect is one warning on
        standard error.
        """
        self.assertEqual(
            _check("--sink", "--listen", "tcp:0:interface=127.0.0.1"),
            (0, "twistd smtpd: configuration OK\n", ""),
        )
        code, out, err = _check("--sink", "--max-auth-rate", "3/60", "--worker-timeout", "5")
        self.assertEqual((code, out), (0, "twistd smtpd: configuration OK\n"))
        self.assertEqual(
            err.splitlines(),
            [
                "twistd smtpd: warning: --max-auth-rate has no effect: AUTH is not offered"
                " (no --auth, no --handler whose onAuth decides it)",
                "twistd smtpd: warning: --worker-timeout has no effect: no --workers",
            ],
        )

    def test_error(self) -> None:
        """
        A configuration that would not start is refused as at start.
        """
        config = Options()
        e = self.assertRaises(
            usage.UsageError, config.parseOptions, ["--check-config", "--listen", "tcp:99999"]
        )
        self.assertEqual(str(e), "--listen 'tcp:99999': port 99999 is out of range (0-65535)")

    def test_runningServersPidFile(self) -> None:
        """
        The pid file of the server running beside it is no error (a start
        would refuse it).
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(f"{os.getppid()}\n")
        self.assertEqual(_check("--sink", pidfile=path)[0], 0)
        e = self.assertRaises(usage.UsageError, checkPidFile, path)
        self.assertIn("is running (another server?)", str(e))
        checkPidFile(path, leftPid=False)
        self.assertTrue(os.path.exists(path))

    def test_workersBindNothing(self) -> None:
        """
        With C{--workers}, the parent binds no listener: the port stays
        free (a start binds it while it reads the options).
        """
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        code, out, err = _check(
            "--sink", "--workers", "2", "--listen", f"tcp:{port}:interface=127.0.0.1"
        )
        self.assertEqual((code, err), (0, ""))
        probe = socket.socket()
        self.addCleanup(probe.close)
        probe.bind(("127.0.0.1", port))

    def test_notInConfigFile(self) -> None:
        """
        A configuration file cannot hold C{check-config}.
        """
        path = self.mktemp() + ".toml"
        with open(path, "w") as f:
            f.write("sink = true\ncheck-config = true\n")
        e = self.assertRaises(usage.UsageError, Options().parseOptions, ["--config", path])
        self.assertIn("unknown option 'check-config'", str(e))

    def test_twistd(self) -> None:
        """
        Through a real C{twistd}: status 0 and the line for a good
        configuration file, nothing listening; status 1 and one line for a
        bad one.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "smtpd.toml")
        with open(path, "w") as f:
            f.write('sink = true\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
        command = twistdCommand("--pidfile=", "smtpd", "--config", path, "--check-config")
        self.assertEqual(runToEnd(command, directory), (0, "twistd smtpd: configuration OK\n", ""))
        self.assertEqual(sorted(os.listdir(directory)), ["smtpd.toml"])
        with open(path, "w") as f:
            f.write('sink = true\nlisten = ["tcp:99999"]\n')
        self.assertEqual(
            runToEnd(command, directory),
            (
                1,
                "",
                "twistd smtpd: --listen 'tcp:99999': port 99999 is out of range (0-65535);"
                " see --help\n",
            ),
        )
