"""
The pieces of the protocol fuzzer: a handler whose hooks accept, refuse,
raise or answer late as the state machine tells them, a strict reply parser
(RFC 5321 section 4.2), and the strategies for command lines and bodies.
"""

from __future__ import annotations

import re
from base64 import b64encode
from collections.abc import Callable
from inspect import iscoroutine
from typing import Any

from hypothesis import strategies as st
from twisted.internet.defer import Deferred

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import Address, AuthRequest, AuthResult, Session
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

HOOKS = ("onConnect", "onHelo", "onSecure", "onAuth", "onMailFrom", "onRcptTo", "onData")
#: When a hook answers: at once, through a Deferred fired later, or through
#: a coroutine awaiting one.
TIMINGS = ("sync", "late", "coro")
#: What it answers: accept, raise L{FuzzError}, or refuse with an
#: L{SMTPError} of that code (2xx and 3xx are a handler's bug: 451).
OUTCOMES = ("accept", "raise", "250", "354", "451", "554", "421", "521")
MODES = (
    *(f"{t}:{o}" for t in TIMINGS for o in OUTCOMES),
    # LMTP onData: every other recipient refused 550, or the second one 421.
    "sync:mixed",
    "sync:mixed421",
    # onData: the stream is read only once the fuzzer fires the answer.
    "lazy:accept",
)
#: The enhanced code of each refusal the fuzzer makes.
ENHANCED = {250: "2.0.0", 354: None, 451: "4.7.1", 554: "5.7.1", 421: "4.7.0", 521: "5.7.0"}

#: What the fuzzer never sends as a command: any hook call naming it proves
#: that body text or discarded input was run as a command.
EVIL = "evil.example.net"


class FuzzError(Exception):
    """
    What a hook in a C{raise} mode raises; the server logs it and answers 451.
    """


def fuzzRefusal(hook: str, code: int) -> SMTPError:
    """
    The refusal a hook makes with C{code}.
    """
    return SMTPError(code, f"{hook} refused {code} by the fuzzer", ENHANCED[code])


class FuzzHandler(BaseHandler):
    """
    A handler whose every hook does what C{modes} says.

    @ivar modes: Hook name to mode, C{timing:outcome} (L{MODES}).
    @ivar pending: The Deferreds of late answers: C{(deferred, hook,
        outcome, value)}.
    @ivar lastLate: When the newest late answer was asked for, by C{now}.
    @ivar now: The session's clock.
    @ivar calls: C{(hook, argument)} for every hook call.
    @ivar issued: C{(hook, code)} of every L{SMTPError} the handler raised
        or failed a Deferred with, when it did.
    @ivar raised: How many L{FuzzError}s it raised or failed with.
    @ivar dataOutcomes: The outcome of each C{onData} call, in order.
    @ivar closed: Set by the fuzzer once the session is over: no hook but
        C{onClose} may be called then.
    @ivar lateCalls: Hooks called after C{closed}.
    @ivar closes: How many times C{onClose} was called.
    @ivar delivered: Message id (as in the 250 reply) to the message.
    @ivar deliveredAfterLoss: The ids delivered after the connection was lost.
    """

    def __init__(self) -> None:
        self.modes: dict[str, str] = dict.fromkeys(HOOKS, "sync:accept")
        self.pending: list[tuple[Deferred[Any], str, str, Callable[[], object]]] = []
        self.lastLate = 0.0
        self.now: Callable[[], float] = lambda: 0.0
        self.calls: list[tuple[str, str]] = []
        self.issued: list[tuple[str, int]] = []
        self.raised = 0
        self.dataOutcomes: list[str] = []
        self.closed = False
        self.lateCalls: list[str] = []
        self.closes = 0
        self.delivered: dict[str, bytes] = {}
        self.deliveredAfterLoss: set[str] = set()
        self.connectionLost = False
        self._next = 0

    def _called(self, hook: str, argument: str) -> None:
        self.calls.append((hook, argument))
        if self.closed:
            self.lateCalls.append(hook)

    def _fail(self, hook: str, outcome: str) -> BaseException:
        if outcome == "raise":
            self.raised += 1
            return FuzzError(hook)
        code = int(outcome)
        self.issued.append((hook, code))
        return fuzzRefusal(hook, code)

    def _answer(self, hook: str, value: Callable[[], object]) -> object:
        timing, outcome = self.modes[hook].split(":")
        if timing == "sync" or timing == "lazy":
            if outcome in ("accept", "mixed", "mixed421"):
                return value()
            raise self._fail(hook, outcome)
        d: Deferred[Any] = Deferred()
        self.pending.append((d, hook, outcome, value))
        self.lastLate = self.now()
        if timing == "late":
            return d

        async def waiting() -> object:
            return await d

        return waiting()

    def fireOne(self) -> None:
        """
        Fire the oldest late answer as its mode says.
        """
        d, hook, outcome, value = self.pending.pop(0)
        if outcome == "accept":
            result = value()
            if isinstance(result, Deferred):
                result.chainDeferred(d)
            else:
                d.callback(result)
        else:
            d.errback(self._fail(hook, outcome))

    def onConnect(self, session: Session) -> object:
        self._called("onConnect", "")
        return self._answer("onConnect", _none)

    def onHelo(self, hostname: str, session: Session) -> object:
        self._called("onHelo", hostname)
        return self._answer("onHelo", _none)

    def onSecure(self, session: Session) -> object:
        self._called("onSecure", "")
        return self._answer("onSecure", _none)

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        self._called("onAuth", auth.username)

        def user() -> object:
            return AuthResult(user=auth.username)

        return self._answer("onAuth", user)

    def onMailFrom(self, address: Address, session: Session) -> object:
        self._called("onMailFrom", address.address)
        return self._answer("onMailFrom", _none)

    def onRcptTo(self, address: Address, session: Session) -> object:
        self._called("onRcptTo", address.address)
        return self._answer("onRcptTo", _none)

    def onClose(self, session: Session) -> object:
        self.closes += 1
        return None

    def onData(self, stream: IMessageStream, session: Session) -> object:
        self._called("onData", "")
        timing, outcome = self.modes["onData"].split(":")
        count = len(session.envelope.rcptTo)
        lmtp = session.transmissionType == "LMTP" or session.openingCommand == "LHLO"
        self.dataOutcomes.append(outcome if lmtp or "mixed" not in outcome else "accept")
        if timing == "sync" and outcome not in ("accept", "mixed", "mixed421"):
            raise self._fail("onData", outcome)

        def deliver(data: bytes) -> object:
            self._next += 1
            n = self._next
            if not lmtp:
                return self._keep(str(n), data)
            results: list[object] = []
            for k in range(count):
                if outcome == "mixed" and k % 2:
                    results.append(SMTPError(550, "mailbox refused by the fuzzer", "5.1.1"))
                elif outcome == "mixed421" and k == 1:
                    self.issued.append(("onData", 421))
                    results.append(fuzzRefusal("onData", 421))
                else:
                    results.append(self._keep(f"{n}.{k}", data))
            return results

        if timing == "lazy":
            d: Deferred[Any] = Deferred()

            def later() -> object:
                return stream.collect().addCallback(deliver)

            self.pending.append((d, "onData", "accept", later))
            self.lastLate = self.now()
            return d

        collected: Deferred[bytes] = stream.collect()  # type: ignore[assignment]

        def got(data: bytes) -> object:
            if timing == "sync":
                return deliver(data)

            def value() -> object:
                return deliver(data)

            answer = self._answer("onData", value)
            if iscoroutine(answer):
                # A callback's coroutine is not awaited by the Deferred.
                return Deferred.fromCoroutine(answer)
            return answer

        return collected.addCallback(got)

    def _keep(self, ident: str, data: bytes) -> str:
        self.delivered[ident] = data
        if self.connectionLost:
            self.deliveredAfterLoss.add(ident)
        return f"OK id={ident}"


class AsyncFuzzHandler(FuzzHandler):
    """
    L{FuzzHandler} with C{async def} hooks (run through C{txaio}, not as a
    coroutine a plain function returns): a synchronous refusal becomes a
    failed coroutine.
    """

    async def onHelo(self, hostname: str, session: Session) -> object:  # type: ignore[override]
        return await _awaitable(FuzzHandler.onHelo(self, hostname, session))

    async def onMailFrom(self, address: Address, session: Session) -> object:  # type: ignore[override]
        return await _awaitable(FuzzHandler.onMailFrom(self, address, session))

    async def onRcptTo(self, address: Address, session: Session) -> object:  # type: ignore[override]
        return await _awaitable(FuzzHandler.onRcptTo(self, address, session))


async def _awaitable(result: object) -> object:
    if isinstance(result, Deferred):
        return await result
    if hasattr(result, "__await__"):
        return await result  # type: ignore[misc]
    return result


def _none() -> None:
    return None


_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])([\x20-\x7e]*)\r\n")
_ID = re.compile(r"\bid=([0-9.]+)")


def parseReplies(data: bytes) -> tuple[list[tuple[int, list[bytes]]], bytes]:
    """
    Split server output into complete replies (RFC 5321 section 4.2).

    @return: The replies as C{(code, lines)} and the bytes of an incomplete
        reply left over.
    @raise AssertionError: A line is malformed (its text holds anything
        but printable ASCII and spaces, a tab included), longer than 512
        octets (section 4.5.3.1.5), or a multi-line reply changes its code.
    """
    replies: list[tuple[int, list[bytes]]] = []
    current: list[bytes] = []
    code = None
    pos = start = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            break
        raw = data[pos : end + 2]
        match = _REPLY_LINE.fullmatch(raw)
        assert match is not None, f"malformed reply line {raw!r}"
        assert len(raw) <= 512, f"reply line of {len(raw)} octets: {raw[:80]!r}..."
        lineCode = int(match.group(1))
        assert code is None or code == lineCode, f"multi-line reply changes code: {raw!r}"
        code = lineCode
        current.append(match.group(3))
        pos = end + 2
        if match.group(2) == b" ":
            replies.append((lineCode, current))
            current, code = [], None
            start = pos
    return replies, data[start:]


def replyIds(lines: list[bytes]) -> list[str]:
    """
    The message ids a 250 reply to a body names.
    """
    return _ID.findall(b" ".join(lines).decode("ascii"))


_SYNC = re.compile(rb"^[\s]*(DATA|BDAT|STARTTLS|QUIT)\b", re.IGNORECASE)
_LONG = 1000


def isGeneric(line: bytes) -> bool:
    """
    Whether C{line} may be pipelined by the fuzzer: no body-starting or
    connection-changing verb, no newline.
    """
    return b"\n" not in line and _SYNC.match(line) is None


def _b64(data: bytes) -> bytes:
    return b64encode(data)


NAMES = st.sampled_from(
    [
        b"client.example.com",
        b"[192.0.2.9]",
        b"x",
        b"a" * 255,
        b"",
        b"bad name",
        b"\xc3\xa9.example",
        b"\xe2\x80\xaeevil.example",
        b"a\xe2\x80\xa9b",
    ]
)
ADDRESSES = st.sampled_from(
    [
        b"<a@example.com>",
        b"<>",
        b"<b@example.org>",
        b"a@example.com",
        b"<\xc3\xa9@example.com>",
        b"<a@[192.0.2.1]>",
        b"<postmaster>",
        b"<" + b"a" * 70 + b"@example.com>",
        b"<@relay.example:a@example.com>",
        b"<a b@example.com>",
        b"<",
        # SMTPUTF8 (RFC 6531): U-labels, quoted local parts, bytes that are
        # not UTF-8, and an A-label.
        b"<j\xc3\xb6rg@b\xc3\xbccher.example>",
        b'<"a b"@example.com>',
        b'<"\xc3\xa9 x"@example.com>',
        b"<a@\xff\xfe.example>",
        b"<\xe9@example.com>",
        b"<a@xn--bcher-kva.example>",
        b"<a@b\xc3\xbccher\xc2\xa0.example>",
        # A bidirectional override and a line separator in a local part,
        # which SMTPUTF8 allows (RFC 6532): escaped wherever written.
        b"<a\xe2\x80\xaeb@example.com>",
        b"<a\xe2\x80\xa8b@example.com>",
    ]
)
MAIL_PARAMETERS = st.lists(
    st.sampled_from(
        [
            b"SIZE=100",
            b"SIZE=99999999",
            b"BODY=8BITMIME",
            b"BODY=BINARYMIME",
            b"BODY=7BIT",
            b"SMTPUTF8",
            b"RET=HDRS",
            b"ENVID=x+2Dy",
            b"REQUIRETLS",
            b"FOO=bar",
            b"SIZE=x",
            b"AUTH=<>",
            # RFC 3461, 1652, 1870 and 6531 values, good and bad.
            b"RET=FULL",
            b"RET=hdrs",
            b"RET=",
            b"RET=NONE",
            b"ENVID=" + b"e" * 100,
            b"ENVID=" + b"e" * 101,
            b"ENVID=a+0D+0Ab",
            b"ENVID=a+2",
            b"ENVID=+C3+A9",
            b"ENVID=\xc3\xa9",
            b"ENVID=a=b",
            b"SIZE=0",
            b"SIZE=" + b"9" * 20,
            b"SIZE=" + b"9" * 21,
            b"SIZE=-1",
            b"SIZE=",
            b"BODY=8bitmime",
            b"BODY=",
            b"BODY=\xc5\xbfit",
            b"SMTPUTF8=yes",
            b"AUTH=a+40b",
            b"AUTH=",
        ]
    ),
    max_size=3,
)
RCPT_PARAMETERS = st.lists(
    st.sampled_from(
        [
            b"NOTIFY=SUCCESS,FAILURE",
            b"NOTIFY=NEVER",
            b"ORCPT=rfc822;a@example.com",
            b"FOO",
            # RFC 3461 and 6533 values, good and bad.
            b"NOTIFY=success,delay",
            b"NOTIFY=NEVER,SUCCESS",
            b"NOTIFY=",
            b"NOTIFY=SUCCESS,,FAILURE",
            b"NOTIFY=\xc5\xbfuccess",
            b"ORCPT=rfc822;a+2Bb@example.com",
            b"ORCPT=rfc822;",
            b"ORCPT=rfc822;a+0D+0A@example.com",
            b"ORCPT=rfc822;" + b"o" * 500,
            b"ORCPT=utf-8;j\\x{F6}rg@example.com",
            b"ORCPT=utf-8;j\\x{f6}rg@example.com",
            b"ORCPT=utf-8;j\xc3\xb6rg@example.com",
            b"ORCPT=utf-8;\\x{E9",
            b"ORCPT=utf-8;\\x{00E9}@x",
            b"ORCPT=utf-8;\\x{41}@x",
            b"ORCPT=utf-8;\\x{0D}\\x{0A}@x",
            b"ORCPT=utf-8;a+b@x",
            b"ORCPT=x-unknown;a@x",
            b"ORCPT=a@example.com",
        ]
    ),
    max_size=2,
)
#: XCLIENT and XFORWARD lines (Postfix's XCLIENT_README, XFORWARD_README):
#: good values, unavailable ones, addresses inside and outside the trusted
#: network, and bad values; each with whether its attributes are valid
#: (else 501 5.5.4) and, for XCLIENT, the address it names (C{""} for
#: none, C{"unknown"} for an unavailable one).
FORWARDING_LINES: dict[bytes, tuple[bool, str]] = {
    b"XCLIENT NAME=x.example ADDR=192.0.2.77": (True, "192.0.2.77"),
    b"XCLIENT ADDR=192.0.2.78 PORT=4000": (True, "192.0.2.78"),
    b"XCLIENT ADDR=198.51.100.9": (True, "198.51.100.9"),
    b"XCLIENT NAME=[UNAVAILABLE] ADDR=[UNAVAILABLE] PORT=[UNAVAILABLE]": (True, "unknown"),
    b"XCLIENT NAME=[tempunavail]": (True, ""),
    b"XCLIENT LOGIN=alice HELO=h.example PROTO=ESMTP": (True, ""),
    b"XCLIENT LOGIN=[UNAVAILABLE] HELO=[UNAVAILABLE]": (True, ""),
    b"XCLIENT PROTO=SMTP": (True, ""),
    b"XCLIENT ADDR=IPV6:2001:db8::1 DESTADDR=192.0.2.1 DESTPORT=25": (True, "2001:db8::1"),
    b"XCLIENT DESTADDR=[UNAVAILABLE] DESTPORT=[UNAVAILABLE]": (True, ""),
    b"XCLIENT ADDR=999.1.1.1": (False, ""),
    b"XCLIENT NAME=a+0Db": (False, ""),
    b"XCLIENT PORT=65536": (False, ""),
    b"XCLIENT FOO=bar": (False, ""),
    b"XCLIENT": (False, ""),
    b"XCLIENT NAME": (False, ""),
    b"XCLIENT HELO=" + b"h" * 300: (False, ""),
    b"XCLIENT LOGIN=\x1b[31mred": (False, ""),
    b"XCLIENT NAME=b+C3+BCcher.example": (False, ""),
    b"XCLIENT HELO=a+C2+A0b": (False, ""),
    b"XCLIENT ADDR=192.0.2.79 NAME=" + b"+0A" * 150: (False, ""),
    b"XFORWARD NAME=x.example ADDR=192.0.2.8 PROTO=ESMTP HELO=h IDENT=q+20id SOURCE=REMOTE": (
        True,
        "",
    ),
    b"XFORWARD HELO=a<b>;c IDENT=x;y": (True, ""),
    b"XFORWARD PORT=[UNAVAILABLE] NAME=[TEMPUNAVAIL]": (True, ""),
    b"XFORWARD IDENT=\xc3\xa9": (False, ""),
    b"XFORWARD ADDR=bad": (False, ""),
    b"XFORWARD": (False, ""),
    b"XFORWARD IDENT=a+0Ab": (False, ""),
    b"XFORWARD LOGIN=alice": (False, ""),
}
FORWARDING = st.sampled_from(sorted(FORWARDING_LINES))
AUTH_LINES = st.sampled_from(
    [
        b"AUTH PLAIN " + _b64(b"\0alice\0secret"),
        b"AUTH PLAIN",
        b"AUTH LOGIN",
        b"AUTH LOGIN " + _b64(b"alice"),
        b"AUTH CRAM-MD5",
        b"AUTH XOAUTH2 " + _b64(b"user=alice\x01auth=Bearer tok\x01\x01"),
        b"AUTH FOO",
        b"AUTH",
        b"AUTH PLAIN !!!",
    ]
)
CONTINUATIONS = st.sampled_from(
    [_b64(b"alice"), _b64(b"secret"), _b64(b"\0alice\0secret"), b"*", b"", b"!!!", b"YWxp Y2U="]
)


def _join(*parts: bytes) -> bytes:
    return b" ".join(p for p in parts if p is not None)


COMMANDS = st.one_of(
    st.builds(
        lambda v, n: _join(v, n), st.sampled_from([b"EHLO", b"HELO", b"LHLO", b"ehlo"]), NAMES
    ),
    st.builds(
        lambda v, a, p: _join(v + a, *p),
        st.sampled_from([b"MAIL FROM:", b"mail from:", b"MAIL FROM: ", b"MAIL TO:"]),
        ADDRESSES,
        MAIL_PARAMETERS,
    ),
    st.builds(
        lambda v, a, p: _join(v + a, *p),
        st.sampled_from([b"RCPT TO:", b"rcpt to:", b"RCPT FROM:"]),
        ADDRESSES,
        RCPT_PARAMETERS,
    ),
    st.sampled_from(
        [
            b"RSET",
            b"RSET x",
            b"NOOP",
            b"NOOP whatever",
            b"VRFY a",
            b"HELP",
            b"HELP MAIL",
            b"XCLIENT NAME=x.example ADDR=192.0.2.77",
            b"XFORWARD NAME=x.example",
            b"",
            b" ",
            b"EXPN a",
            b"TURN",
        ]
    ),
    AUTH_LINES,
    FORWARDING,
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
        lambda s: s.encode("ascii")
    ),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from([b"NOOP " + b"x" * 600, b"MAIL FROM:<" + b"a" * 600 + b"@x>", b"y" * 13000]),
).filter(isGeneric)

#: Body lines: ordinary text, lines that look like commands or the end of
#: data, and lines with a bare CR or LF.
BODY_LINES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"Subject: fuzz",
                b"",
                b".",
                b"..",
                b".RSET",
                b"RSET",
                b"QUIT",
                b"MAIL FROM:<x@" + EVIL.encode() + b">",
                b"RCPT TO:<y@" + EVIL.encode() + b">",
                b"EHLO " + EVIL.encode(),
                b"BDAT 5 LAST",
                b"DATA",
                b"STARTTLS",
                b"x" * 1200,
                b"bare\nLF",
                b"bare\rCR",
                b"\r",
                b"tail.\r",
            ]
        ),
        st.binary(max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b),
    ),
    max_size=8,
)


def dotStuff(lines: list[bytes]) -> bytes:
    """
    The DATA body a client sends for C{lines}, with the final dot.
    """
    return b"".join(
        (b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines
    ) + (b".\r\n")


def hasBareNewline(lines: list[bytes]) -> bool:
    """
    Whether any of C{lines} holds a CR or LF (the CRLF between lines aside).
    """
    return any(b"\r" in line or b"\n" in line for line in lines)
