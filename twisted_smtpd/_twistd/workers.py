# -*- test-case-name: tests.integration.test_workers -*-
"""
C{twistd smtpd --workers N}: serve the same listeners from N processes.

The parent binds every listening socket once, before any worker starts, and
never accepts on them.  A TCP listener gets one socket per worker, all bound
to the same address with C{SO_REUSEPORT}, so the kernel spreads connections
across the workers; other kinds (C{unix:}) share one socket.  Each worker is
C{twistd smtpd} again, run with the same options, that adopts its sockets
(C{adoptStreamPort}) instead of binding.  A worker that dies is started again
(after a pause that grows while it keeps dying, from half a second to 30
seconds, and starts again from half a second once it ran a minute); the sockets stay open in the
parent meanwhile, so connections wait in the backlog rather than being
refused.  SIGTERM (stopping the service) sends SIGTERM to every worker, which
closes gracefully, and waits for them.

Each worker writes its log lines, in the parent's format, to a pipe the
parent reads (its standard output); the parent writes them, whole lines
only, into its own log with its own lines: the log file, which SIGUSR1
reopens for all of them, or standard output.  With C{twistd --syslog} and
text, each worker logs to syslog itself.

Workers never outlive their parent: each is handed the reading end of a pipe
whose writing end only the parent holds (L{PARENT_PIPE} names it); the
worker's side (L{twisted_smtpd._twistd.workerside}) stops when it ends.
A worker that gives no sign of life for C{--worker-timeout} seconds is
killed and started again (L{Watchdog}).  The sockets are bound, and found
by the workers, by L{twisted_smtpd._twistd.workerlisteners}.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._core.printable import printable
from twisted_smtpd._serving.logwriter import BufferedLogWriter
from twisted_smtpd._twistd import tapconfig
from twisted_smtpd._twistd.heldsignals import HELD, blocked
from twisted_smtpd._twistd.logfile import GivesLogObserver, ReopenOnSignal
from twisted_smtpd._twistd.startcopies import START_COPIES, copiesFile
from twisted_smtpd._twistd.stopsignals import StopOnce
from twisted_smtpd._twistd.threadstop import boundReactorThreads
from twisted_smtpd._twistd.workercert import SHARED_CERTIFICATE
from twisted_smtpd._twistd.workerlisteners import INHERITED, ListenerSpec
from twisted_smtpd._twistd.workerprocess import _Worker
from twisted_smtpd._twistd.workerwatchdog import DEFAULT_TIMEOUT, HEARTBEAT, Watchdog

#: The environment variable naming the worker's end of the pipe from its
#: parent (a file descriptor number).
PARENT_PIPE = "TWISTED_SMTPD_PARENT_PIPE"

#: What the parent writes into that pipe when it stops (once every worker
#: is ready, L{WorkerPool._sayStopping}): the worker stopping then removes
#: what the parent made for its workers (the parent may die before it
#: does); one stopping alone leaves it to the worker started in its place.
PARENT_STOPPING = b"s"

#: The environment variable giving a worker its index, so that its own
#: log lines can name it as its parent's do (C{worker 1, pid 4242}).
WORKER_INDEX = "TWISTED_SMTPD_WORKER_INDEX"

_RUN_TWISTD = "from twisted_smtpd._twistd.workerside import runWorker; runWorker()"


#: Seconds a worker must run for its end to count as a new failure rather
#: than one more of a series: its restart pause starts again from the
#: shortest.
_STABLE = 60.0


#: The most of a worker's unfinished last line logged (L{WorkerPool._workerLog}).
_MAX_CUT = 1000

#: The most of a line of a worker's output that is no line of the log
#: logged: room for a worker's own line saying why it cannot start
#: (L{runWorker <twisted_smtpd._twistd.workerside.runWorker>}).
_MAX_STRAY = 2000


def _isJSONObject(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        # Not JSON; or nested too deep to read, so no line of this log.
        return False


def _stoppedAsTold(status: object) -> bool:
    """
    Whether a worker told to stop (SIGTERM) ended as it should: by exiting
    with status 0, or by the signal that stopped it (C{twistd} ends by it
    again): SIGTERM, or SIGINT, which Ctrl-C sends to the parent and its
    workers alike.
    """
    number = getattr(status, "signal", None)
    if number is None:
        return getattr(status, "exitCode", None) == 0
    return number in (signal.SIGTERM, signal.SIGINT)


def howEnded(status: object) -> str:
    """
    How a process ended, for a log line: C{"exit status 1"}, C{"killed by
    SIGKILL, signal 9"}.

    @param status: The reason C{processEnded} was given
        (L{ProcessTerminated <twisted.internet.error.ProcessTerminated>},
        L{ProcessDone <twisted.internet.error.ProcessDone>}).
    """
    number = getattr(status, "signal", None)
    if isinstance(number, int):
        try:
            name = signal.Signals(number).name
        except ValueError:
            return f"killed by signal {number}"
        return f"killed by {name}, signal {number}"
    return f"exit status {getattr(status, 'exitCode', None)}"


class WorkerPool(GivesLogObserver):
    """
    The parent of N worker processes.

    @ivar workers: The running workers by index.
    @ivar restarts: How many times a worker was started again.
    @ivar extraArguments: Arguments added after C{workerArguments} for
        workers started from now on.
    @ivar extraEnvironment: Variables added to the environment of workers
        started from now on.
    @ivar onWorkerEnded: Called with the process id of each worker that
        ended (while running, not while stopping).
    """

    _log = Logger()

    def __init__(
        self,
        listeners: Sequence[ListenerSpec],
        count: int,
        workerArguments: Sequence[str],
        *,
        reactor: Any = None,
        stopTimeout: float = 60.0,
        logWriter: BufferedLogWriter | None = None,
        stopOnce: bool = False,
        workerTimeout: float = DEFAULT_TIMEOUT,
        startCopies: Mapping[str, bytes] | None = None,
    ) -> None:
        """
        @param logWriter: The parent's log writer, into which the workers'
            lines (their standard output) go; without it (C{twistd --syslog}
            with text), the workers keep the parent's standard output.
        @param stopOnce: Whether a second SIGTERM or SIGINT while the
            reactor stops is ignored (L{StopOnce}), and the stop of the
            reactor's thread pool bounded (L{boundReactorThreads}):
            C{twistd smtpd} does.
        @param workerTimeout: Seconds a worker may give no sign of life
            before it is killed and started again (L{Watchdog}); 0: never.
        @param startCopies: The files this process read at start, by path,
            for each worker to read those it cannot open itself
            (L{twisted_smtpd._twistd.startcopies}).
        """
        self._stopOnce = stopOnce
        self._startCopies = dict(startCopies or {})
        self._copiesFD: int | None = None
        self._listeners = list(listeners)
        self._writer = self.logObserver = logWriter
        self._reopener: ReopenOnSignal | None = None
        self._count = count
        self._arguments = list(workerArguments)
        self._reactor = reactor
        self._stopTimeout = stopTimeout
        self._stopping = False
        self._saidStopping = False
        self._failures: dict[int, int] = {}
        self._pending: dict[int, IDelayedCall] = {}
        self.workers: dict[int, Any] = {}
        self.restarts = 0
        self.extraArguments: list[str] = []
        self.extraEnvironment: dict[str, str] = {}
        self.onWorkerEnded: list[Callable[[int], object]] = []
        self._previousHangup: Any = None
        self._workerTimeout = workerTimeout
        self._watchdog: Watchdog | None = None

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def startService(self) -> None:
        """
        Start every worker; SIGHUP is passed on to them (certificate
        reload), SIGUSR1 reopens the log file the workers' lines go into.
        """
        super().startService()
        for spec in self._listeners:
            s = spec.sockets[0]
            where = s.getsockname()
            port = where[1] if isinstance(where, tuple) else where
            self._log.info(
                "listening: {description} on {address} ({count} workers)",
                # From the command line: a control character would reach
                # the terminal or the log file.
                description=printable(spec.description),
                address=f"{where[0]}:{port}" if isinstance(where, tuple) else repr(port),
                port=port,
                count=self._count,
            )
        if threading.current_thread() is threading.main_thread():
            self._previousHangup = HELD.handle(signal.SIGHUP, self._hangup)
        self._reopener = ReopenOnSignal(self._writer, self.reactor)
        self._reopener.install()
        if self._stopOnce:
            StopOnce(self.reactor).install()
            boundReactorThreads(self.reactor)
        if self._workerTimeout > 0:
            self._watchdog = Watchdog(
                self._workerTimeout, lambda: self.workers.values(), self.reactor
            )
        for index in range(self._count):
            self._spawn(index)
        if self._watchdog is not None:
            self._watchdog.start()

    def _hangup(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.signalWorkers, "HUP")

    def signalWorkers(self, name: str) -> None:
        """
        Send signal C{name} (C{"HUP"}, C{"TERM"}, ...) to every worker.

        A worker still starting gets SIGHUP once it is ready: until its
        handler is in place, SIGHUP would end it.
        """
        for process, protocol in list(self.workers.values()):
            if name == "HUP" and not protocol.ready:
                protocol.hangupPending = True
                continue
            with suppress(ProcessExitedAlready):
                process.signalProcess(name)

    def _workerReady(self, worker: _Worker) -> None:
        if self._stopping:
            self._sayStopping()
        current = self.workers.get(worker.index)
        if current is None or current[1] is not worker or not worker.hangupPending:
            return
        worker.hangupPending = False
        with suppress(ProcessExitedAlready):
            current[0].signalProcess("HUP")

    def _spawn(self, index: int) -> None:
        self._pending.pop(index, None)
        if self._stopping:
            return
        childFDs: dict[int, int | str] = {0: "w", 1: 1 if self._writer is None else "r", 2: 2}
        lines = []
        fd = 3
        for spec in self._listeners:
            s = spec.socketFor(index)
            childFDs[fd] = s.fileno()
            lines.append(f"{fd},{int(s.family)},{spec.description}")
            fd += 1
        # The worker watches this pipe; only this process holds its other
        # end, so the worker reads end-of-file once this process is gone.
        childFDs[fd] = "w"
        env = dict(os.environ)
        env.pop(HEARTBEAT, None)
        env.pop(START_COPIES, None)
        protocol = _Worker(self, index)
        if self._watchdog is not None:
            # Its signs of life, written by its reactor.
            protocol.heartbeatFD = fd + 1
            childFDs[fd + 1] = "r"
            env[HEARTBEAT] = f"{fd + 1},{self._watchdog.interval}"
        if self._startCopies and self._copiesFD is None:
            try:
                self._copiesFD = copiesFile(self._startCopies)
            except OSError as e:
                self._log.warn(
                    "the files read at start cannot be handed to the workers ({error});"
                    " each reads them itself",
                    error=tapconfig.reason(e),
                )
                self._startCopies = {}
        if self._copiesFD is not None:
            # The files read at start, for those the worker cannot open.
            copiesAt = max(childFDs) + 1
            childFDs[copiesAt] = self._copiesFD
            env[START_COPIES] = str(copiesAt)

        protocol.parentPipeFD = fd
        protocol.childPipes = [fd for fd, kind in childFDs.items() if isinstance(kind, str)]
        env[INHERITED] = "\n".join(lines)
        env[PARENT_PIPE] = str(fd)
        env[WORKER_INDEX] = str(index)
        # Only the directory this process made, never one it was told of.
        env.pop(SHARED_CERTIFICATE, None)
        env.update(self.extraEnvironment)
        if self._writer is not None:
            # Its log lines come through a pipe, in UTF-8 whatever the locale.
            env["PYTHONIOENCODING"] = "utf-8"
        argv = [sys.executable, "-c", _RUN_TWISTD, *self._arguments, *self.extraArguments]
        protocol.started = protocol.lastSign = self.reactor.seconds()
        try:
            # It starts with them blocked, until it keeps them itself
            # (L{runWorker <twisted_smtpd._twistd.workerside.runWorker>}):
            # Python and twistd loading, a SIGINT (the terminal's Ctrl-C to
            # the process group) would raise KeyboardInterrupt, a SIGHUP
            # end it.
            with blocked(HELD.numbers):
                process = self.reactor.spawnProcess(
                    protocol, sys.executable, argv, env=env, childFDs=childFDs
                )
        except OSError as e:
            # No process (fork refused: a process or memory limit; no
            # descriptor left for its pipes): tried again like a worker
            # that ended at once, never left unstarted for good.
            delay = self._pause(index, protocol.started)
            self._log.warn(
                "worker {index} could not be started ({error}); trying again in {delay}s",
                index=index,
                error=tapconfig.reason(e),
                delay=delay,
            )
            self._pending[index] = self.reactor.callLater(delay, self._spawn, index)
            return
        if protocol.pid is None:
            protocol.pid = process.pid
        self._log.info("worker {index} started, pid {pid}", index=index, pid=protocol.pid)
        if protocol.ended.called:
            # Ended already, its end handled (L{_workerEnded}).
            return
        self.workers[index] = (process, protocol)

    def _workerLog(self, worker: _Worker, data: bytes, cut: bool = False) -> None:
        """
        Write lines a worker logged into this process's log; a line not in
        the log's format (written by something else than the worker's log
        writer) is logged as this process's own, naming the worker.

        @param cut: Whether C{data} is the worker's last line, left
            unfinished by its end.  In JSON it is passed on only if it is
            a whole JSON object; the start of one (a worker killed while
            it wrote a line) is no JSON, so it is logged as this process's
            own line, at most L{_MAX_CUT} characters of it.
        """
        if self._writer is None:
            return
        text = data.decode("utf-8", "replace")
        if cut and self._writer.json and not _isJSONObject(text):
            self._log.info(
                "worker {index}: its last line, cut off at its end: {line}",
                index=worker.index,
                line=printable(text[:_MAX_CUT]) + ("..." if len(text) > _MAX_CUT else ""),
            )
            return
        if not text.endswith("\n"):
            text += "\n"
        lines = text.split("\n")[:-1]
        if all(map(self._isLogLine, lines)):
            self._writer.forward(text)
            return
        for line in lines:
            if self._isLogLine(line):
                self._writer.forward(line + "\n")
            elif line:
                # It may be anything up to _MAX_PARTIAL.
                self._log.info(
                    "worker {index}: {line}",
                    index=worker.index,
                    line=printable(line[:_MAX_STRAY]) + ("..." if len(line) > _MAX_STRAY else ""),
                )

    def _isLogLine(self, line: str) -> bool:
        """
        Whether C{line} is in the log's format: a JSON object (whole: the
        start of one, or a Python C{dict} a handler printed, would be a
        line of the JSON log that is no JSON), or a line starting with its
        time or continuing the one before (a tab), with no character that
        could disguise a line (a terminal's escape: a handler's C{print}
        that happened to start with a digit).
        """
        assert self._writer is not None
        if self._writer.json:
            return line.startswith("{") and _isJSONObject(line)
        if line.startswith("\t"):
            line = line[1:]
        elif not line[:1].isdigit():
            return False
        return printable(line) == line

    def _workerExited(self, worker: _Worker) -> None:
        """
        The process of C{worker} ended and was reaped, its pipes perhaps
        still open (L{_Worker.processExited}): the callbacks of
        L{onWorkerEnded} get its pid while no other process can have it.
        """
        if not self._stopping and worker.pid is not None:
            for callback in self.onWorkerEnded:
                callback(worker.pid)

    def _workerEnded(self, worker: _Worker, reason: Failure) -> None:
        index = worker.index
        current = self.workers.get(index)
        if current is not None and current[1] is worker:
            del self.workers[index]
        if self._stopping:
            self._sayStopping()
            if not worker.killed and not _stoppedAsTold(reason.value):
                # Not by SIGTERM, as told, nor killed at the stop timeout
                # (logged then): a crash while its transactions ended.
                self._log.warn(
                    "worker {index} ended (pid {pid}, {how}) while stopping",
                    index=index,
                    pid=worker.pid,
                    how=howEnded(reason.value),
                )
            return
        if worker.sessions:
            # Connections still open ended with it, reset (a graceful stop
            # closed them before): their clients were answered nothing
            # more and send their messages again later (one told 250 was
            # delivered); a message whose reply was not sent yet may come
            # twice, as after any connection lost.
            self._log.warn(
                "worker {index} (pid {pid}) held {sessions} sessions at its last sign of life,"
                " {ago}s before it ended: any still open were cut",
                index=index,
                pid=worker.pid,
                sessions=worker.sessions,
                ago=round(self.reactor.seconds() - worker.sessionsAt),
            )
        delay = self._pause(index, worker.started)
        self._log.warn(
            "worker {index} ended (pid {pid}, {how}); restarting in {delay}s",
            index=index,
            pid=worker.pid,
            how=howEnded(reason.value),
            delay=delay,
        )
        self.restarts += 1
        self._pending[index] = self.reactor.callLater(delay, self._spawn, index)

    def _pause(self, index: int, started: float) -> float:
        """
        Count one more failure of worker C{index}, started at C{started},
        and return the pause before it is started again.
        """
        if self.reactor.seconds() - started >= _STABLE:
            # It had been running well: an end now (the OOM killer, once a
            # week) is not one more of the ends before it.
            self._failures.pop(index, None)
        failures = self._failures.get(index, 0) + 1
        self._failures[index] = failures
        return min(30.0, 0.5 * 2.0 ** min(failures - 1, 6))

    def stopService(self) -> Deferred[Any]:
        """
        Close the listening sockets and ask every worker to close
        gracefully; kill the ones still running after the stop timeout.
        SIGHUP is passed on until they are gone.

        The parent's copies of the sockets close at once: each worker stops
        listening as soon as it is told to, and a socket still open here
        would go on taking connections into its backlog that no worker
        accepts, reset only once the last worker has gone.  Closed, the
        address refuses new connections at once, as a single process does.
        """
        super().stopService()
        self._stopping = True
        if self._watchdog is not None:
            # From now on a worker that does not stop is killed after the
            # stop timeout, stopped by SIGSTOP or not.
            self._watchdog.stop()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        reopener, self._reopener = self._reopener, None
        ended = [protocol.ended for _, protocol in self.workers.values()]
        self._sayStopping()
        self.signalWorkers("TERM")
        for spec in self._listeners:
            for s in spec.sockets:
                s.close()
        killer = self.reactor.callLater(self._stopTimeout, self._killAll)

        def done(result: object) -> None:
            if killer.active():
                killer.cancel()
            # Until the workers are gone SIGHUP goes on reaching them (a
            # reload racing the stop); the previous handler (HELD's, which
            # keeps the signal) comes back only now.
            if self._previousHangup is not None:
                signal.signal(signal.SIGHUP, self._previousHangup)
                self._previousHangup = None
            if reopener is not None:
                reopener.uninstall()
            if self._copiesFD is not None:
                # No worker will be started again.
                os.close(self._copiesFD)
                self._copiesFD = None

        return DeferredList(ended).addCallback(done)

    def _sayStopping(self) -> None:
        """
        Write L{PARENT_STOPPING} into the pipe each worker watches, once
        every worker still there is ready: one still starting has yet to
        read what this process made for the workers (the shared
        certificate), which a worker told so removes as it ends.
        """
        if self._saidStopping or not all(
            protocol.ready or protocol.exited for _, protocol in self.workers.values()
        ):
            return
        self._saidStopping = True
        for process, protocol in self.workers.values():
            if protocol.parentPipeFD is not None:
                with suppress(KeyError, OSError):
                    process.writeToChild(protocol.parentPipeFD, PARENT_STOPPING)

    def _killAll(self) -> None:
        """
        Kill the workers still running at the stop timeout, one line each:
        the sessions they still held are cut.
        """
        for process, worker in list(self.workers.values()):
            if not worker.killed:
                worker.killed = True
                self._log.warn(
                    "worker {index} (pid {pid}) still running {timeout}s after SIGTERM; killed,"
                    " any sessions still open were cut",
                    index=worker.index,
                    pid=worker.pid,
                    timeout=f"{self._stopTimeout:g}",
                )
            with suppress(ProcessExitedAlready):
                process.signalProcess("KILL")
