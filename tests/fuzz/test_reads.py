"""
The session's input as reads: the same bytes, delivered in any cuts (one
octet at a time, inside a CRLF, inside C{CRLF . CRLF}, inside a BDAT line or
its octets, one large read) and with late hook answers fired between the
reads, must get the same replies, the same messages delivered byte for byte,
the same hook calls and the same log events.  BDAT chunks cross the size
limit anywhere (the first, a middle and the LAST chunk, C{BDAT 0 LAST},
RSET in between, LMTP with several recipients).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.fuzz import PROFILE
from tests.fuzz.model import (
    BODY_LINES,
    COMMANDS,
    EVIL,
    HOOKS,
    MODES,
    FuzzError,
    FuzzHandler,
    dotStuff,
)
from tests.fuzz.test_splits import finish, start
from tests.test_starttls import FakeTLS, TLSStringTransport
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.server import SMTPServerFactory


def _envelope(count: int) -> bytes:
    rcpts = b"".join(b"RCPT TO:<r%d@example.com>\r\n" % k for k in range(count))
    return b"EHLO c.example.com\r\nMAIL FROM:<a@example.com>\r\n" + rcpts


#: Chunk contents: text that looks like commands, line ends and end markers.
CHUNK_TEXT = st.lists(
    st.sampled_from(
        [b"\r\n", b"\r\n.\r\n", b".", b"\r", b"\n", b"BDAT 3 LAST\r\n", b"RSET\r\n", b"x" * 40]
    )
    | st.binary(max_size=20),
    max_size=6,
).map(b"".join)


def _bdat(chunks: list[tuple[bytes, bool]]) -> bytes:
    return b"".join(
        b"BDAT %d%s\r\n%s" % (len(text), b" LAST" if last else b"", text) for text, last in chunks
    )


BDATS = st.lists(st.tuples(CHUNK_TEXT, st.booleans()), min_size=1, max_size=5).map(_bdat)

PIECES = st.lists(
    st.one_of(
        st.lists(COMMANDS, min_size=1, max_size=4).map(
            lambda ls: b"".join(x + b"\r\n" for x in ls)
        ),
        st.integers(1, 3).map(_envelope),
        BODY_LINES.map(lambda lines: b"DATA\r\n" + dotStuff(lines)),
        BDATS,
        st.sampled_from(
            [
                b"BDAT 0\r\n",
                b"BDAT 0 LAST\r\n",
                b"RSET\r\n",
                b"NOOP\r\n",
                b"NOOP " + b"z" * 12300 + b"\r\n",
                b"BDAT 1x\r\n",
                # Many periods starting lines in one read (bytes.replace).
                b"DATA\r\n" + b"..x\r\n" * 300 + b".\r\n",
                # One large read: a body, a chunk.
                b"DATA\r\n" + (b"y" * 998 + b"\r\n") * 200 + b".\r\n",
                b"BDAT 150000 LAST\r\n" + b"\r\n.\r\n" * 30000,
            ]
        ),
    ),
    min_size=1,
    max_size=8,
)
#: What a client pipelines behind STARTTLS to run in plaintext.
ATTACKS = [
    b"MAIL FROM:<x@" + EVIL.encode() + b">\r\n",
    b"EHLO " + EVIL.encode() + b"\r\n",
    b"RCPT TO:<y@" + EVIL.encode() + b">\r\n",
    b"DATA\r\n",
    b"BDAT 4 LAST\r\nabcd",
]
#: Timings whose answers the fuzzer can fire between reads.
LATE_OR_SYNC = st.sampled_from([m for m in MODES if not m.startswith("coro")])


class _Events:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def __call__(self, event: str, session: Any, data: dict[str, Any]) -> None:
        if event == "reject":
            self.seen.append((event, data["reply"].code, data["reply"].lines))
        elif event == "message":
            codes = tuple(reply.code for reply in data["replies"])
            self.seen.append((event, data["size"], codes, data["unanswered"]))
        elif event in ("connect", "close", "mail", "rcpt"):
            self.seen.append((event,))


def run(
    data: bytes,
    points: list[int],
    modes: dict[str, str],
    options: ServerOptions,
    fires: dict[int, list[int]] | None = None,
) -> tuple[Any, ...]:
    """
    Feed C{data} cut at C{points}; after the read ending at a point in
    C{fires}, fire the late answers pending then, picked by the given
    indices; fire the rest once the input is in; end the connection.
    """
    events = _Events()
    handler, proto, transport = start(modes, options, events)
    previous = 0
    for point in [*points, len(data)]:
        if point > previous:
            proto.dataReceived(data[previous:point])
            previous = point
        for pick in (fires or {}).get(point, []):
            if handler.pending:
                _fire(handler, pick % len(handler.pending))
    closed = finish(handler, proto, transport)
    return (
        transport.value(),
        handler.calls,
        handler.delivered,
        events.seen,
        closed,
        handler.closes,
    )


def _fire(handler: FuzzHandler, index: int) -> None:
    # FuzzHandler.fireOne, for the answer at index.
    handler.pending.insert(0, handler.pending.pop(index))
    handler.fireOne()


def specialCuts(data: bytes) -> list[int]:
    """
    Cuts inside every CRLF and after every octet of every C{CRLF . CRLF}
    and BDAT line.
    """
    cuts = set()
    pos = data.find(b"\r\n")
    while pos >= 0:
        cuts.add(pos + 1)
        pos = data.find(b"\r\n", pos + 1)
    for marker in (b"\r\n.\r\n", b"BDAT "):
        pos = data.find(marker)
        while pos >= 0:
            cuts.update(range(pos + 1, min(pos + 12, len(data))))
            pos = data.find(marker, pos + 1)
    return sorted(cuts)


OPTIONS = st.fixed_dictionaries(
    {
        "lmtp": st.booleans(),
        "size": st.sampled_from([0, 1, 30, 100, 400]),
        "bareNewline": st.sampled_from(["reject", "normalize", "legacy"]),
        "maxErrors": st.sampled_from([3, 20]),
        "maxJunkCommands": st.sampled_from([0, 2]),
        "maxLineLength": st.sampled_from([512, 30]),
    }
)


def options(drawn: dict[str, Any]) -> ServerOptions:
    return ServerOptions(
        name="mx.example.com", disableReverseLookup=True, authOptional=True, **drawn
    )


class ReadSplitTests(SynchronousTestCase):
    @PROFILE
    @given(
        pieces=PIECES,
        cuts=st.lists(st.integers(0, 1 << 16), max_size=8),
        fires=st.dictionaries(
            st.integers(0, 1 << 16), st.lists(st.integers(0, 3), max_size=2), max_size=6
        ),
        modes=st.fixed_dictionaries({hook: LATE_OR_SYNC for hook in HOOKS if hook != "onSecure"}),
        drawn=OPTIONS,
    )
    def test_readsAgree(
        self,
        pieces: list[bytes],
        cuts: list[int],
        fires: dict[int, list[int]],
        modes: dict[str, str],
        drawn: dict[str, Any],
    ) -> None:
        """
        Whole, cut anywhere, cut inside line ends and BDAT lines, byte by
        byte, with late answers fired between reads: the same session.
        """
        if drawn["lmtp"]:
            pieces = [p.replace(b"EHLO ", b"LHLO ") for p in pieces]
        data = b"".join(pieces)
        opts = options(drawn)
        n = len(data) + 1
        some = sorted({c % n for c in cuts})
        try:
            whole = run(data, [], modes, opts)
            self.assertEqual(run(data, some, modes, opts), whole)
            late = {c % n: picks for c, picks in fires.items()}
            self.assertEqual(run(data, sorted(late), modes, opts, late), whole)
            self.assertEqual(run(data, specialCuts(data), modes, opts), whole)
            if len(data) < 4000 or len(pieces) == 1:
                every = list(range(1, len(data)))
                self.assertEqual(run(data, every, modes, opts), whole)
        finally:
            self.flushLoggedErrors(FuzzError, TypeError)


class StartTLSReadTests(SynchronousTestCase):
    @PROFILE
    @given(
        before=st.lists(COMMANDS, max_size=3),
        after=st.lists(st.sampled_from(ATTACKS), min_size=1, max_size=3),
        cut=st.integers(0, 1 << 16),
        modes=st.fixed_dictionaries({hook: LATE_OR_SYNC for hook in HOOKS if hook != "onData"}),
    )
    def test_pipelinedAfterStartTLSDropped(
        self, before: list[bytes], after: list[bytes], cut: int, modes: dict[str, str]
    ) -> None:
        """
        What comes in the read that ends the STARTTLS line, or in any read
        before the handshake, is never run, however the reads before it
        are cut and however late the hooks answer.
        """
        head = b"EHLO c.example.com\r\n" + b"".join(x + b"\r\n" for x in before)
        data = head + b"STARTTLS\r\n" + b"".join(after)
        point = cut % (len(head) + 10)
        handler = FuzzHandler()
        handler.modes.update(modes)
        factory = SMTPServerFactory(handler, options({}), reactor=Clock())
        factory._tls = FakeTLS()  # type: ignore[assignment]
        proto = factory.buildProtocol(None)
        transport = TLSStringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        proto.makeConnection(transport)
        try:
            for piece in (data[:point], data[point:], b"".join(after)):
                proto.dataReceived(piece)
                for _ in range(20):
                    if not handler.pending:
                        break
                    handler.fireOne()
        finally:
            self.flushLoggedErrors(FuzzError, TypeError)
        if transport.tlsStarted:
            self.assertFalse([call for call in handler.calls if EVIL in call[1]])
            self.assertFalse(handler.delivered)
            self.assertEqual(transport.value(), transport.writtenBeforeTLS)
            self.assertTrue(transport.writtenBeforeTLS.endswith(b"Ready to start TLS\r\n"))


class OversizedChunkTests(SynchronousTestCase):
    def test_everyPosition(self) -> None:
        """
        A BDAT message crossing the size limit at any chunk (the first, a
        middle one, the LAST, with C{BDAT 0 LAST} after it): the chunks
        before it get 250, it gets 552 5.3.4, the later ones "chunk
        discarded" (one per recipient at LAST in LMTP), and the next
        message, in the same read, is delivered whole.
        """
        limit = 10
        for lmtp in (False, True):
            for count in (1, 3):
                for sizes in ([11], [5, 6], [5, 5, 1], [10, 1, 4], [3, 8, 0], [4, 7, 2, 0]):
                    for whole in (True, False):
                        self._check(lmtp, count, sizes, limit, whole)

    def _check(self, lmtp: bool, count: int, sizes: list[int], limit: int, whole: bool) -> None:
        opts = options({"lmtp": lmtp, "size": limit, "bareNewline": "reject", "maxErrors": 20})
        chunks = [(b"c" * size, k == len(sizes) - 1) for k, size in enumerate(sizes)]
        good = b"BDAT 3 LAST\r\nabc"
        hello = b"LHLO" if lmtp else b"EHLO"
        data = _envelope(count).replace(b"EHLO", hello) + _bdat(chunks)
        data += b"NOOP\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<z@example.com>\r\n" + good
        points = [] if whole else list(range(1, len(data)))
        out, calls, delivered, events, closed, closes = run(data, points, {}, opts)
        codes = [line[:3] for line in out.split(b"\r\n")[1:] if line[3:4] == b" "]
        replies = [b"250"] * (2 + count)  # LHLO or EHLO, MAIL, RCPTs
        total = 0
        crossed = False
        for size, last in [(len(text), last) for text, last in chunks]:
            n = count if last and lmtp else 1
            if crossed:
                replies += [b"552"] * n
            elif total + size > limit:
                crossed = True
                replies += [b"552"] * n
            else:
                total += size
                replies += [b"250"] * n
        replies += [b"250", b"250", b"250", b"250"]
        self.assertEqual(codes, replies, (lmtp, count, sizes, whole, out))
        self.assertEqual(list(delivered.values()), [b"abc"])
        messages = [e for e in events if e[0] == "message"]
        self.assertEqual(len(messages), 2)
        self.assertEqual(messages[0][2][0], 552)
        self.assertFalse(closed)
