# -*- test-case-name: tests.integration.test_mboxcrash -*-
"""
Crash safety of C{--mbox}: C{twistd smtpd} is killed with SIGKILL at random
moments while clients send mail, some of it large enough to be killed in
the middle of its append, and restarted on the same mailbox, round after
round.  Every message that got 250 must then be in the mbox exactly once
and whole; anything else there is a message that was being sent when the
server died (its 250 lost), whole or cut short, at most once; and the
restarted server takes the dot lock its killed predecessor left at once.

C{CRASH_ROUNDS} (default 6 here) sets the number of rounds; C{CRASH_SEED}
the random seed (printed, so that a failure can be replayed).
"""

from __future__ import annotations

import collections
import contextlib
import mailbox
import os
import random
import signal
import smtplib
import time

from tests.integration.helpers import SENDER, ServerTestCase, TwistdServer, message
from tests.integration.test_crash import Load

ROUNDS = int(os.environ.get("CRASH_ROUNDS", "6"))


def stored(data: bytes) -> bytes:
    """
    What the mbox holds of a message sent as C{data}: LF line ends, as
    L{mailbox.mbox} reads it back, without the blank line before the next
    C{From } line.
    """
    return data.replace(b"\r\n", b"\n").rstrip(b"\n")


class BigLoad(Load):
    """
    L{Load} where every third message carries 400 KB more body, so that a
    kill can fall in the middle of its append.
    """

    def _take(self) -> tuple[int, bytes]:
        index, data = super()._take()
        if index % 3 == 0:
            data += (b"%07d " % index + b"y" * 90 + b"\r\n") * 4000
            with self._lock:
                self.sent[index] = data
        return index, data


class MboxCrashTests(ServerTestCase):
    def test_sigkillUnderLoad(self) -> None:
        """
        Rounds of load and SIGKILL on one mbox: after the last restart,
        every acknowledged message is there once, byte for byte, and every
        other entry is, whole or cut short, a message that was in flight,
        once.
        """
        seed = int(os.environ.get("CRASH_SEED", str(random.randrange(1 << 32))))
        rng = random.Random(seed)
        directory = self.makeDirectory()
        path = os.path.join(directory, "mbox")
        sent: dict[int, bytes] = {}
        acked: set[int] = set()
        nextIndex = 0
        where = f"seed {seed}"
        started = time.monotonic()
        args = ["--mbox", path, "--no-reverse-lookup"]
        for _ in range(ROUNDS):
            server = TwistdServer(args, directory)
            self.addCleanup(server.kill)
            server.start()
            load = BigLoad(sent, acked, nextIndex)
            load.start(server.port)
            time.sleep(rng.uniform(0.1, 0.8))
            server.signal(signal.SIGKILL)
            server.kill()
            nextIndex = load.stop()
        # The last server takes at once the dot lock a kill may have left.
        server = TwistdServer(args, directory)
        self.addCleanup(server.kill)
        server.start()
        with self.smtp(server.port) as client:
            for index in range(nextIndex, nextIndex + 3):
                sent[index] = message(index, SENDER)
                try:
                    client.sendmail(SENDER, ["rcpt@example.com"], sent[index])
                except smtplib.SMTPException as e:
                    with contextlib.suppress(Exception):
                        server.waitForLog("failed", timeout=5)
                    lock = b"(none)"
                    with contextlib.suppress(OSError), open(path + ".lock", "rb") as f:
                        lock = f.read()
                    self.fail(
                        f"{where}: after the last restart: {e!r}, dot lock {lock!r}\n"
                        f"{server.output}"
                    )
                acked.add(index)
        self.stopServer(server)
        box = mailbox.mbox(path, create=False)
        try:
            entries = [stored(box.get_bytes(key)) for key in box.iterkeys()]
        finally:
            box.close()
        whole = collections.Counter(entries)
        byContent = {stored(data): index for index, data in sent.items()}
        for index in acked:
            self.assertEqual(
                whole[stored(sent[index])], 1, f"{where}: acknowledged message {index}"
            )
        cut = 0
        inFlight = [stored(sent[index]) for index in sent.keys() - acked]
        for entry, count in whole.items():
            if entry in byContent:
                self.assertEqual(count, 1, f"{where}: message {byContent[entry]} stored twice")
                continue
            # Cut short: two cut early (in the header section common to all
            # messages, or before any of it) may hold the same bytes.
            cut += count
            self.assertTrue(
                any(data.startswith(entry) for data in inFlight),
                f"{where}: an entry is no message that was in flight: {entry[:200]!r}",
            )
        print(
            f"\nmbox crash: seed {seed}, {ROUNDS} SIGKILLs, {len(sent)} messages begun, "
            f"{len(acked)} acknowledged, {len(entries)} in the mbox ({cut} cut short), "
            f"{time.monotonic() - started:.1f} s"
        )
        self.assertGreater(len(acked), ROUNDS)
