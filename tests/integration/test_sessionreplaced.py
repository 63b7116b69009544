# -*- test-case-name: tests.integration.test_sessionreplaced -*-
"""
A handler replacing C{session.envelope}, over a real socket with
C{smtplib}: the client is answered 451 and goes on, and the log holds the
handler's error once, no traceback of the server's.
"""

from __future__ import annotations

import smtplib

from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.test_sessionreplaced import Replacing
from twisted_smtpd import ServerOptions
from twisted_smtpd.testing import listenForTests


def _talk(port: int) -> list[tuple[int, bytes]]:
    """
    One session: RCPT twice (the first is where the handler replaces the
    envelope), a message, RSET, a second transaction, QUIT.
    """
    answers = []
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("client.example")
        answers.append(client.mail("a@example.com"))
        answers.append(client.rcpt("b@example.com"))
        answers.append(client.rcpt("b@example.com"))
        answers.append(client.data(b"Subject: x\r\n\r\nbody\r\n"))
        answers.append(client.rset())
        answers.append(client.mail("a@example.com"))
        answers.append(client.rcpt("c@example.com"))
        answers.append(client.data(b"Subject: y\r\n\r\nbody\r\n"))
    return answers


class ReplacedEnvelopeTests(TestCase):
    """
    C{session.envelope = None} in a hook, seen from a real client.
    """

    timeout = 60

    async def test_onRcptToReplacesEnvelope(self) -> None:
        """
        The RCPT whose hook set C{session.envelope = None} is answered
        451 4.3.0; the session goes on with the envelope the server kept,
        the message, RSET and the next transaction are accepted, and the
        log holds one error naming the hook, none of Twisted's.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        handler = Replacing("onRcptTo", "envelope", None)
        options = ServerOptions(
            name="mx.test.invalid", disableReverseLookup=True, authOptional=True
        )
        server = await listenForTests(handler, options, reactor=reactor)
        self.addCleanup(server.close)
        answers = await deferToThread(_talk, server.port)
        self.assertEqual([code for code, _ in answers], [250, 451, 250, 250, 250, 250, 250, 250])
        self.assertTrue(answers[1][1].startswith(b"4.3.0 "), answers[1])
        errors = self.flushLoggedErrors(TypeError)
        self.assertEqual(
            [str(e.value) for e in errors],
            ["onRcptTo replaced session.envelope with a NoneType: the server's own is kept"],
        )
        self.assertEqual(self.flushLoggedErrors(), [])
        failures = [e for e in events if e.get("log_failure") is not None]
        self.assertEqual(len(failures), 1)
        self.assertEqual(len(handler.messages), 2)
