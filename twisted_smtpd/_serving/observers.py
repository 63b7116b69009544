# -*- test-case-name: tests.test_protocol -*-
"""
The observers of a server's session events (log lines, metrics), each told
of the events it wants.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

from twisted.logger import Logger

from twisted_smtpd._core.session import Session

Observer = Callable[[str, Session, dict[str, Any]], None]


class _EveryEvent:
    """
    The events wanted by an observer that names none: all of them.
    """

    def __contains__(self, event: object) -> bool:
        return True


_EVERY_EVENT: Container[str] = _EveryEvent()


class Observers:
    """
    Observers of session events, called as C{observer(event, session,
    data)}.  An observer with an C{events} attribute (a set of event names)
    is told of those only.

    @ivar wanted: The events at least one observer wants: a session need
        not make any other.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._interests: list[tuple[Observer, frozenset[str] | None]] = []
        self.wanted: Container[str] = frozenset()

    @property
    def observers(self) -> tuple[Observer, ...]:
        """
        The observers, in the order they were added.
        """
        return tuple(observer for observer, _ in self._interests)

    def add(self, observer: Observer) -> None:
        """
        Tell C{observer} of the events it wants from now on.

        @raise TypeError: If its C{events} is not a set, list or tuple of
            names (a string would be a set of letters).
        """
        events = getattr(observer, "events", None)
        interest = None
        if events is not None:
            if not isinstance(events, set | frozenset | list | tuple) or not all(
                isinstance(event, str) for event in events
            ):
                raise TypeError(
                    f"observer {observer!r}: events must be a set of event names, not {events!r}"
                )
            interest = frozenset(events)
        self._interests.append((observer, interest))
        if interest is None or self.wanted is _EVERY_EVENT:
            self.wanted = _EVERY_EVENT
        else:
            self.wanted = frozenset().union(*(i for _, i in self._interests if i is not None))

    def emit(self, event: str, session: Session, data: dict[str, Any]) -> None:
        """
        Tell every observer that wants C{event} of it; an observer that
        raises is logged and does not disturb the session.
        """
        for observer, interest in self._interests:
            if interest is not None and event not in interest:
                continue
            try:
                observer(event, session, data)
            except Exception:
                self._log.failure("observer {observer!r} failed", observer=observer)
