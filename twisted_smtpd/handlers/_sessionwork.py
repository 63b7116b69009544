# -*- test-case-name: tests.test_chain,tests.test_webhookexchange -*-
"""
L{SessionWork}: what a handler is doing for each session, so that work
finishing after the session ended (its client left, the server timed it
out or stopped: C{onClose} came first) begins nothing more.
"""

from __future__ import annotations

__all__ = ["SessionWork"]


class SessionWork:
    """
    How many pieces of work (hooks, deliveries) run for each session id,
    and which sessions were told C{onClose} while one did.
    """

    def __init__(self) -> None:
        self._running: dict[str, int] = {}
        self._ended: set[str] = set()

    def begin(self, session: str) -> None:
        """
        A piece of work for C{session} begins.
        """
        running = self._running
        running[session] = running.get(session, 0) + 1

    def finish(self, session: str) -> None:
        """
        A piece of work for C{session} began with L{begin} is over; with
        the last, the session is forgotten.
        """
        count = self._running.pop(session) - 1
        if count:
            self._running[session] = count
        else:
            self._ended.discard(session)

    def close(self, session: str) -> None:
        """
        C{session} ended (C{onClose}): remembered while its work runs.
        """
        if session in self._running:
            self._ended.add(session)

    def ended(self, session: str) -> bool:
        """
        Whether C{session} ended while its work runs.
        """
        return session in self._ended
