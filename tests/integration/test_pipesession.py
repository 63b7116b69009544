"""
C{twistd smtpd --pipe} with a real command still running when its session
ends: the server's stop past C{--close-timeout}, or C{--handler-timeout}.  The
client was told 421 or nothing and sends the message again, so the command
must not deliver it: it is killed.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import smtplib
import sys
import time

from twisted.trial.unittest import SkipTest

from tests.integration.helpers import RECIPIENT, SENDER, ServerTestCase, message, twistdCommand
from twisted_smtpd._twistd.openfiles import STARTED_WITH

#: Writes its pid, then delivers (copies its input) only a minute later.
SCRIPT = """\
import os, sys, time
directory = sys.argv[1]
with open(os.path.join(directory, "pid.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.rename(os.path.join(directory, "pid.tmp"), os.path.join(directory, "pid"))
time.sleep(60)
with open(os.path.join(directory, "delivered"), "wb") as f:
    f.write(sys.stdin.buffer.read())
"""

#: Seconds to wait for the command to start, or to be gone.
WAIT = 20.0


def _running(pid: int) -> bool:
    """
    Whether process C{pid} exists and is not a zombie.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


class PipeSessionEndTests(ServerTestCase):
    """
    A C{--pipe} command running when its session ends is killed.
    """

    def setUp(self) -> None:
        self.work = self.makeDirectory()
        self.script = os.path.join(self.work, "slow.py")
        with open(self.script, "w") as f:
            f.write(SCRIPT)

    def startSlow(self, *options: str, shell: bool = False) -> tuple[smtplib.SMTP, int]:
        """
        Start a server piping to the slow script and send a message whose
        command is left running; return the client, waiting for the reply
        to the body, and the script's pid.

        @param shell: Whether the script runs as a child of C{sh}, the
            command, rather than as the command itself.
        """
        command = f"{sys.executable} {self.script} {self.work}"
        if shell:
            command = f"sh -c '{command}; exit 0'"
        self.startServer(
            "--pipe", command,
            "--close-timeout", "1",
            *options,
            maildir=False,
        )  # fmt: skip
        client = self.smtp()
        client.ehlo("client.example")
        self.assertEqual(client.mail(SENDER)[0], 250)
        self.assertEqual(client.rcpt(RECIPIENT)[0], 250)
        self.assertEqual(client.docmd("DATA")[0], 354)
        client.send(message(1) + b".\r\n")
        path = os.path.join(self.work, "pid")
        deadline = time.monotonic() + WAIT
        while not os.path.exists(path):
            self.assertLess(time.monotonic(), deadline, self.server.output)
            time.sleep(0.05)
        with open(path) as f:
            pid = int(f.read())
        self.addCleanup(self._killLeftover, pid)
        return client, pid

    def _killLeftover(self, pid: int) -> None:
        if _running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def assertGone(self, pid: int) -> None:
        """
        Process C{pid} ends within L{WAIT} seconds, having delivered nothing.
        """
        deadline = time.monotonic() + WAIT
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(_running(pid), f"the pipe command {pid} still runs")
        self.assertFalse(os.path.exists(os.path.join(self.work, "delivered")))

    def test_stopKillsCommand(self) -> None:
        """
        SIGTERM with the command running past C{--close-timeout}: the client
        gets 421 4.3.2, the command is killed (one log line) and never
        delivers the message the client will send again.
        """
        client, pid = self.startSlow()
        self.server.signal(signal.SIGTERM)
        code, text = client.getreply()
        self.assertEqual((code, text[:5]), (421, b"4.3.2"))
        self.assertIn(self.server.stop(), (0, -signal.SIGTERM))
        self.assertGone(pid)
        output = self.server.output
        self.assertEqual(output.count("pipe command killed: the session ended"), 1, output)
        self.assertNotIn("Traceback", output)

    def test_handlerTimeoutKillsCommand(self) -> None:
        """
        A command still running at C{--handler-timeout}: the client gets
        421 4.3.0, the command is killed and never delivers, and the server
        goes on serving.
        """
        client, pid = self.startSlow("--handler-timeout", "1")
        code, text = client.getreply()
        self.assertEqual((code, text[:5]), (421, b"4.3.0"))
        self.assertGone(pid)
        self.server.waitForLog("pipe command killed: the session ended", timeout=WAIT)
        client = self.smtp()
        self.assertEqual(client.noop()[0], 250)
        client.quit()
        self.stopServer()

    def test_killReachesCommandsChildren(self) -> None:
        """
        A C{sh -c} command killed at C{--handler-timeout} takes the program
        it started with it: that program never delivers the message.
        """
        client, pid = self.startSlow("--handler-timeout", "1", shell=True)
        code, text = client.getreply()
        self.assertEqual((code, text[:5]), (421, b"4.3.0"))
        self.assertGone(pid)
        self.server.waitForLog("pipe command killed: the session ended", timeout=WAIT)
        self.stopServer()


class PipeOpenFilesTests(ServerTestCase):
    """
    The programs C{--pipe} runs get the soft limit on open files the server
    was started with, not the one it raised its own to.
    """

    #: The soft limit the server is started with.
    SOFT = 256

    def setUp(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard <= self.SOFT:
            raise SkipTest(f"the hard limit on open files ({hard}) leaves nothing to raise")
        self.work = self.makeDirectory()

    def limitsSeen(self, *options: str, environment: str = "") -> tuple[str, str]:
        """
        Send a message through a server started with a soft limit of
        L{SOFT} (and C{environment}, shell assignments to export), piping
        to a command that writes its soft and hard limits; return them.
        """
        out = os.path.join(self.work, "limits")
        script = f"ulimit -S -n > {out}.tmp; ulimit -H -n >> {out}.tmp; mv {out}.tmp {out}"
        self.startServer(
            "--pipe", f"/bin/sh -c '{script}'",
            *options,
            maildir=False,
            command=[
                "/bin/sh", "-c", f'ulimit -S -n {self.SOFT}; {environment} exec "$@"', "sh",
                *twistdCommand(),
            ],
        )  # fmt: skip
        self.server.waitForLog(f"open files: limit raised from {self.SOFT}")
        client = self.smtp()
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT], message(1)), {})
        client.quit()
        self.stopServer()
        with open(out) as f:
            return tuple(f.read().split())  # type: ignore[return-value]

    def test_commandGetsStartingLimit(self) -> None:
        """
        A server started with a soft limit of 256 raises its own; its
        command runs with 256 again, under the same hard limit.
        """
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hardText = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
        self.assertEqual(self.limitsSeen(), (str(self.SOFT), hardText))

    def test_workersCommandGetsStartingLimit(self) -> None:
        """
        With C{--workers}, the command a worker runs gets the limit the
        parent was started with too.
        """
        self.assertEqual(self.limitsSeen("--workers", "2")[0], str(self.SOFT))

    def test_startingLimitNotTakenFromEnvironment(self) -> None:
        """
        A C{TWISTED_SMTPD_OPEN_FILES} in the environment the server is
        started with (garbage, 0, or a limit of another process) is not
        the limit it was started with: the command gets the real one, with
        C{--workers} too, and the server starts.
        """
        for value in ["12", "0", "\u00b2"]:
            environment = f"export {STARTED_WITH}={value};"
            self.assertEqual(self.limitsSeen(environment=environment)[0], str(self.SOFT))
        self.assertEqual(
            self.limitsSeen("--workers", "2", environment=f"export {STARTED_WITH}=12;")[0],
            str(self.SOFT),
        )
