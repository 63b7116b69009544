# -*- test-case-name: tests.test_session -*-
"""
Session ids: short, random, distinct, and never shared with a forked child.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._session import newSessionId


class SessionIdTests(SynchronousTestCase):
    """
    L{newSessionId}.
    """

    def test_format(self) -> None:
        """
        An id is 8 lower-case base32 characters (40 random bits).
        """
        for _ in range(200):
            self.assertIsNotNone(re.fullmatch(r"[a-z2-7]{8}", newSessionId()))

    def test_distinct(self) -> None:
        """
        Ids drawn one after the other, across many refills of the pool of
        random bytes, do not repeat.
        """
        ids = [newSessionId() for _ in range(5000)]
        self.assertEqual(len(set(ids)), len(ids))

    def test_forkedChildDrawsItsOwn(self) -> None:
        """
        A child forked while ids are pooled (twistd daemonising, a handler
        forking) does not hand out the ids its parent will.
        """
        newSessionId()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.write(write, "".join(newSessionId() for _ in range(8)).encode())
            finally:
                os._exit(0)
        os.close(write)
        try:
            child = os.read(read, 1024).decode()
        finally:
            os.close(read)
            os.waitpid(pid, 0)
        parent = "".join(newSessionId() for _ in range(8))
        self.assertEqual(len(child), 64)
        self.assertNotEqual(child, parent)
