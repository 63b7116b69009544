# -*- test-case-name: tests.test_machinename -*-
"""
Pure: this machine's host name, in the form a greeting, an EHLO or a trace
header can carry; and a mailbox's all-ASCII form, its domain in A-labels,
for a server without SMTPUTF8.

A domain in an SMTP greeting, EHLO or LHLO is ASCII (RFC 5321 section
4.1.2; RFC 6531 section 3.7.1 keeps the EHLO domain in A-labels even with
SMTPUTF8).  A machine may be named in U-labels (C{bücher.example}): that
name is given in its A-label form (C{xn--bcher-kva.example}), as IDNA 2008
(RFC 5891) writes it.  The C{idna} package does the conversion: Twisted's
C{tls} extra, which twisted-smtpd requires, installs it.
"""

from __future__ import annotations

import socket

import idna

from twisted_smtpd._core.domains import domainInALabels

__all__ = ["UnusableMachineName", "aLabels", "asciiAddress", "asciiHostName", "machineName"]


class UnusableMachineName(ValueError):
    """
    This machine's host name cannot be written as an ASCII domain: the
    server's name must be given.

    @ivar hostName: The name the system gave, as it gave it.
    @ivar why: Why it cannot be used, in printable US-ASCII.
    """

    def __init__(self, hostName: str, why: str) -> None:
        self.hostName = hostName
        self.why = "".join(c if " " <= c <= "~" else ascii(c)[1:-1] for c in why)
        super().__init__(self.advice("name"))

    def advice(self, setting: str) -> str:
        """
        One line saying what is wrong and that C{setting} must be set.

        @param setting: The setting giving the server's name (C{name} in
            L{ServerOptions}, C{--hostname} on the command line).
        """
        return (
            f"this machine's host name {self.hostName!a} (socket.getfqdn()) is not usable"
            f" as the server's name ({self.why}): set {setting}"
        )


def aLabels(name: str) -> str:
    """
    C{name}, a domain holding U-labels, with them written as A-labels
    (IDNA 2008 with the UTS 46 mapping, so upper case letters are folded,
    and the STD 3 rules: letters, digits and hyphens only).

    @raise ValueError: Saying why, in printable US-ASCII, if it cannot be:
        it holds a space, a control character or a character no host name
        may hold, or a label too long once written as an A-label.
    """
    try:
        return idna.encode(name, uts46=True, std3_rules=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as e:
        why = str(e) or type(e).__name__
        raise ValueError("".join(c if " " <= c <= "~" else ascii(c)[1:-1] for c in why)) from None


def asciiAddress(address: str) -> str | None:
    """
    The all-ASCII form of C{address}, a mailbox whose local part is ASCII
    and whose domain holds U-labels (C{bob@b\u00fccher.example}): its
    domain in A-labels (C{bob@xn--bcher-kva.example}), the same mailbox
    (RFC 5890 section 2.3.2.1, RFC 5891 section 4), as Postfix, curl and
    chasquid give it to a server without C{SMTPUTF8}.

    Its domain is converted label by label (L{domainInALabels}): an ASCII
    label beside a U-label stays as it is, lower-cased, with an
    underscore (C{bob@under_score.xn--bcher-kva.example}), as Postfix's
    conversion keeps it.

    @return: That form, C{address} itself if it is ASCII, or C{None} if
        it has none: its local part is not ASCII (only C{SMTPUTF8} can
        carry it, RFC 6531 section 3.2), or its domain has no A-label
        form (L{domainInALabels}).
    """
    if address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    if not at or not local.isascii():
        return None
    name = domainInALabels(domain)
    return None if name is None else f"{local}@{name}"


def asciiHostName(name: str) -> str:
    """
    C{name} as an ASCII domain: an ASCII name as it is, a name holding
    U-labels with them written as A-labels (IDNA 2008 with the UTS 46
    mapping, so upper case letters are folded, and the STD 3 rules: letters,
    digits and hyphens only).

    @raise UnusableMachineName: If C{name} is empty, holds a space or a
        control character, or a character no host name may hold, or a
        label too long once written as an A-label.
    """
    if not name:
        raise UnusableMachineName(name, "it is empty")
    if name.isascii():
        for character in name:
            if not "!" <= character <= "~":
                raise UnusableMachineName(name, f"it holds {character!a}")
        return name
    try:
        return aLabels(name)
    except ValueError as e:
        raise UnusableMachineName(name, str(e)) from None


def machineName() -> str:
    """
    This machine's fully qualified name (C{socket.getfqdn()}) as an ASCII
    domain (L{asciiHostName}).

    @raise UnusableMachineName: If it cannot be one.
    """
    return asciiHostName(socket.getfqdn())
