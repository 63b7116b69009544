# -*- test-case-name: tests.integration -*-
"""
Helpers for the integration tests: a C{twistd smtpd} subprocess listening on
127.0.0.1, Maildir inspection and a raw reply reader.

Everything here blocks, and every wait is bounded: a server that does not
start, a client that does not answer or a process that does not stop fails
the test instead of hanging it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

# The checkout holding tests/, twisted_smtpd/ and twisted/plugins/.
PROJECT = Path(__file__).resolve().parents[2]

# Upper bounds, in seconds, for things that normally take milliseconds.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
CLIENT_TIMEOUT = 60.0

_LISTENING = re.compile(rb"starting on (\d+)")

# Run twistd from this interpreter.  (C{python -m twisted} runs C{twist}, a
# different command line.)
_TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def twistdCommand(*args: str) -> list[str]:
    """
    The command line running C{twistd} with C{args} in this interpreter.
    """
    return [sys.executable, "-c", _TWISTD, *args]


def twistdEnvironment() -> dict[str, str]:
    """
    The environment for a C{twistd} subprocess: this one, with the checkout
    first on the import path so that the plugin in C{twisted/plugins/} and
    the package beside it are the ones under test.
    """
    env = dict(os.environ)
    path = [str(PROJECT)]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServerFailed(Exception):
    """
    The server process did not start, stop or behave as expected.
    """


class TwistdServer:
    """
    A C{twistd -n smtpd} process listening on an ephemeral port of
    127.0.0.1, its log read continuously so that the process never blocks on
    a full pipe.

    @ivar port: The port it listens on, once L{start} returned.
    @ivar returncode: Its exit status, once L{stop} returned.
    """

    def __init__(self, args: Sequence[str], cwd: str) -> None:
        """
        @param args: Options of C{smtpd} besides C{--listen}.
        @param cwd: The directory the process runs in.
        """
        self._command = twistdCommand(
            "--nodaemon",
            "--pidfile=",
            "--logfile=-",
            "smtpd",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            *args,
        )
        self._cwd = cwd
        self._lines: list[bytes] = []
        self._changed = threading.Condition()
        self._eof = False
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.port = 0
        self.returncode: int | None = None

    def start(self) -> int:
        """
        Start the process and wait until its log says it listens.

        @return: The port.
        @raise ServerFailed: If it exits or is not listening within
            L{START_TIMEOUT} seconds.
        """
        self._process = subprocess.Popen(
            self._command,
            cwd=self._cwd,
            env=twistdEnvironment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        with self._changed:
            while True:
                for line in self._lines:
                    match = _LISTENING.search(line)
                    if match is not None:
                        self.port = int(match.group(1))
                        return self.port
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._changed.wait(remaining)
        self.kill()
        raise ServerFailed(f"server did not start listening:\n{self.output}")

    def _read(self) -> None:
        """
        Collect the process's output line by line until it closes.
        """
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def output(self) -> str:
        """
        Everything the process has logged so far.
        """
        with self._changed:
            return b"".join(self._lines).decode("utf-8", "replace")

    def stop(self) -> int:
        """
        Send SIGTERM and wait for the process to exit and its log to end.

        @return: The exit status.
        @raise ServerFailed: If it does not exit within L{STOP_TIMEOUT}.
        """
        process = self._process
        if process is None or self.returncode is not None:
            return self.returncode or 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            self.returncode = process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerFailed(f"server ignored SIGTERM:\n{self.output}") from None
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)
        assert process.stdout is not None
        process.stdout.close()
        return self.returncode

    def kill(self) -> None:
        """
        Kill the process if it still runs; for cleanup after a failure.
        """
        process = self._process
        if process is None or self.returncode is not None:
            return
        if process.poll() is None:
            process.kill()
        self.returncode = process.wait(STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)
        assert process.stdout is not None
        process.stdout.close()


def maildirContents(path: str) -> tuple[list[bytes], list[str], list[str]]:
    """
    Read a Maildir.

    @return: The contents of the files in C{new/} (in name order), their
        names, and the names left in C{tmp/}.
    """
    new = sorted(os.listdir(os.path.join(path, "new")))
    contents = []
    for name in new:
        with open(os.path.join(path, "new", name), "rb") as f:
            contents.append(f.read())
    return contents, new, sorted(os.listdir(os.path.join(path, "tmp")))


def message(index: int, sender: str = "sender@example.com") -> bytes:
    """
    A distinct message of CRLF-terminated lines, several of which begin with
    a dot so that the client has to dot-stuff them (RFC 5321 section 4.5.2)
    and the server to unstuff them.

    What a client sends with C{smtplib} is exactly what the server must
    store.
    """
    lines = [
        f"From: {sender}",
        "To: rcpt@example.com",
        f"Subject: message {index}",
        f"Message-ID: <{index}.integration@example.com>",
        "",
        f"Body of message {index}.",
        ".",
        "..two dots",
        ".leading dot",
        "x" * 998,
        "",
        "tail \t with tab",
    ]
    return "".join(line + "\r\n" for line in lines).encode("ascii")


def readReply(stream: IO[bytes]) -> tuple[int, list[bytes]]:
    """
    Read one possibly multi-line SMTP reply (RFC 5321 section 4.2.1) from a
    binary file made with C{socket.makefile("rb")}.

    @return: The code and the text lines.
    @raise ServerFailed: If the connection ends or a line is malformed.
    """
    lines = []
    while True:
        line = stream.readline()
        if not line.endswith(b"\r\n") or len(line) < 5 or not line[:3].isdigit():
            raise ServerFailed(f"bad or missing reply line: {line!r} after {lines!r}")
        lines.append(line[4:-2])
        if line[3:4] == b" ":
            return int(line[:3]), lines
        if line[3:4] != b"-":
            raise ServerFailed(f"bad reply line: {line!r}")


def connect(port: int) -> socket.socket:
    """
    A TCP connection to 127.0.0.1 C{port} with L{CLIENT_TIMEOUT}.
    """
    return socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
