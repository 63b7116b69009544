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

from tests.test_deadlines import LogCatcher
from tests.test_workers import _ProcessReactor, _Writer
from twisted_smtpd._twistd import workers
from twisted_smtpd._twistd.workers import WorkerPool, _Worker


class EndedLineTests(SynchronousTestCase):
    """
    One line per worker that ends, naming it, its pid and how it ended.
    """

    def test_namesPidAndHow(self) -> None:
        """
        Each end is logged with the worker's index, its pid and how it
        ended: its exit status, or the signal that killed it by name and
        number (SIGKILL from the OOM killer, SIGSEGV from a crash).
        """
        log = LogCatcher(self)
        clock = _ProcessReactor()
        pool = WorkerPool([], 2, [], reactor=clock)
        pool.startService()
        self.addCleanup(pool.stopService)
        (first, _), (second, _) = clock.spawned
        first.processEnded(Failure(ProcessTerminated(None, signal.SIGKILL)))
        second.processEnded(Failure(ProcessTerminated(None, signal.SIGSEGV)))
        clock.advance(0.5)
        (third, _), (fourth, _) = clock.spawned[2:]
        third.processEnded(Failure(ProcessTerminated(1)))
        fourth.processEnded(Failure(ProcessDone(0)))
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

    def pool(self, json: bool) -> tuple[WorkerPool, _Writer]:
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
        pool, writer = self.pool(json=True)
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
        pool, writer = self.pool(json=True)
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
        pool, writer = self.pool(json=True)
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
        pool, writer = self.pool(json=True)
        worker = _Worker(pool, 0)
        worker.outReceived(b'{"text": "a"}')
        worker.outConnectionLost()
        self.assertEqual(writer.stream.getvalue(), '{"text": "a"}\n')
        self.assertEqual(self.logged(), [])
