"""
What the fuzzer's model expects of a session beyond the order of its
replies: the errors and junk commands counted towards C{maxErrors}
(docs/behaviour.md, "Errors" and "Junk commands"), the closes each known
421 or 521 stands for, and one log event per refusal.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted_smtpd._core.grammar import AUTH_LINE_LIMIT, Verb, lineLimit, parseCommand
from twisted_smtpd._core.replies import CommandError
from twisted_smtpd._core.session import Session

#: Commands that move no message on (docs/behaviour.md, "Junk commands").
JUNK = frozenset(
    {
        Verb.HELO,
        Verb.EHLO,
        Verb.LHLO,
        Verb.RSET,
        Verb.NOOP,
        Verb.VRFY,
        Verb.HELP,
    }
)
#: Recipients refused for being too many before each one counts.
OVERSHOOT = 1000

#: Texts of the 421 and 521 replies the server closes with, by cause.
TOO_MANY_ERRORS = b"Too many errors"
FUZZER = b"by the fuzzer"
HANDLER_TIMEOUT = b"waiting for the mail system"
TIMEOUT = b"timeout exceeded"
SHUTDOWN = b"shutting down"
TOO_SLOW = b"too slow"
HTTP = b"not an HTTP server"
AUTH_FAILURES = b"authentication"
UNAUTHENTICATED = b"unauthenticated"
BDAT_SYNTAX = b"BDAT chunk-size"
#: Closing replies logged apart, not as a refusal (replies.LOGGED_APART).
LOGGED_APART = (HANDLER_TIMEOUT, TIMEOUT, SHUTDOWN, b"too slow")


def isJunk(line: bytes, lmtp: bool, maxLineLength: int) -> bool:
    """
    Whether the server, reading C{line} as a command, counts it as junk:
    a junk verb that parses, fits its line limit and is not the greeting
    of the other protocol; or C{BDAT 0} without LAST.
    """
    if len(line) > AUTH_LINE_LIMIT:
        return False
    if len(line) > maxLineLength and len(line) > lineLimit(line, maxLineLength):
        return False
    try:
        command = parseCommand(line)
    except CommandError:
        return False
    verb = command.verb
    if verb is Verb.BDAT:
        return command.argument == b"0"
    if verb not in JUNK:
        return False
    if lmtp:
        return verb not in (Verb.HELO, Verb.EHLO)
    return verb is not Verb.LHLO


class Tally:
    """
    The model's count of a session's errors and junk commands.

    @ivar closeDue: The last reply reached C{maxErrors}: the next must be
        C{421 4.7.0 Too many errors}.
    @ivar soft: C{softErrorLimit}, or 0 when the error tarpit is off
        (C{errorSleep} 0).
    @ivar engaged: Whether the error tarpit holds every reply now
        (docs/behaviour.md, "Error tarpit"): the count reached C{soft}
        (below C{maxErrors}), and no message accepted since.
    @ivar engagements: How many times the count reached C{soft}.
    @ivar readClosed: The client shut its sending side: nothing is held
        from then on.
    """

    def __init__(self, maxErrors: int, maxJunk: int, soft: int = 0) -> None:
        self.maxErrors = maxErrors
        self.maxJunk = maxJunk
        self.soft = soft
        self.errors = 0
        self.junk = 0
        self.overshoot = 0
        self.closeDue = False
        self.engaged = False
        self.engagements = 0
        self.readClosed = False

    def shutSending(self) -> None:
        """
        The client shut its sending side: the held reply leaves at once,
        and no reply is held after it.
        """
        self.readClosed = True
        self.engaged = False

    def countJunk(self) -> None:
        """
        A junk command was answered: past C{maxJunk}, it counts as an
        error (its 421, at C{maxErrors}, follows its reply): the first
        C{maxJunk + 1} do not, as Postfix compares the count before the
        command (C{junk_cmds++ > limit}).
        """
        self.junk += 1
        if self.maxJunk and self.junk > self.maxJunk + 1:
            self._error()

    def refused(self, code: int, lines: list[bytes]) -> None:
        """
        A command was answered C{code}.
        """
        if code < 400 or code in (421, 521):
            return
        recipients = code == 452 and b"too many recipients" in b" ".join(lines)
        if recipients and self.overshoot < OVERSHOOT:
            self.overshoot += 1
            return
        self._error()

    def message(self, codes: list[int]) -> None:
        """
        A message was answered C{codes} (one per LMTP recipient).
        """
        if any(code in (421, 521) for code in codes):
            return
        if any(code >= 400 for code in codes):
            self._error()
        else:
            # Forgiven before its 250, which is not held.
            self.errors = self.junk = 0
            self.engaged = False

    def _error(self) -> None:
        self.errors += 1
        if self.errors >= self.maxErrors:
            self.closeDue = True
        elif self.errors == self.soft and not self.readClosed:
            # Postfix's smtpd_soft_error_limit: every reply after this one.
            self.engaged = True
            self.engagements += 1


class Events:
    """
    A server observer keeping the events that log a refusal (C{reject},
    C{message}) in order, and counting C{connect} and C{close}.
    """

    events = frozenset({"connect", "close", "reject", "message"})

    def __init__(self) -> None:
        self.refusals: deque[tuple[str, dict[str, Any]]] = deque()
        self.connects = 0
        self.closes = 0

    def __call__(self, event: str, session: Session, data: dict[str, Any]) -> None:
        if event == "connect":
            self.connects += 1
        elif event == "close":
            self.closes += 1
        else:
            self.refusals.append((event, data))

    def take(self, event: str) -> dict[str, Any]:
        """
        The next refusal event, which must be C{event}.
        """
        assert self.refusals, f"no {event} event for a refusal"
        kind, data = self.refusals.popleft()
        assert kind == event, f"{kind} event {data!r} where a {event} was due"
        return data

    def dropUnanswered(self) -> None:
        """
        Forget the C{message} events of messages whose reply was never sent.
        """
        self.refusals = deque(
            (kind, data)
            for kind, data in self.refusals
            if not (kind == "message" and data.get("unanswered"))
        )
