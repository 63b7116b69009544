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
    replaced by a Python-style escape (C{\\x0d}, C{\\u2028}, C{\\u200b}):
    those L{UNSAFE} matches.  Everything else (non-ASCII letters, emoji,
    code points newer than Python's Unicode tables) is returned unchanged.

    @return: Text that is safe inside one reply line, one header line or
        one log line, reads as what it holds, and encodes as UTF-8.
    """
    if text.isprintable():
        return text
    return UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    return _escape(match.group())


# The format characters (Unicode category Cf, up to Unicode 15.1): the
# bidirectional controls (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066
# to U+2069) that make a line read differently from what it holds, and the
# invisible ones that hide text or make two different texts look alike: the
# zero-width space U+200B, the soft hyphen U+00AD, the word joiner U+2060
# and the invisible operators, the byte order mark U+FEFF, the interlinear
# annotation marks U+FFF9 to U+FFFB, the tag characters U+E0001 and U+E0020
# to U+E007F.  Listed, not looked up: every Python escapes the same ones.
# The two joiners, U+200C and U+200D, are not in it (C{_JOINED}).
_FORMAT = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"
)
# Controls (Cc: C0, DEL, C1), lone surrogates (Cs), line and paragraph
# separators (Zl, Zp), and the format characters.
_ALWAYS = "\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029" + _FORMAT
# The zero-width non-joiner and joiner (U+200C, U+200D) change how the
# characters around them are drawn: in Persian and Indic words, in emoji
# sequences (RFC 5892 appendix A.1 and A.2 allow them in such contexts
# only).  Between two such characters they stay; beside ASCII (C{ad\u200dmin}
# would read as C{admin}), another unsafe character or at an end they are
# escaped too.
_JOINERS = "\u200c\u200d"
_JOINED = f"[^\x00-\x7f{_ALWAYS}{_JOINERS}]"

#: Every character L{printable} escapes: controls (Cc), lone surrogates
#: (Cs), the line and paragraph separators (Zl, Zp), the format characters
#: (Cf: bidirectional controls, zero-width and other invisible ones), and
#: the two joiners unless both their neighbours are non-ASCII characters
#: that are not escaped themselves.
UNSAFE = re.compile(f"[{_ALWAYS}]|(?<!{_JOINED})[{_JOINERS}]|[{_JOINERS}](?!{_JOINED})")


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
