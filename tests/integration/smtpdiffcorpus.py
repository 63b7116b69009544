# -*- test-case-name: tests.integration.test_smtpdiff -*-
"""
The differential corpus (L{tests.integration.smtpdiff}): several hundred
client sessions with odd but plausible input, HELO names, MAIL and RCPT
paths and parameters here, command sequencing, BDAT, pipelining and message
content in L{tests.integration.smtpdiffsequences}; and the sessions whose
replies differ from Postfix's, each with the reason documented.
"""

from __future__ import annotations

from collections.abc import Iterator

from tests.integration.smtpdiff import (
    DATA,
    EHLO,
    MAIL,
    MESSAGE,
    RCPT,
    Session,
    body,
    command,
)
from tests.integration.smtpdiff import session as _s
from tests.integration.smtpdiffaddresses import ADDRESSES_DOCUMENTED, addresses
from tests.integration.smtpdiffsequences import content, pipelining, sequencing


def _helo() -> Iterator[Session]:
    names: list[bytes] = [
        b"",
        b" ",
        b"[127.0.0.1]",
        b"[IPv6:::1]",
        b"[IPv6:2001:db8::1]",
        b"[127.0.0.256]",
        b"[127.0.0.1",
        b"127.0.0.1]",
        b"[]",
        b"[IPv6:zz]",
        b"[foo:bar]",
        b"127.0.0.1",
        b"client.example.",
        b"client..example",
        b".client.example",
        b"under_score.example",
        b"-dash.example",
        b"client",
        "b\xfccher.example".encode(),
        b"\xff\xfe.example",
        b"a" * 63 + b".example",
        b"a" * 64 + b".example",
        (b"a" * 63 + b".") * 4,
        b"x" * 255,
        b"x" * 256,
        b"x" * 500,
        b"client.example extra words",
        b"client.example\t",
        b"client example",
        b"<client.example>",
        b"client.example ",
        b'"quoted"',
        b"a@b",
    ]
    for verb in (b"EHLO", b"HELO"):
        for name in names:
            line = verb + b" " + name if name else verb
            yield _s(f"{verb.decode()} {name[:30]!r} ({len(name)})", command(line), MAIL, RCPT)
    yield _s("EHLO tab", command(b"EHLO\tclient.example"), MAIL)
    yield _s("ehlo lower", command(b"ehlo client.example"), MAIL)
    yield _s("EHLO twice", EHLO, EHLO, MAIL, RCPT)
    yield _s("HELO then EHLO", command("HELO a.example"), EHLO, MAIL)
    yield _s("EHLO two spaces", command(b"EHLO  client.example"), MAIL)
    yield _s("EHLO no space trailing", command(b"EHLO "), MAIL)
    yield _s("HELO ctl", command(b"HELO a\x01b.example"), MAIL)
    yield _s("HELO NUL", command(b"HELO a\x00b.example"), MAIL)
    yield _s("HELO DEL", command(b"HELO a\x7fb.example"), MAIL)
    yield _s("MAIL before HELO", MAIL, RCPT)
    yield _s("LHLO in SMTP", command("LHLO client.example"), MAIL)


def _paths() -> Iterator[tuple[str, bytes]]:
    local64 = b"l" * 64
    local65 = b"l" * 65
    label = b"d" * 63
    domain255 = b".".join([label, label, label, b"d" * 61, b"ex"])[:255]
    domain253 = b".".join([label, label, label, b"d" * 57, b"ex"])
    domain256 = domain255 + b"x"
    yield "null", b"<>"
    yield "plain", b"<u@example.com>"
    yield "source route", b"<@a.example,@b.example:u@example.com>"
    yield "source route one", b"<@a.example:u@example.com>"
    yield "bad source route", b"<@a.example,u@example.com>"
    yield "route no domain", b"<@:u@example.com>"
    yield "quoted", b'<"john doe"@example.com>'
    yield "quoted escape", b'<"john\\"doe"@example.com>'
    yield "quoted backslash", b'<"a\\\\b"@example.com>'
    yield "quoted unterminated", b'<"john@example.com>'
    yield "quoted empty", b'<""@example.com>'
    yield "quoted 8bit", '<"j\xf6rg"@example.com>'.encode()
    yield "no brackets", b"u@example.com"
    yield "no brackets null", b""
    yield "space inside", b"< u@example.com>"
    yield "space before close", b"<u@example.com >"
    yield "ip literal", b"<u@[192.0.2.1]>"
    yield "ipv6 literal", b"<u@[IPv6:2001:db8::1]>"
    yield "bad ip literal", b"<u@[192.0.2.300]>"
    yield "general literal", b"<u@[tag:value]>"
    yield "unclosed literal", b"<u@[192.0.2.1>"
    yield "bare ip", b"<u@192.0.2.1>"
    yield "numeric domain", b"<u@123>"
    yield "missing domain", b"<u@>"
    yield "no at", b"<postmaster>"
    yield "no at user", b"<user>"
    yield "empty local", b"<@example.com>"
    yield "two at", b"<u@v@example.com>"
    yield "trailing dot domain", b"<u@example.com.>"
    yield "double dot domain", b"<u@example..com>"
    yield "leading dot local", b"<.u@example.com>"
    yield "double dot local", b"<u..v@example.com>"
    yield "trailing dot local", b"<u.@example.com>"
    yield "underscore domain", b"<u@under_score.example>"
    yield "hyphen start label", b"<u@-a.example>"
    yield "hyphen end label", b"<u@a-.example>"
    yield "local 64", b"<" + local64 + b"@example.com>"
    yield "local 65", b"<" + local65 + b"@example.com>"
    yield "domain 253", b"<u@" + domain253 + b">"
    yield "domain 255", b"<u@" + domain255 + b">"
    yield "domain 256", b"<u@" + domain256 + b">"
    yield "label 64", b"<u@" + b"d" * 64 + b".example>"
    yield "utf8 local", "<j\xf6rg@example.com>".encode()
    yield "utf8 domain", "<u@b\xfccher.example>".encode()
    yield "latin1 local", b"<j\xf6rg@example.com>"
    yield "ctl local", b"<a\x01b@example.com>"
    yield "del local", b"<a\x7fb@example.com>"
    yield "special local", b"<a(b)@example.com>"
    yield "comma local", b"<a,b@example.com>"
    yield "percent hack", b"<u%other.example@example.com>"
    yield "bang path", b"<host!u@example.com>"
    yield "plus local", b"<u+tag@example.com>"
    yield "brackets twice", b"<<u@example.com>>"
    yield "trailing junk", b"<u@example.com>junk"
    yield "only open", b"<"
    yield "only close", b">"
    yield "null with space", b"< >"
    yield "ipv6 lower tag", b"<u@[ipv6:::1]>"
    yield "ipv6 too many groups", b"<u@[IPv6:1:2:3:4:5:6:7:8:9]>"
    yield "ipv6 two elisions", b"<u@[IPv6:1::2::3]>"
    yield "ipv6 v4 tail", b"<u@[IPv6:::ffff:192.0.2.1]>"
    yield "ipv6 full", b"<u@[IPv6:2001:db8:0:0:0:0:0:1]>"
    yield "ipv6 no tag", b"<u@[2001:db8::1]>"
    yield "ipv4 three parts", b"<u@[192.0.2]>"
    yield "ipv4 leading zeros", b"<u@[192.000.002.001]>"
    yield "quoted tab", b'<"a\tb"@example.com>'
    yield "quoted escaped tab", b'<"a\\\tb"@example.com>'
    yield "quoted space", b'<"a b"@example.com>'
    yield "quoted at", b'<"a@b"@example.com>'
    yield "atext specials", b"<!#$%&'*+-/=?^_`{|}~@example.com>"
    yield "single label", b"<u@example>"
    yield "digit label", b"<u@1example.com>"
    yield "numeric tld", b"<u@example.123>"
    yield "a-label", b"<u@xn--bcher-kva.example>"
    yield "upper domain", b"<u@EXAMPLE.COM>"
    yield "dot local", b"<a.b.c@example.com>"


def _pathSessions() -> Iterator[Session]:
    for name, path in _paths():
        yield _s(f"MAIL {name}", EHLO, command(b"MAIL FROM:" + path), RCPT)
        yield _s(f"RCPT {name}", EHLO, MAIL, command(b"RCPT TO:" + path), DATA, body(MESSAGE))
    yield _s("MAIL space after colon", EHLO, command(b"MAIL FROM: <u@example.com>"), RCPT)
    yield _s("MAIL two spaces after colon", EHLO, command(b"MAIL FROM:  <u@example.com>"), RCPT)
    yield _s("MAIL space before colon", EHLO, command(b"MAIL FROM :<u@example.com>"), RCPT)
    yield _s("MAIL no colon", EHLO, command(b"MAIL FROM <u@example.com>"), RCPT)
    yield _s("MAIL no FROM", EHLO, command(b"MAIL <u@example.com>"), RCPT)
    yield _s("MAIL bare", EHLO, command(b"MAIL"), RCPT)
    yield _s("MAIL FROM: empty", EHLO, command(b"MAIL FROM:"), RCPT)
    yield _s("MAIL lower", EHLO, command(b"mail from:<u@example.com>"), RCPT)
    yield _s("MAIL mixed", EHLO, command(b"MaIl FrOm:<u@example.com>"), RCPT)
    yield _s("MAIL trailing space", EHLO, command(b"MAIL FROM:<u@example.com> "), RCPT)
    yield _s("MAIL tab sep", EHLO, command(b"MAIL\tFROM:<u@example.com>"), RCPT)
    yield _s("MAIL tab param", EHLO, command(b"MAIL FROM:<u@example.com>\tSIZE=10"), RCPT)
    yield _s("MAIL two spaces param", EHLO, command(b"MAIL FROM:<u@example.com>  SIZE=10"), RCPT)
    yield _s("MAIL param ctl ENVID", EHLO, command(b"MAIL FROM:<u@example.com> ENVID=a\x01b"), RCPT)
    yield _s("MAIL param esc SIZE", EHLO, command(b"MAIL FROM:<u@example.com> SIZE=1\x1b"), RCPT)
    yield _s(
        "MAIL param 8bit ENVID", EHLO, command(b"MAIL FROM:<u@example.com> ENVID=a\xffb"), RCPT
    )
    yield _s(
        "RCPT param ctl NOTIFY", EHLO, MAIL, command(b"RCPT TO:<u@example.com> NOTIFY=NEVER\x01")
    )
    yield _s("RCPT space after colon", EHLO, MAIL, command(b"RCPT TO: <u@example.com>"))
    yield _s("RCPT no TO", EHLO, MAIL, command(b"RCPT <u@example.com>"))
    yield _s("RCPT lower", EHLO, MAIL, command(b"rcpt to:<u@example.com>"))
    yield _s("RCPT TO: empty", EHLO, MAIL, command(b"RCPT TO:"))
    yield _s("RCPT postmaster", EHLO, MAIL, command(b"RCPT TO:<Postmaster>"), DATA, body(MESSAGE))
    yield _s("RCPT trailing space", EHLO, MAIL, command(b"RCPT TO:<u@example.com> "))


def _parameters() -> Iterator[Session]:
    mail = [
        "SIZE=100",
        "SIZE=10240000",
        "SIZE=10240001",
        "SIZE=99999999999999999999999999",
        "SIZE=0",
        "SIZE=-1",
        "SIZE=abc",
        "SIZE=",
        "SIZE",
        "SIZE=1 SIZE=2",
        "size=100",
        "Size=100",
        "SIZE=+100",
        "SIZE= 100",
        "SIZE=1e3",
        "SIZE=00000000000000000000100",
        "BODY=8BITMIME",
        "BODY=7BIT",
        "BODY=BINARYMIME",
        "BODY=8bitmime",
        "BODY=junk",
        "BODY=",
        "BODY",
        "BODY=7BIT BODY=8BITMIME",
        "RET=FULL",
        "RET=HDRS",
        "RET=full",
        "RET=BOTH",
        "RET=",
        "RET=FULL RET=HDRS",
        "ENVID=abc123",
        "ENVID=a+2Bb",
        "ENVID=a+2b",
        "ENVID=a+2",
        "ENVID=a+ZZ",
        "ENVID=",
        "ENVID=" + "x" * 100,
        "ENVID=" + "x" * 101,
        "ENVID=a=b",
        "ENVID=a+0D+0Ab",
        "ENVID=abc ENVID=def",
        "SMTPUTF8",
        "SMTPUTF8=yes",
        "smtputf8",
        "SMTPUTF8 SMTPUTF8",
        "AUTH=<>",
        "AUTH=u@example.com",
        "AUTH=",
        "FOO=bar",
        "FOO",
        "X-UNKNOWN=1",
        "=value",
        "NOTIFY=NEVER",
        "ORCPT=rfc822;u@example.com",
        "REQUIRETLS",
        "MT-PRIORITY=3",
        "HOLDFOR=10",
    ]
    for parameter in mail:
        yield _s(
            f"MAIL param {parameter[:40]} ({len(parameter)})",
            EHLO,
            command(f"MAIL FROM:<u@example.com> {parameter}"),
            RCPT,
            DATA,
            body(MESSAGE),
        )
    rcpt = [
        "NOTIFY=NEVER",
        "NOTIFY=SUCCESS,FAILURE,DELAY",
        "NOTIFY=success",
        "NOTIFY=NEVER,SUCCESS",
        "NOTIFY=SUCCESS,SUCCESS",
        "NOTIFY=",
        "NOTIFY=BOGUS",
        "NOTIFY=SUCCESS, FAILURE",
        "NOTIFY",
        "NOTIFY=NEVER NOTIFY=NEVER",
        "NOTIFY=NEVER,NEVER",
        "ORCPT=rfc822;u@example.com",
        "ORCPT=RFC822;u@example.com",
        "ORCPT=rfc822;u+40example.com",
        "ORCPT=rfc822;",
        "ORCPT=rfc822",
        "ORCPT=;u@example.com",
        "ORCPT=x-unknown;abc",
        "ORCPT=rfc822;a+2",
        "ORCPT=utf-8;u@example.com",
        "ORCPT=utf-8;j\\x{F6}rg@example.com",
        "ORCPT=utf-8;j\\x{f6}rg@example.com",
        "ORCPT=utf-8;\\x{41}@example.com",
        "ORCPT=rfc822;u@example.com ORCPT=rfc822;v@example.com",
        "ORCPT=rfc822;" + "x" * 490 + "@e.x",
        "SIZE=100",
        "BODY=8BITMIME",
        "FOO=bar",
        "RET=FULL",
        "ENVID=x",
        "SMTPUTF8",
    ]
    for parameter in rcpt:
        yield _s(
            f"RCPT param {parameter[:40]} ({len(parameter)})",
            EHLO,
            MAIL,
            command(f"RCPT TO:<u@example.com> {parameter}"),
            DATA,
            body(MESSAGE),
        )
    # SMTPUTF8 addresses with and without the parameter.
    utf8 = "<j\xf6rg@b\xfccher.example>"
    yield _s("utf8 MAIL no param", EHLO, command(f"MAIL FROM:{utf8}"), RCPT, DATA, body(MESSAGE))
    yield _s(
        "utf8 MAIL param", EHLO, command(f"MAIL FROM:{utf8} SMTPUTF8"), RCPT, DATA, body(MESSAGE)
    )
    yield _s("utf8 RCPT no param", EHLO, MAIL, command(f"RCPT TO:{utf8}"), DATA, body(MESSAGE))
    yield _s(
        "utf8 RCPT with param",
        EHLO,
        command("MAIL FROM:<u@example.com> SMTPUTF8"),
        command(f"RCPT TO:{utf8}"),
        DATA,
        body(MESSAGE),
    )
    yield _s(
        "utf8 HELO then param",
        command("HELO client.example"),
        command("MAIL FROM:<u@example.com> SMTPUTF8"),
        RCPT,
    )
    yield _s(
        "8bit body 7BIT",
        EHLO,
        command("MAIL FROM:<u@example.com> BODY=7BIT"),
        RCPT,
        DATA,
        body("Subject: t\r\n\r\nj\xf6rg\r\n.\r\n".encode()),
    )
    yield _s(
        "utf8 header no SMTPUTF8",
        EHLO,
        MAIL,
        RCPT,
        DATA,
        body("Subject: j\xf6rg\r\n\r\nx\r\n.\r\n".encode()),
    )
    yield _s(
        "HELO then BODY=8BITMIME",
        command("HELO client.example"),
        command("MAIL FROM:<u@example.com> BODY=8BITMIME"),
        RCPT,
    )
    yield _s(
        "HELO then SIZE",
        command("HELO client.example"),
        command("MAIL FROM:<u@example.com> SIZE=10"),
        RCPT,
    )
    yield _s(
        "HELO then DSN",
        command("HELO client.example"),
        command("MAIL FROM:<u@example.com> RET=FULL"),
        command("RCPT TO:<u@example.com> NOTIFY=NEVER"),
    )


# The sessions whose replies differ in class, each with the item of
# docs/behaviour.md that says why (most in "Compared with Postfix's smtpd").
DOCUMENTED: dict[str, str] = {
    "EHLO b'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' (256)": "HELO names: over 255 octets",
    "EHLO b'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' (256)": "HELO names: over 255 octets",
    "EHLO b'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' (500)": "HELO names: over 255 octets",
    "HELO b'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' (256)": "HELO names: over 255 octets",
    "HELO b'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' (256)": "HELO names: over 255 octets",
    "HELO b'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' (500)": "HELO names: over 255 octets",
    "EHLO tab": "Separators",
    "HELO ctl": "HELO names: control characters",
    "HELO NUL": "HELO names: control characters",
    "HELO DEL": "HELO names: control characters",
    "MAIL route no domain": "Paths follow RFC 5321's Mailbox",
    "RCPT route no domain": "Paths follow RFC 5321's Mailbox",
    "MAIL quoted empty": "Paths follow RFC 5321's Mailbox",
    "RCPT quoted empty": "Paths follow RFC 5321's Mailbox",
    "MAIL quoted 8bit": "Non-ASCII addresses need SMTPUTF8",
    "RCPT quoted 8bit": "Non-ASCII addresses need SMTPUTF8",
    "MAIL space inside": "Paths follow RFC 5321's Mailbox",
    "RCPT space inside": "Paths follow RFC 5321's Mailbox",
    "MAIL space before close": "Paths follow RFC 5321's Mailbox",
    "RCPT space before close": "Paths follow RFC 5321's Mailbox",
    "MAIL unclosed literal": "Paths follow RFC 5321's Mailbox",
    "RCPT unclosed literal": "Paths follow RFC 5321's Mailbox",
    "MAIL no at": "Paths follow RFC 5321's Mailbox",
    "MAIL no at user": "Paths follow RFC 5321's Mailbox",
    "RCPT no at user": "Paths follow RFC 5321's Mailbox",
    "MAIL two at": "Paths follow RFC 5321's Mailbox",
    "RCPT two at": "Paths follow RFC 5321's Mailbox",
    "MAIL trailing dot domain": "Paths follow RFC 5321's Mailbox",
    "RCPT trailing dot domain": "Paths follow RFC 5321's Mailbox",
    "MAIL leading dot local": "Paths follow RFC 5321's Mailbox",
    "RCPT leading dot local": "Paths follow RFC 5321's Mailbox",
    "MAIL double dot local": "Paths follow RFC 5321's Mailbox",
    "RCPT double dot local": "Paths follow RFC 5321's Mailbox",
    "MAIL trailing dot local": "Paths follow RFC 5321's Mailbox",
    "RCPT trailing dot local": "Paths follow RFC 5321's Mailbox",
    "MAIL local 65": "Paths follow RFC 5321's Mailbox",
    "RCPT local 65": "Paths follow RFC 5321's Mailbox",
    "MAIL domain 255": "Paths follow RFC 5321's Mailbox",
    "RCPT domain 255": "Paths follow RFC 5321's Mailbox",
    "MAIL utf8 local": "Non-ASCII addresses need SMTPUTF8",
    "RCPT utf8 local": "Non-ASCII addresses need SMTPUTF8",
    "MAIL ctl local": "Paths follow RFC 5321's Mailbox",
    "RCPT ctl local": "Paths follow RFC 5321's Mailbox",
    "MAIL del local": "Paths follow RFC 5321's Mailbox",
    "RCPT del local": "Paths follow RFC 5321's Mailbox",
    "MAIL brackets twice": "Paths follow RFC 5321's Mailbox",
    "RCPT brackets twice": "Paths follow RFC 5321's Mailbox",
    "MAIL null with space": "Paths follow RFC 5321's Mailbox",
    "MAIL quoted tab": "Paths follow RFC 5321's Mailbox",
    "RCPT quoted tab": "Paths follow RFC 5321's Mailbox",
    "MAIL quoted escaped tab": "Paths follow RFC 5321's Mailbox",
    "RCPT quoted escaped tab": "Paths follow RFC 5321's Mailbox",
    "MAIL tab sep": "Separators",
    "MAIL tab param": "Separators",
    "MAIL param SIZE=1 SIZE=2 (13)": "Paths and parameters: given twice",
    "MAIL param SIZE=00000000000000000000100 (28)": "Parameter values",
    "MAIL param BODY=BINARYMIME (15)": "Parameter values: BINARYMIME",
    "MAIL param BODY=7BIT BODY=8BITMIME (23)": "Paths and parameters: given twice",
    "MAIL param ENVID=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx (107)": "Parameter values",
    "MAIL param ENVID=a=b (9)": "Parameter values",
    "MAIL param SMTPUTF8 SMTPUTF8 (17)": "Paths and parameters: given twice",
    "MAIL param AUTH= (5)": "Parameter values",
    "RCPT param ORCPT=rfc822; (13)": "Parameter values",
    "RCPT param ORCPT=utf-8;\\x{41}@example.com (30)": "utf-8 ORCPT addresses",
    "RCPT param ORCPT=rfc822;xxxxxxxxxxxxxxxxxxxxxxxxxxx (507)": "Parameter values",
    "BDAT 0 then": "BDAT",
    "BDAT no RCPT": "BDAT",
    "BDAT refused huge": "BDAT",
    "BDAT binarymime": "Parameter values: BINARYMIME",
    "DATA binarymime": "Parameter values: BINARYMIME",
    "misc 'HELP'": "HELP and ETRN",
    "misc 'HELP MAIL'": "HELP and ETRN",
    "misc 'help'": "HELP and ETRN",
    "misc 'ETRN example.com'": "HELP and ETRN",
    "NOOP before HELO": "HELP and ETRN",
    "long command 600": "Line length",
    "long command 5000": "Line length",
    "long MAIL 1500": "Parameter values",
    "long MAIL 3000": "Line length",
    "bare LF commands": "Command line endings",
    "CR only command": "Separators",
    "HTTP": "HTTP",
    "pipe bad RCPT BDAT": "BDAT",
    "BDAT bare LF": "BDAT",
    "SMTPUTF8 utf8 ENVID": "xtext values",
    "DATA lone CR": "Bare CR in DATA",
    "DATA CR at end of line": "Bare CR in DATA",
    "DATA received loop": "Mail loops",
    "ORCPT 8bit no SMTPUTF8": "Parameter values",
    "NOTIFY trailing comma": "Parameter values",
    "RCPT param NOTIFY=NEVER,NEVER (18)": "Parameter values",
    "AUTH bad xtext": "xtext values",
    "RCPT postmaster 8bit": "Paths follow RFC 5321's Mailbox",
    "DATA at size limit": "Size limit",
    "DATA stuffed at size limit": "Size limit",
    "DATA CR dot CR inside": "Bare CR in DATA",
    "DATA end CR dot CR": "Bare CR in DATA",
    "DATA end CRLF dot CR": "Bare CR in DATA",
    **ADDRESSES_DOCUMENTED,
}


def corpus() -> list[Session]:
    """
    Every session, named uniquely.
    """
    sessions = [
        *_helo(),
        *_pathSessions(),
        *_parameters(),
        *sequencing(),
        *pipelining(),
        *content(),
        *addresses(),
    ]
    names = [s.name for s in sessions]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"duplicate session names: {sorted(duplicates)}")
    return sessions
