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

from attrs import frozen

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.grammar import XCLIENT_ATTRIBUTES, XFORWARD_ATTRIBUTES, parseAttributes
from twisted_smtpd._core.printable import neuter, validHostname
from twisted_smtpd._core.replies import CommandError
from twisted_smtpd._core.session import unmapped

__all__ = [
    "UNAVAILABLE",
    "ForwardedClient",
    "canonicalAddress",
    "forwardedClient",
    "parseXClient",
    "parseXForward",
    "stripIPv6Prefix",
]

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


def canonicalAddress(value: str) -> str:
    """
    The address an C{ADDR} or C{DESTADDR} value (checked by L{parseXClient}
    or L{parseXForward}) names, written as the session's other addresses
    are: without the C{IPV6:} prefix, an IPv6 address in the canonical
    text form of RFC 5952 section 4 (lower case, leading zeros and the
    longest run of zero groups compressed: C{2001:DB8:0:0::5} is
    C{2001:db8::5}), as the kernel writes a connection's and a PROXY header
    is read, and an IPv4-mapped one in IPv4 form (L{unmapped}).  So one
    client is one address in C{session.remoteAddress}, the log lines and
    the handlers whichever way the front end wrote it.
    """
    return unmapped(str(ipaddress.ip_address(stripIPv6Prefix(value))))


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


#: The free-text XFORWARD attributes, neutered as Postfix's C{xforward_cmd}
#: neuters them (C{NAME} and C{ADDR} are checked whole instead).
_NEUTERED = ("HELO", "IDENT", "PROTO")


def parseXForward(argument: bytes) -> dict[str, str]:
    """
    Parse and check the arguments of XFORWARD.

    @return: The attributes, names upper case, values xtext-decoded and
        valid; in C{HELO}, C{IDENT} and C{PROTO} each of
        L{NEUTER_CHARACTERS <twisted_smtpd._core.printable.NEUTER_CHARACTERS>}
        replaced with C{?}, as Postfix stores them.
    @raise CommandError: C{501 5.5.4} for bad syntax, an unknown attribute
        or an invalid value.
    """
    attributes = _parse(argument, _XFORWARD)
    for name in _NEUTERED:
        value = attributes.get(name)
        if value is not None and value != UNAVAILABLE:
            attributes[name] = neuter(value)
    return attributes


#: The XFORWARD attributes that describe the original client (Postfix's
#: C{SMTPD_STATE_XFORWARD_CLIENT_MASK}).
_CLIENT_ATTRIBUTES = frozenset({"NAME", "ADDR", "PORT", "PROTO", "HELO"})
#: The name and address of an original client XFORWARD says nothing of, or
#: says are unavailable, as Postfix writes them (C{CLIENT_NAME_UNKNOWN},
#: C{CLIENT_ADDR_UNKNOWN}).
UNKNOWN = "unknown"


@frozen
class ForwardedClient:
    """
    The original client an XFORWARD command described, for the log line of
    its message.

    @ivar name: Its host name, or C{"unknown"}.
    @ivar address: Its IP address (an IPv4-mapped one in IPv4 form, no
        C{IPV6:} prefix), or C{"unknown"}.
    @ivar port: Its port, or C{None} when unknown.
    @ivar helo: The name it greeted with (neutered), or C{None}.
    """

    name: str
    address: str
    port: int | None
    helo: str | None


def forwardedClient(attributes: Mapping[str, str]) -> ForwardedClient | None:
    """
    The original client the XFORWARD C{attributes} (as L{parseXForward}
    returns them) describe, or C{None} when they describe none (only
    C{IDENT} or C{SOURCE}, or nothing).

    As in Postfix's C{FORWARD_CLIENT_ATTR}, once any client attribute is
    given, none of the connected client's own is mixed in: those not given
    are unknown.
    """
    if not _CLIENT_ATTRIBUTES.intersection(attributes):
        return None
    name = attributes.get("NAME", UNAVAILABLE)
    address = attributes.get("ADDR", UNAVAILABLE)
    port = attributes.get("PORT", UNAVAILABLE)
    helo = attributes.get("HELO", UNAVAILABLE)
    return ForwardedClient(
        name=UNKNOWN if name in (UNAVAILABLE, TEMPUNAVAIL) else name,
        address=UNKNOWN if address == UNAVAILABLE else canonicalAddress(address),
        port=None if port == UNAVAILABLE else int(port),
        helo=None if helo == UNAVAILABLE else helo,
    )
