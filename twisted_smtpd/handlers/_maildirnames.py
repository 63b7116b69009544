# -*- test-case-name: tests.test_handlers -*-
"""
Names for Maildir deliveries: unique file names (the Maildir convention)
and the per-recipient folders of C{perRecipient} delivery.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import time
import unicodedata

from twisted_smtpd._core.address import literalAddress
from twisted_smtpd._core.domains import domainInALabels
from twisted_smtpd._core.errors import SMTPError

_counter = itertools.count(1)
# The pid, read once per process rather than by a getpid(2) per message.
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUOTED_PAIR = re.compile(r"\\(.)")
_MAX_NAME = 255
# Unicode categories never allowed in a directory name: controls, format
# characters (bidirectional overrides, zero-width joiners), surrogates,
# private use, unassigned code points, space, line and paragraph separators
# (a space, U+0020 included, would make names that look alike or empty).
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
_IPV4_LITERAL = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}", re.ASCII)

#: The directory under a per-recipient Maildir's root that holds one
#: directory per domain.  Keeping the domains out of the root itself means no
#: domain (C{tmp}, C{new}, C{cur}, C{.Sent}, ...) can name one of the root
#: Maildir's own folders.
DOMAINS = "domains"


def _uniqueName(hostname: str | None = None) -> str:
    """
    A new Maildir file name, C{<seconds>.M<microseconds>P<pid>Q<counter>.<host>}
    as the Maildir specification describes, unique across processes (pid) and
    within this one (counter).

    @param hostname: The host part, C{socket.gethostname()} by default; C{/}
        and C{:} in it are escaped as C{\\057} and C{\\072}.
    """
    if hostname is None:
        hostname = socket.gethostname()
    return _nameOn(_hostPart(hostname))


def _hostPart(hostname: str) -> str:
    """
    C{hostname} as the host part of a Maildir file name: C{/} and C{:}
    escaped as C{\\057} and C{\\072}.
    """
    return hostname.replace("/", "\\057").replace(":", "\\072")


def _nameOn(host: str) -> str:
    """
    A new Maildir file name (L{_uniqueName}) with the host part C{host},
    already escaped (L{_hostPart}).
    """
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    return f"{seconds}.M{nanoseconds // 1000}P{_pid[0]}Q{next(_counter)}.{host}"


def _safeName(text: str) -> str | None:
    """
    C{text} as one directory name, or C{None} when it cannot be one safely.

    The name is normalised first (Unicode NFKC, then lower-cased, then NFKC
    again), so that names differing only in case or in compatibility forms
    (full-width letters, ligatures, the Kelvin sign, full-width dots) share
    one directory.  The result is refused when it is empty, begins with a
    dot (so C{.} and C{..} too), holds a C{/} or a backslash, holds a
    control, format, private-use, unassigned or separator character, or is
    longer than 255 bytes in UTF-8.  Space separators (Unicode category
    C{Zs}: U+0020, the no-break and ideographic spaces, ...) are separator
    characters too.
    """
    try:
        name = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).lower())
        encoded = name.encode("utf-8")
    except UnicodeError:
        return None
    if (
        not name
        or name.startswith(".")
        or "/" in name
        or "\\" in name
        or _CONTROL.search(name) is not None
        or any(unicodedata.category(c) in _FORBIDDEN_CATEGORIES for c in name)
        or len(encoded) > _MAX_NAME
    ):
        return None
    return name


def _canonicalLiteral(domain: str) -> str:
    """
    C{domain} with an address literal (RFC 5321 section 4.1.3) put in one
    canonical form, so that every spelling of one address names one
    directory: C{[IPv6:0:0:0:0:0:0:0:1]} and C{[ipv6:::1]} both become
    C{[ipv6:::1]} (RFC 5952 text, lower-cased as every name is), and
    C{[192.0.002.1]} becomes C{[192.0.2.1]}.  A domain name, a general
    address literal or a literal that is no valid address is returned
    unchanged.
    """
    if not (domain.startswith("[") and domain.endswith("]")):
        return domain
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        # Its IPv4 tail may have leading zeros too (C{[IPv6:::ffff:192.0.02.1]}).
        address = literalAddress(domain)
        if address is None:
            return domain
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            # As every Python before 3.13 writes it (3.13 writes the IPv4
            # tail, ::ffff:192.0.2.1): the folder must not move with Python.
            number = int(mapped)
            return f"[ipv6:::ffff:{number >> 16:x}:{number & 0xFFFF:x}]"
        return f"[ipv6:{address.compressed}]"
    if _IPV4_LITERAL.fullmatch(inner) is not None:
        octets = [int(octet) for octet in inner.split(".")]
        if all(octet <= 255 for octet in octets):
            return "[" + ".".join(map(str, octets)) + "]"
    return domain


def recipientDirectory(address: str, localDomain: str) -> tuple[str, str]:
    """
    The C{(domain, localpart)} directory names of the per-recipient Maildir
    for C{address}, which lives in C{<root>/domains/<domain>/<localpart>/}.

    @param address: The forward-path's mailbox, C{localpart@domain}; a bare
        local part (RFC 5321 section 4.1.1.3 allows C{<postmaster>}) belongs
        to C{localDomain}; a quoted local part is unquoted first.
    @param localDomain: The domain for a bare local part.
    @raise SMTPError: 553 5.1.3 when either part cannot be a safe directory
        name.

    The domain's directory holds its labels in ASCII (L{domainInALabels}):
    a label in Unicode is named by its A-label, as clients without
    C{SMTPUTF8} name it, so that C{bücher.example} and
    C{xn--bcher-kva.example} share C{xn--bcher-kva.example}, and so do two
    spellings UTS 46 makes one (C{ᾀ.example} and C{ἀι.example}; not
    C{faß.example} and C{fass.example}); ASCII labels stay as they are,
    lower-cased, an underscore kept (C{_dmarc.xn--bcher-kva.example}).
    """
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, localDomain
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        # A quoted local part names the same mailbox as its content.
        local = _QUOTED_PAIR.sub(r"\1", local[1:-1])
    domain = _canonicalLiteral(domain)
    safeLocal, safeDomain = _safeName(local), _safeName(domain)
    if safeDomain is not None and not safeDomain.isascii():
        safeDomain = domainInALabels(domain)
    if safeLocal is None or safeDomain is None:
        raise SMTPError(553, "Error: mailbox name not allowed", "5.1.3")
    return safeDomain, safeLocal
