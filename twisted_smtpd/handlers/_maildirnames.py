# -*- test-case-name: tests.test_handlers -*-
"""
Names for Maildir deliveries: unique file names (the Maildir convention),
trace headers, and the per-recipient folders of C{perRecipient} delivery.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import time
from email.utils import formatdate

from twisted_smtpd._errors import SMTPError
from twisted_smtpd._printable import addressLiteral, printable
from twisted_smtpd._session import Session

_counter = itertools.count(1)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUOTED_PAIR = re.compile(r"\\(.)")
_MAX_NAME = 255


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
    host = hostname.replace("/", "\\057").replace(":", "\\072")
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    return f"{seconds}.M{nanoseconds // 1000}P{os.getpid()}Q{next(_counter)}.{host}"


def _traceHeaderLines(session: Session, name: str) -> bytes:
    """
    The C{Return-Path:} and C{Received:} header lines (RFC 5321 section 4.4)
    for a message arriving on C{session}: the client's address as an
    address literal (C{[IPv6:2001:db8::7]}, section 4.1.3), every text from
    outside made L{printable}.

    @param session: The session, with its envelope complete.
    @param name: The receiving host's name, for the C{by} clause.
    """
    mailFrom = session.envelope.mailFrom
    sender = "" if mailFrom is None else mailFrom.address
    rdns = session.clientHostname
    if not rdns or rdns.startswith("["):
        rdns = "unknown"
    helo = session.hostNameAppearsAs or rdns
    received = (
        f"from {helo} ({rdns} {addressLiteral(session.remoteAddress[0])})"
        f" by {name} with {session.transmissionType}"
        f" id {session.id}; {formatdate(localtime=True)}"
    )
    # Every part but the date and the id came from outside (or from a
    # handler): escaped, none can end the header line early.
    text = f"Return-Path: <{printable(sender)}>\r\nReceived: {printable(received)}\r\n"
    return text.encode("utf-8", "backslashreplace")


def _safeName(text: str) -> str | None:
    """
    C{text} lower-cased as one directory name, or C{None} when it cannot be
    one safely: empty, a leading dot (so C{.} and C{..} too), a C{/}, a
    control character, or longer than 255 bytes.
    """
    name = text.lower()
    if (
        not name
        or name.startswith(".")
        or "/" in name
        or _CONTROL.search(name) is not None
        or len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME
    ):
        return None
    return name


def recipientDirectory(address: str, localDomain: str) -> tuple[str, str]:
    """
    The C{(domain, localpart)} directory names of the per-recipient Maildir
    for C{address}.

    @param address: The forward-path's mailbox, C{localpart@domain}; a bare
        local part (RFC 5321 section 4.1.1.3 allows C{<postmaster>}) belongs
        to C{localDomain}; a quoted local part is unquoted first.
    @param localDomain: The domain for a bare local part.
    @raise SMTPError: 553 5.1.3 when either part cannot be a safe directory
        name.
    """
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, localDomain
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        # A quoted local part names the same mailbox as its content.
        local = _QUOTED_PAIR.sub(r"\1", local[1:-1])
    safeLocal, safeDomain = _safeName(local), _safeName(domain)
    if safeLocal is None or safeDomain is None:
        raise SMTPError(553, "Error: mailbox name not allowed", "5.1.3")
    return safeDomain, safeLocal
