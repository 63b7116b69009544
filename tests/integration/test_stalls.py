"""
Stalled clients against a real C{twistd smtpd}: hundreds of connections
that stop mid-command, mid-DATA, mid-STARTTLS handshake, on an implicit TLS
listener without a byte, or while never reading their replies, are all cut by
the timeouts and give their descriptors back, while a normal client is served
at once; and SIGTERM stops the server within a bound while they are connected.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import smtplib
import socket
import subprocess
import threading
import time

from tests.certs import CertificateAuthority
from tests.integration.helpers import (
    RECIPIENT,
    SENDER,
    ServerTestCase,
    TwistdServer,
    twistdCommand,
)

#: Stalled connections of each kind.
PER_KIND = 100
#: The server's timeouts in these tests, in seconds.
SHORT = 2
#: CLOSE_GRACE of twisted_smtpd._serving.deadlines: how long a polite close may take.
CLOSE_GRACE = 5
#: How long a typical (the median) normal session may take while the server
#: is under attack, and the longest one.
NORMAL_SESSION_BOUND = 0.25
NORMAL_SESSION_LIMIT = 5.0

_LISTEN = ("tcp:0:interface=127.0.0.1:backlog=1024", "ssl:0:interface=127.0.0.1:backlog=1024")
# 40 kB of commands whose replies (800 kB) are more than the kernel's
# socket buffers hold for a client with small segments.
_PIPELINED_EHLO = b"EHLO x\r\n" * 5000


def openDescriptors(pid: int) -> int:
    """
    How many file descriptors process C{pid} has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


class PeakDescriptors:
    """
    Sample how many descriptors a process has open, every 10 ms, in a
    thread, until L{stop}.
    """

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stopped = threading.Event()
        self.peak = openDescriptors(pid)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stopped.wait(0.01):
            self.peak = max(self.peak, openDescriptors(self._pid))

    def stop(self) -> int:
        """
        Stop sampling.

        @return: The most descriptors seen open.
        """
        self._stopped.set()
        self._thread.join(5)
        return self.peak


def _connect(port: int, small: bool = False) -> socket.socket:
    """
    A connection to 127.0.0.1 C{port}; when C{small}, with a small receive
    buffer and small segments, so that the server's kernel buffers hold
    little of what the client leaves unread (on loopback they would
    otherwise grow to megabytes).
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def _sendSome(s: socket.socket, data: bytes) -> None:
    """
    Send as much of C{data} as the connection takes without blocking.
    """
    s.setblocking(False)
    try:
        while data:
            data = data[s.send(data) :]
    except BlockingIOError:
        pass


def _readUntil(s: socket.socket, marker: bytes, deadline: float) -> None:
    seen = b""
    while marker not in seen:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = s.recv(4096)
        if not chunk:
            raise AssertionError(f"closed before {marker!r}: {seen!r}")
        seen += chunk


def stall(kind: str, tcpPort: int, tlsPort: int) -> socket.socket:
    """
    Open one connection that stalls in the way C{kind} says.
    """
    if kind == "command":
        s = _connect(tcpPort)
        s.sendall(b"EHLO stalled.example.com\r\nMAIL FROM:<half@exa")
    elif kind == "data":
        s = _connect(tcpPort)
        s.sendall(
            b"EHLO stalled.example.com\r\nMAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<b@example.com>\r\nDATA\r\nSubject: half\r\n\r\nthe body st"
        )
    elif kind == "starttls":
        s = _connect(tcpPort)
        s.sendall(b"EHLO stalled.example.com\r\nSTARTTLS\r\n")
    elif kind == "implicit":
        s = _connect(tlsPort)
    elif kind == "unread":
        s = _connect(tcpPort, small=True)
        _sendSome(s, _PIPELINED_EHLO)
    else:
        raise ValueError(kind)
    s.setblocking(False)
    return s


def midHandshake(sockets: list[socket.socket], deadline: float) -> None:
    """
    After STARTTLS's 220, send the first bytes of a TLS record and stop.
    """
    for s in sockets:
        s.setblocking(True)
        _readUntil(s, b"220 2.0.0 Ready to start TLS\r\n", deadline)
        s.sendall(b"\x16\x03\x01\x00")
        s.setblocking(False)


def waitClosed(sockets: list[socket.socket], timeout: float) -> int:
    """
    Wait until the server has closed every socket (a FIN or a reset), or
    C{timeout} passes; nothing is read, so a client that never reads stays
    one that never reads.

    @return: How many were closed by the server.
    """
    poller = select.poll()
    waiting = {s.fileno() for s in sockets}
    for fd in waiting:
        poller.register(fd, select.POLLRDHUP)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            poller.unregister(fd)
            waiting.discard(fd)
    for s in sockets:
        s.close()
    return len(sockets) - len(waiting)


def normalSession(port: int) -> float:
    """
    One whole SMTP session with C{smtplib}.

    @return: How long it took, in seconds.
    """
    start = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("normal.example.com")
        client.sendmail(SENDER, [RECIPIENT], b"Subject: normal\r\n\r\nserved at once\r\n")
    return time.monotonic() - start


class StallTests(ServerTestCase):
    """
    Hundreds of stalled clients, real sockets, a real C{twistd smtpd}.
    """

    def startStallServer(self, *timeouts: str) -> TwistdServer:
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = ca.server("localhost")
        server = self.startServer(
            "--sink",
            "--no-reverse-lookup",
            "--tls-cert",
            issued.certificatePath,
            "--tls-key",
            issued.keyPath,
            # The clients that never read flood EHLOs: what cuts them here
            # is their unread replies, not the junk command limit.
            "--max-junk-commands",
            "0",
            *timeouts,
            maildir=False,
            listen=_LISTEN,
        )
        self.tcpPort, self.tlsPort = (int(p) for p in server.ports)
        return server

    def openStalls(self, kinds: list[str]) -> list[socket.socket]:
        """
        Open a stalled connection of each kind in C{kinds}; those that flood
        the server with commands last.
        """
        sockets: list[socket.socket] = []
        handshaking: list[socket.socket] = []
        for kind in sorted(kinds, key=lambda k: k == "unread"):
            if kind == "unread" and handshaking:
                midHandshake(handshaking, time.monotonic() + 20)
                handshaking = []
            s = stall(kind, self.tcpPort, self.tlsPort)
            sockets.append(s)
            if kind == "starttls":
                handshaking.append(s)
        midHandshake(handshaking, time.monotonic() + 20)
        return sockets

    def test_stalledClientsAreCut(self) -> None:
        """
        500 stalled clients are all closed by the timeouts within the socket
        or handshake timeout plus the close grace; the server's descriptors
        return to their count before the attack; a normal client is served
        at once throughout.
        """
        server = self.startStallServer(
            "--socket-timeout", str(SHORT), "--tls-handshake-timeout", str(SHORT)
        )
        normalSession(self.tcpPort)
        time.sleep(0.5)
        baseline = openDescriptors(server.pid)
        kinds = ["command", "data", "starttls", "implicit", "unread"] * PER_KIND
        started = time.monotonic()
        peak = PeakDescriptors(server.pid)
        sockets = self.openStalls(kinds)
        opened = time.monotonic() - started
        latencies = [normalSession(self.tcpPort)]
        for _ in range(6):
            time.sleep(0.5)
            latencies.append(normalSession(self.tcpPort))
        during = peak.stop()
        closed = waitClosed(sockets, SHORT + CLOSE_GRACE + 10 - (time.monotonic() - started))
        elapsed = time.monotonic() - started
        self.assertEqual(closed, len(sockets), server.output[-3000:])
        deadline = time.monotonic() + 5
        while openDescriptors(server.pid) > baseline and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(openDescriptors(server.pid), baseline)
        # Every stalled connection was open at once.
        self.assertGreaterEqual(during, baseline + len(sockets), opened)
        # The first session starts while the server is still answering the
        # burst of connections and pipelined commands (about a second of
        # CPU); every session completes, and the typical one is quick.
        self.assertLess(max(latencies), NORMAL_SESSION_LIMIT, latencies)
        self.assertLess(sorted(latencies)[len(latencies) // 2], NORMAL_SESSION_BOUND, latencies)
        output = server.output
        self.assertEqual(output.count("TLS handshake timeout"), 2 * PER_KIND, output[-3000:])
        self.assertEqual(output.count("write timeout: replies unread"), PER_KIND)
        self.assertEqual(output.count("127.0.0.1 timeout (2 s)"), PER_KIND)
        self.assertEqual(
            output.count("127.0.0.1 timeout during DATA after 28 bytes (2 s): message dropped"),
            PER_KIND,
        )
        self.assertNotIn("Traceback", output)
        print(
            f"\n{len(sockets)} stalled clients opened in {opened:.1f} s, "
            f"all closed in {elapsed:.1f} s; "
            f"descriptors {baseline} -> {during} -> {openDescriptors(server.pid)}; "
            f"normal sessions {', '.join(f'{t * 1000:.0f} ms' for t in latencies)}"
        )
        self.stopServer()

    def test_sigtermWithStalledClients(self) -> None:
        """
        With stalled clients connected (the default timeouts, far away),
        SIGTERM and --close-timeout 2 stop the server within the close
        timeout plus the close grace.
        """
        server = self.startStallServer("--close-timeout", str(SHORT))
        kinds = ["command", "data", "starttls", "implicit", "unread"] * 40
        sockets = self.openStalls(kinds)
        normalSession(self.tcpPort)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        process = server._process
        assert process is not None
        bound = SHORT + CLOSE_GRACE + 3
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(bound + 10)
        elapsed = time.monotonic() - started
        closed = waitClosed(sockets, 1)
        self.assertLess(elapsed, bound, server.output[-3000:])
        self.assertEqual(closed, len(sockets))
        print(f"\nSIGTERM with {len(sockets)} stalled clients: exited in {elapsed:.1f} s")
        self.stopServer()


def closingConnections(port: int) -> int:
    """
    How many TCP connections from local C{port} the kernel holds closed by
    their server but with its data still unsent (C{FIN_WAIT1}), from
    C{/proc/net/tcp}.
    """
    count = 0
    with open("/proc/net/tcp", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "04":
                count += 1
    return count


class JunkFloodTests(ServerTestCase):
    def test_unreadRepliesLeaveNoOrphan(self) -> None:
        """
        A client flooding EHLOs without reading its replies is cut past the
        junk command limit, while its replies still fill the kernel's send
        buffer: the server's side of the connection is gone from the kernel
        within twice the close grace, not kept for as long as the client
        keeps its window shut.
        """
        server = self.startServer("--sink", "--no-reverse-lookup", maildir=False)
        port = int(server.ports[0])
        client = _connect(port, small=True)
        _sendSome(client, _PIPELINED_EHLO)
        server.waitForLog("421 4.7.0 <x>: Too many errors")
        deadline = time.monotonic() + 2 * CLOSE_GRACE + 5
        while closingConnections(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertEqual(closingConnections(port), 0)
        client.close()
        self.stopServer()


class ClientLimitTests(ServerTestCase):
    """
    The per-address limits of a real C{twistd smtpd}.
    """

    def greeting(self, port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            return s.recv(4096)

    def test_perAddressAndRate(self) -> None:
        """
        --max-clients-per-ip refuses a third connection from 127.0.0.1 while
        two are open, --max-connection-rate refuses the connections beyond
        the rate, each with 421 4.7.0 and one log line.
        """
        server = self.startServer(
            "--sink",
            "--no-reverse-lookup",
            "--max-clients-per-ip",
            "2",
            "--max-connection-rate",
            "4/60",
            maildir=False,
        )
        held = [_connect(server.port) for _ in range(2)]
        for s in held:
            s.recv(4096)
        self.assertTrue(
            self.greeting(server.port).startswith(b"421 4.7.0 Error: too many connections")
        )
        server.waitForLog("127.0.0.1 refused: connection limit per client address (2) reached")
        for s in held:
            s.close()
        time.sleep(0.2)
        self.assertTrue(self.greeting(server.port).startswith(b"220 "))
        self.assertTrue(
            self.greeting(server.port).startswith(
                b"421 4.7.0 Error: too many connections from your address recently"
            )
        )
        server.waitForLog("127.0.0.1 refused: connection rate limit (4 per 60 s) reached")
        self.stopServer()


class HandlerTimeoutTests(ServerTestCase):
    """
    A handler that never answers, against a real C{twistd smtpd}.
    """

    def test_silentNextHop(self) -> None:
        """
        With C{--relay} to a next hop that accepts the connection and never
        greets, MAIL (where the relay opens its session) is answered
        C{421 4.3.0} after C{--handler-timeout}, not after the relay's
        300 s, with one log line naming the hook.
        """
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        server = self.startServer(
            "--relay",
            f"127.0.0.1:{silent.getsockname()[1]}",
            "--no-reverse-lookup",
            "--handler-timeout",
            str(SHORT),
            maildir=False,
        )
        with self.smtp(server.port) as client:
            client.ehlo("client.example")
            started = time.monotonic()
            code, text = client.mail(SENDER)
            elapsed = time.monotonic() - started
        self.assertEqual(
            (code, text),
            (421, b"4.3.0 Error: timeout waiting for the mail system, try again later"),
        )
        self.assertGreaterEqual(elapsed, SHORT - 0.5)
        self.assertLess(elapsed, SHORT + 5)
        server.waitForLog("handler timeout: onMailFrom did not answer (2 s)", timeout=10)
        self.assertEqual(server.output.count("handler timeout"), 1)


class OpenFilesTests(ServerTestCase):
    """
    The open-files limit of a real C{twistd smtpd}.
    """

    def test_softLimitRaised(self) -> None:
        """
        Started with a soft limit of 256 under a hard one of 1024, the
        server raises its soft limit to 1024 and, with no --max-clients,
        warns that the limit is low; the same with --max-clients 500 does
        not warn.
        """
        limits = 'ulimit -Sn 256 && ulimit -Hn 1024 && exec "$@"'
        server = self.startServer(
            "--sink",
            maildir=False,
            command=["sh", "-c", limits, "sh", *twistdCommand()],
        )
        with open(f"/proc/{server.pid}/limits") as f:
            line = next(line for line in f if line.startswith("Max open files"))
        self.assertEqual(line.split()[3:5], ["1024", "1024"])
        server.waitForLog("open files: limit raised from 256 to 1024")
        server.waitForLog("open files: no --max-clients with a limit of 1024 open files")
        self.stopServer(server)
        bounded = self.startServer(
            "--sink",
            "--max-clients",
            "500",
            maildir=False,
            command=["sh", "-c", limits, "sh", *twistdCommand()],
        )
        bounded.waitForLog("open files: limit raised from 256 to 1024")
        self.stopServer(bounded)
        self.assertNotIn("--max-clients", bounded.output)
