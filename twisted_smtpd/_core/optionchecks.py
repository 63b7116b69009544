# -*- test-case-name: tests.test_optionchecks -*-
"""
Pure: the validators of L{ServerOptions <twisted_smtpd._core.options.ServerOptions>}
settings that take a value in one form (numbers, timeouts, names, reply
texts, commands and mechanisms), with the sets and bounds they check
against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from twisted_smtpd._core.hostname import aLabels, machineName
from twisted_smtpd._core.optionvalues import MIN_RATE_WINDOW, MIN_TIMEOUT, plainText
from twisted_smtpd._core.replies import MAX_TEXT_OCTETS

AUTH_METHODS = frozenset({"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"})
BARE_NEWLINE_POLICIES = frozenset({"reject", "normalize", "legacy"})
HIDEABLE = frozenset(
    {
        "STARTTLS",
        "SIZE",
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "REQUIRETLS",
        "CHUNKING",
    }
)
KNOWN_COMMANDS = frozenset(
    {
        "EHLO",
        "HELO",
        "LHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "BDAT",
        "RSET",
        "NOOP",
        "QUIT",
        "VRFY",
        "HELP",
        "STARTTLS",
        "AUTH",
        "XCLIENT",
        "XFORWARD",
    }
)


def _noLineBreak(instance: object, attribute: Any, value: str | None) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {type(value).__name__}")
    if value is not None and any(c in value for c in "\r\n\x00"):
        raise ValueError(f"{attribute.name} must not contain CR, LF or NUL")


def replyText(instance: object, attribute: Any, value: str | None) -> None:
    """
    A text the server writes into its replies: printable US-ASCII only, as
    RFC 5321 section 4.2 has reply text (a client may refuse or mangle
    other bytes, and a control character would reach its terminal or log).

    @raise ValueError: Naming the setting and the first character refused,
        escaped.
    """
    _noLineBreak(instance, attribute, value)
    if value is None:
        return
    for character in value:
        if not " " <= character <= "~":
            shown = ascii(character)
            raise ValueError(
                f"{attribute.name} must be printable US-ASCII (RFC 5321 section 4.2),"
                f" got {shown} at position {value.index(character)}"
            )


def _number(*, whole: bool, positive: bool) -> Callable[[object, Any, float], None]:
    """
    A validator for a count (C{whole}) or a number of seconds: a finite
    C{int} (or C{float} for seconds, never a C{bool}), not negative, and
    above 0 if C{positive}, so that every limit bounds and every deadline
    comes.

    @raise TypeError: Naming the setting, for a value of another type.
    @raise ValueError: Naming the setting, for a value out of range.
    """
    kinds: tuple[type, ...] = (int,) if whole else (int, float)
    what = "a whole number" if whole else "a number of seconds"

    def check(instance: object, attribute: Any, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise TypeError(f"{attribute.name} must be {what}, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{attribute.name} must be finite, got {value!r}")
        if value < 0:
            raise ValueError(f"{attribute.name} must not be negative")
        if positive and value == 0:
            raise ValueError(f"{attribute.name} must be positive")

    return check


count = _number(whole=True, positive=False)
positiveCount = _number(whole=True, positive=True)
seconds = _number(whole=False, positive=False)


def timeout(instance: object, attribute: Any, value: float) -> None:
    """
    A session timeout: a finite number of seconds (L{_number}), at least
    L{MIN_TIMEOUT}: the deadline sweeper wakes every quarter of the
    shortest, and would spin on less.

    @raise TypeError: Naming the setting, for a value of another type.
    @raise ValueError: Naming the setting, for a shorter one or one not
        finite.
    """
    if isinstance(value, int | float) and not isinstance(value, bool) and value < MIN_TIMEOUT:
        raise ValueError(f"{attribute.name} must be at least {MIN_TIMEOUT:g} second, got {value!r}")
    seconds(instance, attribute, value)


#: The longest C{errorSleep}: RFC 5321 section 4.5.3.2 has a client wait 5
#: minutes for the reply to MAIL or RCPT; held longer, a reply would reach
#: no client.
MAX_ERROR_SLEEP = 300.0


def errorSleep(instance: object, attribute: Any, value: float) -> None:
    """
    The delay of each reply past C{softErrorLimit}: a finite number of
    seconds (L{_number}), 0 included (no delay), at most
    L{MAX_ERROR_SLEEP}.

    @raise TypeError: Naming the setting, for a value of another type.
    @raise ValueError: Naming the setting, for a value out of range.
    """
    seconds(instance, attribute, value)
    if value > MAX_ERROR_SLEEP:
        raise ValueError(
            f"{attribute.name} must be at most {MAX_ERROR_SLEEP:g} seconds, got {value!r}"
        )


#: The largest C{size}: the EHLO keyword SIZE and the MAIL parameter SIZE=
#: take at most 20 digits (RFC 1870 section 4); a larger limit would be
#: advertised in a form clients may refuse, and no client could declare a
#: message that large.
MAX_SIZE = 10**20 - 1


def size(instance: object, attribute: Any, value: int) -> None:
    count(instance, attribute, value)
    if value > MAX_SIZE:
        raise ValueError(
            f"{attribute.name} must be at most {MAX_SIZE} (20 digits, RFC 1870), or 0 for"
            f" no limit, got {value}"
        )


def prefixLength(instance: object, attribute: Any, value: int) -> None:
    count(instance, attribute, value)
    if not 0 <= value <= 128:
        raise ValueError(f"{attribute.name} must be from 0 to 128")


def checkRate(instance: object, attribute: Any, value: tuple[int, float] | None) -> None:
    if value is None:
        return
    count, seconds = value
    if count <= 0 or not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{attribute.name} must be a positive count per positive seconds")
    if seconds < MIN_RATE_WINDOW:
        # The deadline sweeper would wake every quarter of it.
        raise ValueError(
            f"{attribute.name} must be per at least {MIN_RATE_WINDOW:g} second,"
            f" got per {seconds!r} s"
        )


def defaultName() -> str:
    """
    This machine's name as an ASCII domain (L{machineName}): U-labels as
    A-labels.

    @raise UnusableMachineName: A C{ValueError} saying to set C{name}.
    """
    return machineName()


def hostName(value: str) -> str:
    """
    Convert C{name}: a name in U-labels (C{b\xfccher.example}) written in
    A-labels (C{xn--bcher-kva.example}) with the same IDNA rules as the
    machine's name (L{aLabels}), as a domain in SMTP is ASCII (RFC 5321
    section 4.1.2); an ASCII name (or another type) as it is, for
    L{replyText} to check.  A domain's final dot (C{mx.example.com.}, as
    a zone file writes it) is left out: RFC 5321's domains end with a
    label, and the name is the same.

    @raise ValueError: Naming the setting, for a name with non-ASCII
        characters that cannot be written in A-labels.
    """
    value = plainText(value)  # type: ignore[assignment]
    if isinstance(value, str) and len(value) > 1 and value.endswith(".") and value[-2] != ".":
        value = value[:-1]
    if not isinstance(value, str) or value.isascii():
        return value
    try:
        return aLabels(value)
    except ValueError as e:
        raise ValueError(
            "name must be printable US-ASCII (RFC 5321 section 4.2) or a domain IDNA can"
            f" write in A-labels: {ascii(value)[:80]} is neither ({e})"
        ) from None


def checkAuthMethods(instance: object, attribute: Any, value: tuple[str, ...]) -> None:
    unknown = set(value) - AUTH_METHODS
    if unknown:
        shown = ", ".join(ascii(m)[1:-1] for m in sorted(unknown))
        raise ValueError(f"{attribute.name}: unknown AUTH methods: {shown}")


#: The commands a session cannot do without, with what a client could
#: not do if they were disabled.
_SESSION_COMMANDS = {
    "QUIT": "a client could not end its session",
    "RSET": "a client could not drop a transaction",
}


def checkCommands(instance: object, attribute: Any, value: tuple[str, ...]) -> None:
    unknown = set(value) - KNOWN_COMMANDS
    if unknown:
        shown = ", ".join(ascii(c)[1:-1] for c in sorted(unknown))
        raise ValueError(f"{attribute.name}: unknown commands: {shown}")
    # What every transaction needs: a server without it takes no mail.
    disabled = set(value)
    greetings = ("LHLO",) if getattr(instance, "lmtp", False) else ("EHLO", "HELO")
    needed = [greetings, ("MAIL",), ("RCPT",), ("DATA", "BDAT")]
    for commands in needed:
        if disabled.issuperset(commands):
            raise ValueError(
                f"{attribute.name} must leave {' or '.join(commands)} enabled:"
                " no transaction could be made without it"
            )
    # Every server implements them (RFC 5321 section 4.5.1): a 502 leaves
    # the client no way to end its session or to drop a transaction.
    for command, without in _SESSION_COMMANDS.items():
        if command in disabled:
            raise ValueError(
                f"{attribute.name} must leave {command} enabled: RFC 5321 section"
                f" 4.5.1 requires it ({without})"
            )
    # Without DATA, a message comes by BDAT only, which clients use only
    # where EHLO's (or LHLO's) reply offers CHUNKING (RFC 3030 section 2).
    if "DATA" in disabled:
        why = None
        if getattr(instance, "hideCHUNKING", False):
            why = "CHUNKING is hidden"
        elif not getattr(instance, "lmtp", False) and "EHLO" in disabled:
            why = "EHLO is disabled"
        if why is not None:
            raise ValueError(
                f"{attribute.name} must leave DATA enabled when {why}:"
                " clients send BDAT only where the EHLO or LHLO reply offers CHUNKING"
            )


#: The longest reply line, its code and CRLF included (RFC 5321 section
#: 4.5.3.1.5).
MAX_REPLY_LINE = 512


def checkBanner(instance: object, attribute: Any, value: str | None) -> None:
    """
    The banner as reply text (L{replyText}), short enough (with the name)
    that the 220 greeting (C{220 NAME ESMTP BANNER}) fits in one reply line.
    """
    replyText(instance, attribute, value)
    kind = "LMTP" if getattr(instance, "lmtp", False) else "ESMTP"
    name = getattr(instance, "name", "")
    line = f"220 {name} {kind}" + (f" {value}" if value else "") + "\r\n"
    if len(line) > MAX_REPLY_LINE:
        # The name alone can make it too long, in the library.
        what = attribute.name if value else "name"
        raise ValueError(
            f"{what} makes a 220 greeting of {len(line)} octets, more than the"
            f" {MAX_REPLY_LINE} of a reply line (RFC 5321 section 4.5.3.1.5)"
        )
    # The other reply naming the server (replies.closing).
    line = f"221 2.0.0 {name} Closing connection\r\n"
    if len(line) > MAX_REPLY_LINE:
        raise ValueError(
            f"name makes a 221 reply of {len(line)} octets, more than the"
            f" {MAX_REPLY_LINE} of a reply line (RFC 5321 section 4.5.3.1.5)"
        )


def checkBareNewline(instance: object, attribute: Any, value: str) -> None:
    """
    Refuse a bare newline policy that is none of L{BARE_NEWLINE_POLICIES}.

    @raise TypeError: Naming the setting and the type, for a value that is
        not text.
    @raise ValueError: Naming the setting, the policies and the value given.
    """
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {type(value).__name__}")
    if value not in BARE_NEWLINE_POLICIES:
        policies = ", ".join(sorted(BARE_NEWLINE_POLICIES))
        raise ValueError(f"{attribute.name} must be one of {policies}, got {value!r}")


#: The room a HELO or EHLO reply keeps for the client's name (the second
#: C{%s} of C{heloResponse}): the longest address literal,
#: C{[IPv6:ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]}, the name of a client
#: without a reverse name.  A longer client name is cut at run time where
#: the line would pass 512 octets.
CLIENT_NAME_ROOM = len("[IPv6:]") + 39

#: The longest text of a HELO or EHLO reply's first line (C{250 TEXT} or
#: C{250-TEXT}, CRLF): a reply line is 512 octets (RFC 5321 section
#: 4.5.3.1.5).
MAX_HELO_TEXT = 512 - len("250 \r\n")

DEFAULT_HELO_RESPONSE = "%s Nice to meet you, %s"


def checkHelo(instance: object, attribute: Any, value: str) -> None:
    """
    The HELO/EHLO reply text: reply text (L{replyText}) with two C{%s},
    short enough that with the server's name and an address literal
    (L{CLIENT_NAME_ROOM}) the reply's first line fits in one reply line.
    """
    replyText(instance, attribute, value)
    try:
        value % ("a", "b")
    except (TypeError, ValueError) as e:
        raise ValueError("heloResponse must hold two %s placeholders") from e
    line = "250 " + value % (getattr(instance, "name", ""), "x" * CLIENT_NAME_ROOM) + "\r\n"
    if len(line) > MAX_REPLY_LINE:
        what = attribute.name if value != DEFAULT_HELO_RESPONSE else "name"
        raise ValueError(
            f"{what} makes a 250 reply to HELO or EHLO of {len(line)} octets with a client"
            f" name of {CLIENT_NAME_ROOM}, more than the {MAX_REPLY_LINE} of a reply line"
            " (RFC 5321 section 4.5.3.1.5)"
        )


def checkAuthRequired(instance: object, attribute: Any, value: str) -> None:
    """
    The 530 text: reply text (L{replyText}) of at most
    L{MAX_TEXT_OCTETS}, as every reply text from outside is (a reply line
    is at most 512 octets with its codes and CRLF, RFC 5321 section
    4.5.3.1.5), so that it is never cut.
    """
    replyText(instance, attribute, value)
    if len(value) > MAX_TEXT_OCTETS:
        raise ValueError(
            f"{attribute.name} is {len(value)} octets, more than the {MAX_TEXT_OCTETS} of a"
            f" reply text (a reply line is at most {MAX_REPLY_LINE} octets, RFC 5321"
            " section 4.5.3.1.5)"
        )


# The converters of settings given in more than one form, each naming its
# setting in its errors (attrs gives a converter the value only).
