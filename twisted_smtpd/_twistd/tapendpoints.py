# -*- test-case-name: tests.test_configvalues -*-
"""
The parameters of the endpoint strings of C{twistd smtpd} (C{--listen},
C{--metrics}, C{--lmtp-to}) checked before Twisted parses them, so that a
mistake is one line in the server's own words: a parameter given twice
(Twisted keeps the last one silently), a number that is not ASCII digits
(Twisted's C{int()} takes C{+25}, C{2_5} or full-width digits, and says
"invalid literal for int()" of the rest), a required parameter missing,
an unknown one (Twisted names its own private function).

Only the endpoint kinds listed here are checked; the strings are split
with Twisted's own tokenizer, so quoting (C{\\:}) means what it means to
Twisted.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, NamedTuple

from twisted.python import usage

from twisted_smtpd._serving.listeners import SSL_ARGUMENTS, behindProxy

__all__ = ["checkParameters"]

#: A minus sign is let through, for the port's range check to name.
_DIGITS = re.compile(r"-?[0-9]+")
#: A UNIX socket's mode: octal digits, after C{0o} as in Python (Twisted
#: reads it with C{int(mode, 8)}, which takes C{0o660} as C{660}).
_OCTAL = re.compile(r"(?:0[oO])?[0-7]+")


class _Kind(NamedTuple):
    """
    What one kind of endpoint string takes.

    @ivar order: Its parameters in the order Twisted takes them by place.
    @ivar required: Those that must be given.
    @ivar numbers: The numeric ones, with the digits each takes.
    @ivar more: The parameters taken by name only; C{None} when the kind
        takes more than are checked here (names are then left to Twisted).
    """

    order: tuple[str, ...]
    required: tuple[str, ...]
    numbers: dict[str, re.Pattern[str]]
    more: tuple[str, ...] | None = ()


_TCP_NUMBERS = {"port": _DIGITS, "backlog": _DIGITS}

#: The server endpoint kinds checked (C{ssl:} before it becomes C{tcp:}).
_SERVER = {
    "tcp": _Kind(("port", "interface", "backlog"), ("port",), _TCP_NUMBERS),
    "tcp6": _Kind(("port", "backlog", "interface"), ("port",), _TCP_NUMBERS),
    "ssl": _Kind(("port", *SSL_ARGUMENTS), ("port",), _TCP_NUMBERS),
    "unix": _Kind(
        ("address", "mode", "backlog", "lockfile"),
        ("address",),
        {"mode": _OCTAL, "backlog": _DIGITS, "lockfile": _DIGITS},
    ),
    "systemd": _Kind(("domain", "index", "name"), ("domain",), {"index": _DIGITS}),
}

#: The client endpoint kinds of C{--lmtp-to} checked.
_CLIENT = {
    "tcp": _Kind(
        ("host", "port"),
        ("host", "port"),
        {"port": _DIGITS, "timeout": _DIGITS},
        ("timeout", "bindAddress"),
    ),
    "ssl": _Kind(("host", "port"), ("host", "port"), {"port": _DIGITS, "timeout": _DIGITS}, None),
    "tls": _Kind(("host", "port"), ("host", "port"), {"port": _DIGITS, "timeout": _DIGITS}, None),
    "unix": _Kind(
        ("path",), ("path",), {"timeout": _DIGITS, "lockfile": _DIGITS}, ("timeout", "lockfile")
    ),
}

_DIGIT_WORDS = {_DIGITS: "ASCII digits", _OCTAL: "octal digits (0-7)"}

#: The numbers taken only in a range: the queue of connections not yet
#: accepted (Linux caps it at C{net.core.somaxconn}; below 1 it takes its
#: least queue, silently).
_RANGES = {"backlog": (1, 65535)}

#: The numbers taken only from a least value: a client's connection
#: timeout in seconds (0 times every connection out at once; a negative
#: one fails every attempt with Twisted's C{AssertionError}).
_LEAST = {"timeout": 1}

#: The permission bits a UNIX socket's C{mode=} may set: Twisted would
#: C{chmod} the socket with setuid, setgid or sticky bits too.
_MAX_MODE = 0o777

#: The parameters that take an address, IPv6 addresses among them.
_ADDRESSES = ("interface", "host", "bindAddress")

#: An address parameter given by name, at the start or after a colon.
_ADDRESS_NAMED = re.compile(r"(?:^|:)(" + "|".join(_ADDRESSES) + r")=")


def _bareIPv6(description: str) -> str | None:
    """
    The name of the first address parameter of C{description} given an
    IPv6 address with its colons not escaped (C{interface=::1}, which the
    tokenizer splits into more parameters), or C{None}.  The value is
    taken up to the next C{name=}: it is an IPv6 address if it holds
    C{::} or parses as one (a host name and a port, C{host=db:24}, does
    not).
    """
    for found in _ADDRESS_NAMED.finditer(description):
        pieces = []
        for piece in description[found.end() :].split(":"):
            if "=" in piece:
                break
            pieces.append(piece)
        value = ":".join(pieces)
        if len(pieces) < 2 or "\\" in value:
            continue
        if "::" in value or _isIPv6(value):
            return found.group(1)
    return None


def _isIPv6(text: str) -> bool:
    """
    Whether C{text} is an IPv6 address.
    """
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _split(description: str) -> tuple[list[str], list[tuple[str, str]]]:
    """
    The positional and the keyword parameters of C{description}, as
    Twisted's C{_parse} splits them, but keeping every keyword given.
    """
    from twisted.internet import endpoints

    tokenize: Any = endpoints._tokenize  # unannotated in Twisted
    tokens = tokenize(description)
    string: Any = endpoints._STRING
    args: list[str] = []
    pairs: list[tuple[str, str]] = []
    sofar: list[str] = []
    for kind, value in [*tokens, (None, ":")]:
        if kind is string:
            sofar.append(value)
        elif value == ":":
            if len(sofar) == 1:
                args.append(sofar[0])
            elif sofar:
                pairs.append((sofar[0], sofar[1]))
            sofar = []
    return args, pairs


def _problem(description: str, client: bool) -> str | None:
    """
    What is wrong with the parameters of C{description}, or C{None}.
    """
    args, pairs = _split(description)
    if not args:
        return None
    kind = args[0].strip().lower()
    table = _CLIENT if client else _SERVER
    if kind not in table:
        return None
    order, required, numbers, more = table[kind]
    given: dict[str, str] = {}
    for name, value in pairs:
        if name in given:
            return f"{kind}: {name} given twice"
        if more is not None and name not in order + more:
            return f"{kind}: unknown parameter {name!a}; known: {', '.join(order + more)}"
        given[name] = value
    bare = _bareIPv6(description)
    if bare is not None:
        return f"{kind}: an IPv6 address needs each colon escaped as \\: ({bare}=\\:\\:1)"
    positional = args[1:]
    if len(positional) > len(order):
        return (
            f"{kind}: {len(positional)} values by place, at most {len(order)}: {', '.join(order)}"
        )
    names = list(order)
    if client and kind in ("tcp", "ssl", "tls") and len(positional) == 1 and "host" in given:
        # tcp:host=H:25: Twisted takes the lone positional value as the port.
        names = ["port"]
    for name, value in zip(names, positional, strict=False):
        if name in given:
            return f"{kind}: {name} given twice"
        given[name] = value
    for name in required:
        if name not in given:
            return f"{kind}: needs a {name}"
    for name, grammar in numbers.items():
        if name not in given:
            continue
        value = given[name]
        if value == "":
            return f"{kind}: {name} is empty"
        if not (value.isascii() and grammar.fullmatch(value)):
            return f"{kind}: {name} must be {_DIGIT_WORDS[grammar]}, got {value!a}"
        low, high = _RANGES.get(name, (None, None))
        if low is not None and high is not None and not low <= int(value) <= high:
            return f"{kind}: {name} must be from {low} to {high}, got {value!a}"
        if name in _LEAST and int(value) < _LEAST[name]:
            return f"{kind}: {name} must be at least {_LEAST[name]} (seconds), got {value!a}"
    if kind == "unix":
        return _unixProblem(given)
    return None


def _unixProblem(given: dict[str, str]) -> str | None:
    """
    What is wrong with the values of a C{unix:} endpoint string, its
    numbers being digits: an empty path (Twisted would fail to bind it in
    its own words), a C{mode} beyond the permission bits, a C{lockfile}
    other than 0 or 1 (Twisted takes any other number as 1).
    """
    if given.get("address") == "":
        # A client's (--lmtp-to) is refused with its other checks.
        return "unix: the UNIX socket path is empty"
    mode = given.get("mode")
    if mode is not None and int(mode, 8) > _MAX_MODE:
        return (
            f"unix: mode must be at most {_MAX_MODE:o} (no setuid, setgid or sticky bit),"
            f" got {mode!a}"
        )
    lockfile = given.get("lockfile")
    if lockfile is not None and lockfile not in ("0", "1"):
        return f"unix: lockfile must be 0 or 1, got {lockfile!a}"
    return None


def checkParameters(flag: str, description: str, *, client: bool = False) -> None:
    """
    Refuse an endpoint string whose parameters Twisted would take wrongly
    or refuse in its own words: a parameter given twice (C{tcp:port=25:port=26},
    C{tcp:25:port=26}), a number (port, backlog, mode, index, timeout) not
    written in ASCII digits, a required parameter missing, an unknown
    parameter, more values by place than the kind takes, a C{backlog=}
    out of its range (1 to 65535), a client's C{timeout=} below 1, a
    C{unix:} path that is empty, a C{mode=} above C{777}, a C{lockfile=}
    other than 0 or 1, an IPv6 address whose colons are not escaped
    (C{interface=::1}, which Twisted splits into more parameters), a
    backslash at the end escaping nothing.
    C{haproxy:} before a server endpoint is looked through.

    @param flag: The flag's name without the dashes, for the message.
    @param client: Whether C{description} is a client endpoint string.
    @raise usage.UsageError: C{--FLAG 'DESCRIPTION': KIND: what is wrong}.
    """
    if (len(description) - len(description.rstrip("\\"))) % 2:
        # Twisted's tokenizer fails on it with a RuntimeError.
        raise usage.UsageError(
            f"--{flag} {description!r}: a backslash at the end escapes nothing"
            " (write \\\\ for a backslash)"
        )
    inner = description if client else behindProxy(description)[1]
    why = _problem(inner, client)
    if why is not None:
        raise usage.UsageError(f"--{flag} {description!r}: {why}")
