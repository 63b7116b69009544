# -*- test-case-name: tests.integration.test_smtpdiff -*-
"""
The address part of the differential corpus (L{tests.integration.smtpdiff})
beyond L{tests.integration.smtpdiffcorpus}'s first paths: quoted local parts
with escapes, source routes, IPv6 literals with C{::} in every place, label
and name lengths at their limits, U-labels with and without C{SMTPUTF8},
parameters after odd paths, and HELO names that are literals; with the
sessions whose replies differ from Postfix's and why.
"""

from __future__ import annotations

from collections.abc import Iterator

from tests.integration.smtpdiff import EHLO, MAIL, RCPT, Session, command
from tests.integration.smtpdiff import session as _s

_LABEL = "d" * 63
MAIL_UTF8 = command("MAIL FROM:<s@example.com> SMTPUTF8")


def _paths() -> Iterator[tuple[str, str]]:
    yield "quoted escaped letter", '<"\\a"@example.com>'
    yield "quoted escaped closing quote", '<"a\\"@example.com>'
    yield "quoted backslash only", '<"\\\\"@example.com>'
    yield "quoted then dot-atom", '<"a".b@example.com>'
    yield "dot-atom then quoted", '<a."b"@example.com>'
    yield "two quoted strings", '<"a""b"@example.com>'
    yield "quoted at only", '<"@"@example.com>'
    yield "quoted brackets", '<"<a>"@example.com>'
    yield "quoted comma colon", '<"a,b:c"@example.com>'
    yield "quoted 64", '<"' + "q" * 62 + '"@example.com>'
    yield "quoted 65", '<"' + "q" * 63 + '"@example.com>'
    yield "quoted escaped DEL", '<"a\\\x7f"@example.com>'
    yield "route two", "<@a.example,@b.example:u@d.example>"
    yield "route space after comma", "<@a.example, @b.example:u@d.example>"
    yield "route second without at", "<@a.example,b.example:u@d.example>"
    yield "route literal", "<@[192.0.2.1]:u@d.example>"
    yield "route two colons", "<@a.example:@b.example:u@d.example>"
    yield "route empty element", "<@a.example,,@b.example:u@d.example>"
    yield "route trailing dot", "<@a.example.:u@d.example>"
    yield "route without mailbox", "<@a.example:>"
    yield "route numeric", "<@123:u@d.example>"
    yield "route to postmaster", "<@a.example:Postmaster>"
    for text in (
        "::",
        "1::",
        "::1",
        "1:2:3:4:5:6::",
        "::2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7::",
        "::1:2:3:4:5:6:7",
        "1::3:4:5:6:7:8",
        "1:2:3::5:6:7:8",
        "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4::1.2.3.4",
        "1:2:3:4:5::1.2.3.4",
        "::1.2.3",
        "1.2.3.4::1",
        "fe80::1%eth0",
        "",
        "12345::1",
    ):
        yield f"IPv6 {text}", f"<u@[IPv6:{text}]>"
    yield "IPv4 tag", "<u@[IPv4:192.0.2.1]>"
    yield "IPv4 five numbers", "<u@[1.2.3.4.5]>"
    yield "IPv4 hex", "<u@[0x7f.0.0.1]>"
    yield "IPv4 one number", "<u@[2130706433]>"
    yield "label 63 last", "<u@example." + _LABEL + ">"
    yield "label 64 last", "<u@example." + "d" * 64 + ">"
    yield "name 252", "<u@" + ".".join([_LABEL, _LABEL, _LABEL, "d" * 60]) + ">"
    yield "name 253", "<u@" + ".".join([_LABEL, _LABEL, _LABEL, "d" * 61]) + ">"
    yield "local 65 dotted", "<" + ".".join(["l" * 32, "l" * 32]) + "@example.com>"
    yield "underscore first", "<u@_dmarc.example>"
    yield "underscore tld", "<u@example._x>"
    yield "hyphens third fourth", "<u@ab--cd.example>"
    yield "fake A-label", "<u@xn--zz.example>"
    yield "tab after open", "<\tu@example.com>"
    yield "null nested", "<<>>"
    yield "null closed twice", "<>>"
    yield "POSTMASTER", "<POSTMASTER>"
    yield "postmaster quoted", '<"postmaster">'
    yield "postmaster with domain", "<postmaster@example.com>"


def _uLabels() -> Iterator[tuple[str, str]]:
    yield "mark first", "<u@\u0301a.example>"
    yield "mark only label", "<u@\u00fc.\u0301.example>"
    yield "mark second", "<u@a\u0301.example>"
    yield "private use", "<u@\ue000.example>"
    yield "noncharacter", "<u@a\uffff.example>"
    yield "hyphens third fourth", "<u@\u00fcb--c.example>"
    yield "xn-- prefix", "<u@xn--\u00fc.example>"
    yield "Hangul filler", "<u@\u3164.example>"
    yield "Hangul filler inside", "<u@a\u3164b.example>"
    yield "ideograph of Unicode 15", "<u@a\U00031350b.example>"
    yield "ideographic stop", "<u@b\u00fccher\u3002example>"
    yield "fullwidth stop", "<u@b\u00fccher\uff0eexample>"
    yield "two ideographic stops", "<u@\u00fc\u3002\u3002example>"
    yield "emoji", "<u@\U0001f600.example>"
    yield "heart", "<u@\u2665.example>"
    yield "joiner", "<u@a\u200db.example>"
    yield "joiner after virama", "<u@\u0915\u094d\u200d\u0937.example>"
    yield "soft hyphen", "<u@a\u00adb\u00fc.example>"
    yield "zero width space", "<u@a\u200bb\u00fc.example>"
    yield "upper case", "<u@B\u00dcCHER.example>"
    yield "sharp s", "<u@stra\u00dfe.example>"
    yield "underscore", "<u@\u00fc_b.example>"
    yield "fake A-label beside", "<u@xn--zz.b\u00fccher.example>"
    yield "fake A-label alone", "<u@xn--zz.example>"
    yield "A-label of ASCII beside", "<u@xn--abc-.b\u00fccher.example>"
    yield "A-label of ASCII alone", "<u@xn--abc-.example>"
    yield "empty A-label beside", "<u@xn--.b\u00fccher.example>"
    yield "A-label of upper case beside", "<u@xn--bcher-2pa.b\u00fccher.example>"
    yield "A-label of private use beside", "<u@xn--a-so7g.b\u00fccher.example>"
    yield "A-label of soft hyphen beside", "<u@xn--a-vca.b\u00fccher.example>"
    yield "A-label of leading hyphen beside", "<u@xn----eha.b\u00fccher.example>"
    yield "A-label beside", "<u@xn--bcher-kva.b\u00fccher.example>"
    yield "A-label in capitals beside", "<u@XN--BCHER-KVA.b\u00fccher.example>"
    yield "A-label of joiner beside", "<u@xn--ab-m1t.b\u00fccher.example>"
    yield "ASCII hyphens third fourth beside", "<u@ab--cd.b\u00fccher.example>"
    yield "ASCII underscore beside", "<u@Under_Score.b\u00fccher.example>"
    yield "trailing dot", "<u@b\u00fccher.example.>"
    yield "CJK", "<u@\u4f8b\u3048.\u30c6\u30b9\u30c8>"
    yield "spacing diaeresis", "<u@a\u00a8b.example>"
    yield "parenthesised digit", "<u@a\u2474b.example>"
    yield "fullwidth bracket", "<u@a\uff3bb.example>"
    yield "two dot leader", "<u@a\u2025b.example>"
    yield "digit full stop", "<u@a\u2488b.example>"
    yield "fullwidth hyphen first", "<u@\uff0dab.example>"
    yield "fullwidth letters", "<u@\uff42\uff55\uff43\uff48\uff45\uff52.example>"
    yield "fullwidth low line", "<u@a\uff3fb.example>"
    for size in (15, 16):
        # Five labels of ideographs: 249 and 264 octets in A-labels.
        labels = ("".join(chr(0x4E00 + 997 * j + 131 * i) for j in range(size)) for i in range(5))
        yield f"ideographs {size}", "<u@" + ".".join(labels) + ">"
    yield "A-label too long", "<u@" + "\u00fc" * 40 + ".example>"
    yield "quoted escaped non-ASCII", '<"\\\u00e9"@example.com>'
    yield "local part 8bit 65 octets", "<a" + "\u00f6" * 32 + "@example.com>"


def _lines() -> Iterator[Session]:
    for line in (
        "MAIL FROM:<> SIZE=10",
        "MAIL FROM:<>SIZE=10",
        "MAIL FROM:u@example.com SIZE=10",
        "MAIL FROM : <u@example.com>",
        "MAIL FROM:<u@[IPv6:::1]> SIZE=1",
        'MAIL FROM:<"a b"@example.com> SIZE=1',
        "MAIL FROM:<@a.example:u@example.com> SIZE=1",
        "MAIL FROM:<u@example.com> X_Y=1",
        "MAIL FROM:<u@example.com> -X",
        "MAIL FROM:<u@example.com> SIZE==10",
    ):
        yield _s(f"addr line {line}", EHLO, command(line), RCPT)
    for line in (
        "RCPT TO:<Postmaster> NOTIFY=NEVER",
        "RCPT TO:<Postmaster>NOTIFY=NEVER",
        "RCPT TO:u@example.com NOTIFY=NEVER",
        'RCPT TO:<u@example.com> ORCPT=rfc822;"a b"@example.com',
        "RCPT TO:<u@example.com> ORCPT=rfc822;a+20b@example.com",
        "RCPT TO:<u@example.com> NOTIFY=NEVER,NEVER",
        "RCPT TO:<> NOTIFY=NEVER",
    ):
        yield _s(f"addr line {line}", EHLO, MAIL, command(line))


def _helo() -> Iterator[Session]:
    for name in (
        b"[IPv6:fe80::1%eth0]",
        b"[IPv6:1:2:3:4:5:6:7::]",
        b"[1.2.3]",
        b"[tag:]",
        b"::1",
        b"2001:db8::1",
        b"1.2.3.4.5",
        b"\xe2\x80\xae.example",
        b"\xef\xbb\xbfclient",
        b"a." * 127 + b"a",
        b"-",
        b"<>",
    ):
        yield _s(f"addr EHLO {name[:30]!r} ({len(name)})", command(b"EHLO " + name), MAIL, RCPT)


def addresses() -> Iterator[Session]:
    """
    The sessions of this part of the corpus.
    """
    for name, path in _paths():
        yield _s(f"addr MAIL {name}", EHLO, command("MAIL FROM:" + path), RCPT)
        yield _s(f"addr RCPT {name}", EHLO, MAIL, command("RCPT TO:" + path))
    for name, path in _uLabels():
        yield _s(f"addr MAIL utf8 {name}", EHLO, command(f"MAIL FROM:{path} SMTPUTF8"), RCPT)
        yield _s(f"addr RCPT utf8 {name}", EHLO, MAIL_UTF8, command("RCPT TO:" + path))
        yield _s(f"addr RCPT no utf8 {name}", EHLO, MAIL, command("RCPT TO:" + path))
    yield from _lines()
    yield from _helo()


# Why each session here whose replies differ does: the item of
# docs/behaviour.md ("Compared with Postfix's smtpd" and "Paths and
# parameters").
ADDRESSES_DOCUMENTED: dict[str, str] = {
    "addr MAIL quoted then dot-atom": "Paths follow RFC 5321's Mailbox",
    "addr RCPT quoted then dot-atom": "Paths follow RFC 5321's Mailbox",
    "addr MAIL dot-atom then quoted": "Paths follow RFC 5321's Mailbox",
    "addr RCPT dot-atom then quoted": "Paths follow RFC 5321's Mailbox",
    "addr MAIL quoted at only": "Paths follow RFC 5321's Mailbox",
    "addr RCPT quoted at only": "Paths follow RFC 5321's Mailbox",
    "addr MAIL quoted 65": "Paths follow RFC 5321's Mailbox",
    "addr RCPT quoted 65": "Paths follow RFC 5321's Mailbox",
    "addr MAIL quoted escaped DEL": "Paths follow RFC 5321's Mailbox",
    "addr RCPT quoted escaped DEL": "Paths follow RFC 5321's Mailbox",
    "addr MAIL route space after comma": "Paths follow RFC 5321's Mailbox",
    "addr RCPT route space after comma": "Paths follow RFC 5321's Mailbox",
    "addr MAIL route second without at": "Paths follow RFC 5321's Mailbox",
    "addr RCPT route second without at": "Paths follow RFC 5321's Mailbox",
    "addr MAIL route literal": "Paths follow RFC 5321's Mailbox",
    "addr RCPT route literal": "Paths follow RFC 5321's Mailbox",
    "addr MAIL route empty element": "Paths follow RFC 5321's Mailbox",
    "addr RCPT route empty element": "Paths follow RFC 5321's Mailbox",
    "addr MAIL route trailing dot": "Paths follow RFC 5321's Mailbox",
    "addr RCPT route trailing dot": "Paths follow RFC 5321's Mailbox",
    "addr MAIL route without mailbox": "Paths follow RFC 5321's Mailbox",
    "addr MAIL route to postmaster": "Paths follow RFC 5321's Mailbox",
    "addr RCPT route to postmaster": "Paths follow RFC 5321's Mailbox",
    "addr MAIL IPv6 1::3:4:5:6:7:8": "Domains and address literals",
    "addr RCPT IPv6 1::3:4:5:6:7:8": "Domains and address literals",
    "addr MAIL IPv6 1:2:3::5:6:7:8": "Domains and address literals",
    "addr RCPT IPv6 1:2:3::5:6:7:8": "Domains and address literals",
    "addr MAIL IPv6 1:2:3:4:5::1.2.3.4": "Domains and address literals",
    "addr RCPT IPv6 1:2:3:4:5::1.2.3.4": "Domains and address literals",
    "addr MAIL name 253": "Paths follow RFC 5321's Mailbox",
    "addr RCPT name 253": "Paths follow RFC 5321's Mailbox",
    "addr MAIL local 65 dotted": "Paths follow RFC 5321's Mailbox",
    "addr RCPT local 65 dotted": "Paths follow RFC 5321's Mailbox",
    "addr MAIL tab after open": "Paths follow RFC 5321's Mailbox",
    "addr RCPT tab after open": "Paths follow RFC 5321's Mailbox",
    "addr MAIL null nested": "Paths follow RFC 5321's Mailbox",
    "addr MAIL null closed twice": "Paths follow RFC 5321's Mailbox",
    "addr MAIL POSTMASTER": "Paths follow RFC 5321's Mailbox",
    "addr MAIL postmaster quoted": "Paths follow RFC 5321's Mailbox",
    "addr RCPT postmaster quoted": "Paths follow RFC 5321's Mailbox",
    "addr MAIL utf8 soft hyphen": "Domains and address literals",
    "addr RCPT utf8 soft hyphen": "Domains and address literals",
    "addr MAIL utf8 zero width space": "Domains and address literals",
    "addr RCPT utf8 zero width space": "Domains and address literals",
    "addr RCPT no utf8 sharp s": "Non-ASCII addresses need SMTPUTF8",
    "addr MAIL utf8 trailing dot": "Domains and address literals",
    "addr RCPT utf8 trailing dot": "Domains and address literals",
    "addr MAIL utf8 quoted escaped non-ASCII": "Paths follow RFC 5321's Mailbox",
    "addr RCPT utf8 quoted escaped non-ASCII": "Paths follow RFC 5321's Mailbox",
    "addr RCPT no utf8 quoted escaped non-ASCII": "Paths follow RFC 5321's Mailbox",
    "addr MAIL utf8 local part 8bit 65 octets": "Paths follow RFC 5321's Mailbox",
    "addr RCPT utf8 local part 8bit 65 octets": "Paths follow RFC 5321's Mailbox",
    "addr RCPT no utf8 local part 8bit 65 octets": "Paths follow RFC 5321's Mailbox",
    'addr line RCPT TO:<u@example.com> ORCPT=rfc822;"a b"@example.com': "Parameter values",
    "addr line RCPT TO:<u@example.com> NOTIFY=NEVER,NEVER": "Parameter values",
}
