# -*- test-case-name: tests.integration.test_stuckthread -*-
"""
C{twistd smtpd} told to stop while a call in its thread pool never returns
(a disk write or read hanging on NFS or a FUSE mount): it ends all the
same, saying which thread it left behind.
"""

from __future__ import annotations

import signal

from tests.integration.helpers import ServerTestCase


class StuckThreadTests(ServerTestCase):
    def test_stopsWithStuckThread(self) -> None:
        """
        SIGTERM ends the process (by that signal, as C{twistd} does)
        although a call in the reactor's thread pool never returns, after
        one line naming the thread and the call.
        """
        server = self.startServer(
            "--handler", "tests.integration.stuckthreadhandler:make", maildir=False
        )
        server.waitForLog("stuck call running")
        self.assertEqual(server.stop(), -signal.SIGTERM)
        self.assertRegex(
            server.output,
            r"Stopping without 1 busy thread\(s\) after 3s \(a file system or name server"
            r" not answering\?\): PoolThread-twisted\.internet\.reactor-\d+ in stuckWrite"
            r" \(\S+/tests/integration/stuckthreadhandler\.py:\d+\)",
        )
