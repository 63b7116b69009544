"""
Crash safety of C{--maildir}: C{twistd smtpd} is killed with SIGKILL at
random moments while clients send mail, and restarted on the same Maildir,
round after round.  Every message that got 250 must then be in the Maildir
exactly once and whole; nothing else may be there but whole messages that
were being sent when the server died (delivered, their 250 lost), each at
most once; leftovers in C{tmp/} are not deliveries.

C{CRASH_ROUNDS} (default 20) sets the number of rounds; C{CRASH_SEED} the
random seed (printed, so that a failure can be replayed).
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import smtplib
import threading
import time

from tests.integration.helpers import (
    RECIPIENT,
    SENDER,
    ServerTestCase,
    TwistdServer,
    message,
)

ROUNDS = int(os.environ.get("CRASH_ROUNDS", "20"))
CLIENTS = 4
CLIENT_TIMEOUT = 10.0


class Load:
    """
    Clients sending distinct messages to one server until told to stop,
    recording which got 250.

    @ivar sent: Index to message, for every message a client began sending.
    @ivar acked: The indexes of the messages that got 250.
    """

    def __init__(self, sent: dict[int, bytes], acked: set[int], first: int) -> None:
        self.sent = sent
        self.acked = acked
        self._next = first
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, port: int) -> None:
        for _ in range(CLIENTS):
            thread = threading.Thread(target=self._client, args=(port,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> int:
        """
        Stop the clients (they fail on their own once the server is dead).

        @return: The next unused index.
        """
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT * 3)
            assert not thread.is_alive(), "client did not stop"
        return self._next

    def _take(self) -> tuple[int, bytes]:
        with self._lock:
            index = self._next
            self._next += 1
            data = message(index, SENDER)
            self.sent[index] = data
            return index, data

    def _client(self, port: int) -> None:
        while not self._stop.is_set():
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
            except OSError:
                return
            try:
                while not self._stop.is_set():
                    index, data = self._take()
                    client.sendmail(SENDER, [RECIPIENT], data)
                    with self._lock:
                        self.acked.add(index)
            except (OSError, smtplib.SMTPException):
                # The server died under us: whatever was in flight is unknown.
                pass
            finally:
                with contextlib.suppress(OSError):
                    client.close()


def delivered(maildir: str) -> list[bytes]:
    """
    The messages in C{new/} and C{cur/} of C{maildir}.
    """
    found = []
    for sub in ("new", "cur"):
        directory = os.path.join(maildir, sub)
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), "rb") as f:
                found.append(f.read())
    return found


class CrashTests(ServerTestCase):
    def test_sigkillUnderLoad(self) -> None:
        """
        Twenty times over: clients send mail, the server is killed with
        SIGKILL after a random delay and restarted on the same Maildir; after
        each restart every message acknowledged so far is there exactly
        once, byte for byte, and every other file is a whole message that
        was in flight, present at most once.
        """
        seed = int(os.environ.get("CRASH_SEED", str(random.randrange(1 << 32))))
        rng = random.Random(seed)
        directory = self.makeDirectory()
        maildir = os.path.join(directory, "Maildir")
        sent: dict[int, bytes] = {}
        acked: set[int] = set()
        byContent: dict[bytes, int] = {}
        nextIndex = 0
        leftovers = 0
        started = time.monotonic()
        for number in range(ROUNDS):
            server = TwistdServer(["--maildir", maildir, "--no-reverse-lookup"], directory)
            self.addCleanup(server.kill)
            server.start()
            self.check(maildir, sent, acked, byContent, f"seed {seed}, before round {number}")
            load = Load(sent, acked, nextIndex)
            load.start(server.port)
            time.sleep(rng.uniform(0.05, 0.8))
            server.signal(signal.SIGKILL)
            server.kill()
            nextIndex = load.stop()
            leftovers = len(os.listdir(os.path.join(maildir, "tmp")))
        server = TwistdServer(["--maildir", maildir, "--no-reverse-lookup"], directory)
        self.addCleanup(server.kill)
        server.start()
        self.check(maildir, sent, acked, byContent, f"seed {seed}, after the last round")
        self.stopServer(server)
        files = delivered(maildir)
        print(
            f"\ncrash: seed {seed}, {ROUNDS} SIGKILLs, {len(sent)} messages begun, "
            f"{len(acked)} acknowledged, {len(files)} in the Maildir, "
            f"{leftovers} tmp/ leftovers after the last kill, "
            f"{time.monotonic() - started:.1f} s"
        )
        self.assertGreater(len(acked), ROUNDS)

    def check(
        self,
        maildir: str,
        sent: dict[int, bytes],
        acked: set[int],
        byContent: dict[bytes, int],
        where: str,
    ) -> None:
        """
        The Maildir holds every acknowledged message once, and nothing but
        whole messages that were sent, each once.
        """
        for index, data in sent.items():
            byContent.setdefault(data, index)
        counts = collections.Counter(delivered(maildir))
        for data, count in counts.items():
            self.assertIn(data, byContent, f"{where}: a file is not a whole sent message")
            self.assertEqual(count, 1, f"{where}: message {byContent[data]} stored {count} times")
        for index in acked:
            self.assertIn(sent[index], counts, f"{where}: acknowledged message {index} lost")
