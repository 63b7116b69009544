# -*- test-case-name: tests.test_debugsession -*-
"""
C{--debug} (L{DebuggingHandler}) names the session a printed message
belongs to, with the id its log lines and C{Received:} header carry, as
the operator's guide says.
"""

from __future__ import annotations

import io

from twisted.trial.unittest import SynchronousTestCase

from tests.test_handlers import makeSession
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import DebuggingHandler


class DebugSessionTests(SynchronousTestCase):
    def test_sessionIdPrinted(self) -> None:
        """
        The printed envelope ends with a C{session:} line giving the
        session's id, before the empty line and the message.
        """
        out = io.StringIO()
        stream = MessageStream()
        d = DebuggingHandler(out).onData(stream, makeSession(id="k3x9q2ab"))
        stream._write(b"Subject: hi\r\n\r\nbody\r\n")
        stream._finish()
        self.successResultOf(d)
        envelope = out.getvalue().split("\n\n", 1)[0].splitlines()
        self.assertEqual(envelope[-2:], ["peer: 192.0.2.1:40123", "session: k3x9q2ab"])
