# -*- test-case-name: tests.test_logging -*-
"""
Log events as JSON lines, for log shippers: L{jsonEvent} makes one event a
flat dict, L{jsonLogObserver} writes each as one JSON object per line
(C{twistd --logger twisted_smtpd._serving.logging.jsonLogObserver}, which
names it where it was first defined).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any, cast

from twisted.logger import ILogObserver, LogEvent, formatEvent
from zope.interface import provider


def jsonDefault(value: object) -> object:
    """
    How C{json.dumps} writes values JSON has no type for: bytes as text,
    sets and tuples as lists, anything else as C{str()}.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


#: Keys of Twisted's own bookkeeping, never written as fields, and those
#: every line sets itself.
_INTERNAL = frozenset(
    {"format", "isError", "message", "system", "time", "failure", "why", "level", "namespace"}
    | {"text", "traceback"}
)


def jsonEvent(event: LogEvent) -> dict[str, Any]:
    """
    One log event as a flat dict for a JSON line: C{time} (ISO 8601, UTC,
    milliseconds), C{level} (C{"info"}), C{namespace}, C{text} (the
    formatted message), C{traceback} for a failure, then the event's own
    fields; Twisted's C{log_*} keys and its legacy keys are left out.  An
    event's own field named like one of these is not written: C{text}
    always follows C{namespace}, as fail2ban's JSON filter reads them.
    """
    out: dict[str, Any] = {
        key: value
        for key, value in event.items()
        if not key.startswith("log_") and key not in _INTERNAL
    }
    when = event.get("log_time")
    level = event.get("log_level")
    out["time"] = (
        None
        if when is None
        else datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
    )
    out["level"] = getattr(level, "name", None)
    out["namespace"] = event.get("log_namespace")
    out["text"] = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        out["traceback"] = failure.getTraceback()
    return out


def jsonLogObserver(outFile: IO[Any] | None = None) -> ILogObserver:
    """
    An observer writing each event as one flat JSON object per line (no
    record separator), for log shippers that read JSON lines, as
    L{jsonEvent} makes it.

    @param outFile: A text file; standard output by default.
    """
    out = sys.stdout if outFile is None else outFile

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        try:
            line = json.dumps(jsonEvent(event), default=jsonDefault)
        except (TypeError, ValueError) as e:
            line = json.dumps({"text": f"unserialisable log event: {e}"})
        out.write(line + "\n")
        out.flush()

    return cast(ILogObserver, observe)
