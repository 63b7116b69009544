"""
A differential fuzzer: the same pipelined input, with hooks answering at
once or later, sent whole, one byte at a time and cut at random places,
must get the same replies, byte for byte, the same hook calls and the same
log events, and close (or not) alike.
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
    FORWARDING,
    HOOKS,
    MODES,
    FuzzError,
    FuzzHandler,
    dotStuff,
)
from tests.test_starttls import FakeTLS, TLSStringTransport
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.server import SMTPServerFactory


def lines(commands: list[bytes]) -> bytes:
    return b"".join(command + b"\r\n" for command in commands)


ENVELOPE = [b"EHLO c.example.com", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>"]
PIECES = st.lists(
    st.one_of(
        st.lists(COMMANDS, min_size=1, max_size=4).map(
            lambda ls: b"".join(x + b"\r\n" for x in ls)
        ),
        st.just(b"".join(x + b"\r\n" for x in ENVELOPE)),
        BODY_LINES.map(lambda lines: b"DATA\r\n" + dotStuff(lines)),
        BODY_LINES.map(
            lambda lines: b"BDAT %d\r\n" % len(b"\r\n".join(lines)) + b"\r\n".join(lines)
        ),
        st.sampled_from([b"BDAT 0\r\n", b"BDAT 0 LAST\r\n", b"RSET\r\n", b"NOOP\r\n"]),
        st.lists(FORWARDING, min_size=1, max_size=3).map(
            lambda ls: b"".join(x + b"\r\n" for x in ls)
        ),
    ),
    min_size=1,
    max_size=8,
)
SYNC_OR_LATE = st.sampled_from(
    [m for m in MODES if not m.startswith("coro") and not m.startswith("lazy")]
)


class _Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def __call__(self, event: str, session: Any, data: dict[str, Any]) -> None:
        if event in ("reject", "message", "connect", "close"):
            code = data["reply"].code if event == "reject" else None
            self.seen.append((event, code))


def run(
    data: bytes, points: list[int], modes: dict[str, str], options: ServerOptions
) -> tuple[bytes, list[tuple[str, str]], list[tuple[str, Any]], bool, int]:
    """
    Feed C{data} cut at C{points}; fire every late answer once the input
    is in; then end the connection.
    """
    events = _Events()
    handler, proto, transport = start(modes, options, events)
    previous = 0
    for point in [*points, len(data)]:
        if point > previous:
            proto.dataReceived(data[previous:point])
            previous = point
    closed = finish(handler, proto, transport)
    return transport.value(), handler.calls, events.seen, closed, handler.closes


def start(
    modes: dict[str, str], options: ServerOptions, observer: Any
) -> tuple[FuzzHandler, Any, TLSStringTransport]:
    """
    A session of a L{FuzzHandler} answering in C{modes}, its events seen
    by C{observer}, connected to a L{TLSStringTransport}.
    """
    handler = FuzzHandler()
    handler.modes.update(modes)
    factory = SMTPServerFactory(handler, options, reactor=Clock())
    factory._tls = FakeTLS()  # type: ignore[assignment]
    factory.addObserver(observer)
    proto = factory.buildProtocol(None)
    transport = TLSStringTransport(
        peerAddress=IPv4Address("TCP", "192.0.2.7", 40000),
        hostAddress=IPv4Address("TCP", "192.0.2.1", 25),
    )
    proto.makeConnection(transport)
    return handler, proto, transport


def finish(handler: FuzzHandler, proto: Any, transport: TLSStringTransport) -> bool:
    """
    Fire the late answers still pending (at most 200), then end the
    connection.

    @return: Whether the server had closed it.
    """
    for _ in range(200):
        if not handler.pending:
            break
        handler.fireOne()
    closed: bool = transport.disconnecting
    proto.connectionLost()
    return closed


class SplitFuzzTests(SynchronousTestCase):
    @PROFILE
    @given(
        pieces=PIECES,
        cuts=st.lists(st.integers(0, 1 << 16), max_size=6),
        modes=st.fixed_dictionaries({hook: SYNC_OR_LATE for hook in HOOKS if hook != "onSecure"}),
        lmtp=st.booleans(),
        maxErrors=st.sampled_from([2, 5, 20]),
        maxJunk=st.sampled_from([0, 1, 3]),
        forwarding=st.booleans(),
    )
    def test_splitsAgree(
        self,
        pieces: list[bytes],
        cuts: list[int],
        modes: dict[str, str],
        lmtp: bool,
        maxErrors: int,
        maxJunk: int,
        forwarding: bool,
    ) -> None:
        """
        Whole, byte by byte, or cut anywhere: the same session (with
        XCLIENT and XFORWARD trusted or not).
        """
        if lmtp:
            pieces = [p.replace(b"EHLO ", b"LHLO ") for p in pieces]
        data = b"".join(pieces)
        options = ServerOptions(
            name="mx.example.com",
            disableReverseLookup=True,
            lmtp=lmtp,
            authOptional=True,
            maxErrors=maxErrors,
            maxJunkCommands=maxJunk,
            useXClient=["192.0.2.0/24"] if forwarding else [],
            useXForward=["192.0.2.0/24"] if forwarding else [],
        )
        try:
            whole = run(data, [], modes, options)
            some = run(data, sorted({c % (len(data) + 1) for c in cuts}), modes, options)
            every = run(data, list(range(1, len(data))), modes, options)
        finally:
            self.flushLoggedErrors(FuzzError, TypeError)
        self.assertEqual(some, whole)
        self.assertEqual(every, whole)
