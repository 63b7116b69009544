"""
Tests for L{twisted_smtpd._twistd.eventdispatch}: I/O events dispatched
without a legacy log context.
"""

from __future__ import annotations

from typing import Any

from twisted.python import context
from twisted.python import log as legacy
from twisted.python.log import ILogContext
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._twistd import eventdispatch
from twisted_smtpd._twistd.eventdispatch import callWithoutContext


class Selectable:
    """
    What the reactor passes as the logger: a connection with a log prefix.
    """

    def logPrefix(self) -> str:
        return "SMTPProtocol,7,192.0.2.1"


class BuggySelectable:
    def logPrefix(self) -> str:
        raise RuntimeError("no prefix")


def _system() -> Any:
    return context.get(ILogContext)["system"]


class CallWithoutContextTests(SynchronousTestCase):
    def test_calls(self) -> None:
        """
        The function is called with the arguments given and its result
        returned.
        """
        got = callWithoutContext(Selectable(), lambda a, b: (a, b), 1, b=2)
        self.assertEqual(got, (1, 2))

    def test_noContext(self) -> None:
        """
        The function runs in the context it was called from, where
        Twisted's C{callWithLogger} makes one naming the selectable.
        """
        self.assertEqual(
            eventdispatch.withContext(Selectable(), _system), "SMTPProtocol,7,192.0.2.1"
        )
        self.assertEqual(callWithoutContext(Selectable(), _system), "-")

    def test_failureLogged(self) -> None:
        """
        What the function raises is logged with the selectable's log prefix
        as its system, and C{None} is returned.
        """
        events: list[dict[str, Any]] = []
        legacy.addObserver(events.append)
        self.addCleanup(legacy.removeObserver, events.append)
        self.assertIsNone(callWithoutContext(Selectable(), lambda: 1 / 0))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(
            [e["system"] for e in events if e.get("isError")], ["SMTPProtocol,7,192.0.2.1"]
        )

    def test_buggyLogPrefix(self) -> None:
        """
        A selectable whose C{logPrefix} fails is logged as Twisted names it.
        """
        events: list[dict[str, Any]] = []
        legacy.addObserver(events.append)
        self.addCleanup(legacy.removeObserver, events.append)
        callWithoutContext(BuggySelectable(), lambda: 1 / 0)
        self.flushLoggedErrors(ZeroDivisionError)
        self.assertEqual(
            [e["system"] for e in events if e.get("isError")], ["(buggy logPrefix method)"]
        )

    def test_keyboardInterrupt(self) -> None:
        """
        C{KeyboardInterrupt} goes through, as with Twisted's own.
        """

        def interrupt() -> None:
            raise KeyboardInterrupt()

        self.assertRaises(KeyboardInterrupt, callWithoutContext, Selectable(), interrupt)

    def test_withoutContext(self) -> None:
        """
        L{eventdispatch.withoutContext} has the reactors (which look
        C{callWithLogger} up on the module at each event) dispatch through
        L{callWithoutContext}.
        """
        self.patch(legacy, "callWithLogger", legacy.callWithLogger)
        eventdispatch.withoutContext()
        self.assertIs(legacy.callWithLogger, callWithoutContext)
