"""
How the parent of C{--workers} logs a worker's end: the line saying it
ended, and the worker's last line left unfinished by its end.
"""

from __future__ import annotations

import signal

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_tap import FakeReactor
from tests.test_workers import _PoolTestCase, _ProcessReactor, _Writer
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._twistd import workers
from twisted_smtpd._twistd.daemon import SMTPDaemon
from twisted_smtpd._twistd.workers import WorkerPool, _Worker
from twisted_smtpd.handlers import SinkHandler


def _exited(code: int | None = None, number: int | None = None) -> Failure:
    if code == 0:
        return Failure(ProcessDone(0))
    return Failure(ProcessTerminated(code, number))


class EndedLineTests(_PoolTestCase):
    """
    One line per worker that ends, naming it, its pid and how it ended.
    """

    def test_namesPidAndHow(self) -> None:
        """
        Each end is logged with the worker's index, its pid and how it
        ended: its exit status, or the signal that killed it by name and
        number (SIGKILL from the OOM killer, SIGSEGV from a crash).
        """
        _, clock, log = self.pool()
        (first, _), (second, _) = clock.spawned
        first.processEnded(_exited(None, signal.SIGKILL))
        second.processEnded(_exited(None, signal.SIGSEGV))
        clock.advance(0.5)
        (third, _), (fourth, _) = clock.spawned[2:]
        third.processEnded(_exited(1))
        fourth.processEnded(_exited(0))
        self.assertEqual(
            log.matching(" ended "),
            [
                "worker 0 ended (pid 1000, killed by SIGKILL, signal 9); restarting in 0.5s",
                "worker 1 ended (pid 1001, killed by SIGSEGV, signal 11); restarting in 0.5s",
                "worker 0 ended (pid 1002, exit status 1); restarting in 1.0s",
                "worker 1 ended (pid 1003, exit status 0); restarting in 1.0s",
            ],
        )

    def test_howEnded(self) -> None:
        """
        A signal number no name is known for is given as a number.
        """
        howEnded = workers.howEnded
        self.assertEqual(howEnded(ProcessTerminated(None, 200)), "killed by signal 200")
        self.assertEqual(
            howEnded(ProcessTerminated(None, signal.SIGABRT)), "killed by SIGABRT, signal 6"
        )
        self.assertEqual(howEnded(ProcessTerminated(3)), "exit status 3")


class CutLineTests(SynchronousTestCase):
    """
    A worker's last line, left unfinished when its output ends (it was
    killed while it wrote it).
    """

    def logPool(self, json: bool) -> tuple[WorkerPool, _Writer]:
        writer = _Writer(json)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        return WorkerPool([], 1, [], reactor=_ProcessReactor(), logWriter=writer), writer

    def logged(self) -> list[str]:
        """
        The parent's own lines.
        """
        return [formatEvent(event) for event in self.events]

    def test_cutJSONNotPassedOn(self) -> None:
        """
        In JSON, the start of a line is no JSON: the parent's log (read by
        log shippers, one JSON object a line) gets instead one line of the
        parent's own saying the worker's last line was cut, with that
        start, its control characters escaped.
        """
        pool, writer = self.logPool(json=True)
        worker = _Worker(pool, 0)
        worker.outReceived(b'{"text": "a"}\n{"text": "b \x1b[2J')
        worker.outConnectionLost()
        self.assertEqual(writer.stream.getvalue(), '{"text": "a"}\n')
        self.assertEqual(
            self.logged(),
            ['worker 0: its last line, cut off at its end: {"text": "b \\x1b[2J'],
        )

    def test_cutJSONBounded(self) -> None:
        """
        Of a long unfinished line, the first 1000 characters are logged.
        """
        pool, writer = self.logPool(json=True)
        worker = _Worker(pool, 0)
        worker.outReceived(b'{"text": "' + b"A" * 100_000)
        worker.outConnectionLost()
        self.assertEqual(writer.stream.getvalue(), "")
        (line,) = self.logged()
        self.assertTrue(line.endswith('{"text": "' + "A" * 990 + "..."), line[-50:])

    def test_cutJSONDeeplyNested(self) -> None:
        """
        A start of JSON nested too deep for the parser to read is no whole
        line either, and does not end the parent.
        """
        pool, writer = self.logPool(json=True)
        worker = _Worker(pool, 0)
        worker.outReceived(b'{"a": ' + b"[" * 200_000)
        worker.outConnectionLost()
        self.assertEqual(writer.stream.getvalue(), "")
        self.assertEqual(len(self.logged()), 1)

    def test_wholeJSONPassedOn(self) -> None:
        """
        A last line that is a whole JSON object, only without its line
        end, is passed on as a line of the log.
        """
        pool, writer = self.logPool(json=True)
        worker = _Worker(pool, 0)
        worker.outReceived(b'{"text": "a"}')
        worker.outConnectionLost()
        self.assertEqual(writer.stream.getvalue(), '{"text": "a"}\n')
        self.assertEqual(self.logged(), [])


class StopTests(_PoolTestCase):
    """
    While the workers stop (SIGTERM to the parent): a worker killed at the
    stop timeout, or ending otherwise than told, is logged.
    """

    def test_killedAtStopTimeout(self) -> None:
        """
        A worker still running at the stop timeout is killed with one line
        naming it and its pid, saying its open sessions were cut; one that
        stopped as told (by SIGTERM, as C{twistd} ends) adds no line, and
        the killed one's end adds none either.
        """
        pool, clock, log = self.pool(stopTimeout=70)
        (first, firstProcess), (second, secondProcess) = clock.spawned
        stopping = pool.stopService()
        self.assertEqual(firstProcess.signals, ["TERM"])
        first.processEnded(_exited(None, signal.SIGTERM))
        clock.advance(70)
        self.assertEqual(secondProcess.signals, ["TERM", "KILL"])
        second.processEnded(_exited(None, signal.SIGKILL))
        self.successResultOf(stopping)
        self.assertEqual(
            [line for line in log.matching("worker ") if " started, pid " not in line],
            [
                "worker 1 (pid 1001) still running 70s after SIGTERM; killed, any sessions still"
                " open were cut"
            ],
        )

    def test_crashWhileStopping(self) -> None:
        """
        A worker that ends while stopping otherwise than told (a crash, an
        error) is logged with how it ended; one that exits with status 0
        is not.
        """
        pool, clock, log = self.pool()
        (first, _), (second, _) = clock.spawned
        stopping = pool.stopService()
        first.processEnded(_exited(None, signal.SIGSEGV))
        second.processEnded(_exited(0))
        self.successResultOf(stopping)
        self.assertEqual(
            [line for line in log.matching("worker ") if " started, pid " not in line],
            ["worker 0 ended (pid 1000, killed by SIGSEGV, signal 11) while stopping"],
        )

    def test_toldEndsNotLogged(self) -> None:
        """
        Workers that end while stopping as they were told add no line: by
        SIGTERM (C{twistd} ends by the signal that stopped it), by SIGINT
        (Ctrl-C reaches the parent and its workers alike), or exiting with
        status 0.
        """
        for ends in [(signal.SIGTERM, signal.SIGINT), (None, signal.SIGTERM)]:
            pool, clock, log = self.pool()
            stopping = pool.stopService()
            for (worker, _), number in zip(clock.spawned, ends, strict=True):
                worker.processEnded(_exited(0 if number is None else None, number))
            self.successResultOf(stopping)
            self.assertEqual(log.matching(" ended "), [], ends)


class ReloadLineTests(SynchronousTestCase):
    def test_workerNamed(self) -> None:
        """
        A worker's line saying it reloads its certificates (its parent
        passed SIGHUP on) names it, so that the parent's log, holding one
        such line per worker, says which workers the signal reached.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server = SMTPDaemon(SinkHandler(), ServerOptions(), reactor=FakeReactor())
        server.workerName = "worker 1, pid 4242"
        server.reload()
        self.assertEqual(formatEvent(events[0]), "Reloading TLS certificates in worker 1, pid 4242")


class StoppingReloadTests(SynchronousTestCase):
    """
    A SIGHUP its parent passes on while a worker stops: the self-signed
    certificate the parent made for its workers, which a worker that
    stopped first has removed, is not read again.
    """

    def server(self) -> tuple[SMTPDaemon, str]:
        """
        A worker's server serving the shared certificate, which has been
        read and then removed.
        """
        import shutil

        from tests.certs import CertificateAuthority

        directory = self.mktemp()
        issued = CertificateAuthority(directory).server("localhost")
        options = ServerOptions(certificate=issued.certificatePath, privateKey=issued.keyPath)
        server = SMTPDaemon(SinkHandler(), options, reactor=FakeReactor())
        server.workerName = "worker 0, pid 4242"
        server.sharedSelfSigned = True
        server.factory.tls  # noqa: B018 -- read at the start
        shutil.rmtree(directory)
        return server, issued.certificatePath

    def test_skippedWhileStopping(self) -> None:
        """
        While the worker stops, the reload is skipped with one info line
        saying why: no error line about a file that is gone on purpose.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server, _ = self.server()
        server.running = False
        server.reload()
        self.assertEqual(
            [(formatEvent(e), e["log_level"].name) for e in events],
            [
                (
                    "Reloading TLS certificates in worker 0, pid 4242 skipped: the worker is"
                    " stopping, and its certificate is the self-signed one its parent made",
                    "info",
                )
            ],
        )

    def test_readWhileRunning(self) -> None:
        """
        A running worker reloads as before: the file gone is an error.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server, path = self.server()
        server.running = True
        server.reload()
        self.assertTrue(
            any("Reloading TLS certificates failed" in formatEvent(e) for e in events),
            [formatEvent(e) for e in events],
        )


class StrayJSONTests(SynchronousTestCase):
    """
    In JSON, a line a worker's standard output carries that starts like
    JSON but is none (a handler printing a Python C{dict}, a cut object)
    never reaches the parent's JSON log as it is: log shippers read that
    log one JSON object a line.
    """

    def test_notJSONNotPassedOn(self) -> None:
        """
        Such a line is logged as the parent's own line naming the worker,
        its control characters escaped; the JSON lines around it are
        passed on as they are.
        """
        writer = _Writer(True)
        pool = WorkerPool([], 2, [], reactor=FakeReactor(), logWriter=writer)
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        _Worker(pool, 0).outReceived(
            b'{"text": "a"}\n'
            b"{'queue': 1}\n"
            b'{"looks": "like json" but \x1b[2J is not\n'
            b"{" + b"[" * 100_000 + b"\n"
            b'["a list"]\n'
            b'{"text": "b"}\n'
        )
        self.assertEqual(writer.stream.getvalue(), '{"text": "a"}\n{"text": "b"}\n')
        logged = [formatEvent(event) for event in observer]
        self.assertEqual(len(logged), 4)
        self.assertEqual(logged[0], "worker 0: {'queue': 1}")
        self.assertEqual(logged[1], 'worker 0: {"looks": "like json" but \\x1b[2J is not')
        self.assertEqual(logged[3], 'worker 0: ["a list"]')
        # The first 2000 characters of the one nested too deep to read.
        self.assertEqual(logged[2], "worker 0: {" + "[" * 1999 + "...")


class StrayTextTests(SynchronousTestCase):
    """
    In text, a line a worker's standard output carries that starts like a
    line of the log (a digit, a tab) but holds a character that could
    disguise a line (a terminal's escape, a carriage return) is not
    written into the parent's log as it is.
    """

    def test_controlsEscaped(self) -> None:
        """
        Such a line is logged as the parent's own line naming the worker,
        its control characters escaped; the lines of the log around it
        are passed on as they are.
        """
        writer = _Writer(False)
        pool = WorkerPool([], 2, [], reactor=FakeReactor(), logWriter=writer)
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        _Worker(pool, 0).outReceived(
            b"2026-01-02T10:00:00+0000 [ns#info] one \xc3\xa9\n"
            b"\ttraceback line\n"
            b"2026 forged \x1b]0;title\x07 line\n"
            b"\tforged\rcontinuation\n"
            b"2026-01-02T10:00:01+0000 [ns#info] two\n"
        )
        self.assertEqual(
            writer.stream.getvalue(),
            "2026-01-02T10:00:00+0000 [ns#info] one \xe9\n"
            "\ttraceback line\n"
            "2026-01-02T10:00:01+0000 [ns#info] two\n",
        )
        self.assertEqual(
            [formatEvent(event) for event in observer],
            [
                "worker 0: 2026 forged \\x1b]0;title\\x07 line",
                "worker 0: \\x09forged\\x0dcontinuation",
            ],
        )


class StopTimeoutTests(SynchronousTestCase):
    """
    The parent of C{twistd smtpd --workers} kills a worker only after the
    longest graceful stop a worker can take.
    """

    def test_longerThanWorkersStop(self) -> None:
        """
        Its sessions' close timeout, the grace after their 421 and the time
        its delivery gets to close its connections all fit before the kill.
        """
        from twisted_smtpd._serving.deadlines import CLOSE_GRACE
        from twisted_smtpd._twistd.daemon import HANDLER_CLOSE_TIMEOUT
        from twisted_smtpd._twistd.tap import Options
        from twisted_smtpd._twistd.tapservice import makeService

        options = Options()
        options.parseOptions(
            [
                "--workers",
                "2",
                "--sink",
                "--close-timeout",
                "7",
                "--disable",
                "STARTTLS",
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ]
        )
        listeners = options["workerListeners"]
        self.addCleanup(lambda: [s.close() for spec in listeners for s in spec.sockets])
        pool = makeService(options)
        assert isinstance(pool, WorkerPool)
        self.assertGreater(pool._stopTimeout, 7 + CLOSE_GRACE + HANDLER_CLOSE_TIMEOUT)
