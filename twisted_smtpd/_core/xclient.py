# -*- test-case-name: tests.test_forwarding -*-
"""
Pure: the attributes of Postfix's XCLIENT and XFORWARD commands, parsed and
checked value by value as Postfix's C{smtpd} checks them (XCLIENT_README,
XFORWARD_README): addresses are IP addresses (IPv6 with or without the
C{IPV6:} prefix), ports are 0 to 65535 in ASCII digits, names are host
names, and C{[UNAVAILABLE]} (C{[TEMPUNAVAIL]} too for C{NAME}) says a value
is unknown, in any case (C{[unavailable]}).  Anything else is refused
with C{501 5.5.4}.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.grammar import XCLIENT_ATTRIBUTES, XFORWARD_ATTRIBUTES, parseAttributes
from twisted_smtpd._core.printable import validHostname
from twisted_smtpd._core.replies import CommandError

__all__ = ["UNAVAILABLE", "parseXClient", "parseXForward", "stripIPv6Prefix"]

UNAVAILABLE = "[UNAVAILABLE]"
TEMPUNAVAIL = "[TEMPUNAVAIL]"
#: The longest free-text value (C{HELO}, C{LOGIN}, C{IDENT}, C{PROTO} of
#: XFORWARD) accepted, as Postfix's C{VALID_HOSTNAME_LEN}.
MAX_TEXT = 255

_PORT = re.compile(r"[0-9]{1,5}")


def stripIPv6Prefix(value: str) -> str:
    """
    An XCLIENT/XFORWARD address without Postfix's C{IPV6:} prefix.
    """
    return value[5:] if value[:5].upper() == "IPV6:" else value


def _address(value: str) -> bool:
    if value == UNAVAILABLE:
        return True
    prefixed = value[:5].upper() == "IPV6:"
    text = stripIPv6Prefix(value)
    if not text.isascii() or "%" in text:
        return False
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.version == 6 or not prefixed


def _port(value: str) -> bool:
    if value == UNAVAILABLE:
        return True
    return _PORT.fullmatch(value) is not None and int(value) <= 65535


def _name(value: str) -> bool:
    return value in (UNAVAILABLE, TEMPUNAVAIL) or validHostname(value, underscore=True)


def _text(value: str) -> bool:
    return 0 < len(value) <= MAX_TEXT and value.isprintable()


def _xclientProto(value: str) -> bool:
    return value == UNAVAILABLE or value.upper() in ("SMTP", "ESMTP")


def _xforwardProto(value: str) -> bool:
    return value.isascii() and _text(value) and " " not in value


def _source(value: str) -> bool:
    return value == UNAVAILABLE or value.upper() in ("LOCAL", "REMOTE")


_Check = Callable[[str], bool]

_XCLIENT: Mapping[str, _Check] = {
    "NAME": _name,
    "ADDR": _address,
    "PORT": _port,
    "PROTO": _xclientProto,
    "HELO": _text,
    "LOGIN": _text,
    "DESTADDR": _address,
    "DESTPORT": _port,
}
_XFORWARD: Mapping[str, _Check] = {
    "NAME": _name,
    "ADDR": _address,
    "PORT": _port,
    "PROTO": _xforwardProto,
    "HELO": _text,
    "IDENT": _text,
    "SOURCE": _source,
}
assert frozenset(_XCLIENT) == XCLIENT_ATTRIBUTES
assert frozenset(_XFORWARD) == XFORWARD_ATTRIBUTES


def _parse(argument: bytes, checks: Mapping[str, _Check]) -> dict[str, str]:
    attributes = parseAttributes(argument, frozenset(checks))
    for name, value in attributes.items():
        # XCLIENT_README, note 2: "[UNAVAILABLE], [TEMPUNAVAIL] and IPV6:
        # may be specified in upper case, lower case or mixed case".
        if value[:1] == "[" and value.upper() in (UNAVAILABLE, TEMPUNAVAIL):
            value = attributes[name] = value.upper()
        if not checks[name](value):
            raise CommandError(catalogue.badAttributeValue(name, value))
    return attributes


def parseXClient(argument: bytes) -> dict[str, str]:
    """
    Parse and check the arguments of XCLIENT.

    @return: The attributes, names upper case, values xtext-decoded and
        valid.
    @raise CommandError: C{501 5.5.4} for bad syntax, an unknown attribute
        or an invalid value.
    """
    return _parse(argument, _XCLIENT)


def parseXForward(argument: bytes) -> dict[str, str]:
    """
    Parse and check the arguments of XFORWARD.

    @return: The attributes, names upper case, values xtext-decoded and
        valid.
    @raise CommandError: C{501 5.5.4} for bad syntax, an unknown attribute
        or an invalid value.
    """
    return _parse(argument, _XFORWARD)
