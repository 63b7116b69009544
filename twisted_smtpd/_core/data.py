# -*- test-case-name: tests.test_data -*-
"""
The DATA body decoder: finds the end of the message, removes dot-stuffing,
counts the size and watches for bare line breaks.

Pure: bytes in, bytes out.  The rules are RFC 5321 section 4.1.1.4 (the body
ends with C{CRLF . CRLF}) and section 4.5.2 (transparency: a line starting
with a period has that period removed).  Only a real CRLF delimits lines: a
bare LF or a bare CR never ends a message nor starts a line, so the SMTP
smuggling tricks (CVE-2023-51764, CVE-2023-51765, CVE-2023-51766) that hide a
second message behind C{LF . LF} and similar sequences find nothing to end
here.

The decoder works on whole chunks with C{bytes.find}, C{bytes.replace},
compiled searches for periods starting lines and bare line breaks, and
slicing: no Python code runs per byte or per line, and periods starting lines
cost a bounded number of Python steps per feed, so even a body made only of
dot-stuffed lines costs a few passes in C.  The bytes after the end of a
body are neither searched nor copied: L{DataDecoder.feedFrom} tells where
they start.
"""

from __future__ import annotations

import re

from twisted_smtpd._core.optionchecks import BARE_NEWLINE_POLICIES

_CR = 13
_LF = 10
_DOT = 46

# Where the decoder stands between two feeds.  Nothing but a single CR is ever
# held back: a period at the start of a line is always removed, whatever
# follows it, so it only needs remembering.
_LINE_START = 0  # the next byte starts a line (after a real CRLF, or first)
_MID_LINE = 1  # inside a line
_HELD_CR = 2  # a CR ended the last feed; the next byte says if it is bare
_LINE_DOT = 3  # a line started with a period (removed); the next bytes decide
_LINE_DOT_CR = 4  # a line started with a period then a CR (held back)

# A CR followed by something other than LF (a CR ending the region is
# checked apart), and an LF not preceded by CR: each pattern starts with its
# byte, so the search skips to it, and each is the cheaper of the spellings
# measured (a lookahead costs more per CR than a second byte does).
_CR_NOT_LF = re.compile(rb"\r[^\n]")
_BARE_LF = re.compile(rb"\n(?<!\r.)", re.DOTALL)
# A period starting a line: the compiled search skips to each CR faster than
# bytes.find looks for the three bytes.
_CRLF_DOT = re.compile(rb"\r\n\.")

# Up to this many periods starting lines in one feed are removed by cutting
# the feed at each (one match of one search, one slice per period); more, and
# bytes.replace does it (two passes, but no object per period).
_SPLIT_LIMIT = 128

#: Body pieces shorter than this are joined before they are handed on
#: (L{DataDecoder}, L{ChunkDecoder}).
SHORT_PIECE = 4096


def _findCrlfDot(data: bytes, start: int) -> int:
    """
    Find the next C{CRLF .} (a period starting a line), looking from
    C{start}.

    A memchr for the period comes first: base64 text has none at all, and
    then the slower search for C{CRLF .} is skipped.

    @return: The index of the CR, or -1.
    """
    k = data.find(b".", start)
    if k < 0:
        return -1
    found = _CRLF_DOT.search(data, max(start, k - 2))
    return -1 if found is None else found.start()


def _takeHeld(held: bytearray | None) -> bytes:
    """
    The short pieces a decoder holds (L{SHORT_PIECE}), taken out of
    C{held}: C{b""} for none.
    """
    if not held:
        return b""
    data = bytes(held)
    held.clear()
    return data


def _hasBareNewline(region: bytes) -> bool:
    """
    Whether C{region} holds a CR not followed by LF or an LF not preceded by
    CR (an LF first in C{region} counts as bare, and so does a CR last).

    Two searches in C, each skipping from one newline byte to the next:
    about 67 µs per 64 KiB of 80-octet lines (73 with a lookahead for the
    bare CR; 80 for marking the CR and LF bytes with two C{bytes.translate}
    and comparing; slower still for one search of both, which must test
    every byte against a set, or for counting).  The cost grows with the
    number of lines: a body made only of empty lines takes about 590 µs per
    64 KiB (9 ns per octet through the whole decoder, against 1 for 80-octet
    lines), still about 50 times less per octet than the same client
    sending NOOP commands.
    """
    return (
        region.endswith(b"\r")
        or _CR_NOT_LF.search(region) is not None
        or _BARE_LF.search(region) is not None
    )


def _normalise(segment: bytes) -> bytes:
    """
    Turn every bare CR and bare LF of C{segment} into CRLF.
    """
    return segment.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


class DataDecoder:
    """
    Decode the bytes a client sends after the 354 reply to DATA.

    Feed it the raw bytes as they arrive, split anywhere; it hands back the
    decoded body in order, then, once C{CRLF . CRLF} has been seen, whatever
    followed the end (commands pipelined behind the message).  The body keeps
    the CRLF of its last line: C{b"a\\r\\n.\\r\\n"} decodes to
    C{b"a\\r\\n"}.  A message that is just C{b".\\r\\n"} is empty.

    Besides at most one byte (a CR whose LF may come next), what a feed
    decodes to is held back only while it is shorter than C{shortPiece}
    octets (L{SHORT_PIECE}): such short pieces (a body read a few octets at
    a time, in tiny TLS records or TCP segments) are joined until they make
    C{shortPiece} octets, a longer piece comes, the body ends, or L{flush}
    is called (about once a second), as L{ChunkDecoder} does for BDAT, so
    that a handler keeping the pieces does not keep one object per few
    octets.  Each feed hands on at most three chunks; a feed with no period
    starting a line and no bare line break is handed on as a slice of the
    input, and a feed that is all body as the input object itself.

    @ivar maxSize: The size limit in bytes, 0 for none.
    @ivar bareNewline: The bare newline policy: C{"reject"} passes bare CR
        and LF bytes on unchanged and only notes them (the protocol refuses the
        message with 550 at the end), C{"legacy"} passes them on unchanged,
        C{"normalize"} turns each into CRLF.  In every policy a bare CR or LF
        never ends the message and never starts a line (no dot-unstuffing
        after it), and a normalised line break is content only.
    @ivar byteLength: Decoded body bytes so far (after unstuffing and
        normalising), counting those past the limit that are no longer handed
        on.
    @ivar sizeExceeded: Whether C{maxSize} is set and C{byteLength} passed it.
        The feed that passes the limit and every later one hand on nothing,
        but still look for the end so the rest of the message is drained; no
        more than one byte is kept meanwhile.
    @ivar bareNewlineSeen: Whether a bare CR or bare LF occurred in the body,
        whatever the policy.
    @ivar ended: Whether the end of the body has been seen.
    """

    def __init__(
        self, maxSize: int = 0, bareNewline: str = "reject", shortPiece: int = SHORT_PIECE
    ) -> None:
        """
        @param maxSize: The size limit in bytes, 0 for none.
        @param bareNewline: C{"reject"}, C{"normalize"} or C{"legacy"}.
        @param shortPiece: Pieces shorter than this are joined before they
            are handed on; 0 hands on each feed's pieces as they come.
        @raise ValueError: For a negative size or an unknown policy.
        """
        if maxSize < 0:
            raise ValueError(f"maxSize must not be negative: {maxSize!r}")
        if bareNewline not in BARE_NEWLINE_POLICIES:
            raise ValueError(f"unknown bare newline policy: {bareNewline!r}")
        self.maxSize = maxSize
        self.bareNewline = bareNewline
        self.byteLength = 0
        self.sizeExceeded = False
        self.bareNewlineSeen = False
        self.ended = False
        self._normalize = bareNewline == "normalize"
        #: Its end marker always ends the message (unlike a BDAT chunk).
        self.final = True
        self._state = _LINE_START
        # Short pieces not yet handed on (shortPiece), made when needed.
        self._shortPiece = shortPiece
        self._held: bytearray | None = None

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        """
        Decode the next bytes of the body.

        @param data: Raw bytes as received, split anywhere.
        @return: C{(chunks, rest)}: the decoded body bytes ready to hand on,
            in order (possibly none; never the end marker); and C{None} while
            the body goes on, or, once it has ended, the bytes that followed
            the end marker in C{data} (possibly C{b""}).
        @raise RuntimeError: If the body has already ended.
        """
        chunks, end = self.feedFrom(data, 0)
        return chunks, None if end < 0 else data[end:]

    def feedFrom(self, data: bytes, begin: int) -> tuple[list[bytes], int]:
        """
        Decode C{data[begin:]}, the next bytes of the body, as L{feed} does,
        without copying what follows the end marker.

        @return: C{(chunks, end)}: the decoded body bytes, and C{-1} while
            the body goes on, or, once it has ended, where the bytes that
            followed the end marker start in C{data}.
        @raise RuntimeError: If the body has already ended.
        """
        if self.ended:
            raise RuntimeError("the message body has already ended")
        n = len(data)
        if n == begin:
            return [], -1
        state = self._state
        lead = b""  # what a byte held back by the last feed decodes to
        start = begin  # the raw body of this feed is data[start:stop]
        stop = n

        # Settle what the last feed left open, with the first bytes.
        if state == _HELD_CR:
            if data[begin] == _LF:
                lead = b"\r\n"
                start = begin + 1
                state = _LINE_START
            else:
                lead = self._bareCR()
                state = _MID_LINE
        elif state == _LINE_DOT:
            if data[begin] == _CR:
                if n == begin + 1:
                    self._state = _LINE_DOT_CR
                    return [], -1
                if data[begin + 1] == _LF:
                    return self._end([], begin + 2)
            state = _MID_LINE
        elif state == _LINE_DOT_CR:
            if data[begin] == _LF:
                return self._end([], begin + 1)
            lead = self._bareCR()
            state = _MID_LINE

        if state == _LINE_START and start < n and data[start] == _DOT:
            # A period starting the first line of this feed: always removed.
            start += 1
            if start == n:
                self._state = _LINE_DOT
                return self._emit(lead, b"", -1)
            if data[start] == _CR:
                if start + 1 == n:
                    self._state = _LINE_DOT_CR
                    return self._emit(lead, b"", -1)
                if data[start + 1] == _LF:
                    return self._emit(lead, b"", start + 2)
        elif start == n:
            # Only the LF of a held CR came.
            self._state = _LINE_START
            return self._emit(lead, b"", -1)

        # The rest of the feed: find the end marker and the periods starting
        # lines, and what to hold back for the next feed.
        i = _findCrlfDot(data, start)
        if i < 0:
            state = _MID_LINE
            if data[-1] == _CR:
                stop = n - 1
                state = _HELD_CR
            elif data.endswith(b"\r\n", start):
                state = _LINE_START
            self._state = state
            body = data if start == 0 and stop == n else data[start:stop]
            return self._emit(lead, body, -1)
        if data.startswith(b"\r\n", i + 3):
            # The end marker (the usual case: no line started with a period).
            return self._emit(lead, data[start : i + 2], i + 5)
        # Every CRLF . splits a part off, up to the end marker (a CRLF . then
        # CRLF): what follows the end (pipelined commands, however many) is
        # neither searched nor copied.
        parts = [data[start:i]]
        k = i + 3
        for found in _CRLF_DOT.finditer(data, k):
            i = found.start()
            parts.append(data[k:i])
            k = i + 3
            if data.startswith(b"\r\n", k):
                parts.append(b"")
                return self._emit(lead, b"\r\n".join(parts), i + 5)
            if len(parts) > _SPLIT_LIMIT:
                return self._denseFeed(lead, data, start, i)
        parts.append(data[k:])
        last = parts[-1]
        if not last:
            state = _LINE_DOT
        elif last == b"\r":
            state = _LINE_DOT_CR
            parts[-1] = b""
        elif last[-1] == _CR:
            state = _HELD_CR
            parts[-1] = last[:-1]
        elif last.endswith(b"\r\n"):
            state = _LINE_START
        else:
            state = _MID_LINE
        self._state = state
        return self._emit(lead, b"\r\n".join(parts), -1)

    def _denseFeed(self, lead: bytes, data: bytes, start: int, i: int) -> tuple[list[bytes], int]:
        """
        Decode a feed with many periods starting lines, the first after the
        CRLF at C{i}: C{bytes.replace} removes them all at once.
        """
        n = len(data)
        stop = n
        restStart = -1
        state = _MID_LINE
        e = data.find(b"\r\n.\r\n", i)
        if e >= 0:
            stop = e + 2
            restStart = e + 5
        elif data[-1] == _CR:
            if data.endswith(b"\r\n.\r", start):
                stop = n - 2
                state = _LINE_DOT_CR
            else:
                stop = n - 1
                state = _HELD_CR
        elif data.endswith(b"\r\n.", start):
            stop = n - 1
            state = _LINE_DOT
        elif data.endswith(b"\r\n", start):
            state = _LINE_START
        self._state = state
        body = data[start:stop].replace(b"\r\n.", b"\r\n")
        return self._emit(lead, body, restStart)

    def _emit(self, lead: bytes, body: bytes, restStart: int) -> tuple[list[bytes], int]:
        """
        Check and account for the decoded C{lead} and C{body} (unstuffed, not
        yet normalised) and hand them on.

        @param restStart: Where the bytes after the end marker start in the
            feed, or -1 if the body goes on.
        """
        chunks: list[bytes] = []
        total = len(lead)
        if lead:
            chunks.append(lead)
        if body:
            # Removing a period that starts a line changes no CR or LF into
            # a bare one or back, so the decoded body is checked.
            if (self._normalize or not self.bareNewlineSeen) and _hasBareNewline(body):
                self.bareNewlineSeen = True
                if self._normalize:
                    body = _normalise(body)
            total += len(body)
            chunks.append(body)
        self.byteLength += total
        if self.maxSize and self.byteLength > self.maxSize:
            self.sizeExceeded = True
        if self.sizeExceeded:
            self._held = None
            chunks = []
        if restStart >= 0:
            return self._end(chunks, restStart)
        held = self._held
        if total < self._shortPiece:
            # A short piece while the body goes on: joined with the next.
            if held is None:
                held = self._held = bytearray()
            for chunk in chunks:
                held += chunk
            if len(held) < self._shortPiece:
                return [], -1
            chunks = [bytes(held)]
            held.clear()
        elif held:
            chunks.insert(0, bytes(held))
            held.clear()
        return chunks, -1

    def flush(self) -> bytes:
        """
        Hand on the short pieces held (L{SHORT_PIECE}) now, however few.
        The session does about once a second (L{MessageReceiver.flushHeld
        <twisted_smtpd._serving.receiving.MessageReceiver.flushHeld>}), so
        that a body trickling in slower than C{shortPiece} octets a second
        still reaches the handler as it comes: a handler passing it on has
        a next hop that gives up after a few minutes without a word.  A CR
        whose LF may come next stays held.

        @return: The body bytes held, C{b""} for none.
        """
        return _takeHeld(self._held)

    def _bareCR(self) -> bytes:
        """
        Note that a held-back CR turned out bare; return what it decodes to.
        """
        self.bareNewlineSeen = True
        return b"\r\n" if self._normalize else b"\r"

    def _end(self, chunks: list[bytes], restStart: int) -> tuple[list[bytes], int]:
        """
        Record the end of the body; the feed's bytes from C{restStart} on
        followed it.
        """
        self.ended = True
        held = self._held
        if held:
            # Dropped when the size limit was passed: held bytes are body.
            chunks.insert(0, bytes(held))
            held.clear()
        return chunks, restStart


class ChunkDecoder:
    """
    The body of a message sent with BDAT (RFC 3030): chunks of announced
    sizes, taken as they are (no dot-stuffing, no end marker; bare CR and LF
    are content).

    Call L{expect} for each BDAT command, then L{feed} until it returns the
    bytes that followed the chunk.

    Pieces shorter than L{SHORT_PIECE} octets (a chunk of a few octets,
    or the end of a chunk that a read cut short) are joined before they are
    handed on, until they make L{SHORT_PIECE} octets, a longer piece comes,
    the message ends, or L{flush} is called (about once a second): a client
    sending its body as BDAT chunks of two octets would otherwise make the
    handler keep one object per two octets (about twenty times the body's
    size in memory, whatever limit in octets the handler's buffers have).
    At most L{SHORT_PIECE} octets are held back so.

    @ivar final: Whether the chunk being read is the C{LAST} one.
    """

    bareNewlineSeen = False

    def __init__(self, maxSize: int = 0) -> None:
        if maxSize < 0:
            raise ValueError(f"maxSize must not be negative: {maxSize!r}")
        self.maxSize = maxSize
        self.byteLength = 0
        self.sizeExceeded = False
        self.ended = False
        self.final = False
        self._remaining = 0
        # Short pieces not yet handed on (SHORT_PIECE).
        self._held = bytearray()

    def expect(self, size: int, last: bool) -> None:
        """
        The next chunk is C{size} octets, the last one if C{last}.
        """
        if self.ended:
            raise RuntimeError("the message body has already ended")
        self._remaining = size
        self.final = last

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        """
        Take bytes of the current chunk.

        @return: C{(chunks, rest)}: body bytes to hand on (none past the size
            limit), and C{None} while the chunk goes on, else the bytes after
            it.
        """
        chunks, end = self.feedFrom(data, 0)
        return chunks, None if end < 0 else data[end:]

    def feedFrom(self, data: bytes, begin: int) -> tuple[list[bytes], int]:
        """
        Take C{data[begin:]}, bytes of the current chunk, as L{feed} does,
        without copying what follows the chunk.

        @return: C{(chunks, end)}: body bytes to hand on, and C{-1} while the
            chunk goes on, else where the bytes after it start in C{data}.
        """
        n = len(data)
        take = min(self._remaining, n - begin)
        end = begin + take
        piece = data if take == n else data[begin:end]
        self._remaining -= take
        self.byteLength += take
        chunks: list[bytes] = []
        held = self._held
        if not self.sizeExceeded:
            if self.maxSize and self.byteLength > self.maxSize:
                self.sizeExceeded = True
                held.clear()
            elif take >= SHORT_PIECE:
                if held:
                    chunks.append(bytes(held))
                    held.clear()
                chunks.append(piece)
            elif piece:
                held += piece
                if len(held) >= SHORT_PIECE:
                    chunks.append(bytes(held))
                    held.clear()
        if self._remaining:
            return chunks, -1
        if self.final:
            self.ended = True
            if held and not self.sizeExceeded:
                chunks.append(bytes(held))
                held.clear()
        return chunks, end

    def flush(self) -> bytes:
        """
        Hand on the short pieces held now, however few, as
        L{DataDecoder.flush} does.

        @return: The body bytes held, C{b""} for none.
        """
        return _takeHeld(self._held)
