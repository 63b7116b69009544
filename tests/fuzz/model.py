"""
The pieces of the protocol fuzzer: a handler whose hooks accept, refuse,
raise or answer late as the state machine tells them, a strict reply parser
(RFC 5321 section 4.2), and the strategies for command lines and bodies.
"""

from __future__ import annotations

import re
from base64 import b64encode
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from twisted.internet.defer import Deferred

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import Address, AuthRequest, AuthResult, Session
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

HOOKS = ("onConnect", "onHelo", "onSecure", "onAuth", "onMailFrom", "onRcptTo", "onData")
MODES = ("accept", "refuse", "raise", "lateAccept", "lateRefuse", "lateRaise", "mixed")

#: What the fuzzer never sends as a command: any hook call naming it proves
#: that body text or discarded input was run as a command.
EVIL = "evil.example.net"


class FuzzError(Exception):
    """
    What a hook in a C{raise} mode raises; the server logs it and answers 451.
    """


class FuzzHandler(BaseHandler):
    """
    A handler whose every hook does what C{modes} says.

    @ivar modes: Hook name to mode: C{accept}, C{refuse} (L{SMTPError}),
        C{raise} (L{FuzzError}), C{lateAccept}/C{lateRefuse}/C{lateRaise} (a
        L{Deferred} the fuzzer fires later), C{mixed} (LMTP C{onData}: every
        other recipient refused; elsewhere like C{accept}).
    @ivar pending: The Deferreds of late answers, with how to fire them.
    @ivar lastLate: When the newest late answer was asked for, by C{now}.
    @ivar now: The session's clock.
    @ivar calls: C{(hook, argument)} for every hook call.
    @ivar delivered: Message id (as in the 250 reply) to the message.
    @ivar deliveredAfterLoss: The ids delivered after the connection was lost.
    """

    def __init__(self) -> None:
        self.modes: dict[str, str] = dict.fromkeys(HOOKS, "accept")
        self.pending: list[tuple[Deferred[Any], str, Callable[[], object]]] = []
        self.lastLate = 0.0
        self.now: Callable[[], float] = lambda: 0.0
        self.calls: list[tuple[str, str]] = []
        self.delivered: dict[str, bytes] = {}
        self.deliveredAfterLoss: set[str] = set()
        self.connectionLost = False
        self._next = 0

    def _answer(self, hook: str, value: Callable[[], object]) -> object:
        mode = self.modes[hook]
        if mode in ("accept", "mixed"):
            return value()
        if mode == "refuse":
            raise SMTPError(554, f"{hook} refused by the fuzzer", "5.7.1")
        if mode == "raise":
            raise FuzzError(hook)
        d: Deferred[Any] = Deferred()
        self.pending.append((d, mode, value))
        self.lastLate = self.now()
        return d

    def fireOne(self) -> None:
        """
        Fire the oldest late answer as its mode says.
        """
        d, mode, value = self.pending.pop(0)
        if mode == "lateAccept":
            d.callback(value())
        elif mode == "lateRefuse":
            d.errback(SMTPError(451, "refused late by the fuzzer", "4.7.1"))
        else:
            d.errback(FuzzError("late"))

    def onConnect(self, session: Session) -> object:
        self.calls.append(("onConnect", ""))
        return self._answer("onConnect", _none)

    def onHelo(self, hostname: str, session: Session) -> object:
        self.calls.append(("onHelo", hostname))
        return self._answer("onHelo", _none)

    def onSecure(self, session: Session) -> object:
        self.calls.append(("onSecure", ""))
        return self._answer("onSecure", _none)

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        self.calls.append(("onAuth", auth.username))

        def user() -> object:
            return AuthResult(user=auth.username)

        return self._answer("onAuth", user)

    def onMailFrom(self, address: Address, session: Session) -> object:
        self.calls.append(("onMailFrom", address.address))
        return self._answer("onMailFrom", _none)

    def onRcptTo(self, address: Address, session: Session) -> object:
        self.calls.append(("onRcptTo", address.address))
        return self._answer("onRcptTo", _none)

    def onData(self, stream: IMessageStream, session: Session) -> object:
        self.calls.append(("onData", ""))
        mode = self.modes["onData"]
        count = len(session.envelope.rcptTo)
        lmtp = session.transmissionType == "LMTP" or session.openingCommand == "LHLO"
        if mode == "refuse":
            raise SMTPError(554, "onData refused by the fuzzer", "5.6.0")
        if mode == "raise":
            raise FuzzError("onData")
        collected: Deferred[bytes] = stream.collect()  # type: ignore[assignment]

        def deliver(data: bytes) -> object:
            self._next += 1
            n = self._next
            if not lmtp:
                return self._keep(str(n), data)
            results: list[object] = []
            for k in range(count):
                if mode == "mixed" and k % 2:
                    results.append(SMTPError(550, "mailbox refused by the fuzzer", "5.1.1"))
                else:
                    results.append(self._keep(f"{n}.{k}", data))
            return results

        def got(data: bytes) -> object:
            if mode in ("accept", "mixed"):
                return deliver(data)
            d: Deferred[Any] = Deferred()

            def value() -> object:
                return deliver(data)

            self.pending.append((d, mode, value))
            self.lastLate = self.now()
            return d

        return collected.addCallback(got)

    def _keep(self, ident: str, data: bytes) -> str:
        self.delivered[ident] = data
        if self.connectionLost:
            self.deliveredAfterLoss.add(ident)
        return f"OK id={ident}"


def _none() -> None:
    return None


_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])([\t\x20-\x7e]*)\r\n")
_ID = re.compile(r"\bid=([0-9.]+)")


def parseReplies(data: bytes) -> tuple[list[tuple[int, list[bytes]]], bytes]:
    """
    Split server output into complete replies (RFC 5321 section 4.2).

    @return: The replies as C{(code, lines)} and the bytes of an incomplete
        reply left over.
    @raise AssertionError: A line is malformed, longer than 512 octets
        (section 4.5.3.1.5), or a multi-line reply changes its code.
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
    [b"client.example.com", b"[192.0.2.9]", b"x", b"a" * 255, b"", b"bad name", b"\xc3\xa9.example"]
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
        ]
    ),
    max_size=3,
)
RCPT_PARAMETERS = st.lists(
    st.sampled_from(
        [b"NOTIFY=SUCCESS,FAILURE", b"NOTIFY=NEVER", b"ORCPT=rfc822;a@example.com", b"FOO"]
    ),
    max_size=2,
)
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
