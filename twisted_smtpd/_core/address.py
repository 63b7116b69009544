# -*- test-case-name: tests.test_address -*-
"""
Pure parsing of the MAIL and RCPT arguments: the reverse-path and
forward-path (RFC 5321 section 4.1.2) and their ESMTP parameters (RFC 5321
section 4.1.1.11), whose xtext (RFC 3461 section 4) and C{utf-8} addresses
(RFC 6533 section 3) L{twisted_smtpd._core.xtext} decodes.

The parameters understood are C{SIZE} (RFC 1870), C{BODY} (RFC 6152, RFC
3030), C{SMTPUTF8} (RFC 6531), C{RET} and C{ENVID} (RFC 3461), C{REQUIRETLS}
(RFC 8689) and C{AUTH} (RFC 4954 section 5) on MAIL; C{NOTIFY} and C{ORCPT}
(RFC 3461) on RCPT.  They are accepted whether or not the extension is
advertised: policy is the caller's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from twisted_smtpd._core.domains import (
    DIGITS_AND_DOTS,
    MAX_LABEL,
    literalAddress,
    validDomainName,
    validLiteral,
)
from twisted_smtpd._core.printable import CONTROL
from twisted_smtpd._core.replies import (
    BAD_AUTH_PARAMETER,
    BAD_BODY,
    BAD_ENVID,
    BAD_NOTIFY,
    BAD_ORCPT,
    BAD_PARAMETER_SYNTAX,
    BAD_RECIPIENT_SYNTAX,
    BAD_REQUIRETLS,
    BAD_RET,
    BAD_SENDER_SYNTAX,
    BAD_SIZE,
    BAD_SMTPUTF8,
    DUPLICATE_PARAMETER,
    MAIL_SYNTAX,
    NON_ASCII_PARAMETER,
    PATH_TOO_LONG,
    RCPT_SYNTAX,
    UNKNOWN_PARAMETER,
    UTF8_NOT_ALLOWED,
    CommandError,
    Reply,
)
from twisted_smtpd._core.session import Address, AddressDSN, EnvelopeDSN
from twisted_smtpd._core.xtext import decodeUtf8Address, decodeXtext, encodeXtext

__all__ = [
    "MAX_ENVID",
    "MAX_ORCPT",
    "MailRequest",
    "decodeXtext",
    "encodeXtext",
    "literalAddress",
    "parseMail",
    "parseRcpt",
]

# RFC 5321 section 4.5.3.1.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256
# RFC 3461 sections 4.2 and 4.4.
MAX_ENVID = 100
MAX_ORCPT = 500
# RFC 1870 section 3 allows any number of digits; twenty always fit in 64 bits.
MAX_SIZE_DIGITS = 20


# RFC 6531 section 3.3 adds UTF8-non-ascii (U+00A0 and above here) to atext,
# qtextSMTP and sub-domain.  Each class below is written as what it leaves
# out of U+0000-U+009F: the same set as listing its ASCII characters plus
# "\u00a0-\U0010ffff", but such a class costs about 15 ms to compile, and the
# path pattern holds a dozen of them, which every start of the server paid.
_ATEXT = r'[^\x00-\x20"(),.:;<>@\[\\\]\x7f-\x9f]'
_DOT_ATOM = _ATEXT + "+(?:\\." + _ATEXT + "+)*"
_QUOTED = r'"(?:[^\x00-\x1f"\\\x7f-\x9f]|\\[ -~])*"'
# Ldh-str (RFC 5321 section 4.1.2), with underscores as Postfix allows.
_LETDIG = r"[^\x00-/:-@\[-^`{-\x9f]"
_LDH = r"[^\x00-,./:-@\[-^`{-\x9f]"
_LABEL = _LETDIG + "(?:" + _LDH + "*" + _LETDIG + ")?"
_DOMAIN = _LABEL + "(?:\\." + _LABEL + ")*"
_LITERAL = "\\[(?:[Ii][Pp][Vv]6:[0-9A-Fa-f:.]+|[0-9.]+)\\]"
_PATH = re.compile(
    "<(?:@"
    + _DOMAIN
    + "(?:,@"
    + _DOMAIN
    + ")*:)?(?P<local>"
    + _DOT_ATOM
    + "|"
    + _QUOTED
    + ")@(?P<domain>"
    + _DOMAIN
    + "|"
    + _LITERAL
    + ")>"
)
# The common path, ASCII with neither source route, quoted local part nor
# address literal: the same syntax as _PATH for such paths, so that a match
# here is a match there with the same mailbox; anything else goes to _PATH.
_ASCII_ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ASCII_LETDIG = "[A-Za-z0-9_]"
_ASCII_LABEL = _ASCII_LETDIG + "(?:[A-Za-z0-9_-]*" + _ASCII_LETDIG + ")?"
_SIMPLE_PATH = re.compile(
    "<"
    + _ASCII_ATEXT
    + "+(?:\\."
    + _ASCII_ATEXT
    + "+)*@"
    + _ASCII_LABEL
    + "(?:\\."
    + _ASCII_LABEL
    + ")*>"
)
_LENIENT_KEYWORD = {
    "FROM:": re.compile("FROM *: *", re.IGNORECASE),
    "TO:": re.compile("TO *: *", re.IGNORECASE),
}

_PARAMETER = re.compile("([A-Za-z0-9][A-Za-z0-9-]*)(?:=([^= ]+))?")
_KEYWORD = re.compile("[A-Za-z0-9][A-Za-z0-9-]*")
# What _decode refuses: a control character (C0, DEL, C1), or an octet
# that is not UTF-8, decoded with surrogateescape.
_BAD_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udcff]")
# The refusal of each parameter MAIL (True) and RCPT (False) know, for a
# value holding a control character or an octet that is not UTF-8.
_PARAMETER_REPLIES: Mapping[bool, Mapping[str, Reply]] = {
    True: {
        "SIZE": BAD_SIZE,
        "BODY": BAD_BODY,
        "SMTPUTF8": BAD_SMTPUTF8,
        "REQUIRETLS": BAD_REQUIRETLS,
        "RET": BAD_RET,
        "ENVID": BAD_ENVID,
        "AUTH": BAD_AUTH_PARAMETER,
    },
    False: {"NOTIFY": BAD_NOTIFY, "ORCPT": BAD_ORCPT},
}
_ADDR_TYPE = re.compile("[A-Za-z0-9!#$%&'*+/?^_`{|}~-]+")
_BODY_TYPES = {"7BIT": "7bit", "8BITMIME": "8bitmime", "BINARYMIME": "binarymime"}
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})
# Shared by every path without DSN parameters: they are immutable.
_NO_ENVELOPE_DSN = EnvelopeDSN()
_NO_ADDRESS_DSN = AddressDSN()


class MailRequest(NamedTuple):
    """
    A parsed MAIL command.  A named tuple: made once per MAIL, it costs
    less than an attrs class.

    @ivar address: The reverse-path (C{""} for C{<>}) with every parameter in
        C{args} (upper-case keys, values as sent, C{True} when valueless);
        C{dsn} is C{None}.
    @ivar size: The declared C{SIZE}, or C{None}.
    @ivar bodyType: C{"7bit"}, C{"8bitmime"} or C{"binarymime"}.
    @ivar smtpUtf8: Whether C{SMTPUTF8} was given.
    @ivar requireTls: Whether C{REQUIRETLS} was given.
    @ivar dsn: C{RET} (upper case) and C{ENVID} (xtext-decoded).
    @ivar auth: The xtext-decoded C{AUTH} mailbox, C{"<>"}, or C{None}.
    """

    address: Address
    size: int | None
    bodyType: str
    smtpUtf8: bool
    requireTls: bool
    dsn: EnvelopeDSN
    auth: str | None


def parseMail(argument: bytes, lenient: bool = False) -> MailRequest:
    """
    Parse the argument of MAIL (C{b"FROM:<a@example.com> SIZE=10"}).

    The C{FROM:} keyword is case-insensitive and may be followed by spaces.
    A source route is accepted and dropped; a quoted local part is kept as
    written.  A non-ASCII path or parameter value needs C{SMTPUTF8} in the
    same command (RFC 6531 section 3.4).

    @param lenient: Also accept what broken clients send: spaces before the
        colon, a path without angle brackets (C{FROM:a@example.com}), and a
        path missing only its closing bracket when nothing follows it.

    @raise CommandError: With C{MAIL_SYNTAX} when C{FROM:} is missing,
        C{BAD_SENDER_SYNTAX} or C{PATH_TOO_LONG} for a bad path (or a control
        character or invalid UTF-8 in it), a 501 5.5.4 for a malformed,
        repeated or badly valued parameter (or one holding a control
        character or invalid UTF-8), C{UNKNOWN_PARAMETER} (555) for a
        parameter MAIL does not know, and C{UTF8_NOT_ALLOWED} (553) for a
        non-ASCII path without C{SMTPUTF8}.
    """
    text = _decode(argument, BAD_SENDER_SYNTAX, lenient)
    rest = _afterKeyword(text, "FROM:", MAIL_SYNTAX, lenient)
    mailbox, params = _parsePath(rest, True, BAD_SENDER_SYNTAX, lenient)
    if not params:
        # No parameters, as nearly always: only the path to check.
        if not mailbox.isascii():
            raise CommandError(UTF8_NOT_ALLOWED)
        return MailRequest(Address(mailbox, {}), None, "7bit", False, False, _NO_ENVELOPE_DSN, None)
    args = _parseParameters(params)
    size = None
    bodyType = "7bit"
    smtpUtf8 = requireTls = False
    ret = envid = auth = None
    for key, value in args.items():
        if key == "SIZE":
            if not isinstance(value, str) or len(value) > MAX_SIZE_DIGITS or not _isDigits(value):
                raise CommandError(BAD_SIZE)
            size = int(value)
        elif key == "BODY":
            if not isinstance(value, str) or (body := _BODY_TYPES.get(_keyword(value))) is None:
                raise CommandError(BAD_BODY)
            bodyType = body
        elif key == "SMTPUTF8":
            if value is not True:
                raise CommandError(BAD_SMTPUTF8)
            smtpUtf8 = True
        elif key == "REQUIRETLS":
            if value is not True:
                raise CommandError(BAD_REQUIRETLS)
            requireTls = True
        elif key == "RET":
            if not isinstance(value, str) or (ret := _keyword(value)) not in ("FULL", "HDRS"):
                raise CommandError(BAD_RET)
        elif key == "ENVID":
            if not isinstance(value, str) or len(value) > MAX_ENVID:
                raise CommandError(BAD_ENVID)
            envid = _xtext(value, BAD_ENVID)
        elif key == "AUTH":
            if not isinstance(value, str):
                raise CommandError(BAD_AUTH_PARAMETER)
            auth = value if value == "<>" else _xtext(value, BAD_AUTH_PARAMETER)
        else:
            raise CommandError(UNKNOWN_PARAMETER)
    if not smtpUtf8:
        _requireAscii(mailbox, params)
    dsn = _NO_ENVELOPE_DSN if ret is None and envid is None else EnvelopeDSN(ret, envid)
    return MailRequest(Address(mailbox, args), size, bodyType, smtpUtf8, requireTls, dsn, auth)


def parseRcpt(argument: bytes, smtpUtf8: bool, lenient: bool = False) -> Address:
    """
    Parse the argument of RCPT (C{b"TO:<a@example.com> NOTIFY=NEVER"}).

    The rules are those of L{parseMail}, except that C{<>} is refused and
    C{<Postmaster>} (any case, no domain; RFC 5321 section 4.1.1.3) is
    accepted and returned as written.

    @param smtpUtf8: Whether the transaction's MAIL carried C{SMTPUTF8}, which
        allows a non-ASCII path and parameter values.
    @param lenient: As for L{parseMail}.
    @return: The forward-path with its parameters; C{dsn} is always set
        (C{NOTIFY} values upper case, C{ORCPT} decoded after its address
        type: xtext, or the C{"\\x{...}"} escapes of a C{utf-8} address);
        C{args} keeps every value as sent.

    @raise CommandError: With C{RCPT_SYNTAX} when C{TO:} is missing,
        C{BAD_RECIPIENT_SYNTAX} or C{PATH_TOO_LONG} for a bad path, a 501
        5.5.4 for a malformed, repeated or badly valued parameter (as for
        L{parseMail}), C{UNKNOWN_PARAMETER}
        (555) for a parameter RCPT does not know, and C{UTF8_NOT_ALLOWED}
        (553) for a non-ASCII path without C{smtpUtf8}.
    """
    text = _decode(argument, BAD_RECIPIENT_SYNTAX, lenient)
    rest = _afterKeyword(text, "TO:", RCPT_SYNTAX, lenient)
    mailbox, params = _parsePath(rest, False, BAD_RECIPIENT_SYNTAX, lenient)
    if not params:
        # No parameters, as nearly always: only the path to check.
        if not (smtpUtf8 or mailbox.isascii()):
            raise CommandError(UTF8_NOT_ALLOWED)
        return Address(mailbox, {}, _NO_ADDRESS_DSN)
    args = _parseParameters(params)
    notify: tuple[str, ...] = ()
    orcpt = None
    for key, value in args.items():
        if key == "NOTIFY":
            if not isinstance(value, str):
                raise CommandError(BAD_NOTIFY)
            notify = _parseNotify(value)
        elif key == "ORCPT":
            orcpt = _parseOrcpt(value)
        else:
            raise CommandError(UNKNOWN_PARAMETER)
    if not smtpUtf8:
        _requireAscii(mailbox, params)
    dsn = AddressDSN(notify, orcpt) if args else _NO_ADDRESS_DSN
    return Address(mailbox, args, dsn)


def _decode(argument: bytes, badSyntax: Reply, lenient: bool) -> str:
    """
    Decode a MAIL or RCPT argument, refusing invalid UTF-8 and control
    characters (L{_badOctetReply} says with which reply).
    """
    try:
        text = argument.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(_badOctetReply(argument, badSyntax, lenient)) from None
    # Control characters (C0, DEL, C1) are never part of a MAIL or RCPT
    # argument; printable text holds none.
    if not text.isprintable() and CONTROL.search(text) is not None:
        raise CommandError(_badOctetReply(argument, badSyntax, lenient))
    return text


def _badOctetReply(argument: bytes, badSyntax: Reply, lenient: bool) -> Reply:
    """
    The refusal of a MAIL or RCPT argument holding a control character or
    an octet that is not UTF-8: C{badSyntax} (5.1.7 or 5.1.3) when one is
    in the path, or the path cannot be told apart from the parameters;
    else that of the first parameter holding one, an invalid command
    argument (RFC 3463 X.5.4): by its name when the command knows it
    (C{BAD_ENVID}, ...), C{BAD_PARAMETER_SYNTAX} otherwise.  Only refused
    arguments come here: the common ones pay nothing for it.
    """
    reverse = badSyntax is BAD_SENDER_SYNTAX
    # Each such character, and each octet that is not UTF-8 (a lone
    # surrogate once decoded so), becomes a NUL, which no path pattern
    # matches: a path found holds none of them.
    text = _BAD_CHARACTER.sub("\x00", argument.decode("utf-8", "surrogateescape"))
    try:
        rest = _afterKeyword(text, "FROM:" if reverse else "TO:", badSyntax, lenient)
        _, params = _parsePath(rest, reverse, badSyntax, lenient)
    except CommandError:
        return badSyntax
    for token in params.split(" "):
        if "\x00" in token:
            keyword = token.partition("=")[0]
            known = _PARAMETER_REPLIES[reverse] if _KEYWORD.fullmatch(keyword) else {}
            return known.get(keyword.upper(), BAD_PARAMETER_SYNTAX)
    return badSyntax


def _afterKeyword(text: str, keyword: str, syntax: Reply, lenient: bool) -> str:
    """
    Check C{text} starts with C{keyword} (C{"FROM:"} or C{"TO:"}, any
    case); return what follows, leading spaces removed.
    """
    size = len(keyword)
    if text[:size].upper() == keyword:
        return text[size:].lstrip(" ")
    if lenient and (match := _LENIENT_KEYWORD[keyword].match(text)) is not None:
        return text[match.end() :]
    raise CommandError(syntax)


def _parsePath(text: str, reverse: bool, badSyntax: Reply, lenient: bool) -> tuple[str, str]:
    """
    Parse the path at the start of C{text}.

    @param reverse: C{True} for a reverse-path (C{<>} allowed), C{False} for a
        forward-path (C{<Postmaster>} allowed).
    @return: The mailbox (C{""} for C{<>}) and the parameter text after it.
    """
    if not text.startswith("<"):
        if not lenient or not text:
            raise CommandError(badSyntax)
        token, _, params = text.partition(" ")
        return _parseWhole("<" + token + ">", reverse, badSyntax), params
    simple = _SIMPLE_PATH.match(text)
    if simple is not None:
        end = simple.end()
        at = text.index("@")
        # Its lengths are in characters, which are octets here.
        if end <= MAX_PATH and at <= MAX_LOCAL_PART + 1:
            if end < len(text) and text[end] != " ":
                raise CommandError(badSyntax)
            domain = text[at + 1 : end - 1]
            # Most domains are one short enough for a label, with a letter.
            if (len(domain) > MAX_LABEL or not domain.strip(DIGITS_AND_DOTS)) and (
                not validDomainName(domain)
            ):
                raise CommandError(badSyntax)
            return text[1 : end - 1], text[end + 1 :]
    match = _PATH.match(text)
    if match is not None:
        end = match.end()
        mailbox = _mailbox(match, badSyntax)
    elif reverse and text.startswith("<>"):
        end, mailbox = 2, ""
    elif not reverse and text[:12].lower() == "<postmaster>":
        end, mailbox = 12, text[1:11]
    elif lenient and ">" not in text and " " not in text and text != "<":
        # A path missing its closing bracket (a lone one is no path, not
        # the null sender).
        return _parseWhole(text + ">", reverse, badSyntax), ""
    else:
        raise CommandError(badSyntax)
    if end < len(text) and text[end] != " ":
        raise CommandError(badSyntax)
    return mailbox, text[end + 1 :]


def _parseWhole(path: str, reverse: bool, badSyntax: Reply) -> str:
    """
    Parse a path that must be all of C{path}.
    """
    mailbox, params = _parsePath(path, reverse, badSyntax, False)
    if params:
        raise CommandError(badSyntax)
    return mailbox


def _mailbox(match: re.Match[str], badSyntax: Reply) -> str:
    """
    Check the lengths and address literal of a matched path and return its
    mailbox, source route dropped.
    """
    path = match.group(0)
    local = match.group("local")
    domain = match.group("domain")
    if path.isascii():
        pathSize, localSize, domainSize = len(path), len(local), len(domain)
    else:
        pathSize = len(path.encode("utf-8"))
        localSize = len(local.encode("utf-8"))
        domainSize = len(domain.encode("utf-8"))
    if pathSize > MAX_PATH or localSize > MAX_LOCAL_PART or domainSize > MAX_DOMAIN:
        raise CommandError(PATH_TOO_LONG)
    if domain.startswith("["):
        if not validLiteral(domain[1:-1]):
            raise CommandError(badSyntax)
    elif not validDomainName(domain):
        raise CommandError(badSyntax)
    return local + "@" + domain


def _parseParameters(text: str) -> dict[str, str | bool]:
    """
    Split ESMTP parameters (RFC 5321 section 4.1.2, C{Mail-parameters}).

    @return: Upper-case keyword to value as sent, or C{True} when valueless.
    """
    args: dict[str, str | bool] = {}
    for token in text.split(" "):
        if not token:
            continue
        match = _PARAMETER.fullmatch(token)
        if match is None:
            raise CommandError(BAD_PARAMETER_SYNTAX)
        key = match.group(1).upper()
        if key in args:
            raise CommandError(DUPLICATE_PARAMETER)
        value = match.group(2)
        args[key] = True if value is None else value
    return args


def _requireAscii(mailbox: str, params: str) -> None:
    """
    Refuse non-ASCII where SMTPUTF8 does not apply (RFC 6531 section 3.4).
    """
    if not mailbox.isascii():
        raise CommandError(UTF8_NOT_ALLOWED)
    if not params.isascii():
        raise CommandError(NON_ASCII_PARAMETER)


def _keyword(value: str) -> str:
    """
    C{value} upper-cased as an ESMTP keyword is compared (ASCII case only,
    RFC 5234 section 2.3): a value with a non-ASCII letter is kept as it is,
    so that one Unicode would upper-case to ASCII letters (the dotless
    U+0131 to C{I}, the long s U+017F to C{S}) matches no keyword.
    """
    return value.upper() if value.isascii() else value


def _isDigits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def _xtext(value: str, bad: Reply) -> str:
    """
    Decode the xtext of C{ENVID}, C{ORCPT} or C{AUTH}, refusing a value
    that stands for a control character: RFC 3461 sections 4.2 and 4.4 want
    printable text before encoding, and RFC 4954 section 5 an address.
    """
    if "+" not in value:
        # The argument holds no raw control character (L{_decode}).
        return value
    try:
        decoded = decodeXtext(value)
    except ValueError:
        raise CommandError(bad) from None
    if CONTROL.search(decoded) is not None:
        raise CommandError(bad)
    return decoded


def _parseNotify(value: str) -> tuple[str, ...]:
    """
    Parse C{NOTIFY} (RFC 3461 section 4.1): C{NEVER} alone, or a comma list
    of C{SUCCESS}, C{FAILURE} and C{DELAY}; repeats are merged.
    """
    items = _keyword(value).split(",")
    if items == ["NEVER"]:
        return ("NEVER",)
    if not _NOTIFY.issuperset(items):
        raise CommandError(BAD_NOTIFY)
    return tuple(dict.fromkeys(items))


def _parseOrcpt(value: str | bool) -> str:
    """
    Parse C{ORCPT} (RFC 3461 section 4.2): C{addr-type ";" xtext}; for the
    C{utf-8} type (any case), C{";"} and a C{utf-8-addr-xtext} or
    C{utf-8-addr-unitext} instead (RFC 6533 section 3), checked as
    L{decodeUtf8Address} checks it, so that no malformed or forbidden
    C{\\x{HEX}} escape (one standing for NUL or CR) is passed on.

    @return: The address type as sent, C{";"}, and the decoded address.
    """
    if not isinstance(value, str) or len(value) > MAX_ORCPT:
        raise CommandError(BAD_ORCPT)
    addrType, semicolon, address = value.partition(";")
    if not semicolon or not address or _ADDR_TYPE.fullmatch(addrType) is None:
        raise CommandError(BAD_ORCPT)
    if addrType.lower() != "utf-8":
        return addrType + ";" + _xtext(address, BAD_ORCPT)
    try:
        return addrType + ";" + decodeUtf8Address(address)
    except ValueError:
        raise CommandError(BAD_ORCPT) from None
