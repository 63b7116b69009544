# -*- test-case-name: tests.test_handlers -*-
"""
L{DebuggingHandler}: print each message with its envelope, like aiosmtpd's
C{Debugging} handler.
"""

from __future__ import annotations

import sys
import unicodedata
from typing import TextIO

from twisted.internet.defer import Deferred

from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.session import Session
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

BEGIN = "---------- MESSAGE FOLLOWS ----------"
END = "------------ END MESSAGE ------------"


def _formatPeer(address: tuple[str, int]) -> str:
    host, port = address
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _envelopeText(session: Session) -> str:
    envelope = session.envelope
    mailFrom = envelope.mailFrom
    # A UTF-8 address may hold a line separator or a bidirectional
    # override: escaped as the body's are.
    sender = "" if mailFrom is None else printable(mailFrom.address)
    lines = [BEGIN, f"mail from: {sender}"]
    lines.extend(f"rcpt to: {printable(rcpt.address)}" for rcpt in envelope.rcptTo)
    lines.append(f"peer: {printable(_formatPeer(session.remoteAddress))}")
    # The id of the session's log lines and Received: header, to tie the
    # printed message to them.
    lines.append(f"session: {printable(session.id)}")
    lines.append("")
    return "\n".join(lines)


# The markers as L{_bare} leaves them.
_MARKERS = frozenset(marker.replace(" ", "") for marker in (BEGIN, END))
_SHORTEST = min(len(marker) for marker in _MARKERS)


def _bare(line: str) -> str:
    """
    What C{line} reads as: compatibility forms made plain (NFKC: a
    fullwidth hyphen), every dash a C{-}, and without spaces or invisible
    format characters (a zero width space).
    """
    if line.isascii():
        return line.replace(" ", "")
    kept = []
    for c in unicodedata.normalize("NFKC", line):
        category = unicodedata.category(c)
        if c.isspace() or category == "Cf":
            continue
        kept.append("-" if category == "Pd" or c == "\u2212" else c)
    return "".join(kept)


def _unframed(line: str) -> str:
    """
    C{line} of the body, its first visible character escaped (C{\\x2d})
    if it reads as one of the markers (L{_bare}): the body cannot end its
    message early and print a block of its own, with a forged envelope and
    peer.
    """
    # Only an ASCII line is as long as it reads: a compatibility form can
    # read as several characters (U+1F14D SQUARED SS as SS).
    if (line.isascii() and len(line) < _SHORTEST) or _bare(line) not in _MARKERS:
        return line
    for index, c in enumerate(line):
        if not (c.isspace() or unicodedata.category(c) == "Cf"):
            code = ord(c)
            escaped = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
            return line[:index] + escaped + line[index + 1 :]
    return line


def _messageText(envelopeText: str, body: bytes) -> str:
    # Lines end at LF (CRLF on the wire) only: every other control
    # character, a lone CR, NUL, ESC or a C1 control, is escaped in place.
    lines = body.decode("utf-8", "replace").split("\n")
    if lines[-1] == "":
        lines.pop()
    shown = [_unframed(printable(line.removesuffix("\r"))) for line in lines]
    return "\n".join([envelopeText, *shown, END, ""])


class DebuggingHandler(BaseHandler):
    """
    Accept every message and print it to a text stream: a begin marker, the
    envelope (C{mail from:}, one C{rcpt to:} per recipient, C{peer:} and
    C{session:}, the session id of the log lines, each escaped as the
    message's lines are), an
    empty line, the message decoded as UTF-8 (undecodable bytes replaced,
    line endings as C{\\n}, every other control character escaped by
    L{printable <twisted_smtpd._core.printable.printable>}, as C{\\x1b}; a
    line that reads as a marker has its first character escaped, as
    C{\\x2d}),
    and an end marker: what a client sends can neither forge a log line,
    nor end its message early and print one of its own, nor drive the
    terminal showing it.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        """
        @param out: Where to print; C{None} means whatever C{sys.stdout} is
            when a message arrives (so that C{twistd}'s redirection of
            standard output is followed).
        """
        self._out = out

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[None]:
        """
        Gather the body and print it.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with C{None} once printed,
            or failing as
            the stream does.
        """
        envelopeText = _envelopeText(session)
        d: Deferred[bytes] = stream.collect()
        return d.addCallback(self._print, envelopeText)

    def _print(self, body: bytes, envelopeText: str) -> None:
        out = sys.stdout if self._out is None else self._out
        out.write(_messageText(envelopeText, body))
        out.flush()
