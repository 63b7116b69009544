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

#: A header field's name (RFC 5322 section 2.2: printable ASCII but the
#: colon; Postfix's C{is_header()} takes the same), and the white space
#: that may follow it before the colon (section 4.5.3's obsolete syntax,
#: which Postfix also takes, however much).
_FIELD_NAME = rb"[!-9;-~]+[ \t]*"

#: The lines of a header section from a line's start, as many as follow
#: each other: each a field (a name, its colon, the rest of the line),
#: with the continuation lines (beginning with white space) that fold it.
#: A line that is neither (the empty line, a line without a colon after a
#: valid name, a first line beginning with white space) ends it.
_SECTION = re.compile(rb"(?:" + _FIELD_NAME + rb":[^\n]*+\n(?:[ \t][^\n]*+\n)*+)*+")

#: The continuation lines that may begin a piece when the line before
#: was a field's (or a continuation of it).
_CONTINUATIONS = re.compile(rb"(?:[ \t][^\n]*+\n)*+")

#: The start of a line that has not ended yet: a name, white space, and
#: its colon if it has come.
_FIELD_START = re.compile(rb"([!-9;-~]+)([ \t]*)(:?)")

#: A C{Received:} field beginning a line of the header section: the
#: line's start is the newline before it.
_RECEIVED = re.compile(rb"\nreceived[ \t]*:", re.IGNORECASE)

_NAME = b"received"


def receivedField(session: Session, name: str, ascii: bool = False) -> bytes:
    """
    The C{Received:} field (RFC 5321 section 4.4) for a message arriving on
    C{session}, its line end included: the client's address as an address
    literal (C{[IPv6:2001:db8::7]}, section 4.1.3; C{[127.0.0.1]} for a UNIX
    socket's client, as Postfix writes it), every text from outside made
    L{printable}, the HELO name also L{neuter}ed as Postfix stores it (so
    that C{(}, C{)} or C{;} in it cannot break the field's comment or
    clauses).  With exactly one recipient, a C{for <address>} clause names
    it (section 4.4's C{For}), as Postfix's C{smtpd} writes one; with more,
    none, which would disclose every recipient (a Bcc among them) to each
    of them.  A field that would be longer than a line may be (RFC 5322
    section 2.1.1: 998 octets; a long HELO name whose characters are all
    escaped makes one) is folded before each of its clauses, each of which
    fits in a line.  Its length depends on the session only (the date is
    always as long), and on its recipients: built before any, it is
    shorter by the C{for} clause than once there is one.

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
    clauses = [
        f"from {printable(helo)}",
        f"({printable(rdns)} {literal})",
        f"by {printable(name)} with {printable(messageTransmissionType(session))}",
        f"id {printable(session.id)}",
    ]
    recipients = session.envelope.rcptTo
    if len(recipients) == 1:
        # The path as the client wrote it (a quoted local part kept
        # quoted, as Postfix's quote_822_local writes it), escaped.
        clauses.append(f"for <{printable(recipients[0].address)}>")
    clauses[-1] += f"; {formatdate(localtime=True)}"
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


def _matched(pattern: re.Pattern[bytes], text: bytes, position: int) -> int:
    """
    Where C{pattern}, which matches anywhere (perhaps nothing), ends when
    matched at C{position} in C{text}.
    """
    match = pattern.match(text, position)
    assert match is not None
    return match.end()


class HopCounter:
    """
    Count the C{Received:} fields of a message's header section as its body
    is fed in, however it is split: the field's name in any case, white
    space allowed before its colon, at the start of a line (a folded line's
    continuation is not counted).  CRLF and bare LF line ends alike; a bare
    CR ends no line.

    The header section ends, as Postfix's C{cleanup} ends it (its
    C{is_header()}, RFC 5322 sections 2.1 and 2.2), at the first line that
    is neither a field (a name of printable ASCII characters but the colon,
    then the colon) nor the continuation of one (a line beginning with white
    space, after a field): the empty line, a line without a colon, a name
    with a space, a control or an 8-bit octet in it, a first line beginning
    with white space.  A C{Received:} line after it is the body's.

    The work is linear in the header section and nothing is looked at after
    it; of a line split between two pieces, at most a few octets standing
    for its start are kept.

    @ivar count: The C{Received:} fields counted so far.
    @ivar inHeader: Whether the header section has not ended yet.
    """

    def __init__(self) -> None:
        self.count = 0
        self.inHeader = True
        # Whether the last line was a field or its continuation, so that a
        # line beginning with white space continues it.
        self._folding = False
        # The start of the line the last piece ended in, while it is not
        # known yet whether it is a field (a name the field's could begin
        # with, or b"x" for another, then b" " if white space followed);
        # None when that line is known to be a field or a continuation.
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
        position = 1
        if self._folding:
            position = _matched(_CONTINUATIONS, text, position)
        end = _matched(_SECTION, text, position)
        self.count += len(_RECEIVED.findall(text, 0, end))
        if end > 1:
            self._folding = True
        if end == len(text):
            self._start = b""
        elif text.find(b"\n", end) >= 0:
            # A whole line that is neither a field nor a continuation.
            self._ended()
        else:
            self._undecided(text, end)
        return self.count

    def _undecided(self, text: bytes, start: int) -> None:
        """
        Take the line that begins at C{start} in C{text} and has not ended
        yet: a field, a continuation, the header section's end, or not
        known yet.
        """
        if text[start : start + 1] in (b" ", b"\t"):
            if self._folding:
                self._start = None
            else:
                self._ended()
            return
        field = _FIELD_START.match(text, start)
        if field is None:
            self._ended()
        elif field.group(3):
            self._folding = True
            self._start = None
            if field.group(1).lower() == _NAME:
                self.count += 1
        elif field.end() == len(text):
            name = field.group(1)
            if len(name) > len(_NAME) or not _NAME.startswith(name.lower()):
                name = b"x"
            self._start = name + (b" " if field.group(2) else b"")
        else:
            self._ended()

    def _ended(self) -> None:
        """
        The header section has ended: nothing more is looked at.
        """
        self.inHeader = False
        self._start = None
