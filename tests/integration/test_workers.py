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
import socket
import ssl
import threading
import time

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from tests.integration import recordinghandler
from tests.integration.helpers import (
    CLIENT_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    ImplicitTLSSMTP,
    TwistdServer,
    startWorkers,
)

HANDLER = "tests.integration.recordinghandler:make"

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
        server, port = startWorkers(self, ["--maildir", maildir], directory)
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
            # Signalled before its reactor runs, the new worker would die by
            # the signal instead of stopping cleanly: wait until it is ready.
            server.waitForLog("worker ready", count=3, timeout=START_TIMEOUT)
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


class StopTests(SynchronousTestCase):
    def inData(self, port: int) -> smtplib.SMTP:
        """
        A client whose transaction waits in DATA, its body not yet sent.
        """
        busy = smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(busy.close)
        busy.ehlo()
        busy.mail("a@example.com")
        busy.rcpt("b@example.com")
        self.assertEqual(busy.docmd("DATA")[0], 354)
        return busy

    def test_refusesOnceStopping(self) -> None:
        """
        Once SIGTERM stops the parent, the address refuses new connections
        at once, while a worker still finishes an open transaction within
        the close timeout: no connection waits in a backlog that no worker
        accepts from.
        """
        server, port = startWorkers(self, ["--sink", "--close-timeout", "20"])
        busy = self.inData(port)
        server.signal(signal.SIGTERM)
        server.waitForLog("stopped listening", count=2, timeout=STOP_TIMEOUT)
        # The workers close their ports in the turn after they log it.
        deadline = time.monotonic() + 5
        taken = 0
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT).close()
            except ConnectionRefusedError:
                break
            taken += 1
            if time.monotonic() > deadline:
                self.fail(f"{taken} connections taken while stopping: {server.output[-2000:]}")
            time.sleep(0.05)
        for _ in range(20):
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT).close()
        # The open transaction still finishes.
        busy.send(b"Subject: late\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(busy.getreply()[0], 250)

    def test_processGroupStopped(self) -> None:
        """
        SIGTERM to the whole process group (systemd's
        C{KillMode=control-group}: every worker gets its own, and the one its
        parent passes on) while a worker finishes a transaction stops every
        process gracefully; the second SIGTERM leaves no critical line nor
        traceback, and no worker takes its parent, still there, for gone.
        """
        server, port = startWorkers(self, ["--sink", "--close-timeout", "20"])
        pids = list(WorkersTests.workerPids(WorkersTests(), server).values())
        busy = self.inData(port)
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        server.signal(signal.SIGTERM)
        server.waitForLog("stopped listening", count=2, timeout=STOP_TIMEOUT)
        # The worker holding the transaction has had both SIGTERMs by now.
        server.waitForLog("Received SIGTERM", count=3, timeout=STOP_TIMEOUT)
        busy.send(b"Subject: late\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(busy.getreply()[0], 250)
        server.stop()
        output = server.output
        self.assertIn(server.returncode, (0, -signal.SIGTERM), output[-3000:])
        self.assertNotIn("#critical", output)
        self.assertNotIn("Traceback", output)
        self.assertNotIn("ReactorNotRunning", output)
        self.assertNotIn("Parent process gone", output)


class OneWorkerStoppedTests(SynchronousTestCase):
    def test_sigtermToOneWorker(self) -> None:
        """
        SIGTERM to one worker alone stops it gracefully; its parent, still
        running, starts another in its place, which serves with the
        self-signed certificate the parent made for its workers: the
        worker that stopped left it to its parent.
        """
        server, port = startWorkers(self, ["--sink"])
        pids = WorkersTests.workerPids(WorkersTests(), server)
        os.kill(pids[0], signal.SIGTERM)
        server.waitForLog(f"worker 0 ended (pid {pids[0]}, killed by SIGTERM, signal 15)")
        server.waitForLog("worker ready", count=3, timeout=START_TIMEOUT)
        self.assertNotIn("cannot read certificate", server.output)
        self.assertIn(server.stop(), (0, -signal.SIGTERM))
        self.assertNotIn("Traceback", server.output)


class HangupTests(SynchronousTestCase):
    def test_hangupWhileWorkersStart(self) -> None:
        """
        SIGHUP to the parent while its workers are still starting (as a
        certificate renewal's C{systemctl reload} may come during a
        restart) ends none of them: each reloads its certificates once it
        is ready.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        server = TwistdServer(["--workers", "2", "--no-reverse-lookup", "--sink"], directory)
        self.addCleanup(server.kill)
        server.start()
        server.waitForLog("worker 1 started")
        server.signal(signal.SIGHUP)
        server.waitForLog("worker ready", count=2, timeout=START_TIMEOUT)
        server.waitForLog("TLS certificates reloaded", count=2, timeout=START_TIMEOUT)
        self.assertNotIn("ended", server.output)
        self.assertEqual(len(WorkersTests.workerPids(WorkersTests(), server)), 2)


def running(pid: int) -> bool:
    """
    Whether process C{pid} exists and is not a zombie waiting to be reaped.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != b"Z"


class ParentDeathTests(SynchronousTestCase):
    #: How long the workers may outlive their parent, in seconds.
    exitBound = 15.0

    def test_workersExitWhenParentKilled(self) -> None:
        """
        When the parent is killed with SIGKILL (as the OOM killer does), each
        worker logs that its parent is gone and exits within
        C{exitBound} seconds, and the port then refuses connections.  The
        directory holding the self-signed certificate and private key the
        parent made for its workers is gone too.
        """
        server, port = startWorkers(self, ["--sink"])
        pids = list(WorkersTests.workerPids(WorkersTests(), server).values())
        self.assertEqual(len(pids), 2)
        with open(f"/proc/{pids[0]}/cmdline", "rb") as f:
            arguments = f.read().split(b"\0")
        key = os.fsdecode(arguments[arguments.index(b"--tls-key") + 1])
        self.assertTrue(os.path.exists(key))

        def killWorkers() -> None:
            for pid in pids:
                if running(pid):
                    os.kill(pid, signal.SIGKILL)

        self.addCleanup(killWorkers)
        with smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT) as smtp:
            self.assertEqual(smtp.noop()[0], 250)
        os.kill(server.pid, signal.SIGKILL)
        server.waitForLog("Parent process gone", count=2, timeout=self.exitBound)
        deadline = time.monotonic() + self.exitBound
        while any(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual([pid for pid in pids if running(pid)], [], server.output[-3000:])
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT).close()
        self.assertFalse(os.path.exists(os.path.dirname(key)))


class WorkerListenersTests(SynchronousTestCase):
    """
    Every kind of listener the workers adopt: C{ssl:} with the server's
    certificate, C{ssl:} with keys of its own, and C{haproxy:}.
    """

    def test_sslAndHaproxyListeners(self) -> None:
        """
        Two workers serve an C{ssl:} listener with its own certificate (each
        of eight clients verifies it), an C{ssl:} listener with
        C{--tls-cert}'s, and a C{haproxy:} listener whose sessions see the
        address the PROXY header names; every message is delivered.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        ca = CertificateAuthority(os.path.join(directory, "ca"))
        shared = ca.server("mail.example.com")
        own = ca.server("submission.example.com")
        records = os.path.join(directory, "records")
        server, _ = startWorkers(
            self,
            [
                "--tls-cert",
                shared.certificatePath,
                "--tls-key",
                shared.keyPath,
                "--proxy-trusted",
                "127.0.0.1/32",
                "--handler",
                HANDLER,
                "--handler-option",
                f"directory={records}",
            ],
            directory,
            listen=[
                f"ssl:0:interface=127.0.0.1:privateKey={own.keyPath}:certKey={own.certificatePath}",
                "ssl:0:interface=127.0.0.1",
                "haproxy:tcp:0:interface=127.0.0.1",
            ],
        )
        ownPort, sharedPort, proxyPort = server.ports
        assert isinstance(ownPort, int) and isinstance(sharedPort, int)
        assert isinstance(proxyPort, int)
        context = ssl.create_default_context(cafile=ca.certificatePath)
        expected = []
        for index in range(8):
            for name, port, issued in [
                ("submission.example.com", ownPort, own),
                ("mail.example.com", sharedPort, shared),
            ]:
                client = ImplicitTLSSMTP(
                    name, "127.0.0.1", port, context=context, timeout=CLIENT_TIMEOUT
                )
                with client:
                    peer = client.sock.getpeercert(binary_form=True)
                    assert peer is not None
                    self.assertEqual(x509.load_der_x509_certificate(peer), issued.certificate)
                    text = body(f"{index}.{port}@example.com")
                    self.assertEqual(client.sendmail("a@example.com", ["b@example.com"], text), {})
                    expected.append((["127.0.0.1", None], text.decode()))
            with socket.create_connection(("127.0.0.1", proxyPort), CLIENT_TIMEOUT) as raw:
                raw.sendall(b"PROXY TCP4 203.0.113.%d 127.0.0.1 4000%d 25\r\n" % (index, index))
                with smtplib.SMTP(timeout=CLIENT_TIMEOUT) as client:
                    client.sock = raw
                    client.file = None
                    client.getreply()
                    text = body(f"{index}.proxied@example.com")
                    self.assertEqual(client.sendmail("a@example.com", ["b@example.com"], text), {})
                    expected.append(([f"203.0.113.{index}", 40000 + index], text.decode()))
        found = []
        for record in recordinghandler.readRecords(records):
            address = record["remoteAddress"]
            assert isinstance(address, list)
            if address[0] == "127.0.0.1":
                address = ["127.0.0.1", None]
            found.append((address, record["body"]))
        self.assertEqual(sorted(found), sorted(expected))
        server.stop()
        self.assertIn(server.returncode, (0, -signal.SIGTERM), server.output[-3000:])


class WorkerOwnKeysPolicyTests(SynchronousTestCase):
    """
    Every worker serves an C{ssl:} listener with keys of its own, under
    C{haproxy:} too, with the server's C{--tls-min-version}.
    """

    def test_minimumVersion(self) -> None:
        """
        With C{--tls-min-version 1.3}, a client held to TLS 1.2 is refused on
        every connection (whichever worker takes it); a TLS 1.3 client gets
        the listener's own certificate, behind a PROXY header too.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        ca = CertificateAuthority(os.path.join(directory, "ca"))
        own = ca.server("submission.example.com")
        keys = f"privateKey={own.keyPath}:certKey={own.certificatePath}"
        server, port = startWorkers(
            self,
            ["--tls-min-version", "1.3", "--proxy-trusted", "127.0.0.1/32"],
            directory,
            listen=[
                f"ssl:0:interface=127.0.0.1:{keys}",
                f"haproxy:ssl:0:interface=127.0.0.1:{keys}",
            ],
        )
        proxied = server.ports[1]
        assert isinstance(proxied, int)
        old = ssl.create_default_context(cafile=ca.certificatePath)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        context = ssl.create_default_context(cafile=ca.certificatePath)
        for _ in range(4):
            for header in (b"", b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 25\r\n"):
                for tls, refused in ((old, True), (context, False)):
                    with socket.create_connection(
                        ("127.0.0.1", proxied if header else port), CLIENT_TIMEOUT
                    ) as raw:
                        raw.sendall(header)
                        if refused:
                            with self.assertRaises(ssl.SSLError):
                                tls.wrap_socket(raw, server_hostname="submission.example.com")
                            continue
                        with tls.wrap_socket(raw, server_hostname="submission.example.com") as t:
                            peer = t.getpeercert(binary_form=True)
                            assert peer is not None
                            self.assertEqual(x509.load_der_x509_certificate(peer), own.certificate)
        server.stop()
        self.assertIn(server.returncode, (0, -signal.SIGTERM), server.output[-3000:])


class WorkerLogFileTests(SynchronousTestCase):
    """
    The workers' lines go into the parent's C{--logfile}, which SIGUSR1
    reopens for all of them.
    """

    def failedLogin(self, port: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT) as client:
            client.ehlo()
            client.user, client.password = "alice", "wrong"
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                client.auth("PLAIN", client.auth_plain)

    def test_sessionLinesInLogFile(self) -> None:
        """
        The session lines of every worker (here the failed logins fail2ban
        looks for) are in the log file, in the log's format, every line
        whole; after logrotate moved the file, SIGUSR1 to the parent has
        every worker's lines go into the new one.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "smtpd.log")
        arguments = ["--sink", "--auth", "memory:alice:secret", "--allow-insecure-auth"]
        server, port = startWorkers(self, arguments, directory, logfile=path)
        for _ in range(3):
            self.failedLogin(port)
        server.waitForLog(" auth failed: PLAIN from ", count=3)
        os.rename(path, path + ".1")
        server.signal(signal.SIGUSR1)
        server.waitForLog(f"Log file {path} reopened (SIGUSR1)")
        for _ in range(3):
            self.failedLogin(port)
        server.waitForLog(" auth failed: PLAIN from ", count=6)
        server.stop()
        self.assertIn(server.returncode, (0, -signal.SIGTERM), server.output[-3000:])
        with open(path + ".1", encoding="utf-8") as f:
            rotated = f.read()
        with open(path, encoding="utf-8") as f:
            current = f.read()
        self.assertEqual(rotated.count(" auth failed: "), 3, rotated)
        self.assertEqual(current.count(" auth failed: "), 3, current)
        self.assertEqual(rotated.count("worker ready, pid"), 2, rotated)
        for line in (rotated + current).splitlines():
            self.assertRegex(line, r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000 \[\S+\] |\t)")

    def test_workerStartErrorInLogFile(self) -> None:
        """
        A worker that cannot start (its configuration file was changed to
        something wrong after the parent read it) says why in the log file,
        named, beside the parent's line saying it ended, not only on
        standard error.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "smtpd.log")
        config = os.path.join(directory, "smtpd.toml")
        with open(config, "w") as f:
            f.write("sink = true\n")
        server, port = startWorkers(self, ["--config", config], directory, logfile=path)
        with open(config, "a") as f:
            f.write("bogus = 1\n")
        os.kill(WorkersTests.workerPids(WorkersTests(), server)[0], signal.SIGKILL)
        # Its end by SIGKILL, then its successor's at start.
        server.waitForLog("worker 0 ended (pid ", count=2)
        with open(path, encoding="utf-8") as f:
            log = f.read()
        self.assertIn(
            f"worker 0: twistd smtpd: --config {config!r}: unknown option 'bogus'; see --help",
            log,
        )
        self.assertIn(", exit status 1); restarting in", log)
