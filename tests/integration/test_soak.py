"""
Soak: thousands of connections and a hundred thousand messages through a
real C{twistd smtpd --sink}, then the server's open file descriptors and
resident memory must be back to where they were before the load.

Sizes come from the environment: C{SOAK_CONNECTIONS} (default 10000),
C{SOAK_MESSAGES} (default 100000) and C{SOAK_ABORTED} (default 1000).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time

from tests.integration.helpers import (
    CLIENT_TIMEOUT,
    ServerTestCase,
    TwistdServer,
    connect,
    readReply,
    requireProgram,
)

CONNECTIONS = int(os.environ.get("SOAK_CONNECTIONS", "10000"))
MESSAGES = int(os.environ.get("SOAK_MESSAGES", "100000"))
ABORTED = int(os.environ.get("SOAK_ABORTED", "1000"))

# Resident memory may end this much above its level after the warm-up.
# CPython keeps freed memory in its arenas and glibc keeps freed pages, so
# RSS never falls back to the byte; but the load makes over 100,000 message
# and 10,000 connection objects, so a leak of even 80 bytes for each would
# pass 8 MiB.  The warm-up runs the same kinds of sessions at the same
# concurrency first, so one-time costs (imports, caches, the buffers of 50
# concurrent sessions) are in the baseline.
RSS_TOLERANCE = 8 * 1024 * 1024

# Every bounded wait for the server to close what the load opened.
SETTLE_TIMEOUT = 30.0


def openFds(pid: int) -> int:
    """
    How many file descriptors process C{pid} has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


def residentBytes(pid: int) -> int:
    """
    The resident set size of process C{pid}.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def abortSessions(port: int, count: int, threads: int = 8) -> None:
    """
    Open C{count} sessions that stop in the middle of a message body and
    reset the connection (half of them), or connect and close at once.
    """
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(n):
                with connect(port) as sock:
                    if i % 2:
                        continue
                    stream = sock.makefile("rb")
                    readReply(stream)
                    sock.sendall(
                        b"EHLO abort.example\r\nMAIL FROM:<a@example.com>\r\n"
                        b"RCPT TO:<b@example.com>\r\nDATA\r\n"
                    )
                    for _ in range(4):
                        readReply(stream)
                    sock.sendall(b"Subject: cut short\r\n\r\npartial body")
                    # SO_LINGER 0: close with a reset, as a crashing client does.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    stream.close()
        except BaseException as e:  # reported below
            errors.append(e)

    workers = [
        threading.Thread(target=work, args=(count // threads + (k < count % threads),))
        for k in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(CLIENT_TIMEOUT * 10)
    if errors:
        raise errors[0]


class SoakTests(ServerTestCase):
    def source(self, program: str, port: int, *args: str) -> float:
        """
        Run C{smtp-source} against the server; it must succeed.

        @return: How long it took, in seconds.
        """
        started = time.monotonic()
        run = subprocess.run(
            [program, "-M", "localhost", "-l", "1024", *args, f"127.0.0.1:{port}"],
            capture_output=True,
            timeout=600,
        )
        elapsed = time.monotonic() - started
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stderr, b"")
        return elapsed

    def waitForSessions(self, server: TwistdServer, count: int) -> None:
        """
        Wait (bounded) until the server has logged the end of C{count}
        sessions.
        """
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            closed = server.output.count(" close\n")
            if closed >= count:
                return
            if time.monotonic() > deadline:
                self.fail(f"{closed} sessions of {count} ended")
            time.sleep(0.1)

    def test_connectionsAndMessages(self) -> None:
        """
        After C{CONNECTIONS} connections of one message each, C{MESSAGES}
        messages over 20 connections and C{ABORTED} connections cut short,
        every message got 250, nothing was logged amiss, the server holds
        the same file descriptors as before and its memory is back near
        its level after a warm-up.
        """
        program = requireProgram(self, "smtp-source", "postfix")
        server = self.startServer("--sink", "--no-reverse-lookup", maildir=False)
        pid, port = server.pid, server.port
        # Warm-up: the same kinds of sessions, at the same concurrency.
        self.source(program, port, "-s", "50", "-m", "1000")
        self.source(program, port, "-d", "-s", "20", "-m", "5000")
        abortSessions(port, 200)
        sessions = 1000 + 20 + 200
        self.waitForSessions(server, sessions)
        fds = openFds(pid)
        rss = residentBytes(pid)
        started = time.monotonic()
        connectionsTime = self.source(program, port, "-s", "50", "-m", str(CONNECTIONS))
        messagesTime = self.source(program, port, "-d", "-s", "20", "-m", str(MESSAGES))
        abortSessions(port, ABORTED)
        self.waitForSessions(server, sessions + CONNECTIONS + 20 + ABORTED)
        fdsAfter = openFds(pid)
        rssAfter = residentBytes(pid)
        total = time.monotonic() - started
        output = server.output
        self.stopServer()
        accepted = sum(
            1 for line in output.splitlines() if " message " in line and ": 250 " in line
        )
        print(
            f"\nsoak: {CONNECTIONS} connections in {connectionsTime:.1f} s, "
            f"{MESSAGES} messages in {messagesTime:.1f} s, {ABORTED} aborted, "
            f"{total:.1f} s in all; fds {fds} -> {fdsAfter}; "
            f"RSS {rss / 1048576:.1f} -> {rssAfter / 1048576:.1f} MiB"
        )
        self.assertEqual(accepted, 1000 + 5000 + CONNECTIONS + MESSAGES)
        self.assertEqual(fdsAfter, fds)
        self.assertLessEqual(rssAfter, rss + RSS_TOLERANCE)
