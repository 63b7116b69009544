# -*- test-case-name: tests.test_threadstop -*-
"""
The stop of C{twistd smtpd}'s thread pool is bounded: a call that never
returns (a disk write to a file system gone) no longer holds the process.
"""

from __future__ import annotations

import threading

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._twistd.threadstop import boundReactorThreads, boundThreadPoolStop

#: The bound the tests give the stop: short, the stuck call never returns
#: before the test lets it.
TIMEOUT = 0.05

#: How long a test waits for something that happens at once.
WAIT = 30.0


def stuckWrite(release: threading.Event, started: threading.Event) -> None:
    """
    A call that does not return until C{release} is set, as a write to an
    NFS server gone does not.
    """
    started.set()
    release.wait(WAIT)


class BoundedStopTests(SynchronousTestCase):
    """
    L{boundThreadPoolStop}.
    """

    def stuckPool(self, timeout: float = TIMEOUT) -> tuple[ThreadPool, threading.Event]:
        """
        A started pool, bounded, with one call stuck in it; the call is let
        go when the test ends.
        """
        pool = ThreadPool(0, 2, "test")
        boundThreadPoolStop(pool, timeout)
        release, started = threading.Event(), threading.Event()
        self.addCleanup(release.set)
        pool.start()
        pool.callInThread(stuckWrite, release, started)
        self.assertTrue(started.wait(WAIT))
        return pool, release

    def test_stopReturns(self) -> None:
        """
        The stop returns though a call never ends, and one line names the
        busy thread and where it is.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        pool, _ = self.stuckPool()
        pool.stop()
        (event,) = events
        text = formatEvent(event)
        self.assertRegex(
            text,
            r"^Stopping without 1 busy thread\(s\) after 0\.05s \(a file system or name server"
            r" not answering\?\): PoolThread-test-\d+ in stuckWrite"
            r" \(\S+/tests/test_threadstop\.py:\d+\)$",
        )

    def test_daemonThreads(self) -> None:
        """
        The pool's threads are daemon threads: the interpreter does not
        wait for the stuck one as it exits.
        """
        pool, _ = self.stuckPool()
        self.assertTrue(pool.threads)
        self.assertTrue(all(thread.daemon for thread in pool.threads))
        pool.stop()

    def test_quickStopSilent(self) -> None:
        """
        Without a stuck call, the pool stops as before, its threads ended,
        and nothing is logged.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        pool, release = self.stuckPool(WAIT)
        release.set()
        threads = list(pool.threads)
        pool.stop()
        self.assertFalse(any(thread.is_alive() for thread in threads))
        self.assertEqual(list(events), [])

    def test_reactorWithoutPool(self) -> None:
        """
        L{boundReactorThreads} leaves a reactor without a thread pool alone.
        """
        boundReactorThreads(object())
