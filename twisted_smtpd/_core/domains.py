# -*- test-case-name: tests.test_domains,tests.test_address,tests.test_addressliterals -*-
"""
Pure: the checks of a MAIL or RCPT path's domain beyond the grammar that
matched it (RFC 5321 section 4.1.2): a domain name's label lengths and
U-labels (RFC 6531 section 3.3, RFC 5891, RFC 5892), the A-labels beside
them, and an address literal's forms (RFC 5321 section 4.1.3); and such a
domain written in ASCII, its U-labels as A-labels.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

import idna

__all__ = [
    "DIGITS_AND_DOTS",
    "MAX_LABEL",
    "MAX_NAME",
    "domainInALabels",
    "literalAddress",
    "validDomainName",
    "validLiteral",
]

# RFC 1035 section 2.3.4: a label is at most 63 octets (a non-ASCII one
# counted as its A-label, RFC 5890 section 2.3.2.1).
MAX_LABEL = 63

# A domain of digits and dots only reads as an IP address or a number (RFC
# 1123 section 2.1: no host name has that form); Postfix refuses it too.
_NUMERIC_DOMAIN = re.compile("[0-9.]+")
#: The characters of a domain L{validDomainName} refuses for being numeric.
DIGITS_AND_DOTS = "0123456789."
# Unicode categories IDNA2008 disallows in U-labels (RFC 5892 section 2.6):
# spaces, line and paragraph separators, format characters (bidi overrides,
# zero-width spaces), except the two joiners it allows in context (U+200C
# and U+200D, RFC 5892 appendix A.1 and A.2).  Private use characters,
# noncharacters and unassigned code points are left to UTS 46's table, in
# the idna package, which knows code points newer than Python's tables.
_NOT_IN_U_LABELS = frozenset({"Zs", "Zl", "Zp", "Cf"})
_JOINERS = "\u200c\u200d"
# The Hangul fillers: letters, but default-ignorable, which IDNA2008
# disallows (RFC 5892 section 2.6), and which UTS 46 disallows up to
# Unicode 15.0 (so ICU, and Postfix) but drops from 15.1 on.
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")
#: The longest domain name in octets, in A-labels (RFC 1035 section 2.3.4:
#: 255 on the wire, 253 written without the final dot).
MAX_NAME = 253
# The full stops that end a label (RFC 3490 section 3.1).
_STOPS = re.compile("[.\u3002\uff0e\uff61]")
# What _aLabelSize gives for a label that is no U-label.
_NOT_A_LABEL = MAX_LABEL + 1
# The ASCII characters a label may hold once UTS 46 has mapped it: those of
# a host name, with the underscore Postfix allows; no dot, so that a
# character mapped to one (the ideographic full stop U+3002, U+2488 DIGIT
# ONE FULL STOP) does not make one label two to the DNS.
_HOST_ASCII = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def validDomainName(domain: str) -> bool:
    """
    Whether C{domain}, which matched the path grammar's C{Domain}, can be a
    name in the DNS: no label longer than L{MAX_LABEL} octets, and not made
    of digits and dots only (C{123}, C{192.0.2.1}: an address is written as
    an address literal, C{[192.0.2.1]}); each non-ASCII label a U-label
    as Postfix checks it (RFC 6531 section 3.3; C{_aLabelSize}), and each
    ASCII label beside one with hyphens in its third and fourth places a
    valid A-label (C{_aceLabelSize}); and, written in A-labels, no longer
    than L{MAX_NAME} octets.

    An all-ASCII domain is not decoded: C{xn--zz.example} is accepted, as
    Postfix accepts it (C{valid_hostname()} only).
    """
    if _NUMERIC_DOMAIN.fullmatch(domain) is not None:
        return False
    if domain.isascii():
        return len(domain) <= MAX_LABEL or all(
            len(label) <= MAX_LABEL for label in domain.split(".")
        )
    # Its size written in A-labels, each label with the dot after it.  The
    # ideographic, fullwidth and halfwidth full stops separate labels as
    # the dot does (RFC 3490 section 3.1, UTS 46), as Postfix reads them.
    size = -1
    for label in _STOPS.split(domain):
        if not label:
            return False
        if not label.isascii():
            labelSize = _aLabelSize(label)
        elif label[2:4] == "--":
            labelSize = _aceLabelSize(label)
        else:
            labelSize = len(label)
        if labelSize > MAX_LABEL:
            return False
        size += labelSize + 1
    return size <= MAX_NAME


def _aLabelSize(label: str) -> int:
    """
    The length in octets of the A-label of C{label}, a non-ASCII label that
    matched the path grammar's C{sub-domain}, or more than L{MAX_LABEL}
    when it is not one Postfix takes as a U-label, as ICU's UTS 46
    processing maps and checks it: one holding a space, separator or
    format character (U+00A0, U+200B, U+202E) or a Hangul filler (U+3164;
    RFC 5892); a character UTS 46 disallows (private use, noncharacters,
    unassigned code points: U+E000, U+FFFF) or maps to ASCII other than a
    host name's letters, digits, hyphens and underscores (the spacing
    diaeresis U+00A8 to a space and a combining mark, U+2474 to C{(1)},
    U+3002 to a dot); or one that, mapped, starts or ends with a hyphen,
    has hyphens in its third and fourth places (C{xn--}, RFC 5891 section
    4.2.3.1) or starts with a combining mark (section 4.2.3.2).
    """
    mapped = _mappedLabel(label)
    if mapped is None:
        return _NOT_A_LABEL
    if mapped.isascii():
        return len(mapped)
    # xn-- and the Punycode (RFC 3492).
    return 4 + len(mapped.encode("punycode"))


def _mappedLabel(label: str) -> str | None:
    """
    C{label}, a non-ASCII label, as UTS 46 maps it (nontransitional,
    without the STD 3 rules, as ICU maps it for Postfix), or C{None} when
    it is no U-label to Postfix (L{_aLabelSize}).
    """
    for c in label:
        if not c.isascii() and (
            c in _FILLERS or (unicodedata.category(c) in _NOT_IN_U_LABELS and c not in _JOINERS)
        ):
            return None
    try:
        mapped = idna.uts46_remap(label, std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError):
        return None
    if (
        not mapped
        or mapped[2:4] == "--"
        or mapped[0] == "-"
        or mapped[-1] == "-"
        or unicodedata.category(mapped[0])[0] == "M"
        or any(c.isascii() and c not in _HOST_ASCII for c in mapped)
    ):
        return None
    return mapped


def _aceLabelSize(label: str) -> int:
    """
    The length of C{label}, an ASCII label with hyphens in its third and
    fourth places in a domain that also holds U-labels, or more than
    L{MAX_LABEL} when Postfix refuses it there, as ICU's UTS 46 processing
    checks it (RFC 5891 section 4.2.3.1, UTS 46 section 4.1): a label not
    starting C{xn--} (C{ab--cd}), or one whose Punycode (RFC 3492), in any
    case, is no valid A-label: it does not decode (C{xn--zz}), decodes to
    nothing (C{xn--}) or to ASCII only (C{xn--abc-}), or to a label UTS 46
    would change (an upper case letter, C{xn--bcher-2pa}; a character it
    drops, disallows or maps, the soft hyphen or U+E000) or that is no
    U-label (L{_aLabelSize}: a hyphen first or last, a combining mark
    first).
    """
    ace = label.lower()
    # The Punycode's last hyphen, its delimiter, last (nothing to decode:
    # ASCII only) or first (no basic code point before it, RFC 3492
    # section 3.1), as ICU refuses them.
    if not ace.startswith("xn--") or ace[-1] == "-" or ace.rfind("-") == 4:
        return _NOT_A_LABEL
    try:
        decoded = ace[4:].encode("ascii").decode("punycode")
    except UnicodeError:
        return _NOT_A_LABEL
    if decoded.isascii() or _mappedLabel(decoded) != decoded:
        return _NOT_A_LABEL
    return len(label)


def domainInALabels(domain: str) -> str | None:
    """
    C{domain}, a path's domain that holds U-labels (L{validDomainName}),
    written in ASCII, label by label, as a next hop without C{SMTPUTF8}
    and a Maildir's directory name need it (RFC 5890 section 2.3.2.1):
    each ASCII label as it is, lower-cased as UTS 46 maps it (an
    underscore, C{_dmarc}, and a valid A-label, C{XN--BCHER-KVA}, kept);
    each non-ASCII label as UTS 46 maps it (nontransitional, without the
    STD 3 rules, as Postfix's ICU conversion, C{uidna_nameToASCII}, does),
    in its A-label (C{xn--} and its Punycode, IDNA 2008, RFC 5891 section
    4.4) unless it maps to ASCII (the fullwidth low line U+FF3F to C{_}).  The
    ideographic, fullwidth and halfwidth full stops end a label as C{.}
    does.

    @return: The name, or C{None} when it has no such form: an empty label
        (a final dot), a label L{validDomainName} refuses, a non-ASCII
        label IDNA 2008 refuses (a joiner out of context, a label breaking
        the Bidi rule, a symbol: RFC 5892, RFC 5893), or a name longer
        than L{MAX_NAME} octets.
    """
    labels = []
    for label in _STOPS.split(domain):
        if not label:
            return None
        if label.isascii():
            if len(label) > MAX_LABEL or (label[2:4] == "--" and _aceLabelSize(label) > MAX_LABEL):
                return None
            labels.append(label.lower())
            continue
        mapped = _mappedLabel(label)
        if mapped is None:
            return None
        if not mapped.isascii():
            try:
                mapped = idna.alabel(mapped).decode("ascii")
            except (idna.IDNAError, UnicodeError):
                return None
        labels.append(mapped)
    name = ".".join(labels)
    return name if len(name) <= MAX_NAME else None


def literalAddress(domain: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    The IP address an address literal names (RFC 5321 section 4.1.3):
    C{[192.0.2.1]}, C{[IPv6:2001:db8::1]}; numbers with leading zeros are
    decimal (C{[010.0.0.1]} is 10.0.0.1).  C{None} for a domain name, a
    general address literal, or a literal that is no valid address.
    """
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    return _literalAddress(domain[1:-1])


# IPv4-address-literal (RFC 5321 section 4.1.3): four Snum, each one to three
# decimal digits, leading zeros allowed (C{[192.0.002.1]}), which Python's
# ipaddress refuses.
_SNUM_IPV4 = re.compile("([0-9]{1,3})\\.([0-9]{1,3})\\.([0-9]{1,3})\\.([0-9]{1,3})")


def _ipv4Literal(text: str) -> ipaddress.IPv4Address | None:
    """
    The address of an IPv4-address-literal of four decimal C{Snum} (RFC
    5321 section 4.1.3), each at most 255; C{None} for anything else.
    """
    match = _SNUM_IPV4.fullmatch(text)
    if match is None:
        return None
    octets = [int(snum) for snum in match.groups()]
    if max(octets) > 255:
        return None
    return ipaddress.IPv4Address(bytes(octets))


# The characters of an IPv6-address-literal after its tag: hex digits,
# colons, and the dots of an IPv4 tail; no zone (C{%eth0}), which RFC 5321
# does not have and Python's ipaddress would take.
_IPV6_TEXT = re.compile("[0-9A-Fa-f:.]+")
# RFC 5321 section 4.1.3: beside "::", IPv6-comp has at most 6 groups and
# IPv6v4-comp at most 4 and its IPv4 tail (two groups' worth): the "::"
# stands for at least two groups of zeros.
_MAX_COMP_GROUPS = 6


def _literalAddress(literal: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if literal[:5].upper() != "IPV6:":
        return _ipv4Literal(literal)
    text = literal[5:]
    if _IPV6_TEXT.fullmatch(text) is None:
        return None
    hexText = text
    tailGroups = 0
    head, colon, tail = text.rpartition(":")
    if colon and "." in tail:
        # IPv6v4-full and IPv6v4-comp end in an IPv4-address-literal.
        ipv4 = _ipv4Literal(tail)
        if ipv4 is None:
            return None
        hexText = head
        tailGroups = 2
        text = f"{head}:{ipv4}"
    if "::" in text:
        groups = sum(1 for group in hexText.split(":") if group) + tailGroups
        if groups > _MAX_COMP_GROUPS:
            return None
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


def validLiteral(literal: str) -> bool:
    """
    Whether C{literal} (without brackets) is an IPv4 address or C{IPv6:}
    followed by an IPv6 address (RFC 5321 section 4.1.3).
    """
    return _literalAddress(literal) is not None
