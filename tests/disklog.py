"""
What the tests of the disk deliveries check in the log: one error line per
failure the system reported, no traceback.
"""

from __future__ import annotations

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase


class DiskErrorLog:
    """
    The log events of a test, from its creation on.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self._case = case
        self._events = EventLoggingObserver.createWithCleanup(case, globalLogPublisher)

    def assertLines(self, count: int, *fragments: str) -> None:
        """
        Assert that C{count} error lines were logged, each one line holding
        every one of C{fragments}, and nothing logged as a failure with a
        traceback.
        """
        errors = [e for e in self._events if e.get("log_level") is LogLevel.error]
        failures = [e for e in self._events if "log_failure" in e]
        self._case.assertEqual(failures, [])
        texts = [formatEvent(e) for e in errors]
        self._case.assertEqual(len(texts), count, texts)
        for text in texts:
            self._case.assertNotIn("\n", text)
            for fragment in fragments:
                self._case.assertIn(fragment, text)
