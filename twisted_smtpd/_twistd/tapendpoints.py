# -*- test-case-name: tests.test_configvalues -*-
"""
The parameters of the endpoint strings of C{twistd smtpd} (C{--listen},
C{--metrics}, C{--lmtp-to}) checked before Twisted parses them, so that a
mistake is one line in the server's own words: a parameter given twice
(Twisted keeps the last one silently), a number that is not ASCII digits
(Twisted's C{int()} takes C{+25}, C{2_5} or full-width digits, and says
"invalid literal for int()" of the rest), a required parameter missing.

Only the endpoint kinds listed here are checked; the strings are split
with Twisted's own tokenizer, so quoting (C{\\:}) means what it means to
Twisted.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.python import usage

__all__ = ["checkParameters"]

#: A minus sign is let through, for the port's range check to name.
_DIGITS = re.compile(r"-?[0-9]+")
_OCTAL = re.compile(r"[0-7]+")

#: Per server endpoint kind: its parameters in the order Twisted takes
#: them positionally, the ones that must be given, and the numeric ones
#: with the digits each takes.
_SERVER: dict[str, tuple[tuple[str, ...], tuple[str, ...], dict[str, re.Pattern[str]]]] = {
    "tcp": (("port", "interface", "backlog"), ("port",), {"port": _DIGITS, "backlog": _DIGITS}),
    "tcp6": (("port", "backlog", "interface"), ("port",), {"port": _DIGITS, "backlog": _DIGITS}),
    "ssl": (
        (
            "port",
            "privateKey",
            "certKey",
            "sslmethod",
            "interface",
            "backlog",
            "extraCertChain",
            "dhParameters",
        ),
        ("port",),
        {"port": _DIGITS, "backlog": _DIGITS},
    ),
    "unix": (
        ("address", "mode", "backlog", "lockfile"),
        ("address",),
        {"mode": _OCTAL, "backlog": _DIGITS, "lockfile": _DIGITS},
    ),
    "systemd": (("domain", "index", "name"), ("domain",), {"index": _DIGITS}),
}

#: The same for the client endpoints of C{--lmtp-to}.
_CLIENT: dict[str, tuple[tuple[str, ...], tuple[str, ...], dict[str, re.Pattern[str]]]] = {
    "tcp": (("host", "port"), ("host", "port"), {"port": _DIGITS, "timeout": _DIGITS}),
    "ssl": (("host", "port"), ("host", "port"), {"port": _DIGITS, "timeout": _DIGITS}),
    "tls": (("host", "port"), ("host", "port"), {"port": _DIGITS, "timeout": _DIGITS}),
    "unix": (("path",), ("path",), {"timeout": _DIGITS, "lockfile": _DIGITS}),
}

_DIGIT_WORDS = {_DIGITS: "ASCII digits", _OCTAL: "octal digits (0-7)"}


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
    order, required, numbers = table[kind]
    given: dict[str, str] = {}
    for name, value in pairs:
        if name in given:
            return f"{kind}: {name} given twice"
        given[name] = value
    positional = args[1:]
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
    return None


def checkParameters(flag: str, description: str, *, client: bool = False) -> None:
    """
    Refuse an endpoint string whose parameters Twisted would take wrongly
    or refuse in its own words: a parameter given twice (C{tcp:port=25:port=26},
    C{tcp:25:port=26}), a number (port, backlog, mode, index, timeout) not
    written in ASCII digits, a required parameter missing.  C{haproxy:}
    before a server endpoint is looked through.

    @param flag: The flag's name without the dashes, for the message.
    @param client: Whether C{description} is a client endpoint string.
    @raise usage.UsageError: C{--FLAG 'DESCRIPTION': KIND: what is wrong}.
    """
    inner = description
    if not client:
        while inner.partition(":")[0].strip().lower() == "haproxy":
            inner = inner.partition(":")[2]
    why = _problem(inner, client)
    if why is not None:
        raise usage.UsageError(f"--{flag} {description!r}: {why}")
