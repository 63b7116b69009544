# -*- test-case-name: tests.test_address -*-
"""
Pure: the encodings of ESMTP parameter values, xtext (RFC 3461 section 4)
and the C{utf-8} address type's C{\\x{HEX}} escapes (RFC 6533 section 3).
"""

from __future__ import annotations

import re

from twisted_smtpd._core.printable import CONTROL

__all__ = ["decodeUtf8Address", "decodeXtext", "encodeUtf8Address", "encodeXtext"]

# A hexchar in either case: Postfix's xtext_unquote reads "+2b" as "+2B".
_XTEXT = re.compile("(?:[^+]|\\+[0-9A-Fa-f]{2})*")
_HEXCHAR = re.compile(b"\\+([0-9A-Fa-f]{2})")
_NOT_XCHAR = re.compile(b"[^!-*,-<>-~]")


def decodeXtext(value: str) -> str:
    """
    Decode RFC 3461 section 4 xtext: each C{+XX} (two hex digits, in
    either case, as Postfix reads them) stands for one octet; the octets
    are then read as UTF-8.  Characters other than C{+} pass through
    unchanged, so raw UTF-8 text (which RFC 6533 allows when SMTPUTF8 is in
    effect) survives.

    @raise ValueError: If a C{+} is not followed by two hex digits, or the
        octets are not UTF-8.
    """
    if "+" not in value:
        return value
    if _XTEXT.fullmatch(value) is None:
        raise ValueError(f"malformed xtext: {value!r}")
    raw = _HEXCHAR.sub(_unhex, value.encode("utf-8"))
    return raw.decode("utf-8")


def _unhex(match: re.Match[bytes]) -> bytes:
    return bytes((int(match.group(1), 16),))


def encodeXtext(value: str) -> str:
    """
    Encode C{value} as RFC 3461 section 4 xtext: its UTF-8 octets outside
    C{"!"} to C{"~"}, and C{"+"} and C{"="}, become C{+XX}.
    """
    raw = value.encode("utf-8")
    if _NOT_XCHAR.search(raw) is None:
        return value
    return _NOT_XCHAR.sub(_hex, raw).decode("ascii")


def _hex(match: re.Match[bytes]) -> bytes:
    return b"+%02X" % (match.group(0)[0],)


# RFC 6533 section 3, EmbeddedUnicodeChar: "\x{" HEXPOINT "}".  HEXDIG is
# case-insensitive in ABNF (RFC 5234 section 2.3), as Postfix's
# uxtext_unquote reads it.
_EMBEDDED = re.compile("\\\\x\\{([0-9A-Fa-f]{1,6})\\}")
# The ASCII characters QCHAR leaves out and an escape may stand for
# (HEXPOINT's "xtext-specials" and "5C"): space, "+", "=" and "\".  Its
# escapes of control characters (C0, DEL) are refused all the same, as
# the decoded address "MUST follow utf-8-address ABNF" (a Mailbox, RFC 6531
# section 3.3), which holds none.
_ESCAPED_ASCII = frozenset(" +=\\")
# What QUCHAR leaves out of the text between escapes (CTLs and the space
# never get this far: the parameter has neither).
_NOT_QUCHAR = frozenset("\\+=")


def _hexpointDigits(code: int) -> int:
    """
    How many hex digits HEXPOINT writes C{code} with: two up to U+00FF,
    then as many as it needs (no leading zero).
    """
    return max(2, len(f"{code:X}"))


def decodeUtf8Address(value: str) -> str:
    """
    Decode the address of a C{utf-8} C{ORCPT} (RFC 6533 section 3,
    C{utf-8-addr-xtext} or, with SMTPUTF8, C{utf-8-addr-unitext}): each
    C{\\x{HEX}} stands for one Unicode character.

    Refused, as the RFC's grammar refuses them: a C{"\\"} that starts no
    well-formed escape, a raw C{"+"} or C{"="} (written C{\\x{2B}},
    C{\\x{3D}}), an escape of a printable ASCII character other than space,
    C{"+"}, C{"="} and C{"\\"} (C{\\x{41}} for C{"A"}), an escape with
    leading zeros (C{\\x{00E9}}), of a surrogate or past U+10FFFF; and an
    escape of a control character (NUL, C0, DEL, C1), which no mailbox
    holds and a next hop would decode.

    @raise ValueError: For any of these.
    """
    if "\\" not in value:
        if _NOT_QUCHAR.isdisjoint(value):
            return value
        raise ValueError(f"raw xtext special in a utf-8 address: {value!r}")
    parts = []
    position = 0
    for match in _EMBEDDED.finditer(value):
        text = value[position : match.start()]
        if not _NOT_QUCHAR.isdisjoint(text):
            raise ValueError(f"malformed utf-8 address: {value!r}")
        digits = match.group(1)
        code = int(digits, 16)
        if len(digits) != _hexpointDigits(code) or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"malformed escape in a utf-8 address: {value!r}")
        character = chr(code)
        if (code < 0x80 and character not in _ESCAPED_ASCII) or CONTROL.match(character):
            raise ValueError(f"escape of a forbidden character: {value!r}")
        parts.append(text)
        parts.append(character)
        position = match.end()
    rest = value[position:]
    if not _NOT_QUCHAR.isdisjoint(rest):
        raise ValueError(f"malformed utf-8 address: {value!r}")
    parts.append(rest)
    return "".join(parts)


def encodeUtf8Address(value: str) -> str:
    """
    Encode an address as RFC 6533 section 3 C{utf-8-addr-xtext}: each
    non-ASCII character, space, C{"+"}, C{"="}, C{"\\"} and control
    character as C{\\x{HEX}}; the 7-bit form that L{decodeUtf8Address}
    reads back (when it holds no control character).
    """
    return "".join(
        c
        if "!" <= c <= "~" and c not in _NOT_QUCHAR
        else f"\\x{{{ord(c):0{_hexpointDigits(ord(c))}X}}}"
        for c in value
    )
