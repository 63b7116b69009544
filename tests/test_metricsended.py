"""
The sums of the workers that ended (C{counter_ended.db}, ...), which the
parent of C{--workers --metrics} keeps (L{foldEndedWorker}), found
unreadable (cut short, garbage, empty, a directory, not readable): set
aside with one line, the scrapes go on serving the other files, and the
next fold starts a new sum.  With real C{prometheus_client} files and
scrapes.
"""

from __future__ import annotations

import os
import signal
import struct
from typing import Any

from prometheus_client import generate_latest
from twisted.internet.error import ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from tests.test_deadlines import LogCatcher
from tests.test_metricsfold import _KEY, _counterFile
from tests.test_workers import _ProcessReactor
from twisted_smtpd._serving.metrics import MetricsResource, multiprocessRegistry
from twisted_smtpd._twistd import metricsservice
from twisted_smtpd._twistd.metricsservice import WorkerMetrics, readMetricsFile
from twisted_smtpd._twistd.workers import WorkerPool


def _cut(path: str) -> None:
    """
    Cut a real sum short: its header says more is used than it holds.
    """
    with open(path, "r+b") as f:
        f.truncate(20)


def _garbage(path: str) -> None:
    """
    Garbage after a header saying 16 octets are used.
    """
    with open(path, "wb") as f:
        f.write(b"\x10\0\0\0" + b"\xff" * 100)


def _empty(path: str) -> None:
    with open(path, "wb"):
        pass


def _directory(path: str) -> None:
    os.remove(path)
    os.mkdir(path)


def _notJSON(path: str) -> None:
    """
    An entry whose key is UTF-8 but no metric's (no JSON).
    """
    key = b"not json"
    padded = key + b" " * (8 - (len(key) + 4) % 8)
    entry = struct.pack(f"i{len(padded)}sdd", len(key), padded, 1.0, 0.0)
    with open(path, "wb") as f:
        f.write(struct.pack("i", 8 + len(entry)) + b"\0" * 4 + entry + b"\0" * 64)


class UnreadableSumTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.log = LogCatcher(self)
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        self.clock = _ProcessReactor()
        self.pool = WorkerPool([], 2, [], reactor=self.clock)
        self.metrics = WorkerMetrics(self.pool, "tcp:0:interface=127.0.0.1", self.directory)
        self.pool.startService()
        self.ended = os.path.join(self.directory, "counter_ended.db")
        self.aside = os.path.join(self.directory, "counter_ended.unreadable")
        self.registry = multiprocessRegistry(self.directory)

    def scrape(self) -> str:
        """
        What C{/metrics} of the parent answers, rendered by its resource
        over a registry made once, as the parent's.
        """
        request = DummyRequest([b""])
        body = MetricsResource(self.registry).render_GET(request)  # type: ignore[arg-type]
        self.assertEqual(request.responseCode, None)
        return body.decode("utf-8")

    def endWorker(self, number: int) -> int:
        worker, _ = self.clock.spawned[number]
        worker.processExited(Failure(ProcessTerminated(None, signal.SIGKILL)))
        worker.processEnded(Failure(ProcessTerminated(None, signal.SIGKILL)))
        assert worker.pid is not None
        return worker.pid

    def assertSetAsideAtScrape(self, corrupt: object) -> None:
        """
        The sum, made unreadable by C{corrupt}, fails no scrape: the
        first scrape sets it aside with one line and serves the live
        worker's count; a worker that ends then starts a new sum.
        """
        _counterFile(self.directory, "counter_ended.db", 5.0)
        assert callable(corrupt)
        corrupt(self.ended)
        (first, _), (second, _) = self.clock.spawned
        _counterFile(self.directory, f"counter_{first.pid}.db", 2.0)
        _counterFile(self.directory, f"counter_{second.pid}.db", 3.0)
        for _ in range(2):
            text = self.scrape()
            self.assertIn("\nsmtpd_connections_total 5.0\n", text)
        (line,) = self.log.matching("counter_ended.db is unreadable")
        self.assertIn("set aside as counter_ended.unreadable", line)
        self.assertFalse(os.path.lexists(self.ended))
        self.assertTrue(os.path.lexists(self.aside))
        self.endWorker(0)
        self.assertEqual([value for _, value, _ in readMetricsFile(self.ended)], [2.0])
        self.assertIn("\nsmtpd_connections_total 5.0\n", self.scrape())
        self.assertEqual(len(self.log.matching("unreadable")), 1)

    def test_cutAtScrape(self) -> None:
        """
        Cut short.
        """
        self.assertSetAsideAtScrape(_cut)

    def test_garbageAtScrape(self) -> None:
        """
        Garbage.
        """
        self.assertSetAsideAtScrape(_garbage)

    def test_emptyAtScrape(self) -> None:
        """
        Empty.
        """
        self.assertSetAsideAtScrape(_empty)

    def test_directoryAtScrape(self) -> None:
        """
        A directory in its place.
        """
        self.assertSetAsideAtScrape(_directory)

    def test_notJSONAtScrape(self) -> None:
        """
        A key that is no JSON.
        """
        self.assertSetAsideAtScrape(_notJSON)

    def test_notReadableAtScrape(self) -> None:
        """
        Mode 000: reading it fails with C{PermissionError} (for root, which
        reads it all the same, C{prometheus_client}'s C{open} is made to
        fail so for that file).
        """
        if os.geteuid() != 0:
            self.assertSetAsideAtScrape(lambda path: os.chmod(path, 0))
            return
        from prometheus_client import mmap_dict

        def refuse(path: str, *args: Any) -> Any:
            if (
                os.path.basename(path) == "counter_ended.db"
                and os.path.isfile(path)
                and os.stat(path).st_mode & 0o777 == 0
            ):
                raise PermissionError(13, "Permission denied", path)
            return open(path, *args)

        # The module's own name, found before the builtin.
        setattr(mmap_dict, "open", refuse)  # noqa: B010
        self.addCleanup(delattr, mmap_dict, "open")
        self.assertSetAsideAtScrape(lambda path: os.chmod(path, 0))

    def test_setAsideAtFold(self) -> None:
        """
        Found unreadable by the fold of a worker that ended (no scrape
        before): set aside with one line, the worker's counts start the
        new sum, its own file goes.
        """
        for corrupt in (_cut, _garbage, _empty, _directory, _notJSON):
            _counterFile(self.directory, "counter_ended.db", 5.0)
            corrupt(self.ended)
            worker, _ = self.clock.spawned[-1]
            _counterFile(self.directory, f"counter_{worker.pid}.db", 2.0)
            lines = len(self.log.matching("counter_ended.db is unreadable"))
            worker.processExited(Failure(ProcessTerminated(None, signal.SIGKILL)))
            worker.processEnded(Failure(ProcessTerminated(None, signal.SIGKILL)))
            self.clock.advance(60)
            self.assertEqual(
                len(self.log.matching("counter_ended.db is unreadable")), lines + 1, corrupt
            )
            self.assertEqual([value for _, value, _ in readMetricsFile(self.ended)], [2.0])
            self.assertFalse(os.path.exists(f"{self.directory}/counter_{worker.pid}.db"))
            self.assertIn("\nsmtpd_connections_total 2.0\n", self.scrape())
            os.remove(self.ended)
        self.assertEqual(self.log.matching("could not be added"), [])

    def test_unreadableWorkerFileLeftOut(self) -> None:
        """
        A running worker's file that cannot be read (a worker killed while
        it made it, seen before its end is) fails no scrape either: left
        out, with one line however many scrapes.
        """
        (first, _), (second, _) = self.clock.spawned
        _counterFile(self.directory, f"counter_{first.pid}.db", 2.0)
        _empty(os.path.join(self.directory, f"counter_{second.pid}.db"))
        for _ in range(3):
            self.assertIn("\nsmtpd_connections_total 2.0\n", self.scrape())
        (line,) = self.log.matching("unreadable")
        self.assertIn(f"counter_{second.pid}.db is unreadable", line)
        self.assertIn("left out of the scrapes", line)

    def test_scrapeDuringFold(self) -> None:
        """
        A scrape taken while the fold writes the new sum (it cannot be, as
        both run in the reactor; taken here from within the fold) counts
        the old sum and the worker's file, each once: the new sum is no
        file a scrape reads until it replaces the old one, after which the
        worker's file goes.
        """
        _counterFile(self.directory, "counter_ended.db", 5.0)
        worker, _ = self.clock.spawned[0]
        _counterFile(self.directory, f"counter_{worker.pid}.db", 2.0)
        seen: list[str] = []
        write = metricsservice.writeMetricsValue

        def writeAndScrape(*args: object) -> None:
            write(*args)  # type: ignore[arg-type]
            seen.append(generate_latest(multiprocessRegistry(self.directory)).decode())

        self.patch(metricsservice, "writeMetricsValue", writeAndScrape)
        self.endWorker(0)
        self.assertEqual(len(seen), 1)
        self.assertIn("\nsmtpd_connections_total 7.0\n", seen[0])
        self.assertIn("\nsmtpd_connections_total 7.0\n", self.scrape())
        self.assertEqual(self.log.matching("unreadable"), [])

    def test_keyCopied(self) -> None:
        """
        The new sum holds the key as C{prometheus_client} wrote it.
        """
        worker, _ = self.clock.spawned[0]
        _counterFile(self.directory, f"counter_{worker.pid}.db", 2.0)
        self.endWorker(0)
        self.assertEqual([key for key, _, _ in readMetricsFile(self.ended)], [_KEY])
