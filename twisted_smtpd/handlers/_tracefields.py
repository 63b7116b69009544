# -*- test-case-name: tests.test_tracefields -*-
"""
Trace fields (RFC 5321 section 4.4): the C{Received:} field a handler
writes before a message it stores or passes on, the C{Return-Path:} of
final delivery, and the count of the C{Received:} fields a message
arrives with, by which a mail loop is found (RFC 5321 section 6.3).
"""

from __future__ import annotations

import re
from email.utils import formatdate

from twisted_smtpd._core.features import messageTransmissionType
from twisted_smtpd._core.printable import addressLiteral, neuter, printable
from twisted_smtpd._core.session import Session, unixPeer

#: The longest line of a message, CRLF excluded (RFC 5322 section 2.1.1).
MAX_LINE = 998

#: The most white space between a C{Received} field's name and its colon
#: that L{HopCounter} takes (RFC 5322 section 4.5.3's obsolete syntax
#: allows some there); a line with more is not counted.
MAX_NAME_SPACE = 16

#: A C{Received:} field beginning a line: the line's start is the newline
#: before it.
_RECEIVED = re.compile(rb"\n[Rr][Ee][Cc][Ee][Ii][Vv][Ee][Dd][ \t]{0,%d}:" % MAX_NAME_SPACE)

#: The empty line that ends the header section (CRLF, or a bare LF as a
#: BDAT body may hold).
_HEADER_END = re.compile(rb"\n\r?\n")

_NAME = b"received"


def receivedField(session: Session, name: str, ascii: bool = False) -> bytes:
    """
    The C{Received:} field (RFC 5321 section 4.4) for a message arriving on
    C{session}, its line end included: the client's address as an address
    literal (C{[IPv6:2001:db8::7]}, section 4.1.3; C{[127.0.0.1]} for a UNIX
    socket's client, as Postfix writes it), every text from outside made
    L{printable}, the HELO name also L{neuter}ed as Postfix stores it (so
    that C{(}, C{)} or C{;} in it cannot break the field's comment or
    clauses).  A field that would be longer than a line may be (RFC 5322
    section 2.1.1: 998 octets; a long HELO name whose characters are all
    escaped makes one) is folded before each of its clauses, each of which
    fits in a line.  Its length depends on the session only: the date is
    always as long.

    @param session: The session, with its transaction begun.
    @param name: The receiving host's name, for the C{by} clause.
    @param ascii: Escape each non-ASCII character too (C{\\xfc}), as
        L{printable} escapes controls: for a message passed on without
        C{SMTPUTF8}, whose header fields must be ASCII (RFC 6532 allows
        others only with it) and which the next hop may take as 7-bit.
    """
    encoding = "ascii" if ascii else "utf-8"
    rdns = session.clientHostname
    if not rdns or rdns.startswith("["):
        rdns = "unknown"
    address = session.remoteAddress
    # A UNIX socket's client has no IP address: the loopback address
    # stands for the local machine, as Postfix writes it.
    literal = "[127.0.0.1]" if unixPeer(address) else addressLiteral(address[0])
    # The HELO name neutered as Postfix's helo_cmd stores it: none of its
    # characters can open or close a comment, or end the clauses early.
    helo = neuter(session.hostNameAppearsAs or rdns)
    # Every part but the date and the id came from outside (or from a
    # handler): escaped, none can end the header line early.
    clauses = (
        f"from {printable(helo)}",
        f"({printable(rdns)} {literal})",
        f"by {printable(name)} with {printable(messageTransmissionType(session))}",
        f"id {printable(session.id)}; {formatdate(localtime=True)}",
    )
    received = "Received: " + " ".join(clauses)
    if len(received.encode(encoding, "backslashreplace")) > MAX_LINE:
        received = "Received: " + "\r\n\t".join(clauses)
    return (received + "\r\n").encode(encoding, "backslashreplace")


def traceHeaderLines(session: Session, name: str) -> bytes:
    """
    The C{Return-Path:} field of final delivery (RFC 5321 section 4.4: the
    reverse-path, made L{printable}), then the L{receivedField}.

    @param session: The session, with its envelope complete.
    @param name: The receiving host's name, for the C{by} clause.
    """
    mailFrom = session.envelope.mailFrom
    sender = "" if mailFrom is None else mailFrom.address
    returnPath = f"Return-Path: <{printable(sender)}>\r\n".encode("utf-8", "backslashreplace")
    return returnPath + receivedField(session, name)


def _undecided(start: bytes) -> bool:
    """
    Whether a line beginning with C{start} (all of it that has arrived)
    may still turn out to be a C{Received:} field, or the empty line.
    """
    if start in (b"", b"\r"):
        return True
    if len(start) <= len(_NAME):
        return _NAME.startswith(start.lower())
    return (
        start[: len(_NAME)].lower() == _NAME
        and len(start) <= len(_NAME) + MAX_NAME_SPACE
        and not start[len(_NAME) :].strip(b" \t")
    )


class HopCounter:
    """
    Count the C{Received:} fields of a message's header section (RFC 5322
    section 2.1: the lines before the first empty line) as its body is
    fed in, however it is split: the field's name in any case, at the start
    of a line (a folded line's continuation, or the body after the empty
    line, is not counted).  CRLF and bare LF line ends alike.  The work is
    linear in the header section and nothing is looked at after it; of a
    line split between two pieces, at most its first few octets are kept.

    @ivar count: The C{Received:} fields counted so far.
    @ivar inHeader: Whether the header section has not ended yet.
    """

    def __init__(self) -> None:
        self.count = 0
        self.inHeader = True
        # The start of the line the last piece ended in, while it might
        # still be a Received: field or the empty line; None when that
        # line is decided already.
        self._start: bytes | None = b""

    def feed(self, data: bytes) -> int:
        """
        Count the C{Received:} fields of the next piece of the body.

        @return: L{count}.
        """
        if not self.inHeader or not data:
            return self.count
        if self._start is None:
            newline = data.find(b"\n")
            if newline < 0:
                return self.count
            text = data[newline:]
        else:
            # A newline before the line's start, as the patterns want one.
            text = b"\n" + self._start + data
        end = _HEADER_END.search(text)
        if end is not None:
            self.count += len(_RECEIVED.findall(text, 0, end.start()))
            self.inHeader = False
            self._start = None
            return self.count
        last = text.rfind(b"\n")
        start = text[last + 1 :]
        if _undecided(start):
            # Counted (or not) once the rest of its line is here.
            self.count += len(_RECEIVED.findall(text, 0, last))
            self._start = start
        else:
            self.count += len(_RECEIVED.findall(text))
            self._start = None
        return self.count
