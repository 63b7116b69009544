# -*- test-case-name: tests.test_printable -*-
"""
Pure: text that came from the network, made safe to show, and the syntax
checks of the names it may carry.

Every text a client, a front end or a DNS server chose (HELO names, PTR
names, XCLIENT/XFORWARD values, addresses, AUTH user names, SNI names,
PROXY data) goes through L{printable} before it is written into a reply, a
header or a log line, as Postfix's C{printable()} does: a control character
can then never end a line early, forge a reply or a log line, or drive a
terminal.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata

__all__ = [
    "CONTROL",
    "NEUTER_CHARACTERS",
    "UNSAFE",
    "addressLiteral",
    "neuter",
    "printable",
    "validHostname",
]

#: The longest host name (RFC 1035 section 2.3.4: 255 octets on the wire,
#: so 253 characters without the trailing dot).
MAX_HOSTNAME = 253

#: Every control character (Unicode category Cc): C0, DEL and the C1
#: controls U+0080 to U+009F (U+0085 is a line break to some software).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_LABEL_UNDERSCORE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _escape(character: str) -> str:
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """
    C{text} with every character that could break or disguise a line
    replaced by a Python-style escape (C{\\x0d}, C{\\u2028}): C0 and C1
    controls and DEL (Unicode category Cc), line and paragraph separators
    (Zl, Zp), lone surrogates (Cs, from undecodable bytes) and the
    bidirectional format controls that can make a line read differently
    from what it holds.  Everything else (non-ASCII letters, emoji, code
    points newer than Python's Unicode tables) is returned unchanged.

    @return: Text that is safe inside one reply line, one header line or
        one log line, and encodes as UTF-8.
    """
    if text.isprintable():
        return text
    return "".join(_escape(c) if _unsafe(c) else c for c in text)


def _unsafe(character: str) -> bool:
    return character in _BIDI or unicodedata.category(character) in _UNSAFE_CATEGORIES


_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

#: Every character L{printable} escapes: controls (Cc), lone surrogates
#: (Cs), the line and paragraph separators (Zl, Zp) and the bidirectional
#: format controls.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029" + "".join(sorted(_BIDI)) + "]")


#: The characters Postfix's C{smtpd} replaces with C{?} in the free-text
#: names it writes into headers and logs (C{NEUTER_CHARACTERS}, after
#: C{printable()}): none can then start a field of a log line of its own,
#: close or open a comment, end the clauses of a C{Received:} field, or
#: pass for an address.
NEUTER_CHARACTERS = ' <>()\\";@'
_NEUTER = str.maketrans(dict.fromkeys(NEUTER_CHARACTERS, "?"))


def neuter(text: str) -> str:
    """
    C{text} with each of L{NEUTER_CHARACTERS} replaced with C{?}, as
    Postfix's C{neuter()} stores a HELO name.
    """
    return text.translate(_NEUTER)


def validHostname(name: str, underscore: bool = False) -> bool:
    """
    Whether C{name} is a syntactically valid host name: dot-separated
    labels of letters, digits and hyphens (RFC 1123 section 2.1), each 1 to
    63 characters, neither starting nor ending with a hyphen, at most 253
    characters in all, no trailing dot, and not numeric in its last label
    (so that no name can pass for an IPv4 address).

    @param underscore: Also allow C{_} in labels, as Postfix does for names
        a trusted front end hands over (XCLIENT, XFORWARD).
    """
    if not name or len(name) > MAX_HOSTNAME or not name.isascii():
        return False
    labels = name.split(".")
    label = _LABEL_UNDERSCORE if underscore else _LABEL
    for part in labels:
        if label.fullmatch(part) is None:
            return False
    return not labels[-1].isdigit()


@functools.lru_cache(maxsize=1024)
def addressLiteral(host: str) -> str:
    """
    The RFC 5321 section 4.1.3 address literal of C{host}: C{[192.0.2.1]},
    C{[IPv6:2001:db8::1]}; anything that is not an IP address (the path
    of a UNIX socket) in brackets, made L{printable}.  The last 1024 are
    remembered: every connection asks for its client's.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"[{printable(host)}]"
    if address.version == 6:
        return f"[IPv6:{printable(str(address))}]"
    return f"[{address}]"
