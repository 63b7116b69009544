# -*- test-case-name: tests.test_data -*-
"""
Tests for L{twisted_smtpd._core.data}: the DATA body decoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core import data as _data
from twisted_smtpd._core.data import SHORT_PIECE, DataDecoder

POLICIES = ("reject", "normalize", "legacy")


def decode(
    pieces: Iterable[bytes],
    maxSize: int = 0,
    bareNewline: str = "reject",
    shortPiece: int = SHORT_PIECE,
) -> tuple[bytes, bytes | None, DataDecoder]:
    """
    Feed C{pieces} one by one until the body ends; the pieces after that
    belong to the rest.

    @return: The decoded body, the rest (or C{None}) and the decoder.
    """
    decoder = DataDecoder(maxSize, bareNewline, shortPiece)
    out: list[bytes] = []
    rest = None
    for piece in pieces:
        if rest is not None:
            rest += piece
            continue
        chunks, rest = decoder.feed(piece)
        out.extend(chunks)
    return b"".join(out), rest, decoder


def splitAt(data: bytes, points: Iterable[int]) -> list[bytes]:
    """
    Cut C{data} at every index in C{points}.
    """
    cuts = sorted({0, len(data), *points})
    return [data[a:b] for a, b in pairwise(cuts)]


def reference(data: bytes, bareNewline: str) -> tuple[bytes, bytes | None, bool]:
    """
    A byte-at-a-time decoder written straight from RFC 5321 sections 4.1.1.4
    and 4.5.2, to compare with.

    @return: The body, the rest (or C{None}) and whether a bare CR or LF was
        seen.
    """
    out = bytearray()
    bare = False
    lineStart = True
    i = 0
    while i < len(data):
        if lineStart and data[i : i + 1] == b".":
            if data[i + 1 : i + 3] == b"\r\n":
                return bytes(out), data[i + 3 :], bare
            i += 1
            lineStart = False
            continue
        if data[i : i + 2] == b"\r\n":
            out += b"\r\n"
            i += 2
            lineStart = True
            continue
        byte = data[i : i + 1]
        if byte in (b"\r", b"\n"):
            bare = True
            out += b"\r\n" if bareNewline == "normalize" else byte
        else:
            out += byte
        lineStart = False
        i += 1
    return bytes(out), None, bare


def dotStuff(body: bytes) -> bytes:
    """
    What a client sends for C{body}: a period added to each line starting
    with one, and a final CRLF if missing.
    """
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    lines = body.split(b"\r\n")[:-1]
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


# Fragments that make the interesting sequences likely.
fragments = st.sampled_from(
    [b"a", b"xyz", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"\r\n..", b"\r\n.\r", b"\n.\n"]
)
bodies = st.lists(fragments, max_size=40).map(b"".join)


class EndOfDataTests(SynchronousTestCase):
    """
    The body ends at CRLF . CRLF and nowhere else.
    """

    def test_simpleBody(self) -> None:
        """
        The body keeps the CRLF of its last line; the end marker is dropped.
        """
        body, rest, decoder = decode([b"a\r\n.\r\n"])
        self.assertEqual((body, rest), (b"a\r\n", b""))
        self.assertTrue(decoder.ended)
        self.assertEqual(decoder.byteLength, 3)

    def test_emptyMessage(self) -> None:
        """
        A message that is just C{.CRLF} is empty: the first line starts at the
        start of the data.
        """
        body, rest, decoder = decode([b".\r\n"])
        self.assertEqual((body, rest), (b"", b""))
        self.assertTrue(decoder.ended)
        self.assertEqual(decoder.byteLength, 0)

    def test_restAfterEnd(self) -> None:
        """
        The bytes after the end marker come back as the rest, untouched.
        """
        body, rest, _ = decode([b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\nNOOP\n"])
        self.assertEqual(body, b"Subject: x\r\n\r\nhi\r\n")
        self.assertEqual(rest, b"QUIT\r\nNOOP\n")

    def test_notEndedYet(self) -> None:
        """
        Without the end marker the rest is C{None} and C{ended} is false.
        """
        decoder = DataDecoder(shortPiece=0)
        chunks, rest = decoder.feed(b"a\r\nb\r\n")
        self.assertEqual((b"".join(chunks), rest), (b"a\r\nb\r\n", None))
        self.assertFalse(decoder.ended)

    def test_periodInsideLine(self) -> None:
        """
        A period that does not start a line ends nothing and stays.
        """
        body, rest, decoder = decode([b"a.\r\nb .\r\n"], shortPiece=0)
        self.assertEqual((body, rest), (b"a.\r\nb .\r\n", None))
        self.assertFalse(decoder.ended)

    def test_markerInFollowingLine(self) -> None:
        """
        Only the first end marker counts; a second one is part of the rest.
        """
        body, rest, _ = decode([b"a\r\n.\r\nb\r\n.\r\n"])
        self.assertEqual((body, rest), (b"a\r\n", b"b\r\n.\r\n"))

    def test_emptyFeed(self) -> None:
        """
        Feeding no bytes changes nothing.
        """
        decoder = DataDecoder()
        self.assertEqual(decoder.feed(b""), ([], None))
        self.assertEqual(decoder.feed(b".\r\n"), ([], b""))

    def test_feedAfterEnd(self) -> None:
        """
        Feeding after the end is a programming error.
        """
        decoder = DataDecoder()
        decoder.feed(b".\r\n")
        self.assertRaises(RuntimeError, decoder.feed, b"x")

    def test_badArguments(self) -> None:
        """
        An unknown policy or a negative size is refused.
        """
        self.assertRaises(ValueError, DataDecoder, 0, "strict")
        self.assertRaises(ValueError, DataDecoder, -1)


class DotStuffingTests(SynchronousTestCase):
    """
    RFC 5321 section 4.5.2: a line starting with a period loses that period.
    """

    def test_stuffedLine(self) -> None:
        """
        C{..x} decodes to C{.x}.
        """
        self.assertEqual(decode([b"a\r\n..x\r\n.\r\n"])[0], b"a\r\n.x\r\n")

    def test_stuffedFirstLine(self) -> None:
        """
        The first line of the message is a line start too.
        """
        self.assertEqual(decode([b"..x\r\n.\r\n"])[0], b".x\r\n")

    def test_lineOfOnePeriod(self) -> None:
        """
        A body line that is a single period arrives as C{..} and decodes back.
        """
        self.assertEqual(decode([b"a\r\n..\r\n.\r\n"])[0], b"a\r\n.\r\n")

    def test_onlyFirstPeriodRemoved(self) -> None:
        """
        Only one period is removed: C{...} decodes to C{..}.
        """
        self.assertEqual(decode([b"...\r\n.\r\n"])[0], b"..\r\n")

    def test_manyStuffedLines(self) -> None:
        """
        A feed with more stuffed lines than the split limit decodes the same.
        """
        lines = [b"..line %d\r\n" % i for i in range(_data._SPLIT_LIMIT * 3)]
        body, rest, _ = decode([b"".join(lines) + b".\r\nNEXT"])
        self.assertEqual(body, b"".join(line[1:] for line in lines))
        self.assertEqual(rest, b"NEXT")

    def test_denseAndSparseAgree(self) -> None:
        """
        The split path and the replace path give the same output for the
        same input, at every split point.
        """
        data = b"..a\r\n.\rb\r\n..\r\nc\r\n.\nd\r\n..\r\n.\r\nREST"
        expected = decode([data])
        self.patch(_data, "_SPLIT_LIMIT", 0)
        for point in range(len(data) + 1):
            got = decode(splitAt(data, [point]))
            self.assertEqual(got[:2], expected[:2], point)


# (raw line content, body in legacy and reject, body in normalize)
SMUGGLING = [
    (b"a\n.\nMAIL", b"a\n.\nMAIL", b"a\r\n.\r\nMAIL"),
    (b"a\n.\r\nMAIL", b"a\n.\r\nMAIL", b"a\r\n.\r\nMAIL"),
    (b"a\r\n.\nMAIL", b"a\r\n\nMAIL", b"a\r\n\r\nMAIL"),
    (b"a\r.\rMAIL", b"a\r.\rMAIL", b"a\r\n.\r\nMAIL"),
    (b"a\r\n.\rMAIL", b"a\r\n\rMAIL", b"a\r\n\r\nMAIL"),
    (b"a\r.\r\nMAIL", b"a\r.\r\nMAIL", b"a\r\n.\r\nMAIL"),
    (b"a\n.\rMAIL", b"a\n.\rMAIL", b"a\r\n.\r\nMAIL"),
    (b"a\r\n\n.\r\nMAIL", b"a\r\n\n.\r\nMAIL", b"a\r\n\r\n.\r\nMAIL"),
    (b"a\r\n\r.\r\nMAIL", b"a\r\n\r.\r\nMAIL", b"a\r\n\r\n.\r\nMAIL"),
    (b"a\n..\nMAIL", b"a\n..\nMAIL", b"a\r\n..\r\nMAIL"),
]


class SmugglingTests(SynchronousTestCase):
    """
    Bare CR and bare LF never end a message nor start a line
    (CVE-2023-51764, CVE-2023-51765, CVE-2023-51766).
    """

    def test_variants(self) -> None:
        """
        Each smuggling sequence is content in every policy, split anywhere;
        the message ends only at the real marker and the rest is what
        follows it; C{bareNewlineSeen} is set.
        """
        for raw, legacy, normalized in SMUGGLING:
            data = raw + b"\r\n.\r\nRSET\r\n"
            for policy in POLICIES:
                expected = normalized if policy == "normalize" else legacy
                for point in range(len(data) + 1):
                    body, rest, decoder = decode(splitAt(data, [point]), bareNewline=policy)
                    self.assertEqual(body, expected + b"\r\n", (raw, policy, point))
                    self.assertEqual(rest, b"RSET\r\n", (raw, policy, point))
                    self.assertTrue(decoder.bareNewlineSeen, (raw, policy, point))
                    self.assertEqual(decoder.byteLength, len(expected) + 2)

    def test_smuggledMarkerDoesNotEnd(self) -> None:
        """
        Fed on its own, C{LF . LF} and its kin leave the message open.
        """
        for marker in [b"a\n.\n", b"a\n.\r\n", b"a\r\n.\n", b"a\r.\r", b"a\r\n.\rb"]:
            for policy in POLICIES:
                decoder = DataDecoder(bareNewline=policy)
                _, rest = decoder.feed(marker + b"MAIL FROM:<x@example.com>\r\n")
                self.assertIsNone(rest, (marker, policy))
                self.assertFalse(decoder.ended)

    def test_cleanBody(self) -> None:
        """
        A body with only CRLF line breaks sets no flag.
        """
        _, _, decoder = decode([b"a\r\n\r\n..b\r\n\r\n.\r\n"])
        self.assertFalse(decoder.bareNewlineSeen)

    def test_crlfAcrossFeeds(self) -> None:
        """
        A CR ending one feed and an LF starting the next are a CRLF, not bare
        line breaks, and start a line.
        """
        decoder = DataDecoder(bareNewline="normalize", shortPiece=0)
        self.assertEqual(decoder.feed(b"a\r"), ([b"a"], None))
        self.assertEqual(decoder.feed(b"\n..b\r"), ([b"\r\n", b".b"], None))
        self.assertEqual(decoder.feed(b"\n.\r"), ([b"\r\n"], None))
        self.assertEqual(decoder.feed(b"\nX"), ([], b"X"))
        self.assertFalse(decoder.bareNewlineSeen)

    def test_bareCRAcrossFeeds(self) -> None:
        """
        A CR ending a feed is bare if the next feed does not start with LF.
        """
        for policy, expected in [("legacy", b"\r"), ("reject", b"\r"), ("normalize", b"\r\n")]:
            decoder = DataDecoder(bareNewline=policy, shortPiece=0)
            decoder.feed(b"a\r")
            chunks, _ = decoder.feed(b"b")
            self.assertEqual(chunks, [expected, b"b"])
            self.assertTrue(decoder.bareNewlineSeen)

    def test_bareCRAfterLinePeriodAcrossFeeds(self) -> None:
        """
        C{CRLF . CR} then something other than LF is content: the period is
        removed and the CR is bare.
        """
        for policy, expected in [("legacy", b"a\r\n\rb"), ("normalize", b"a\r\n\r\nb")]:
            body, rest, decoder = decode([b"a\r\n.", b"\r", b"b"], bareNewline=policy, shortPiece=0)
            self.assertEqual((body, rest), (expected, None))
            self.assertTrue(decoder.bareNewlineSeen)

    def test_bareNewlineAmongManyLines(self) -> None:
        """
        One bare CR or LF is found at any place among thousands of real
        CRLFs, in a body of empty lines and in one of long lines, and none
        is found when there is none.
        """
        for line in (b"", b"x" * 78):
            lines = [line] * 2000
            clean = b"\r\n".join(lines) + b"\r\n"
            self.assertFalse(_data._hasBareNewline(clean))
            for where in (0, 1, 999, 1999):
                for bare in (b"\r", b"\n", b"\n\r"):
                    broken = b"\r\n".join([*lines[:where], bare + line, *lines[where + 1 :]])
                    self.assertTrue(_data._hasBareNewline(broken + b"\r\n"), (line, where, bare))
                    self.assertTrue(_data._hasBareNewline(clean + bare), (line, bare))

    @settings(deadline=None)
    @given(
        region=st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"x", b"."]), min_size=1).map(
            b"".join
        )
    )
    def test_bareNewlineByDefinition(self, region: bytes) -> None:
        """
        The check agrees with its definition read byte by byte: a CR not
        followed by LF (a CR last included), or an LF not preceded by CR (an
        LF first included).
        """
        bare = any(
            (b == 13 and region[i + 1 : i + 2] != b"\n")
            or (b == 10 and (i == 0 or region[i - 1] != 13))
            for i, b in enumerate(region)
        )
        self.assertEqual(_data._hasBareNewline(region), bare, region)

    def test_bareLFAtFeedStart(self) -> None:
        """
        An LF starting a feed after one that did not end with CR is bare.
        """
        decoder = DataDecoder()
        decoder.feed(b"a")
        decoder.feed(b"\nb")
        self.assertTrue(decoder.bareNewlineSeen)

    def test_normalizeKeepsCRLF(self) -> None:
        """
        Normalising turns a bare CR before a CRLF into its own CRLF and leaves
        real CRLFs alone.
        """
        body, _, _ = decode([b"a\r\r\nb\n\rc\r\n.\r\n"], bareNewline="normalize")
        self.assertEqual(body, b"a\r\n\r\nb\r\n\r\nc\r\n")


SAMPLES = [
    b"From: a@example.com\r\n\r\nHello.\r\n..dot\r\n.\r\nQUIT\r\n",
    b".\r\nMAIL FROM:<a@example.com>\r\n",
    b"..\r\n.\r\n..\r\n",
    b"a\r\n.\rb\n.\nc\r.\r\n.\r\r\n.\r\nRSET\r\n",
    b"\r\n\r\n.\r\n",
    b"x\r\r\r\n\n\n.\r\n.\r\n",
]


class SplitTests(SynchronousTestCase):
    """
    Splitting the input anywhere changes nothing in the output.
    """

    def assertSplitsAgree(self, data: bytes, pieces: Sequence[bytes], policy: str) -> None:
        """
        Decoding C{pieces} gives what decoding C{data} at once gives, for
        the body, the rest and the flags.
        """
        body, rest, decoder = decode([data], bareNewline=policy)
        got, gotRest, gotDecoder = decode(pieces, bareNewline=policy)
        self.assertEqual((got, gotRest), (body, rest), pieces)
        self.assertEqual(gotDecoder.bareNewlineSeen, decoder.bareNewlineSeen)
        self.assertEqual(gotDecoder.byteLength, decoder.byteLength)
        self.assertEqual(gotDecoder.ended, decoder.ended)

    def test_everySplitPoint(self) -> None:
        """
        Every two-way split of each sample decodes as the whole does.
        """
        for data in SAMPLES:
            for policy in POLICIES:
                for point in range(len(data) + 1):
                    self.assertSplitsAgree(data, splitAt(data, [point]), policy)

    def test_everyTwoSplitPoints(self) -> None:
        """
        Every three-way split of each sample decodes as the whole does.
        """
        for data in SAMPLES:
            for policy in POLICIES:
                for a in range(len(data) + 1):
                    for b in range(a, len(data) + 1):
                        self.assertSplitsAgree(data, splitAt(data, [a, b]), policy)

    def test_byteByByte(self) -> None:
        """
        Feeding one byte at a time decodes as the whole does.
        """
        for data in SAMPLES:
            for policy in POLICIES:
                pieces = [data[i : i + 1] for i in range(len(data))]
                self.assertSplitsAgree(data, pieces, policy)

    @settings(deadline=None)
    @given(
        body=bodies,
        tail=st.binary(max_size=8),
        data=st.data(),
        policy=st.sampled_from(POLICIES),
    )
    def test_randomSplits(self, body: bytes, tail: bytes, data: st.DataObject, policy: str) -> None:
        """
        Random multi-way splits of random sessions decode as the whole does.
        """
        message = body + b"\r\n.\r\n" + tail
        points = data.draw(st.lists(st.integers(0, len(message)), max_size=10))
        self.assertSplitsAgree(message, splitAt(message, points), policy)


class PropertyTests(SynchronousTestCase):
    """
    The decoder agrees with the RFC read byte by byte, and undoes what a
    client does.
    """

    @settings(deadline=None)
    @given(
        lines=st.lists(
            st.tuples(
                st.sampled_from([b"", b".", b".."]),
                st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
            ).map(b"".join),
            max_size=12,
        ),
        trailingCRLF=st.booleans(),
        tail=st.binary(max_size=10),
        data=st.data(),
    )
    def test_roundTrip(
        self,
        lines: list[bytes],
        trailingCRLF: bool,
        tail: bytes,
        data: st.DataObject,
    ) -> None:
        """
        A body with CRLF line breaks, dot-stuffed and terminated, split
        anywhere, decodes back to itself (with a final CRLF) and leaves what
        followed as the rest.
        """
        body = b"\r\n".join(lines)
        if trailingCRLF and body:
            body += b"\r\n"
        message = dotStuff(body) + b".\r\n" + tail
        points = data.draw(st.lists(st.integers(0, len(message)), max_size=6))
        got, rest, decoder = decode(splitAt(message, points))
        expected = body if not body or body.endswith(b"\r\n") else body + b"\r\n"
        self.assertEqual(got, expected)
        self.assertEqual(rest, tail)
        self.assertFalse(decoder.bareNewlineSeen)
        self.assertEqual(decoder.byteLength, len(expected))

    @settings(deadline=None)
    @given(
        body=bodies,
        tail=st.binary(max_size=8),
        data=st.data(),
        policy=st.sampled_from(POLICIES),
        dense=st.booleans(),
    )
    def test_matchesReference(
        self, body: bytes, tail: bytes, data: st.DataObject, policy: str, dense: bool
    ) -> None:
        """
        Any session, split anywhere, decodes as the byte-at-a-time reference
        does (body, rest and the bare newline flag), whether periods are
        removed by splitting or by replacing.
        """
        message = body + b"\r\n.\r\n" + tail
        points = data.draw(st.lists(st.integers(0, len(message)), max_size=8))
        limit = _data._SPLIT_LIMIT
        _data._SPLIT_LIMIT = 0 if dense else limit
        try:
            got, rest, decoder = decode(splitAt(message, points), bareNewline=policy)
        finally:
            _data._SPLIT_LIMIT = limit
        expected, expectedRest, bare = reference(message, policy)
        self.assertEqual((got, rest), (expected, expectedRest))
        self.assertEqual(decoder.bareNewlineSeen, bare)
        self.assertEqual(decoder.byteLength, len(expected))


class SizeLimitTests(SynchronousTestCase):
    """
    Past C{maxSize} nothing more is handed on, but the body is still read to
    its end.
    """

    def test_atTheLimit(self) -> None:
        """
        A body of exactly C{maxSize} bytes is whole.
        """
        body, rest, decoder = decode([b"0123456\r\n.\r\n"], maxSize=9)
        self.assertEqual((body, rest), (b"0123456\r\n", b""))
        self.assertFalse(decoder.sizeExceeded)

    def test_pastTheLimit(self) -> None:
        """
        Once past the limit, feeds hand on nothing; what was handed on is a
        prefix of the body within the limit; the end is still found and
        C{byteLength} counts the whole body.
        """
        message = b"".join(b"line %02d\r\n" % i for i in range(10)) + b".\r\nQUIT\r\n"
        for size in (5, 9, 10, 11, 25, 89):
            pieces = splitAt(message, range(0, len(message), 7))
            body, rest, decoder = decode(pieces, maxSize=size)
            self.assertTrue(decoder.sizeExceeded, size)
            self.assertLessEqual(len(body), size)
            self.assertTrue(message.startswith(body))
            self.assertEqual(rest, b"QUIT\r\n")
            self.assertTrue(decoder.ended)
            self.assertEqual(decoder.byteLength, 90)

    def test_drainsWithoutKeeping(self) -> None:
        """
        Past the limit, large feeds give no chunks and the decoder keeps no
        more than a few bytes of them.
        """
        decoder = DataDecoder(maxSize=10)
        decoder.feed(b"x" * 20)
        self.assertTrue(decoder.sizeExceeded)
        for _ in range(4):
            chunks, rest = decoder.feed(b"y" * 65535 + b"\r")
            self.assertEqual((chunks, rest), ([], None))
            kept = [v for v in vars(decoder).values() if isinstance(v, bytes)]
            self.assertTrue(all(len(v) <= 4 for v in kept))
        self.assertEqual(decoder.feed(b"\n.\r\nNOOP\r\n"), ([], b"NOOP\r\n"))
        self.assertEqual(decoder.byteLength, 20 + 4 * 65536 + 1)

    def test_normalizedBytesCount(self) -> None:
        """
        With C{"normalize"}, the limit applies to the normalised body.
        """
        _, _, decoder = decode([b"a\nb\n\r\n.\r\n"], maxSize=6, bareNewline="normalize")
        self.assertEqual(decoder.byteLength, 8)
        self.assertTrue(decoder.sizeExceeded)

    def test_unlimited(self) -> None:
        """
        C{maxSize=0} sets no limit.
        """
        _, _, decoder = decode([b"x" * 100000 + b"\r\n.\r\n"])
        self.assertFalse(decoder.sizeExceeded)
        self.assertEqual(decoder.byteLength, 100002)


class ChunkTests(SynchronousTestCase):
    """
    Chunks are handed on without copies where possible, and few.
    """

    def test_wholeFeedIsInput(self) -> None:
        """
        A feed that is all body, with no period starting a line and no bare
        line break, is handed on as the very input object.
        """
        data = b"Hello. World\r\nmore text.\r\n" * 1000
        decoder = DataDecoder()
        chunks, _ = decoder.feed(data)
        self.assertEqual(len(chunks), 1)
        self.assertIs(chunks[0], data)

    def test_atMostTwoChunks(self) -> None:
        """
        Short pieces not joined (C{shortPiece=0}), a feed gives at most two
        chunks: the byte held back by the last one and its own body.
        """
        decoder = DataDecoder(bareNewline="normalize", shortPiece=0)
        decoder.feed(b"a\r")
        chunks, _ = decoder.feed(b"\n..b\r\n..c\nd\r\n.e\r")
        self.assertEqual(chunks, [b"\r\n", b".b\r\n.c\r\nd\r\ne"])

    def test_legacyKeepsBareBytes(self) -> None:
        """
        C{"legacy"} and C{"reject"} hand bare CR and LF bytes on unchanged.
        """
        for policy in ("legacy", "reject"):
            body, _, decoder = decode([b"a\nb\rc\r\n.\r\n"], bareNewline=policy)
            self.assertEqual(body, b"a\nb\rc\r\n")
            self.assertTrue(decoder.bareNewlineSeen)


class ShortPieceTests(SynchronousTestCase):
    """
    A body read a few octets at a time (tiny TLS records, TCP segments) is
    handed on in pieces of at least L{SHORT_PIECE} octets, not one object
    per read: a handler keeping the pieces it is given keeps about the
    body's size.
    """

    def test_tinyFeedsJoined(self) -> None:
        """
        One-octet feeds come out in pieces of L{SHORT_PIECE} octets, the
        last shorter one with the end of the body, whole and in order.
        """
        body = b"".join(b"line %d\r\n" % i for i in range(2000))
        decoder = DataDecoder()
        out: list[bytes] = []
        rest = None
        for i, octet in enumerate(body + b".\r\nQUIT\r\n"):
            chunks, rest = decoder.feed(bytes([octet]))
            out.extend(chunks)
            if rest is not None:
                self.assertEqual(i, len(body) + 2)
                break
        self.assertEqual(rest, b"")
        self.assertEqual(b"".join(out), body)
        self.assertEqual([len(chunk) for chunk in out[:-1]], [SHORT_PIECE] * (len(out) - 1))
        self.assertLessEqual(len(out[-1]), SHORT_PIECE)

    def test_longPieceAfterShortOnes(self) -> None:
        """
        A long feed after short ones hands on what was held, then the long
        feed itself, not a copy of both.
        """
        decoder = DataDecoder()
        self.assertEqual(decoder.feed(b"ab"), ([], None))
        self.assertEqual(decoder.feed(b"cd\r\n"), ([], None))
        long = b"x" * SHORT_PIECE
        chunks, rest = decoder.feed(long)
        self.assertEqual(chunks, [b"abcd\r\n", long])
        self.assertIs(chunks[1], long)
        self.assertIsNone(rest)

    def test_heldHandedOnAtTheEnd(self) -> None:
        """
        What is held is handed on with the end of the body, whichever way
        the end marker comes: in a feed of its own, split, or behind more
        body.
        """
        for pieces in (
            [b"a\r\n", b".\r\n"],
            [b"a\r\n", b".", b"\r", b"\n"],
            [b"a\r\n.", b"\r\n"],
            [b"a", b"b\r\n.\r\nNOOP\r\n"],
        ):
            body, rest, decoder = decode(pieces)
            self.assertEqual(body, b"a\r\n" if pieces[0] != b"a" else b"ab\r\n", pieces)
            self.assertTrue(decoder.ended)
            self.assertEqual(rest, b"NOOP\r\n" if pieces[0] == b"a" else b"", pieces)

    def test_sizeLimitDropsHeld(self) -> None:
        """
        Once the body passes the size limit, what is held is dropped with
        the rest: nothing of it is handed on, even at the end.
        """
        decoder = DataDecoder(maxSize=10)
        self.assertEqual(decoder.feed(b"abcde"), ([], None))
        self.assertEqual(decoder.feed(b"fghijkl"), ([], None))
        self.assertTrue(decoder.sizeExceeded)
        self.assertEqual(decoder.feed(b"\r\n.\r\n"), ([], b""))

    def test_bareNewlinesAcrossJoinedFeeds(self) -> None:
        """
        Joining does not hide a bare CR or LF, nor make one: each feed is
        checked as it comes, and normalised ones are joined normalised.
        """
        body, _, decoder = decode([b"a\r", b"b", b"c\n", b"d\r\n.\r\n"], bareNewline="normalize")
        self.assertEqual(body, b"a\r\nbc\r\nd\r\n")
        self.assertTrue(decoder.bareNewlineSeen)
        body, _, decoder = decode([b"a\r", b"\nb\r", b"\n.\r\n"])
        self.assertEqual(body, b"a\r\nb\r\n")
        self.assertFalse(decoder.bareNewlineSeen)


class ChunkDecoderTests(SynchronousTestCase):
    def test_chunks(self) -> None:
        """
        Each chunk takes exactly its announced octets; the bytes after it are
        handed back; the LAST chunk ends the body.
        """
        from twisted_smtpd._core.data import ChunkDecoder

        decoder = ChunkDecoder()
        decoder.expect(4, False)
        # Short pieces are held back and joined (SHORT_PIECE).
        self.assertEqual(decoder.feed(b"ab"), ([], None))
        self.assertEqual(decoder.feed(b"cdBDAT"), ([], b"BDAT"))
        self.assertFalse(decoder.ended)
        decoder.expect(2, True)
        self.assertEqual(decoder.feed(b"\n.rest"), ([b"abcd\n."], b"rest"))
        self.assertTrue(decoder.ended)
        self.assertEqual(decoder.byteLength, 6)

    def test_shortPiecesJoined(self) -> None:
        """
        Pieces shorter than C{SHORT_PIECE} are handed on joined, once they
        make C{SHORT_PIECE} octets, before a longer piece, or at the end of
        the LAST chunk; longer pieces are handed on as they are.
        """
        from twisted_smtpd._core.data import SHORT_PIECE, ChunkDecoder

        decoder = ChunkDecoder()
        for _ in range(SHORT_PIECE // 2 - 1):
            decoder.expect(2, False)
            self.assertEqual(decoder.feed(b"xy"), ([], b""))
        decoder.expect(2, False)
        self.assertEqual(decoder.feed(b"xy"), ([b"xy" * (SHORT_PIECE // 2)], b""))
        decoder.expect(1, False)
        self.assertEqual(decoder.feed(b"a"), ([], b""))
        big = b"B" * SHORT_PIECE
        decoder.expect(SHORT_PIECE + 1, True)
        self.assertEqual(decoder.feed(big), ([b"a", big], None))
        self.assertEqual(decoder.feed(b"zNOOP"), ([b"z"], b"NOOP"))
        self.assertTrue(decoder.ended)

    def test_sizeLimit(self) -> None:
        """
        Past the limit nothing more is handed on, but every octet is counted
        and consumed.
        """
        from twisted_smtpd._core.data import ChunkDecoder

        decoder = ChunkDecoder(maxSize=5)
        decoder.expect(4, False)
        self.assertEqual(decoder.feed(b"abcd"), ([], b""))
        decoder.expect(4, True)
        self.assertEqual(decoder.feed(b"efghX"), ([], b"X"))
        self.assertTrue(decoder.sizeExceeded)
        self.assertEqual(decoder.byteLength, 8)
