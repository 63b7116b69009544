"""
Tests for the parts of L{twisted_smtpd._twistd.workers} that run without
processes: binding the shared sockets and reading them back in a worker.
"""

from __future__ import annotations

import gc
import io
import os
import shutil
import signal
import socket
import sys
import tempfile
import warnings
from typing import Any

from twisted.internet import reactor
from twisted.internet.error import ConnectionDone, ConnectionLost, ProcessDone, ProcessTerminated
from twisted.internet.testing import EventLoggingObserver, MemoryReactor, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from tests.test_deadlines import LogCatcher
from twisted_smtpd._serving.logwriter import BufferedLogWriter
from twisted_smtpd._twistd import tapconfig
from twisted_smtpd._twistd.tap import Options
from twisted_smtpd._twistd.tapconfig import exitWithError
from twisted_smtpd._twistd.workercert import SHARED_CERTIFICATE, removeSharedCertificate
from twisted_smtpd._twistd.workerlisteners import INHERITED, bindListener, inheritedListeners
from twisted_smtpd._twistd.workerprocess import _MAX_PARTIAL
from twisted_smtpd._twistd.workers import (
    _STABLE,
    PARENT_PIPE,
    WorkerPool,
    _Worker,
)
from twisted_smtpd._twistd.workerside import ParentWatch, parentPipe


class BindTests(SynchronousTestCase):
    def test_tcpSocketPerWorker(self) -> None:
        """
        A TCP listener gets one socket per worker, all on the same port.
        """
        spec = bindListener(reactor, "tcp:0:interface=127.0.0.1", 3)
        self.addCleanup(lambda: [s.close() for s in spec.sockets])
        ports = {s.getsockname()[1] for s in spec.sockets}
        self.assertEqual(len(spec.sockets), 3)
        self.assertEqual(len(ports), 1)
        self.assertIs(spec.socketFor(4), spec.sockets[1])
        self.assertTrue(spec.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))

    def test_wrappedDescriptions(self) -> None:
        """
        C{haproxy:} and key-less C{ssl:} listeners bind their TCP socket.
        """
        for description in ("haproxy:tcp:0:interface=127.0.0.1", "ssl:0:interface=127.0.0.1"):
            spec = bindListener(reactor, description, 2)
            for s in spec.sockets:
                s.close()
            self.assertEqual(len(spec.sockets), 2)

    def test_sslWithOwnKeys(self) -> None:
        """
        An C{ssl:} listener with keys of its own binds one TCP socket per
        worker, all on the same port (its files are read with the options,
        L{tests.test_tlslisteners}, and again by each worker).
        """
        ca = CertificateAuthority(self.mktemp())
        issued = ca.server("mail.example.com")
        description = (
            "ssl:0:interface=127.0.0.1"
            f":privateKey={issued.keyPath}:certKey={issued.certificatePath}"
        )
        spec = bindListener(reactor, description, 2)
        for s in spec.sockets:
            self.addCleanup(s.close)
        self.assertEqual(len(spec.sockets), 2)
        self.assertEqual(len({s.getsockname()[1] for s in spec.sockets}), 1)

    def test_refusedBacklogClosesSockets(self) -> None:
        """
        A listener whose backlog the kernel refuses keeps none of the
        sockets made for it open: each is closed before the error goes up,
        not left for the garbage collector (which closes a descriptor that
        is by then perhaps another's, and warns).
        """
        directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "w.sock")
        for description in (
            "tcp:0:interface=127.0.0.1:backlog=99999999999",
            f"unix:{path}:backlog=99999999999",
        ):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ResourceWarning)
                self.assertRaises(OverflowError, bindListener, reactor, description, 2)
                gc.collect()
            unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)]
            self.assertEqual(unclosed, [], description)

    def test_unixShared(self) -> None:
        """
        A UNIX listener is one socket shared by every worker.
        """
        # A socket path is limited to about 100 bytes, and the test's own
        # directory sits under the checkout, which can be deeper than that.
        directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "w.sock")
        spec = bindListener(reactor, f"unix:{path}", 2)
        self.addCleanup(spec.sockets[0].close)
        self.assertEqual(len(spec.sockets), 1)
        self.assertEqual(spec.sockets[0].getsockname(), path)

    def test_unixPathInUse(self) -> None:
        """
        A UNIX listener's path holding a file, or the socket of a server
        still listening, is refused as in use and left as it is; a socket
        nothing listens on any more (its server was killed) is replaced.
        """
        directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "w.sock")
        with open(path, "w") as f:
            f.write("precious")
        error = self.assertRaises(OSError, bindListener, reactor, f"unix:{path}", 2)
        self.assertEqual(error.filename, path)
        with open(path) as f:
            self.assertEqual(f.read(), "precious")
        os.unlink(path)
        live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(live.close)
        live.bind(path)
        live.listen(5)
        self.assertRaises(OSError, bindListener, reactor, f"unix:{path}", 2)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
        live.close()
        spec = bindListener(reactor, f"unix:{path}", 2)
        self.addCleanup(spec.sockets[0].close)
        self.assertEqual(spec.sockets[0].getsockname(), path)

    def test_unixPathTooLong(self) -> None:
        """
        A UNIX listener's path too long for a socket is refused with
        C{--workers} in the line of one process, before the parent binds
        anything; binding it would say C{AF_UNIX path too long}, not
        C{[Errno None] None: PATH}.
        """
        from twisted.python import usage

        from twisted_smtpd._serving.listeners import listenReason
        from twisted_smtpd._twistd.tapconfig import MAX_SOCKET_PATH

        directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "x" * 120)
        description = "unix:" + path
        e = self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            ["--sink", "--workers", "2", "--listen", description],
        )
        self.assertEqual(
            str(e),
            f"--listen {description!r}: the UNIX socket path is too long:"
            f" {len(path)} bytes, at most {MAX_SOCKET_PATH}",
        )
        error = self.assertRaises(OSError, bindListener, reactor, description, 2)
        self.assertEqual(listenReason(error), "AF_UNIX path too long")

    def test_unsupported(self) -> None:
        """
        Other endpoint kinds are refused with a clear error.
        """
        self.assertRaises(ValueError, bindListener, reactor, "systemd:domain=INET:index=0", 2)

    def test_inherited(self) -> None:
        """
        A worker reads its sockets back from the environment.
        """
        environ = {INHERITED: "3,2,tcp:25\n4,1,haproxy:unix:/run/x"}
        self.assertEqual(
            inheritedListeners(environ), [(3, 2, "tcp:25"), (4, 1, "haproxy:unix:/run/x")]
        )
        self.assertEqual(inheritedListeners({}), [])


class OptionTests(SynchronousTestCase):
    def test_workersBindAtParse(self) -> None:
        """
        C{--workers 2} binds the listeners while the options are parsed and
        keeps the command line for the workers.
        """
        config = Options()
        config.parseOptions(["--workers", "2", "--sink", "--listen", "tcp:0:interface=127.0.0.1"])
        listeners = config["workerListeners"]
        self.addCleanup(lambda: [s.close() for spec in listeners for s in spec.sockets])
        self.assertEqual(len(listeners), 1)
        self.assertEqual(len(listeners[0].sockets), 2)
        self.assertEqual(
            config["arguments"],
            ["--workers", "2", "--sink", "--listen", "tcp:0:interface=127.0.0.1"],
        )

    def test_workersMustBePositive(self) -> None:
        """
        C{--workers 0} is refused.
        """
        from twisted.python.usage import UsageError

        self.assertRaises(UsageError, Options().parseOptions, ["--workers", "0", "--sink"])

    def test_strayInherited(self) -> None:
        """
        C{TWISTED_SMTPD_INHERITED}, set by the parent of C{--workers} for
        its workers only, found in the environment of a server started
        otherwise (inherited from a program a worker ran) with a value no
        parent wrote, or naming a descriptor that is no socket, is refused
        in one line naming the variable: not a traceback at start.
        """
        from twisted.python.usage import UsageError

        with open(os.devnull) as f:
            notSocket = f.fileno()
            for value, why in [
                ("garbage", "'garbage' is not a socket the parent of --workers handed on"),
                ("x,2,tcp:25", "'x,2,tcp:25' is not a socket the parent of --workers handed on"),
                (
                    f"{notSocket},2,tcp:25",
                    f"descriptor {notSocket} is not a socket the parent of --workers handed on",
                ),
            ]:
                self.patch(os, "environ", {**os.environ, INHERITED: value})
                e = self.assertRaises(UsageError, Options().parseOptions, ["--sink"])
                self.assertEqual(
                    str(e),
                    f"{INHERITED}: {why}; it is set only for the workers of --workers: unset it",
                )


class ParentWatchTests(SynchronousTestCase):
    """
    L{ParentWatch}: a worker stops when the pipe from its parent ends.
    """

    def watch(self, running: bool = True) -> tuple[ParentWatch, MemoryReactor, int]:
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        memory = MemoryReactor()
        memory.running = running
        # Twisted before 24.3 starts a MemoryReactor as already stopped.
        memory.hasStopped = False
        watch = ParentWatch(readEnd, reactor=memory)
        watch.startService()
        return watch, memory, writeEnd

    def test_parentGoneStopsReactor(self) -> None:
        """
        The end of the pipe (the parent's end closed, as when it is killed)
        stops the reactor and logs one line; before that, nothing happens.
        """
        watch, memory, writeEnd = self.watch()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        (reader,) = memory.getReaders()
        reader.doRead()  # type: ignore[attr-defined]
        self.assertFalse(watch.parentGone)
        self.assertFalse(memory.hasStopped)
        os.close(writeEnd)
        reader.doRead()  # type: ignore[attr-defined]
        self.assertTrue(watch.parentGone)
        self.assertTrue(memory.hasStopped)
        self.assertEqual(memory.getReaders(), [])
        self.assertEqual(len(events), 1)
        self.assertIn("Parent process gone", formatEvent(events[0]))

    def test_readyOnceReactorRuns(self) -> None:
        """
        The worker says it is ready (its reactor runs, so SIGTERM now stops
        it gracefully) only once the reactor runs, and once.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        watch, memory, writeEnd = self.watch(running=False)
        self.addCleanup(os.close, writeEnd)
        self.assertEqual(len(events), 0)
        memory.run()
        self.assertEqual(len(events), 1)
        self.assertEqual(formatEvent(events[0]), f"worker ready, pid {os.getpid()}")

    def test_announceReadyOnceReactorRuns(self) -> None:
        """
        The worker tells its parent it is ready (closing its standard
        input) once the reactor runs, and once.
        """
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        self.addCleanup(os.close, writeEnd)
        memory = MemoryReactor()
        memory.hasStopped = False
        announced: list[None] = []
        watch = ParentWatch(readEnd, reactor=memory, announceReady=lambda: announced.append(None))
        watch.startService()
        self.assertEqual(announced, [])
        memory.run()
        self.assertEqual(announced, [None])

    def test_hangUpStopsReactor(self) -> None:
        """
        A reactor that reports the hang-up as a lost connection (epoll does,
        for a pipe whose other end closed) stops the reactor too, once.
        """
        watch, memory, writeEnd = self.watch()
        os.close(writeEnd)
        (reader,) = memory.getReaders()
        reader.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        reader.doRead()  # type: ignore[attr-defined]
        self.assertTrue(watch.parentGone)
        self.assertTrue(memory.hasStopped)

    def test_shutdownIsNotParentGone(self) -> None:
        """
        The reactor disconnecting every reader as it shuts down (a worker
        stopping on its parent's SIGTERM) while the parent's end of the
        pipe is open: no "Parent process gone" warning, and the worker's
        lines still go to its parent.
        """
        watch, memory, writeEnd = self.watch()
        self.addCleanup(os.close, writeEnd)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        (reader,) = memory.getReaders()
        reader.connectionLost(Failure(ConnectionLost()))  # type: ignore[attr-defined]
        self.assertFalse(watch.parentGone)
        self.assertFalse(memory.hasStopped)
        self.assertEqual([formatEvent(e) for e in events], [])

    def test_parentGoneRemovesSharedCertificate(self) -> None:
        """
        Once the parent is gone (killed, it could not remove them), the
        worker removes the certificate and key its parent made for the
        workers, and their directory; not before.
        """
        directory = tempfile.mkdtemp(prefix="smtpd-tls-")
        self.addCleanup(shutil.rmtree, directory, True)
        for name in ("cert.pem", "key.pem"):
            with open(os.path.join(directory, name), "w") as f:
                f.write(name)
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        memory = MemoryReactor()
        memory.running = True
        memory.hasStopped = False
        ParentWatch(readEnd, reactor=memory, sharedCertificate=directory).startService()
        (reader,) = memory.getReaders()
        reader.doRead()  # type: ignore[attr-defined]
        self.assertEqual(sorted(os.listdir(directory)), ["cert.pem", "key.pem"])
        os.close(writeEnd)
        reader.doRead()  # type: ignore[attr-defined]
        self.assertFalse(os.path.exists(directory))

    def test_parentAliveKeepsSharedCertificate(self) -> None:
        """
        A worker that stops by itself while its parent lives (SIGTERM sent
        to it alone) leaves the certificate its parent made to the worker
        started in its place, though its reactor's shutdown stopped
        watching the pipe (disconnecting every reader) first.
        """
        directory = tempfile.mkdtemp(prefix="smtpd-tls-")
        self.addCleanup(shutil.rmtree, directory, True)
        for name in ("cert.pem", "key.pem"):
            with open(os.path.join(directory, name), "w") as f:
                f.write(name)
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        self.addCleanup(os.close, writeEnd)
        memory = MemoryReactor()
        memory.running = True
        memory.hasStopped = False
        watch = ParentWatch(readEnd, reactor=memory, sharedCertificate=directory)
        watch.startService()
        (reader,) = memory.getReaders()
        watch.stopService()
        reader.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        for function, args, kw in memory.triggers["after"]["shutdown"]:
            function(*args, **kw)
        self.assertEqual(sorted(os.listdir(directory)), ["cert.pem", "key.pem"])

    def test_removesOnlyCertificateFiles(self) -> None:
        """
        Only the certificate, the key and their directory are removed: a
        directory holding anything else stays, with that.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        for name in ("cert.pem", "key.pem", "other"):
            with open(os.path.join(directory, name), "w") as f:
                f.write(name)
        removeSharedCertificate(directory)
        self.assertEqual(os.listdir(directory), ["other"])
        removeSharedCertificate(os.path.join(directory, "missing"))

    def test_watchesWhileStopping(self) -> None:
        """
        Stopping the service (SIGTERM: the worker finishes its
        transactions) leaves the reader in place: a parent killed meanwhile
        is still seen gone, and what it made for its workers removed.
        """
        watch, memory, writeEnd = self.watch()
        (reader,) = memory.getReaders()
        watch.stopService()
        self.assertEqual(memory.getReaders(), [reader])
        os.close(writeEnd)
        reader.doRead()  # type: ignore[attr-defined]
        self.assertTrue(watch.parentGone)

    def test_parentPipeVariable(self) -> None:
        """
        L{parentPipe} reads the descriptor number a worker was given.
        """
        self.assertEqual(parentPipe({PARENT_PIPE: "5"}), 5)
        self.assertIsNone(parentPipe({}))
        self.assertIsNone(parentPipe({PARENT_PIPE: "x"}))


class _Writer(BufferedLogWriter):
    """
    A log writer over a string, writing each line at once (no reactor runs).
    """

    def __init__(self, json: bool = False) -> None:
        self.stream = io.StringIO()
        super().__init__(self.stream, json=json, reactor=MemoryReactor())


class WorkerLogTests(SynchronousTestCase):
    """
    The workers' log lines go into the parent's log writer, whole lines
    only.
    """

    def pool(self, json: bool = False) -> tuple[WorkerPool, _Writer]:
        writer = _Writer(json)
        return WorkerPool([], 2, [], reactor=MemoryReactor(), logWriter=writer), writer

    def test_wholeLinesOnly(self) -> None:
        """
        Lines two workers write, split anywhere and interleaved chunk by
        chunk, reach the parent's log each whole, in the order each worker
        finished it; a worker's last, unfinished line is written when its
        output ends.
        """
        first = (
            b"2026-01-02T10:00:00+0000 [ns#info] one a\n2026-01-02T10:00:00+0000 [ns#info] one b\n"
        )
        second = b"2026-01-02T10:00:01+0000 [ns#info] two a\n\ttraceback line\n2026-01-0"
        for size in range(1, max(len(first), len(second)) + 1):
            pool, writer = self.pool()
            workers = [_Worker(pool, 0), _Worker(pool, 1)]
            for offset in range(0, max(len(first), len(second)), size):
                workers[0].outReceived(first[offset : offset + size])
                workers[1].outReceived(second[offset : offset + size])
            for worker in workers:
                worker.outConnectionLost()
            lines = writer.stream.getvalue().splitlines()
            self.assertEqual(
                sorted(lines),
                sorted(
                    [
                        "2026-01-02T10:00:00+0000 [ns#info] one a",
                        "2026-01-02T10:00:00+0000 [ns#info] one b",
                        "2026-01-02T10:00:01+0000 [ns#info] two a",
                        "\ttraceback line",
                        "2026-01-0",
                    ]
                ),
                size,
            )
            self.assertLess(
                lines.index("2026-01-02T10:00:01+0000 [ns#info] two a"),
                lines.index("\ttraceback line"),
            )

    def test_lineTooLongDropped(self) -> None:
        """
        A line over C{_MAX_PARTIAL} octets is dropped whole, with one
        warning, never passed on in pieces (in JSON, pieces are no JSON);
        the lines around it are passed on.
        """
        log = LogCatcher(self)
        pool, writer = self.pool(json=True)
        worker = _Worker(pool, 0)
        before = b'{"text": "before"}\n'
        after = b'{"text": "after"}\n'
        long = b'{"text": "' + b"A" * (_MAX_PARTIAL + 500_000) + b'"}\n'
        data = before + long + after
        for offset in range(0, len(data), 65536):
            worker.outReceived(data[offset : offset + 65536])
        worker.outConnectionLost()
        self.assertEqual(
            writer.stream.getvalue().splitlines(), ['{"text": "before"}', '{"text": "after"}']
        )
        self.assertEqual(len(log.matching("worker 0: a log line over")), 1)

    def test_strayLine(self) -> None:
        """
        A line in another format than the log's (not written by the
        worker's log writer) is logged as the parent's own line naming the
        worker, its control characters escaped.
        """
        pool, writer = self.pool(json=True)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        _Worker(pool, 1).outReceived(b'{"text": "a"}\nnot json \x1b[2J\n{"text": "b"}\n')
        self.assertEqual(writer.stream.getvalue(), '{"text": "a"}\n{"text": "b"}\n')
        self.assertEqual([formatEvent(event) for event in events], ["worker 1: not json \\x1b[2J"])


class _Process:
    """
    A process L{_ProcessReactor} started: its pid and the signals sent to it.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        #: What was written to it, by child descriptor, in order.
        self.written: list[tuple[int, bytes]] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def writeToChild(self, childFD: int, data: bytes) -> None:
        self.written.append((childFD, data))


class _ProcessReactor(MemoryReactorClock):
    """
    A reactor whose processes are recorded, never run.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[_Worker, _Process]] = []
        self.environments: list[dict[str, str]] = []
        self.childFDs: list[dict[int, int | str]] = []

    def spawnProcess(self, protocol: _Worker, *args: object, **kw: Any) -> _Process:
        process = _Process(1000 + len(self.spawned))
        self.spawned.append((protocol, process))
        self.environments.append(kw["env"])
        self.childFDs.append(kw["childFDs"])
        return process


def _exited(code: int | None = None, signal: int | None = None) -> Failure:
    return Failure(ProcessTerminated(code, signal))


class _PoolTestCase(SynchronousTestCase):
    """
    Tests of a L{WorkerPool} whose processes are recorded, not started.
    """

    def pool(self, count: int = 2, **kw: Any) -> tuple[WorkerPool, _ProcessReactor, LogCatcher]:
        """
        A pool of C{count} workers, started, its processes recorded;
        stopped at the end of the test, every process still there exiting.
        """
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        log = LogCatcher(self)
        clock = _ProcessReactor()
        pool = WorkerPool([], count, [], reactor=clock, **kw)
        pool.startService()
        self.addCleanup(self.stop, pool, clock)
        return pool, clock, log

    def stop(self, pool: WorkerPool, clock: _ProcessReactor) -> None:
        stopping = pool.stopService()
        for worker, _ in clock.spawned:
            if not worker.ended.called:
                worker.processEnded(Failure(ProcessDone(0)))
        self.successResultOf(stopping)


class RestartTests(SynchronousTestCase):
    """
    A worker that ends is started again after a pause that grows while it
    keeps ending.
    """

    def pool(self) -> tuple[WorkerPool, _ProcessReactor, LogCatcher]:
        log = LogCatcher(self)
        clock = _ProcessReactor()
        pool = WorkerPool([], 1, [], reactor=clock)
        pool._spawn(0)
        return pool, clock, log

    def endLatest(self, clock: _ProcessReactor, reason: Failure) -> None:
        worker, _ = clock.spawned[-1]
        worker.processEnded(reason)

    def test_pauseGrows(self) -> None:
        """
        A worker ending at once each time is started again after 0.5, 1,
        2, ... seconds, at most 30.
        """
        pool, clock, log = self.pool()
        pauses = []
        for _ in range(9):
            self.endLatest(clock, _exited(1))
            (call,) = clock.getDelayedCalls()
            pauses.append(call.getTime() - clock.seconds())
            clock.advance(pauses[-1])
        self.assertEqual(pauses, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])
        self.assertEqual(len(clock.spawned), 10)
        self.assertEqual(pool.restarts, 9)

    def test_pauseShortAgainAfterRunningWell(self) -> None:
        """
        Once a worker has run a minute, its end is a new failure: it is
        started again after half a second, however many ends came before
        (the pause would otherwise stay at its longest for good after a
        few ends over the server's life, such as an occasional OOM kill).
        """
        pool, clock, log = self.pool()
        for _ in range(8):
            self.endLatest(clock, _exited(1))
            (call,) = clock.getDelayedCalls()
            clock.advance(call.getTime() - clock.seconds())
        clock.advance(_STABLE)
        self.endLatest(clock, _exited(None, 9))
        (call,) = clock.getDelayedCalls()
        self.assertEqual(call.getTime() - clock.seconds(), 0.5)
        self.assertEqual(
            log.matching("worker 0 ended")[-1],
            "worker 0 ended (pid 1008, killed by SIGKILL, signal 9); restarting in 0.5s",
        )
        # Ending at once again, it is one more of a new series.
        clock.advance(0.5)
        self.endLatest(clock, _exited(1))
        (call,) = clock.getDelayedCalls()
        self.assertEqual(call.getTime() - clock.seconds(), 1.0)


class EnvironmentTests(SynchronousTestCase):
    """
    What a worker finds in its environment.
    """

    def test_sharedCertificateDirectory(self) -> None:
        """
        A worker is told the directory of the certificate its parent made
        (to remove once the parent is gone) only when its parent made one:
        never one this process was itself told of.
        """
        clock = _ProcessReactor()
        pool = WorkerPool([], 1, [], reactor=clock)
        os.environ[SHARED_CERTIFICATE] = "/somewhere"
        self.addCleanup(os.environ.pop, SHARED_CERTIFICATE, None)
        pool._spawn(0)
        self.assertNotIn(SHARED_CERTIFICATE, clock.environments[-1])
        pool.extraEnvironment = {SHARED_CERTIFICATE: "/tmp/smtpd-tls-x"}
        pool._spawn(0)
        self.assertEqual(clock.environments[-1][SHARED_CERTIFICATE], "/tmp/smtpd-tls-x")


class SignalTests(SynchronousTestCase):
    """
    The signals the parent passes on to its workers.
    """

    def test_hangupOnceReady(self) -> None:
        """
        SIGHUP goes at once to a worker that is ready (it closed its
        standard input); one still starting, which SIGHUP would end, gets
        it once it is ready, once.  SIGTERM goes to every worker.
        """
        clock = _ProcessReactor()
        pool = WorkerPool([], 2, [], reactor=clock)
        pool._spawn(0)
        pool._spawn(1)
        (first, firstProcess), (second, secondProcess) = clock.spawned
        first.inConnectionLost()
        pool.signalWorkers("HUP")
        self.assertEqual(firstProcess.signals, ["HUP"])
        self.assertEqual(secondProcess.signals, [])
        second.inConnectionLost()
        self.assertEqual(secondProcess.signals, ["HUP"])
        second.inConnectionLost()
        self.assertEqual(secondProcess.signals, ["HUP"])
        pool._spawn(1)
        pool.signalWorkers("TERM")
        self.assertEqual(firstProcess.signals, ["HUP", "TERM"])
        self.assertEqual(clock.spawned[-1][1].signals, ["TERM"])

    def test_hangupWhileStopping(self) -> None:
        """
        While the workers stop, SIGHUP is still theirs: the previous
        handler (the default one ends the parent) comes back only once
        every worker has ended.
        """
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        clock = _ProcessReactor()
        pool = WorkerPool([], 1, [], reactor=clock)
        pool.startService()
        ((worker, process),) = clock.spawned
        worker.inConnectionLost()
        stopping = pool.stopService()
        self.assertEqual(process.signals, ["TERM"])
        handler = signal.getsignal(signal.SIGHUP)
        self.assertNotIn(handler, (previous, signal.SIG_DFL, None))
        pool.signalWorkers("HUP")
        self.assertEqual(process.signals, ["TERM", "HUP"])
        worker.processEnded(_exited(0))
        self.successResultOf(stopping)
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)

    def test_stopSaysStopping(self) -> None:
        """
        Stopping, the parent writes L{PARENT_STOPPING} into the pipe each
        worker watches, so that a worker stopping then removes what the
        parent made for it, should the parent die first; a worker that
        stops alone (its parent still running) leaves it.
        """
        from twisted_smtpd._twistd.workers import PARENT_STOPPING

        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
        clock = _ProcessReactor()
        pool = WorkerPool([], 1, [], reactor=clock)
        pool.startService()
        ((worker, process),) = clock.spawned
        self.assertEqual(
            worker.parentPipeFD, int(clock.environments[0]["TWISTED_SMTPD_PARENT_PIPE"])
        )
        worker.inConnectionLost()
        self.assertEqual(process.written, [])
        stopping = pool.stopService()
        self.assertEqual(process.written, [(worker.parentPipeFD, PARENT_STOPPING)])
        worker.processEnded(_exited(0))
        self.successResultOf(stopping)
        self.assertEqual(process.written, [(worker.parentPipeFD, PARENT_STOPPING)])

    def test_stoppingOnceEveryWorkerReady(self) -> None:
        """
        A worker still starting when the parent stops has yet to read the
        shared certificate, which a worker told the parent stops removes
        as it ends: the parent says so to none of them until every worker
        still there is ready (or has ended).
        """
        from twisted_smtpd._twistd.workers import PARENT_STOPPING

        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
        clock = _ProcessReactor()
        pool = WorkerPool([], 3, [], reactor=clock)
        pool.startService()
        (first, firstProcess), (second, secondProcess), (third, thirdProcess) = clock.spawned
        first.inConnectionLost()
        stopping = pool.stopService()
        self.assertEqual(firstProcess.written, [])
        second.inConnectionLost()
        self.assertEqual(firstProcess.written, [])
        third.processEnded(_exited(1))
        told = [(first.parentPipeFD, PARENT_STOPPING)]
        self.assertEqual(firstProcess.written, told)
        self.assertEqual(secondProcess.written, [(second.parentPipeFD, PARENT_STOPPING)])
        self.assertEqual(thirdProcess.written, [])
        first.processEnded(_exited(0))
        second.processEnded(_exited(0))
        self.successResultOf(stopping)
        self.assertEqual(firstProcess.written, told)


class EndedTests(SynchronousTestCase):
    """
    What the pool tells of a worker that ended.
    """

    def test_endedCallbacks(self) -> None:
        """
        Each worker that ends while the pool runs is reported by its
        process id (the metrics drop what it counted as open); not while
        the pool stops.
        """
        clock = _ProcessReactor()
        pool = WorkerPool([], 2, [], reactor=clock)
        ended: list[int] = []
        pool.onWorkerEnded.append(ended.append)
        pool._spawn(0)
        pool._spawn(1)
        (first, firstProcess), (second, secondProcess) = clock.spawned
        first.processEnded(_exited(None, 9))
        self.assertEqual(ended, [firstProcess.pid])
        pool.stopService()
        second.processEnded(_exited(0))
        self.assertEqual(ended, [firstProcess.pid])


class _DyingReactor(_ProcessReactor):
    """
    A reactor whose processes end before C{spawnProcess} returns, as
    Twisted reports a child reaped at once (its C{pid} then C{None}).
    """

    def spawnProcess(self, protocol: _Worker, *args: object, **kw: Any) -> _Process:
        process = super().spawnProcess(protocol, *args, **kw)
        protocol.makeConnection(process)  # type: ignore[arg-type]
        protocol.processExited(_exited(1))
        process.pid = None  # type: ignore[assignment]
        return process


class EndedAtOnceTests(SynchronousTestCase):
    """
    A worker whose process ends before C{spawnProcess} returns (a Python
    that cannot start, killed at once) is named by its process id all the
    same.
    """

    def test_namedByItsPid(self) -> None:
        """
        Its start and its end name the pid it had, never C{pid None}, and
        the callbacks of C{onWorkerEnded} (the metrics it left) get it.
        """
        log = LogCatcher(self)
        clock = _DyingReactor()
        pool = WorkerPool([], 1, [], reactor=clock)
        ended: list[int] = []
        pool.onWorkerEnded.append(ended.append)
        pool._spawn(0)
        ((worker, _),) = clock.spawned
        worker.processEnded(_exited(1))
        self.assertEqual(log.matching("pid None"), [])
        self.assertEqual(ended, [1000])
        self.assertEqual(
            log.matching("worker 0"),
            [
                "worker 0 started, pid 1000",
                "worker 0 ended (pid 1000, exit status 1); restarting in 0.5s",
            ],
        )


class StartErrorTests(SynchronousTestCase):
    """
    A configuration error ends a worker with one line on its standard
    error and, for its parent's log, on its standard output.
    """

    def exit(self, stdout: object, stderr: object) -> None:
        self.patch(sys, "__stdout__", stdout)
        self.patch(sys, "__stderr__", stderr)
        with self.assertRaises(SystemExit):
            exitWithError("--config 'x': unknown option 'y'")

    def test_workerLogsStartError(self) -> None:
        """
        In a worker, the line goes to standard output (the pipe to its
        parent) as well as standard error.
        """
        self.patch(os, "environ", {**os.environ, INHERITED: "3,2,tcp:25"})
        stdout, stderr = io.StringIO(), io.StringIO()
        self.exit(stdout, stderr)
        line = "twistd smtpd: --config 'x': unknown option 'y'; see --help\n"
        self.assertEqual((stdout.getvalue(), stderr.getvalue()), (line, line))
        self.assertEqual(tapconfig._INHERITED, INHERITED)

    def test_sameFileOnce(self) -> None:
        """
        When standard output and standard error are the same file (a
        terminal, the journal), the line is written once.
        """
        self.patch(os, "environ", {**os.environ, INHERITED: "3,2,tcp:25"})
        path = self.mktemp()
        with open(path, "w") as stdout, open(path, "a") as stderr:
            self.exit(stdout, stderr)
        with open(path) as f:
            self.assertEqual(f.read().count("twistd smtpd:"), 1)

    def test_notInWorker(self) -> None:
        """
        Outside a worker, standard output gets nothing.
        """
        environ = dict(os.environ)
        environ.pop(INHERITED, None)
        self.patch(os, "environ", environ)
        stdout, stderr = io.StringIO(), io.StringIO()
        self.exit(stdout, stderr)
        self.assertEqual(stdout.getvalue(), "")
        self.assertIn("unknown option", stderr.getvalue())
