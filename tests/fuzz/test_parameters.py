"""
An oracle for MAIL and RCPT paths and parameters: DSN (RET, ENVID, NOTIFY,
ORCPT with xtext and C{utf-8} addresses, RFC 3461 and 6533), SMTPUTF8
addresses (U-labels, quoted local parts, bytes that are not UTF-8, RFC
6531), SIZE (RFC 1870) and BODY (RFC 1652, 3030) values, each drawn with
the reply RFC 5321 and docs/behaviour.md give it ("Paths and parameters",
"Compared with Postfix's smtpd").  A command holding several faults gets
the reply of one of them; one holding none gets 250.  XCLIENT and XFORWARD
attributes of any value get one well-formed reply and store nothing unsafe.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.fuzz import PROFILE
from tests.fuzz.model import FuzzHandler, parseReplies
from twisted_smtpd._core.grammar import XCLIENT_ATTRIBUTES, XFORWARD_ATTRIBUTES, lineLimit
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.printable import UNSAFE
from twisted_smtpd.testing import memorySession

#: What a value needs or what it is refused with: C{None} for nothing; a
#: reply C{(code, enhanced)}; or C{UTF8} for a value accepted only with
#: SMTPUTF8 in the MAIL command (else C{BAD_PARAMETER}, or for a path
#: C{NEEDS_UTF8}).
UTF8 = "utf8"
#: A path wrong even with SMTPUTF8 (the path's own 501), which without it
#: may be refused as non-ASCII first (C{NEEDS_UTF8}).
BAD_UTF8 = "bad utf8"
BAD_PARAMETER = (501, b"5.5.4")
UNKNOWN_PARAMETER = (555, b"5.5.4")
NEEDS_UTF8 = (553, b"5.6.7")
BAD_SENDER = (501, b"5.1.7")
BAD_RECIPIENT = (501, b"5.1.3")
TOO_BIG = (552, b"5.3.4")
LINE_TOO_LONG = (500, b"5.5.6")

Fault = tuple[int, bytes] | str | None

#: Sender paths.
SENDERS: dict[bytes, Fault] = {
    b"<a@example.com>": None,
    b"<>": None,
    b'<"a b"@example.com>': None,
    b'<""@example.com>': None,
    b"<a@xn--bcher-kva.example>": None,
    b"<j\xc3\xb6rg@b\xc3\xbccher.example>": UTF8,
    b'<"\xc3\xa9 x"@example.com>': UTF8,
    b"<postmaster>": BAD_SENDER,
    b"<a..b@example.com>": BAD_SENDER,
    b"<a@192.0.2.1>": BAD_SENDER,
    b"<a\xc2\x85b@example.com>": BAD_UTF8,
    b"<a@\xff\xfe.example>": BAD_UTF8,
    b"<\xe9@example.com>": BAD_UTF8,
    b"<a@b\xc3\xbccher\xc2\xa0.example>": BAD_UTF8,
    b"<a@\xe2\x80\xaeexample.com>": BAD_UTF8,
}
#: Recipient paths.
RECIPIENTS: dict[bytes, Fault] = {
    b"<b@example.com>": None,
    b"<Postmaster>": None,
    b'<"b c"@example.com>': None,
    b"<b@[192.0.2.1]>": None,
    b"<\xc3\xa9@example.com>": UTF8,
    b"<b@b\xc3\xbccher.example>": UTF8,
    b"<b@example..com>": BAD_RECIPIENT,
    b"<>": BAD_RECIPIENT,
    b"<b@\xc3\xa9\xc3>": BAD_UTF8,
    b"<b\x7f@example.com>": BAD_RECIPIENT,
}

#: MAIL parameters, by keyword (a keyword given twice is 501 5.5.4).
MAIL_PARAMETERS: dict[bytes, Fault] = {
    b"SIZE=100": None,
    b"SIZE=0": None,
    b"SIZE=" + b"9" * 21: BAD_PARAMETER,
    b"SIZE=-1": BAD_PARAMETER,
    b"SIZE=": BAD_PARAMETER,
    b"SIZE=x": BAD_PARAMETER,
    b"SIZE=" + b"9" * 20: None,
    b"SIZE=1001": None,
    b"SIZE=+1": BAD_PARAMETER,
    b"BODY=8BITMIME": None,
    b"BODY=8bitmime": None,
    b"BODY=7BIT": None,
    b"BODY=": BAD_PARAMETER,
    b"BODY=9BIT": BAD_PARAMETER,
    b"BODY=BINARYMIME": None,
    b"SMTPUTF8=yes": BAD_PARAMETER,
    b"REQUIRETLS": (530, b"5.7.10"),
    b"BODY=\xc5\xbfit": BAD_PARAMETER,
    b"RET=FULL": None,
    b"RET=hdrs": None,
    b"RET=": BAD_PARAMETER,
    b"RET=NONE": BAD_PARAMETER,
    b"ENVID=" + b"e" * 100: None,
    b"ENVID=x+2Dy": None,
    b"ENVID=+C3+A9": None,
    b"ENVID=+c3+a9": None,
    b"ENVID=\xc3\xa9": UTF8,
    b"ENVID=" + b"e" * 101: BAD_PARAMETER,
    b"ENVID=a+0D+0Ab": BAD_PARAMETER,
    b"ENVID=a+2": BAD_PARAMETER,
    b"ENVID=a=b": BAD_PARAMETER,
    b"AUTH=<>": None,
    b"AUTH=a+40b": None,
    b"AUTH=": BAD_PARAMETER,
    b"AUTH=a+0Ab": BAD_PARAMETER,
    b"FOO=bar": UNKNOWN_PARAMETER,
    b"X-NOTHING": UNKNOWN_PARAMETER,
    # A control character or an octet that is not UTF-8: a bad parameter,
    # not a bad path.
    b"ENVID=a\x01b": BAD_PARAMETER,
    b"SIZE=1\x1b": BAD_PARAMETER,
    b"ENVID=\xff": BAD_PARAMETER,
    b"RET=FULL\xc2\x85": BAD_PARAMETER,
}
#: RCPT parameters, by keyword.
RCPT_PARAMETERS: dict[bytes, Fault] = {
    b"NOTIFY=SUCCESS,FAILURE": None,
    b"NOTIFY=NEVER": None,
    b"NOTIFY=success,delay": None,
    b"NOTIFY=NEVER,SUCCESS": BAD_PARAMETER,
    b"NOTIFY=": BAD_PARAMETER,
    b"NOTIFY=SUCCESS,,FAILURE": BAD_PARAMETER,
    b"NOTIFY=\xc5\xbfuccess": BAD_PARAMETER,
    b"NOTIFY=SOMETIMES": BAD_PARAMETER,
    b"NOTIFY=DELAY,NEVER": BAD_PARAMETER,
    b"NOTIFY=FAILURE,": BAD_PARAMETER,
    b"ORCPT=rfc822;a@example.com": None,
    b"ORCPT=RFC822;a+2Bb@example.com": None,
    b"ORCPT=utf-8;j\\x{F6}rg@example.com": None,
    b"ORCPT=utf-8;j\\x{f6}rg@example.com": None,
    b"ORCPT=utf-8;a\\x{20}b@example.com": None,
    b"ORCPT=utf-8;j\xc3\xb6rg@example.com": UTF8,
    b"ORCPT=rfc822;": BAD_PARAMETER,
    b"ORCPT=rfc822;a+0D+0A@example.com": BAD_PARAMETER,
    b"ORCPT=rfc822;" + b"o" * 500: BAD_PARAMETER,
    b"ORCPT=utf-8;\\x{E9": BAD_PARAMETER,
    b"ORCPT=utf-8;\\x{00E9}@x": BAD_PARAMETER,
    b"ORCPT=utf-8;\\x{41}@x": BAD_PARAMETER,
    b"ORCPT=utf-8;\\x{D800}@x": BAD_PARAMETER,
    b"ORCPT=utf-8;\\x{110000}@x": BAD_PARAMETER,
    b"ORCPT=utf-8;\\x{0D}\\x{0A}@x": BAD_PARAMETER,
    b"ORCPT=utf-8;\\xE9@x": BAD_PARAMETER,
    b"ORCPT=utf-8;a+b@x": BAD_PARAMETER,
    b"ORCPT=a@example.com": BAD_PARAMETER,
    b"FOO": UNKNOWN_PARAMETER,
    b"NOTIFY=NEVER\x7f": BAD_PARAMETER,
    b"ORCPT=rfc822;a\xffb@x": BAD_PARAMETER,
}


def keyword(parameter: bytes) -> bytes:
    return parameter.split(b"=", 1)[0].upper()


def faults(
    path: Fault, parameters: list[Fault], smtpUtf8: bool, bad: tuple[int, bytes]
) -> set[tuple[int, bytes]]:
    """
    The replies a command may get for its faults (none: accepted).
    """
    found: set[tuple[int, bytes]] = set()
    if path == UTF8:
        if not smtpUtf8:
            found.add(NEEDS_UTF8)
    elif path == BAD_UTF8:
        found.add(bad)
        if not smtpUtf8:
            found.add(NEEDS_UTF8)
    elif path is not None:
        assert not isinstance(path, str)
        found.add(path)
    for fault in parameters:
        if fault == UTF8:
            if not smtpUtf8:
                found.add(BAD_PARAMETER)
        elif fault is not None:
            assert not isinstance(fault, str)
            found.add(fault)
    return found


def _pick(table: dict[bytes, Fault]) -> st.SearchStrategy[bytes]:
    """
    A key of C{table}, a faultless one two times in three.
    """
    good = st.sampled_from(sorted(k for k, fault in table.items() if fault is None))
    return good | good | st.sampled_from(sorted(table))


def _parameters(table: dict[bytes, Fault]) -> st.SearchStrategy[list[bytes]]:
    return st.lists(_pick(table), max_size=3)


class ParameterOracleTests(SynchronousTestCase):
    # Cheap (a few commands each): five times the profile's examples.
    @settings(PROFILE, max_examples=PROFILE.max_examples * 5)
    @given(
        sender=_pick(SENDERS),
        mailParameters=_parameters(MAIL_PARAMETERS),
        smtpUtf8=st.booleans(),
        recipient=_pick(RECIPIENTS),
        rcptParameters=_parameters(RCPT_PARAMETERS),
        size=st.sampled_from([0, 1000]),
        lmtp=st.booleans(),
        noBdat=st.booleans(),
    )
    def test_replies(
        self,
        sender: bytes,
        mailParameters: list[bytes],
        smtpUtf8: bool,
        recipient: bytes,
        rcptParameters: list[bytes],
        size: int,
        lmtp: bool,
        noBdat: bool,
    ) -> None:
        """
        MAIL and RCPT get 250 when nothing in them is wrong, else the reply
        of one of their faults.
        """
        options = ServerOptions(
            name="mx.example.com",
            disableReverseLookup=True,
            authOptional=True,
            size=size,
            lmtp=lmtp,
            disabledCommands=("BDAT",) if noBdat else (),
        )
        session = memorySession(FuzzHandler(), options)
        session.send(b"LHLO c.example.com\r\n" if lmtp else b"EHLO c.example.com\r\n")
        words = [*mailParameters, *([b"SMTPUTF8"] if smtpUtf8 else [])]
        mail = b" ".join([b"MAIL FROM:" + sender, *words])
        mailFaults = faults(
            SENDERS[sender], [MAIL_PARAMETERS[w] for w in mailParameters], smtpUtf8, BAD_SENDER
        )
        keywords = [keyword(w) for w in words]
        if len(set(keywords)) < len(keywords):
            mailFaults.add(BAD_PARAMETER)
        for word in mailParameters:
            valid = MAIL_PARAMETERS[word] is None
            if keyword(word) == b"SIZE" and valid and size and int(word[5:]) > size:
                mailFaults.add(TOO_BIG)
            if word == b"BODY=BINARYMIME" and noBdat:
                # Not offered without BDAT (Postfix's answer).
                mailFaults.add(UNKNOWN_PARAMETER)
        code, enhanced = self._reply(session, mail)
        self._check(mail, code, enhanced, mailFaults)
        if code != 250:
            return
        rcpt = b" ".join([b"RCPT TO:" + recipient, *rcptParameters])
        rcptFaults = faults(
            RECIPIENTS[recipient],
            [RCPT_PARAMETERS[w] for w in rcptParameters],
            smtpUtf8,
            BAD_RECIPIENT,
        )
        keywords = [keyword(w) for w in rcptParameters]
        if len(set(keywords)) < len(keywords):
            rcptFaults.add(BAD_PARAMETER)
        code, enhanced = self._reply(session, rcpt)
        self._check(rcpt, code, enhanced, rcptFaults)

    def _reply(self, session: object, line: bytes) -> tuple[int, bytes]:
        out = session.send(line + b"\r\n")  # type: ignore[attr-defined]
        replies, rest = parseReplies(out)
        self.assertEqual((len(replies), rest), (1, b""), out)
        code, lines = replies[0]
        return code, lines[0].split(b" ", 1)[0]

    def _check(
        self, line: bytes, code: int, enhanced: bytes, expected: set[tuple[int, bytes]]
    ) -> None:
        if len(line) > lineLimit(line, 512):
            # Over 512 octets, and over the 1024 more MAIL and RCPT may have.
            expected = {LINE_TOO_LONG}
        if not expected:
            self.assertEqual(code, 250, f"{line!r} answered {code} {enhanced!r}")
        else:
            self.assertIn((code, enhanced), expected, f"{line!r} answered {code} {enhanced!r}")


def _xtext(text: str) -> bytes:
    """
    C{text} as xtext (RFC 3461 section 4), every octet outside C{!} to
    C{~}, and C{+} and C{=}, as C{+XX}.
    """
    return b"".join(
        bytes([octet]) if 0x21 <= octet <= 0x7E and octet not in b"+=" else b"+%02X" % octet
        for octet in text.encode("utf-8", "surrogatepass")
    )


ATTRIBUTE_VALUES = st.one_of(
    st.text(max_size=30).map(_xtext),
    st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from(
        [b"[UNAVAILABLE]", b"[tempunavail]", b"192.0.2.9", b"IPV6:2001:db8::9", b"65535", b""]
    ),
)


#: XCLIENT and XFORWARD attribute names, some of them of the other command,
#: in lower case or unknown.
ATTRIBUTE_NAMES = [
    *(name.encode("ascii") for name in sorted(XCLIENT_ATTRIBUTES | XFORWARD_ATTRIBUTES)),
    b"name",
    b"FOO",
]


class ForwardingValueTests(SynchronousTestCase):
    @settings(PROFILE, max_examples=PROFILE.max_examples * 5)
    @given(
        verb=st.sampled_from([b"XCLIENT", b"XFORWARD"]),
        attributes=st.lists(
            st.tuples(
                st.sampled_from(ATTRIBUTE_NAMES),
                ATTRIBUTE_VALUES,
            ),
            min_size=1,
            max_size=4,
        ),
    )
    def test_anyValue(self, verb: bytes, attributes: list[tuple[bytes, bytes]]) -> None:
        """
        Any XCLIENT or XFORWARD attributes from a trusted client get one
        well-formed reply (printable ASCII, at most 512 octets): a new
        greeting, 250, 500 for a line too long, or 501; then the session
        goes on, and what it stored of them holds nothing a line could be
        broken or disguised with.
        """
        options = ServerOptions(
            name="mx.example.com",
            disableReverseLookup=True,
            authOptional=True,
            useXClient=["192.0.2.0/24"],
            useXForward=["192.0.2.0/24"],
        )
        session = memorySession(FuzzHandler(), options)
        session.send(b"EHLO c.example.com\r\n")
        line = b" ".join([verb, *(name + b"=" + value for name, value in attributes)])
        replies, rest = parseReplies(session.send(line + b"\r\n"))
        self.assertEqual(rest, b"")
        self.assertEqual(len(replies), 1, replies)
        accepted = 220 if verb == b"XCLIENT" else 250
        self.assertIn(replies[0][0], (accepted, 500, 501), replies)
        replies, rest = parseReplies(session.send(b"NOOP\r\n"))
        self.assertEqual([code for code, _ in replies], [250])
        stored = session.protocol.session
        texts = [*stored.xClient.values(), *stored.xForward.values(), stored.clientHostname]
        texts += [stored.remoteAddress[0], stored.localAddress[0], str(stored.user or "")]
        for text in texts:
            self.assertIsNone(UNSAFE.search(text or ""), texts)
