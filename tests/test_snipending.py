# -*- test-case-name: tests.test_snipending -*-
"""
L{DynamicSNI} past its limit of names waited for: a client naming more
host names than the limit while the C{sniCallback} answers slowly leaves
Deferreds the server does not wait for, whose failures must still be
logged as the callback's, never left unhandled.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._serving.sni import DynamicSNI


class PastTheLimitTests(SynchronousTestCase):
    def test_failureBeyondTheLimitLogged(self) -> None:
        """
        The failure of a Deferred answer beyond the limit is logged once,
        as that of one within it, and nothing is left unhandled.
        """
        answers: dict[str, Deferred[Any]] = {}

        def callback(name: str) -> object:
            answers[name] = Deferred()
            return answers[name]

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        sni = DynamicSNI(callback, limit=1)
        self.assertIsNone(sni.contextFor("a.example"))
        self.assertIsNone(sni.contextFor("b.example"))
        self.assertEqual(sorted(answers), ["a.example", "b.example"])
        for answer in answers.values():
            answer.errback(RuntimeError("no context"))
        answers.clear()
        gc.collect()
        texts = [formatEvent(event) for event in events]
        self.assertEqual(
            sorted(text for text in texts if "sniCallback" in text),
            ["sniCallback('a.example') failed", "sniCallback('b.example') failed"],
        )
        self.assertFalse([text for text in texts if "Unhandled" in text], texts)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_askedAgainAfterFailureBeyondTheLimit(self) -> None:
        """
        A name whose answer beyond the limit failed is asked for again, and
        that answer is waited for once there is room.
        """
        answers: list[Deferred[Any]] = []

        def callback(name: str) -> object:
            answers.append(Deferred())
            return answers[-1]

        sni = DynamicSNI(callback, limit=1)
        sni.contextFor("a.example")
        sni.contextFor("b.example")
        answers[1].errback(RuntimeError("no context"))
        answers[0].callback(None)
        sni.contextFor("b.example")
        self.assertEqual(len(answers), 3)
        sni.contextFor("b.example")
        self.assertEqual(len(answers), 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
