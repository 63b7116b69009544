# -*- test-case-name: tests.integration.test_smtpdiff -*-
"""
The second half of the differential corpus (L{tests.integration.smtpdiff}):
command sequencing, BDAT, pipelining and message content.
"""

from __future__ import annotations

from collections.abc import Iterator

from tests.integration.smtpdiff import (
    DATA,
    EHLO,
    MAIL,
    MESSAGE,
    RCPT,
    Kind,
    Session,
    Step,
    body,
    command,
    pipelined,
    raw,
    wait,
)
from tests.integration.smtpdiff import session as _s


def sequencing() -> Iterator[Session]:
    yield _s("RCPT before MAIL", EHLO, RCPT, MAIL, RCPT)
    yield _s("DATA before MAIL", EHLO, DATA, body(MESSAGE))
    yield _s("DATA without RCPT", EHLO, MAIL, DATA, body(MESSAGE))
    yield _s("MAIL twice", EHLO, MAIL, MAIL, RCPT)
    yield _s("RSET mid", EHLO, MAIL, RCPT, command("RSET"), RCPT, MAIL, RCPT, DATA, body(MESSAGE))
    yield _s("RSET arg", EHLO, command("RSET now"))
    yield _s("RSET before HELO", command("RSET"), EHLO)
    yield _s("message then RCPT", EHLO, MAIL, RCPT, DATA, body(MESSAGE), RCPT, MAIL)
    yield _s("two messages", EHLO, MAIL, RCPT, DATA, body(MESSAGE), MAIL, RCPT, DATA, body(MESSAGE))
    yield _s("BDAT 0 LAST", EHLO, MAIL, RCPT, raw(b"BDAT 0 LAST\r\n"))
    yield _s("BDAT 0 then", EHLO, MAIL, RCPT, raw(b"BDAT 0\r\n"), raw(b"BDAT 5 LAST\r\nhello"))
    yield _s("BDAT one", EHLO, MAIL, RCPT, raw(b"BDAT 12 LAST\r\nSubject: x\r\n"))
    yield _s(
        "BDAT two", EHLO, MAIL, RCPT, raw(b"BDAT 6\r\nab\r\ncd"), raw(b"BDAT 4 LAST\r\n\r\nxy")
    )
    yield _s("BDAT lower last", EHLO, MAIL, RCPT, raw(b"BDAT 3 last\r\nabc"))
    yield _s("bdat lower", EHLO, MAIL, RCPT, raw(b"bdat 3 LAST\r\nabc"))
    yield _s("BDAT nonnumber", EHLO, MAIL, RCPT, command("BDAT abc"))
    yield _s("BDAT negative", EHLO, MAIL, RCPT, command("BDAT -1"))
    yield _s("BDAT plus", EHLO, MAIL, RCPT, raw(b"BDAT +3 LAST\r\nabc"))
    yield _s("BDAT none", EHLO, MAIL, RCPT, command("BDAT"))
    yield _s("BDAT junk word", EHLO, MAIL, RCPT, raw(b"BDAT 3 MORE\r\nabc"))
    yield _s("BDAT LAST LAST", EHLO, MAIL, RCPT, raw(b"BDAT 3 LAST LAST\r\nabc"))
    yield _s("BDAT two spaces", EHLO, MAIL, RCPT, raw(b"BDAT  3 LAST\r\nabc"))
    yield _s("BDAT trailing space", EHLO, MAIL, RCPT, raw(b"BDAT 3 LAST \r\nabc"))
    yield _s("BDAT huge", EHLO, MAIL, RCPT, raw(b"BDAT 99999999999999999999999 LAST\r\n"))
    yield _s("BDAT over size", EHLO, MAIL, RCPT, raw(b"BDAT 10240001 LAST\r\n" + b"x" * 10240001))
    yield _s("BDAT leading zeros", EHLO, MAIL, RCPT, raw(b"BDAT 0003 LAST\r\nabc"))
    yield _s("BDAT no MAIL", EHLO, raw(b"BDAT 3 LAST\r\nabc"), MAIL)
    yield _s("BDAT no RCPT", EHLO, MAIL, raw(b"BDAT 3 LAST\r\nabc"), RCPT)
    yield _s("BDAT no HELO", raw(b"BDAT 3 LAST\r\nabc"), EHLO)
    yield _s("BDAT then DATA", EHLO, MAIL, RCPT, raw(b"BDAT 3\r\nabc"), DATA, body(MESSAGE))
    yield _s("BDAT then RSET", EHLO, MAIL, RCPT, raw(b"BDAT 3\r\nabc"), command("RSET"), MAIL, RCPT)
    yield _s("BDAT then MAIL", EHLO, MAIL, RCPT, raw(b"BDAT 3\r\nabc"), MAIL)
    yield _s("BDAT then RCPT", EHLO, MAIL, RCPT, raw(b"BDAT 3\r\nabc"), RCPT)
    yield _s(
        "BDAT binarymime",
        EHLO,
        command("MAIL FROM:<u@e.example> BODY=BINARYMIME"),
        RCPT,
        raw(b"BDAT 4 LAST\r\n\x00\x01\r\n"),
    )
    yield _s(
        "DATA binarymime",
        EHLO,
        command("MAIL FROM:<u@e.example> BODY=BINARYMIME"),
        RCPT,
        DATA,
        body(MESSAGE),
    )
    yield _s("BDAT after HELO", command("HELO c.example"), MAIL, RCPT, raw(b"BDAT 3 LAST\r\nabc"))
    yield _s("DATA arg", EHLO, MAIL, RCPT, command("DATA now"), body(MESSAGE))
    yield _s("DATA lower", EHLO, MAIL, RCPT, command("data"), body(MESSAGE))
    yield _s("DATA trailing space", EHLO, MAIL, RCPT, command("DATA "), body(MESSAGE))
    for verb in (
        "NOOP",
        "NOOP hello",
        "noop",
        "NOOP ",
        "HELP",
        "HELP MAIL",
        "help",
        "VRFY",
        "VRFY postmaster",
        "VRFY <u@example.com>",
        "vrfy u",
        "EXPN",
        "EXPN list",
        "EXPN <list@example.com>",
        "QUIT now",
        "TURN",
        "ETRN example.com",
        "ETRN",
        "XYZZY",
        "STARTTLS now",
        "AUTH PLAIN",
        "AUTH",
        "XCLIENT ADDR=1.2.3.4",
        "XFORWARD NAME=x",
        "",
        " ",
        "\t",
        "MAIL\t",
        "RCPT",
        "DATA\tx",
    ):
        yield _s(f"misc {verb!r}", EHLO, command(verb), MAIL, RCPT)
    yield _s("QUIT arg", EHLO, command("QUIT now"))
    yield _s("NOOP before HELO", command("NOOP"), command("VRFY u"), command("HELP"), EHLO)
    yield _s("long command 512", EHLO, command("NOOP " + "x" * 507))
    yield _s("long command 600", EHLO, command("NOOP " + "x" * 595), MAIL)
    yield _s("long command 5000", EHLO, command("NOOP " + "x" * 5000), MAIL)
    yield _s("long MAIL 1500", EHLO, command("MAIL FROM:<u@example.com> ENVID=" + "x" * 1480), MAIL)
    yield _s("long MAIL 3000", EHLO, command("MAIL FROM:<u@example.com> ENVID=" + "x" * 3000), MAIL)
    yield _s(
        "bare LF commands",
        raw(b"EHLO c.example\n"),
        raw(b"MAIL FROM:<u@e.example>\n"),
        raw(b"RCPT TO:<r@e.example>\n"),
    )
    yield _s("CR only command", raw(b"NOOP\r"), command("NOOP"))
    yield _s("NUL in command", EHLO, command(b"NOOP a\x00b"), MAIL)
    yield _s("NUL in MAIL", EHLO, command(b"MAIL FROM:<u\x00@example.com>"), MAIL)
    yield _s("8bit command", EHLO, command(b"NO\xc3\xa9OP"), MAIL)
    yield _s("HTTP", command("GET / HTTP/1.0"), command("Host: x"))
    yield _s("empty lines", EHLO, command(""), command(""), MAIL)
    yield _s("many errors", EHLO, *[command("XYZZY")] * 22)
    yield _s("many RCPT errors", EHLO, MAIL, *[command("RCPT TO:<bad>x")] * 22)
    # Each chunk dropped after a size refusal is an error (Postfix's
    # skip_bdat): the 19th after it reaches the error limit.
    yield _s(
        "BDAT chunks after size refusal",
        EHLO,
        MAIL,
        RCPT,
        raw(b"BDAT 10240001\r\n" + b"x" * 10240001),
        *[raw(b"BDAT 1\r\nx")] * 21,
    )
    # A refused chunk too large to drop is not read: its refusal, then
    # the connection closes.
    yield _s("BDAT refused huge", EHLO, raw(b"BDAT 999999999999999999\r\n"), command("NOOP"))


def pipelining() -> Iterator[Session]:
    yield _s("MAIL no space param", EHLO, command("MAIL FROM:<u@e.example>SIZE=10"), RCPT)
    yield _s("RCPT no space param", EHLO, MAIL, command("RCPT TO:<u@e.example>NOTIFY=NEVER"))
    yield _s("HELO resets", EHLO, MAIL, RCPT, command("HELO c.example"), RCPT, DATA)
    yield _s("EHLO resets", EHLO, MAIL, RCPT, EHLO, DATA, body(MESSAGE))
    yield _s(
        "NOOP in BDAT",
        EHLO,
        MAIL,
        RCPT,
        raw(b"BDAT 3\r\nabc"),
        command("NOOP"),
        raw(b"BDAT 0 LAST\r\n"),
    )
    yield _s("QUIT in BDAT", EHLO, MAIL, RCPT, raw(b"BDAT 3\r\nabc"), command("QUIT"))
    yield _s("VRFY 8bit", EHLO, command("VRFY j\xf6rg"), MAIL)
    yield _s("VRFY long", EHLO, command("VRFY " + "x" * 400), MAIL)
    yield _s("DATA after BDAT message", EHLO, MAIL, RCPT, raw(b"BDAT 3 LAST\r\nabc"), DATA)
    yield _s(
        "many RCPT",
        EHLO,
        MAIL,
        Step(
            Kind.PIPELINED, b"".join(b"RCPT TO:<r%d@e.example>\r\n" % i for i in range(1002)), 1002
        ),
        DATA,
        body(MESSAGE),
    )
    yield _s("ENVID plus", EHLO, command("MAIL FROM:<u@e.example> ENVID=+"), RCPT)
    yield _s("route utf8", EHLO, command("MAIL FROM:<@a.example:j\xf6rg@e.example> SMTPUTF8"), RCPT)
    yield _s(
        "NUL in body header", EHLO, MAIL, RCPT, DATA, body(b"Sub\x00ject: x\r\n\r\nb\r\n.\r\n")
    )
    yield _s("RSET in DATA refused", EHLO, MAIL, DATA, command("RSET"), MAIL, RCPT)
    yield _s(
        "second EHLO arg", EHLO, command("EHLO other.example"), MAIL, RCPT, DATA, body(MESSAGE)
    )
    yield _s("pipe whole", EHLO, pipelined(MAIL.data[:-2], RCPT.data[:-2], "DATA"), body(MESSAGE))
    yield _s(
        "pipe bad RCPT DATA",
        EHLO,
        pipelined(MAIL.data[:-2], "RCPT TO:<bad", "DATA"),
        body(MESSAGE),
        command("RSET"),
    )
    yield _s(
        "pipe bad MAIL",
        EHLO,
        pipelined("MAIL FROM:<bad", RCPT.data[:-2], "DATA"),
        body(MESSAGE),
        command("RSET"),
    )
    yield _s("pipe RSET", EHLO, pipelined(MAIL.data[:-2], RCPT.data[:-2], "RSET", "NOOP"))
    yield _s("pipe EHLO MAIL", pipelined("EHLO c.example", MAIL.data[:-2], RCPT.data[:-2]))
    yield _s(
        "pipe BDAT", EHLO, Step(Kind.PIPELINED, MAIL.data + RCPT.data + b"BDAT 5 LAST\r\nhello", 3)
    )
    yield _s(
        "pipe bad RCPT BDAT",
        EHLO,
        Step(Kind.PIPELINED, MAIL.data + b"RCPT TO:<bad\r\nBDAT 5 LAST\r\nhello", 3),
        RCPT,
    )
    yield _s(
        "pipe two RCPT one bad",
        EHLO,
        pipelined(MAIL.data[:-2], "RCPT TO:<bad", RCPT.data[:-2], "DATA"),
        body(MESSAGE),
    )
    yield _s("pipe QUIT", EHLO, pipelined("NOOP", "QUIT", "NOOP"))
    yield _s("BDAT bare LF", EHLO, MAIL, RCPT, raw(b"BDAT 14 LAST\r\nSubject: x\nab\n"))
    yield _s("BDAT bare CR", EHLO, MAIL, RCPT, raw(b"BDAT 14 LAST\r\nSubject: x\rab\r"))
    yield _s("BDAT dot line", EHLO, MAIL, RCPT, raw(b"BDAT 9 LAST\r\nab\r\n.\r\ncd"))
    yield _s(
        "BDAT 8bit 7BIT",
        EHLO,
        command("MAIL FROM:<u@e.example> BODY=7BIT"),
        RCPT,
        raw("BDAT 5 LAST\r\nj\xf6rg".encode()),
    )
    yield _s(
        "BDAT after message",
        EHLO,
        MAIL,
        RCPT,
        raw(b"BDAT 3 LAST\r\nabc"),
        raw(b"BDAT 3 LAST\r\nabc"),
        MAIL,
    )
    yield _s("RCPT postmaster domain", EHLO, MAIL, command("RCPT TO:<postmaster@example.com>"))
    yield _s("RCPT POSTMASTER", EHLO, MAIL, command("RCPT TO:<POSTMASTER>"))
    yield _s("RCPT postmaster params", EHLO, MAIL, command("RCPT TO:<Postmaster> NOTIFY=NEVER"))
    yield _s("MAIL null SIZE", EHLO, command("MAIL FROM:<> SIZE=100 BODY=8BITMIME"), RCPT)
    for name, line in {
        "ORCPT 8bit no SMTPUTF8": "RCPT TO:<u@e.example> ORCPT=rfc822;j\xf6rg@e.example",
        "NOTIFY trailing comma": "RCPT TO:<u@e.example> NOTIFY=SUCCESS,",
        "NOTIFY DELAY only": "RCPT TO:<u@e.example> NOTIFY=DELAY",
        "ORCPT space in type": "RCPT TO:<u@e.example> ORCPT=rfc 822;u@e.example",
        "RCPT null with params": "RCPT TO:<> NOTIFY=NEVER",
        "RCPT postmaster 8bit": "RCPT TO:<P\xf6stmaster>",
    }.items():
        yield _s(name, EHLO, MAIL, command(line), DATA, body(MESSAGE))
    for name, line in {
        "ENVID 8bit no SMTPUTF8": "MAIL FROM:<u@e.example> ENVID=j\xf6rg",
        "AUTH bad xtext": "MAIL FROM:<u@e.example> AUTH=a+zz",
        "AUTH 600": "MAIL FROM:<u@e.example> AUTH=" + "a" * 600,
        "param underscore": "MAIL FROM:<u@e.example> X_Y=1",
        "param value with =": "MAIL FROM:<u@e.example> FOO=a=b",
        "MAIL params no path": "MAIL FROM: SIZE=10",
    }.items():
        yield _s(name, EHLO, command(line), RCPT)
    yield _s(
        "RCPT lower params",
        EHLO,
        MAIL,
        command("RCPT TO:<u@e.example> notify=never orcpt=rfc822;u@e.example"),
        DATA,
        body(MESSAGE),
    )
    u8 = "MAIL FROM:<u@e.example> SMTPUTF8"
    for name, rcpt in {
        "utf8 ENVID": None,
        "ORCPT rfc822 raw utf8": "RCPT TO:<u@e.example> ORCPT=rfc822;j\xf6rg@e.example",
        "ORCPT utf-8 raw": "RCPT TO:<u@e.example> ORCPT=utf-8;j\xf6rg@e.example",
        "ORCPT utf-8 escaped utf8 rcpt": (
            "RCPT TO:<j\xf6rg@e.example> ORCPT=utf-8;j\\x{F6}rg@e.example"
        ),
        "ORCPT rfc822 xtext utf8": "RCPT TO:<u@e.example> ORCPT=rfc822;j+C3+B6rg@e.example",
    }.items():
        mail = u8 + " ENVID=j\xf6rg" if rcpt is None else u8
        yield _s(
            f"SMTPUTF8 {name}",
            EHLO,
            command(mail),
            command(rcpt or RCPT.data[:-2]),
            DATA,
            body(MESSAGE),
        )
    yield _s(
        "MAIL everything",
        EHLO,
        command(
            "MAIL FROM:<u@e.example> SIZE=10 BODY=8BITMIME RET=HDRS ENVID=abc SMTPUTF8 AUTH=<>"
        ),
        RCPT,
        DATA,
        body(MESSAGE),
    )


def content() -> Iterator[Session]:
    start = (EHLO, MAIL, RCPT, DATA)
    bodies = {
        "plain": MESSAGE,
        "empty": b".\r\n",
        "header only": b"Subject: x\r\n.\r\n",
        "bare LF line": b"Subject: x\r\n\r\nline\nmore\r\n.\r\n",
        "bare LF end of header": b"Subject: x\n\r\nbody\r\n.\r\n",
        "lone CR": b"Subject: x\r\n\r\nline\rmore\r\n.\r\n",
        "CR at end of line": b"Subject: x\r\n\r\nline\r\r\n.\r\n",
        "long line 1000": b"Subject: x\r\n\r\n" + b"x" * 998 + b"\r\n.\r\n",
        "long line 1001": b"Subject: x\r\n\r\n" + b"x" * 999 + b"\r\n.\r\n",
        "long line 10000": b"Subject: x\r\n\r\n" + b"x" * 10000 + b"\r\n.\r\n",
        "long line 200000": b"Subject: x\r\n\r\n" + b"x" * 200000 + b"\r\n.\r\n",
        "NUL": b"Subject: x\r\n\r\na\x00b\r\n.\r\n",
        "8bit": "Subject: x\r\n\r\nj\xf6rg\r\n.\r\n".encode(),
        "invalid utf8": b"Subject: x\r\n\r\n\xff\xfe\r\n.\r\n",
        "dot stuffed": b"Subject: x\r\n\r\n..line\r\n..\r\n...\r\n.\r\n",
        "dot space": b"Subject: x\r\n\r\n. \r\n.\r\n",
        "dot then text": b"Subject: x\r\n\r\n.x\r\n.\r\n",
        "no header": b"just text\r\n.\r\n",
        "header no colon": b"Not a header\r\nSubject: x\r\n\r\nb\r\n.\r\n",
        "long header": b"Subject: " + b"y" * 5000 + b"\r\n\r\nb\r\n.\r\n",
        "folded header": b"Subject: a\r\n b\r\n\tc\r\n\r\nb\r\n.\r\n",
        "received loop": b"Received: from x\r\n" * 60 + b"\r\nb\r\n.\r\n",
        "tab line": b"\t\r\n.\r\n",
        "ctl chars": b"Subject: \x01\x02\x1b\r\n\r\n\x7f\r\n.\r\n",
        "dot LF end inside": b"Subject: x\r\n\r\na\r\n.\nb\r\n.\r\n",
        "LF dot CRLF inside": b"Subject: x\r\n\r\na\n.\r\nb\r\n.\r\n",
        "CR dot CR inside": b"Subject: x\r\n\r\na\r.\rb\r\n.\r\n",
        "mbox From": b"From someone\r\nSubject: x\r\n\r\nFrom here\r\n.\r\n",
        "only dot dot": b"..\r\n.\r\n",
    }
    for name, data in bodies.items():
        yield _s(f"DATA {name}", *start, body(data), MAIL)
    # End-of-data variants that must not end the message.
    for name, data in {
        "LF dot LF": b"Subject: x\r\n\r\nhello\n.\n",
        "CRLF dot LF": b"Subject: x\r\n\r\nhello\r\n.\n",
        "LF dot CRLF": b"Subject: x\r\n\r\nhello\n.\r\n",
        "CR dot CR": b"Subject: x\r\n\r\nhello\r.\r",
        "CRLF dot CR": b"Subject: x\r\n\r\nhello\r\n.\r",
    }.items():
        yield _s(
            f"DATA end {name}",
            *start,
            wait(data),
            raw(b"\r\n.\r\n"),
            MAIL,
        )
    yield _s(
        "DATA oversize",
        *start,
        body(b"Subject: x\r\n\r\n" + (b"y" * 998 + b"\r\n") * 10300 + b".\r\n"),
        MAIL,
    )
    # The size limit (10240000 octets) counts the message as received.
    yield _s("DATA at size limit", *start, body(b"x" * 10239998 + b"\r\n.\r\n"), MAIL)
    yield _s("DATA over size limit", *start, body(b"x" * 10239999 + b"\r\n.\r\n"), MAIL)
    yield _s(
        "DATA stuffed at size limit",
        *start,
        body((b".." + b"x" * 97 + b"\r\n") * 102399 + b"x" * 98 + b"\r\n.\r\n"),
        MAIL,
    )
    yield _s(
        "BDAT SIZE smaller than chunk",
        EHLO,
        command("MAIL FROM:<u@e.example> SIZE=100"),
        RCPT,
        raw(b"BDAT 200 LAST\r\n" + b"x" * 200),
    )
    yield _s(
        "DATA SIZE exact",
        EHLO,
        command("MAIL FROM:<u@e.example> SIZE=20"),
        RCPT,
        DATA,
        body(b"Subject: x\r\n\r\n" + b"y" * 200 + b"\r\n.\r\n"),
    )
    yield _s(
        "DATA pipelined body after 354",
        *start,
        body(MESSAGE + b"MAIL FROM:<u@example.com>\r\n"),
        command("RCPT TO:<r@example.com>"),
    )
