"""
C{twistd smtpd --workers N} over real sockets: the workers share the
listener, a worker killed under load is started again, no acknowledged
message is lost, and SIGTERM stops every process.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import CLIENT_TIMEOUT, START_TIMEOUT, STOP_TIMEOUT, TwistdServer

_WORKER = re.compile(rb"worker (\d+) started, pid (\d+)")
_MESSAGE_ID = re.compile(rb"Message-ID: <([^>]+)>")


def body(messageId: str) -> bytes:
    return (
        f"Message-ID: <{messageId}>\r\nSubject: workers\r\n\r\n".encode() + b"line of text\r\n" * 20
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class WorkersTests(SynchronousTestCase):
    clients = 8
    perClient = 40
    killAfter = 40

    def workerPids(self, server: TwistdServer) -> dict[int, int]:
        pids: dict[int, int] = {}
        for match in _WORKER.finditer(server.output.encode()):
            pids[int(match.group(1))] = int(match.group(2))
        return pids

    def test_killWorkerUnderLoad(self) -> None:
        """
        Eight clients send in a loop through two workers; one worker is
        killed with SIGKILL.  It is started again, clients whose connection
        died reconnect, every acknowledged message is in C{new/} exactly
        once and whole, and SIGTERM to the parent ends every process.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        maildir = os.path.join(directory, "Maildir")
        server = TwistdServer(
            ["--workers", "2", "--maildir", maildir, "--no-reverse-lookup"], directory
        )
        self.addCleanup(server.kill)
        port = server.start()
        server.waitForLog("] ready: ", count=2)
        first = self.workerPids(server)
        self.assertEqual(sorted(first), [0, 1])

        sent: dict[str, bytes] = {}
        acknowledged: list[str] = []
        changed = threading.Condition()

        def client(index: int) -> None:
            number = 0
            deadline = time.monotonic() + 2 * START_TIMEOUT
            while number < self.perClient and time.monotonic() < deadline:
                try:
                    with smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT) as smtp:
                        while number < self.perClient:
                            messageId = f"{index}.{number}.workers@example.com"
                            message = body(messageId)
                            with changed:
                                sent[messageId] = message
                            number += 1
                            if smtp.sendmail("a@example.com", ["b@example.com"], message) == {}:
                                with changed:
                                    acknowledged.append(messageId)
                                    changed.notify_all()
                except (OSError, smtplib.SMTPException):
                    time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(self.clients)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + START_TIMEOUT
            with changed:
                while len(acknowledged) < self.killAfter and time.monotonic() < deadline:
                    changed.wait(deadline - time.monotonic())
            os.kill(first[0], signal.SIGKILL)
            server.waitForLog("restarting", timeout=START_TIMEOUT)
            server.waitForLog("worker 0 started", count=2, timeout=START_TIMEOUT)
        finally:
            for thread in threads:
                thread.join(4 * CLIENT_TIMEOUT)
        second = self.workerPids(server)
        self.assertNotEqual(second[0], first[0])
        self.assertEqual(second[1], first[1])
        self.assertGreater(len(acknowledged), self.killAfter)

        server.stop()
        # twistd ends by the signal that stopped it, after a clean shutdown.
        self.assertIn(server.returncode, (0, -signal.SIGTERM), server.output[-3000:])
        # The parent and both live workers shut down cleanly (the log reader
        # may still be catching up when the parent has exited).
        server.waitForLog("Server Shut Down.", count=3, timeout=STOP_TIMEOUT)
        for pid in second.values():
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertFalse(alive(pid), f"worker {pid} outlived the parent")

        stored: dict[str, bytes] = {}
        newDirectory = os.path.join(maildir, "new")
        for name in os.listdir(newDirectory):
            with open(os.path.join(newDirectory, name), "rb") as f:
                data = f.read()
            match = _MESSAGE_ID.search(data)
            assert match is not None, name
            messageId = match.group(1).decode()
            self.assertNotIn(messageId, stored)
            self.assertEqual(data, sent[messageId])
            stored[messageId] = data
        self.assertEqual([m for m in acknowledged if m not in stored], [])
