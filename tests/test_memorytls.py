# -*- test-case-name: tests.test_memorytls -*-
"""
STARTTLS on a connection that cannot switch to TLS, such as the memory
session of L{twisted_smtpd.testing}: a 454 reply, never an exception out of
the test's C{send}.
"""

from __future__ import annotations

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd.testing import MessageRecorder, memorySession


class MemorySessionTLSTests(SynchronousTestCase):
    def test_refusedWith454(self) -> None:
        """
        STARTTLS in a memory session is answered C{454 4.7.0}, logged once,
        and the session goes on in plain text.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        recorder = MessageRecorder()
        session = memorySession(recorder)
        replies = session.send(
            b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
            b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
        )
        lines = replies.splitlines()
        self.assertIn(b"454 4.7.0 TLS not available due to temporary reason", lines)
        self.assertNotIn(b"220 2.0.0 Ready to start TLS", lines)
        self.assertTrue(lines[-1].startswith(b"250 "), replies)
        self.assertEqual(len(recorder.messages), 1)
        refused = [formatEvent(e) for e in events if "STARTTLS refused" in formatEvent(e)]
        self.assertEqual(refused, ["STARTTLS refused: this connection cannot switch to TLS"])
