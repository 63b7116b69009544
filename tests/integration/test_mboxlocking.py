# -*- test-case-name: tests.integration.test_mboxlocking -*-
"""
C{twistd smtpd --mbox} sharing its mailbox with procmail, the delivery
agent that locks an mbox with a dot lock (C{PATH.lock}) and C{fcntl}: a
dot lock held by procmail's C{lockfile} holds the server's appends, and
both writing at once leave every message whole.
"""

from __future__ import annotations

import mailbox
import os
import subprocess
import threading
import time

from tests.integration.helpers import RECIPIENT, SENDER, ServerTestCase, requireProgram

# Lines of each message: enough that writers not excluding each other
# would interleave them.
_LINES = 2000


def _body(writer: str, index: int) -> str:
    """
    A message whose every body line names its writer and number, some
    starting with C{From } (quoted in the mbox).
    """
    lines = [f"Subject: {writer} {index}", ""]
    lines += [f"From {writer} {index} line {n:05d} " + "x" * 60 for n in range(_LINES)]
    return "\r\n".join(lines) + "\r\n"


class ProcmailLockingTests(ServerTestCase):
    """
    The server and procmail append to one mbox.
    """

    def setUp(self) -> None:
        self.procmail = requireProgram(self, "procmail", "procmail")
        self.lockfile = requireProgram(self, "lockfile", "procmail")
        self.path = os.path.join(self.makeDirectory(), "mbox")

    def assertWhole(self, expected: set[str]) -> None:
        """
        The mbox reads back as exactly the messages C{expected} (by
        subject), each with its own lines only, in order.
        """
        box = mailbox.mbox(self.path, create=False)
        try:
            subjects = []
            for found in box:
                subject = str(found["Subject"])
                subjects.append(subject)
                payload = found.get_payload(decode=True)
                assert isinstance(payload, bytes)
                writer, index = subject.split()
                lines = payload.decode().splitlines()
                self.assertEqual(
                    lines,
                    [f">From {writer} {index} line {n:05d} " + "x" * 60 for n in range(_LINES)],
                    subject,
                )
        finally:
            box.close()
        self.assertEqual(sorted(subjects), sorted(expected))

    def test_lockfileHoldsAppends(self) -> None:
        """
        While procmail's C{lockfile} holds C{PATH.lock}, the server writes
        nothing; once it is removed, the message is appended and answered
        250, and the server leaves no lock behind.
        """
        self.startServer("--mbox", self.path, maildir=False)
        lock = self.path + ".lock"
        subprocess.run([self.lockfile, "-r0", lock], check=True, timeout=30)
        self.assertTrue(os.path.exists(lock))
        client = self.smtp()
        answers: list[object] = []

        def send() -> None:
            answers.append(client.sendmail(SENDER, [RECIPIENT], _body("server", 0)))

        thread = threading.Thread(target=send)
        thread.start()
        thread.join(2)
        self.assertTrue(thread.is_alive())
        self.assertFalse(os.path.exists(self.path) and os.path.getsize(self.path))
        os.unlink(lock)
        thread.join(30)
        self.assertEqual(answers, [{}])
        self.assertWhole({"server 0"})
        self.assertFalse(os.path.exists(lock))
        self.stopServer()

    def test_procmailAndServerAtOnce(self) -> None:
        """
        Procmail and the server, each delivering messages of some hundred
        KiB to the mailbox at the same time, leave every message whole and
        separate.
        """
        self.startServer("--mbox", self.path, maildir=False)
        rc = os.path.join(self.makeDirectory(), "procmailrc")
        with open(rc, "w") as f:
            f.write(f"SHELL=/bin/sh\n:0:\n{self.path}\n")
        count = 8
        failures: list[str] = []

        def procmail() -> None:
            for index in range(count):
                text = f"From procmail@example.com {time.asctime()}\n"
                text += _body("procmail", index).replace("\r\n", "\n")
                done = subprocess.run(
                    [self.procmail, "-m", rc], input=text.encode(), capture_output=True, timeout=60
                )
                if done.returncode:
                    failures.append(done.stderr.decode(errors="replace"))

        thread = threading.Thread(target=procmail)
        thread.start()
        client = self.smtp()
        for index in range(count):
            self.assertEqual(client.sendmail(SENDER, [RECIPIENT], _body("server", index)), {})
        thread.join(120)
        self.assertFalse(thread.is_alive())
        self.assertEqual(failures, [])
        expected = {
            f"{writer} {index}" for writer in ("server", "procmail") for index in range(count)
        }
        self.assertWhole(expected)
        self.stopServer()
