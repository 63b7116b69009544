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
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from tests.tracing import forwardedMessage

# The checkout holding tests/, twisted_smtpd/ and twisted/plugins/.
PROJECT = Path(__file__).resolve().parents[2]

# Upper bounds, in seconds, for things that normally take milliseconds.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
CLIENT_TIMEOUT = 60.0

# The startup summary's line per listener: "listening: ENDPOINT on ADDRESS".
_LISTENING = re.compile(rb"listening: \S+ on (?:\S*:(\d+)|'([^']*)')")
_TCP = "tcp:0:interface=127.0.0.1"

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


def runToEnd(command: list[str], directory: str) -> tuple[int, str, str]:
    """
    Run C{command} (a C{twistd} command line, L{twistdCommand}, maybe
    behind another program) in C{directory} to its end, within
    L{START_TIMEOUT} seconds, with L{twistdEnvironment} and nothing on its
    standard input.

    @return: Its exit status, standard output and standard error.
    """
    result = subprocess.run(
        command,
        cwd=directory,
        env=twistdEnvironment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    out = result.stdout.decode("utf-8", "replace")
    return result.returncode, out, result.stderr.decode("utf-8", "replace")


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
    @ivar ports: What each listener logged it listens on, in order: a port
        number, or a UNIX socket path.
    @ivar returncode: Its exit status, once L{stop} returned.
    """

    def __init__(
        self,
        args: Sequence[str],
        cwd: str,
        *,
        listen: Sequence[str] = (_TCP,),
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        passFds: Sequence[int] = (),
        logfile: str | None = None,
    ) -> None:
        """
        @param args: Options of C{smtpd} besides C{--listen}.
        @param cwd: The directory the process runs in.
        @param listen: The endpoints, one C{--listen} each.
        @param command: What runs C{twistd} (its arguments follow), instead
            of L{twistdCommand}.
        @param env: Variables added to L{twistdEnvironment}.
        @param passFds: File descriptors the process inherits.
        @param logfile: A path for C{twistd --logfile}, followed (through
            renames) as the log instead of standard output; by default the
            log is standard output.
        """
        listening = [part for endpoint in listen for part in ("--listen", endpoint)]
        logging = "--logfile=-" if logfile is None else f"--logfile={logfile}"
        options = ["--nodaemon", "--pidfile=", logging, "smtpd", *listening, *args]
        self._logfile = logfile
        self._readers = 0
        self._command = [*command, *options] if command is not None else twistdCommand(*options)
        self._listeners = len(listen)
        self._env = env or {}
        self._passFds = tuple(passFds)
        self._cwd = self.directory = cwd
        self._lines: list[bytes] = []
        self._changed = threading.Condition()
        self._eof = False
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._tailer: threading.Thread | None = None
        self.port = 0
        self.ports: list[int | str] = []
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
            env={**twistdEnvironment(), **self._env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=self._passFds,
        )
        self._readers = 1 if self._logfile is None else 2
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if self._logfile is not None:
            self._tailer = threading.Thread(target=self._tail, args=(self._logfile,), daemon=True)
            self._tailer.start()
        try:
            self.waitFor(self._isListening, START_TIMEOUT)
            for port in self.ports:
                if isinstance(port, str):
                    self._waitForUnixSocket(port)
        except ServerFailed:
            self.kill()
            raise ServerFailed(f"server did not start listening:\n{self.output}") from None
        return self.port

    def _waitForUnixSocket(self, path: str) -> None:
        """
        Wait until the UNIX socket at C{path} accepts connections.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(path)
                    return
                except OSError:
                    if time.monotonic() > deadline or self._eof:
                        raise ServerFailed(f"{path} does not accept connections") from None
            time.sleep(0.01)

    def _isListening(self, lines: list[bytes]) -> bool:
        ports: list[int | str] = []
        for line in lines:
            match = _LISTENING.search(line)
            if match is not None:
                number, path = match.groups()
                ports.append(int(number) if number else path.decode("utf-8", "replace"))
        if len(ports) < self._listeners:
            return False
        self.ports = ports
        self.port = next((p for p in ports if isinstance(p, int)), 0)
        return True

    def waitFor(self, condition: Callable[[list[bytes]], bool], timeout: float) -> None:
        """
        Wait until C{condition} holds for the lines logged so far.

        @raise ServerFailed: If the log ends or C{timeout} seconds pass
            first.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self._lines):
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    raise ServerFailed(f"not seen in the log:\n{self.output}")
                self._changed.wait(remaining)

    def waitForLog(self, text: str, count: int = 1, timeout: float = START_TIMEOUT) -> None:
        """
        Wait until C{text} has appeared on C{count} lines of the log.

        @raise ServerFailed: If the log ends or C{timeout} seconds pass
            first.
        """
        needle = text.encode("utf-8")

        def seen(lines: list[bytes]) -> bool:
            return sum(needle in line for line in lines) >= count

        try:
            self.waitFor(seen, timeout)
        except ServerFailed:
            raise ServerFailed(f"{text!r} not seen {count} time(s):\n{self.output}") from None

    @property
    def pid(self) -> int:
        """
        The process id.
        """
        assert self._process is not None
        return self._process.pid

    def signal(self, number: int) -> None:
        """
        Send signal C{number} to the process.
        """
        assert self._process is not None
        self._process.send_signal(number)

    def _read(self) -> None:
        """
        Collect the process's output line by line until it closes.
        """
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        self._readerDone()

    def _readerDone(self) -> None:
        with self._changed:
            self._readers -= 1
            if self._readers == 0:
                self._eof = True
            self._changed.notify_all()

    def _tail(self, path: str) -> None:
        """
        Collect the lines written into the log file C{path} until the
        process has exited: the file open now is read to its end before
        one that replaced it (a rotation) is followed.
        """
        assert self._process is not None
        handle: IO[bytes] | None = None
        partial = b""
        try:
            while True:
                exited = self._process.poll() is not None
                data = b""
                if handle is not None:
                    data = handle.read()
                    try:
                        replaced = os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
                    except FileNotFoundError:
                        replaced = False
                    if replaced and not data:
                        handle.close()
                        handle = None
                if handle is None and os.path.exists(path):
                    handle = open(path, "rb")  # noqa: SIM115 -- kept open across iterations
                    data += handle.read()
                if data:
                    *lines, partial = (partial + data).split(b"\n")
                    with self._changed:
                        self._lines.extend(line + b"\n" for line in lines)
                        self._changed.notify_all()
                elif exited:
                    return
                else:
                    time.sleep(0.02)
        finally:
            if handle is not None:
                handle.close()
            self._readerDone()

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
        self._joinReaders()
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
        self._joinReaders()
        assert process.stdout is not None
        process.stdout.close()

    def _joinReaders(self) -> None:
        for reader in (self._reader, self._tailer):
            if reader is not None:
                reader.join(STOP_TIMEOUT)


def startWorkers(
    testCase: SynchronousTestCase,
    arguments: Sequence[str],
    directory: str | None = None,
    **kw: Any,
) -> tuple[TwistdServer, int]:
    """
    Start C{twistd smtpd --workers 2 --no-reverse-lookup ARGUMENTS} in
    C{directory} (a new folder of C{testCase} by default), killed when the
    test ends, and wait until both workers are ready.

    @param kw: Passed on to L{TwistdServer} (C{listen}, ...).
    @return: The server and the port of its first listener.
    """
    if directory is None:
        directory = os.path.abspath(testCase.mktemp())
        os.makedirs(directory)
    server = TwistdServer(["--workers", "2", "--no-reverse-lookup", *arguments], directory, **kw)
    testCase.addCleanup(server.kill)
    port = server.start()
    server.waitForLog("worker ready", count=2)
    return server, port


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


SENDER = "sender@example.com"
RECIPIENT = "rcpt@example.com"


def requireProgram(testCase: SynchronousTestCase, program: str, package: str) -> str:
    """
    The path of C{program}; when it is missing, fail the test if the
    environment variable C{CI} is set (CI must install the Debian
    C{package}), else skip it.
    """
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        if os.environ.get("CI"):
            testCase.fail(
                f"{program} is not installed; CI must install the Debian package {package}"
            )
        raise SkipTest(f"{program} is not installed (Debian package {package})")
    return path


def freePort() -> int:
    """
    A TCP port of 127.0.0.1 that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unverifiedContext() -> ssl.SSLContext:
    """
    A client TLS context that accepts any certificate, such as the
    server's self-signed one.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class UnixSMTP(smtplib.SMTP):
    """
    C{smtplib.SMTP} over a UNIX socket: C{connect(path)}.
    """

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(host)
        return sock

    def connect(self, host: str = "", port: int = 0, source_address: object = None) -> Any:
        self._host = "localhost"
        self.sock = self._get_socket(host, port, self.timeout)
        self.file = None
        code, message = self.getreply()
        return code, message


class ImplicitTLSSMTP(smtplib.SMTP_SSL):
    """
    C{smtplib.SMTP_SSL} that checks the certificate for C{serverName}
    rather than for the address it connects to.
    """

    def __init__(self, serverName: str, *args: Any, **kwargs: Any) -> None:
        self.serverName = serverName
        super().__init__(*args, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname=self.serverName)


class ServerTestCase(SynchronousTestCase):
    """
    Base for tests that run C{twistd smtpd}, by default delivering into
    C{self.maildir}.
    """

    def makeDirectory(self) -> str:
        """
        A new empty directory, by absolute path.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        return directory

    def startServer(self, *args: str, maildir: bool = True, **options: Any) -> TwistdServer:
        """
        Start C{twistd smtpd} with C{args} (after C{--maildir self.maildir}
        unless C{maildir} is false), in a directory of its own; it is killed
        after the test if still running.

        @param options: Keyword arguments of L{TwistdServer}.
        """
        server = self.spawn(*args, maildir=maildir, **options)
        self.directory = server.directory
        self.maildir = os.path.join(server.directory, "Maildir")
        self.server = server
        return server

    def spawn(self, *args: str, maildir: bool = True, **options: Any) -> TwistdServer:
        """
        Start one more C{twistd smtpd} as L{startServer} does, in a new
        directory (C{server.directory}, its Maildir C{Maildir} in it),
        without making it C{self.server}.
        """
        directory = self.makeDirectory()
        prefix = ["--maildir", os.path.join(directory, "Maildir")] if maildir else []
        server = TwistdServer([*prefix, *args], directory, **options)
        self.addCleanup(server.kill)
        server.start()
        return server

    def stopServer(self, server: TwistdServer | None = None) -> None:
        """
        Stop the server with SIGTERM: it exits by that signal or with 0,
        having logged no traceback.
        """
        server = server or self.server
        code = server.stop()
        output = server.output
        self.assertIn(code, (0, -signal.SIGTERM), output)
        self.assertNotIn("Traceback", output)

    def smtp(self, port: int | None = None) -> smtplib.SMTP:
        """
        An C{smtplib} client connected to the server (or to C{port} of
        127.0.0.1) and closed after the test.
        """
        client = smtplib.SMTP("127.0.0.1", port or self.server.port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        return client

    def assertFailedStart(self, command: list[str], directory: str) -> tuple[str, str]:
        """
        C{command} (L{runToEnd}) ends with status 1, no traceback and one
        line on standard error.

        @return: That line, and all the output.
        """
        code, out, err = runToEnd(command, directory)
        both = out + err
        self.assertEqual(code, 1, both)
        self.assertNotIn("Traceback", both)
        (line,) = err.splitlines()
        return line, both

    def assertDelivered(
        self,
        expected: list[bytes],
        maildir: str | None = None,
        forwarded: bool = False,
        recipient: str | None = None,
    ) -> None:
        """
        The Maildir holds exactly the messages C{expected}, byte for byte,
        one file each, and nothing is left in C{tmp/}.

        @param forwarded: Whether the messages came through C{--relay} or
            C{--lmtp-to}: each then begins with its C{Received:} field
            (L{tests.tracing.forwardedMessage}), compared apart.
        @param recipient: The forwarded messages' one recipient, which their
            C{Received:} field names (C{None}: they had several).
        """
        contents, names, leftovers = maildirContents(maildir or self.maildir)
        if forwarded:
            contents = [forwardedMessage(self, message, recipient) for message in contents]
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(sorted(contents), sorted(expected))
        self.assertEqual(leftovers, [])
