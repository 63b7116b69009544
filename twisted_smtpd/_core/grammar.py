# -*- test-case-name: tests.test_grammar -*-
"""
The pure SMTP grammar: command lines to L{Command}, the phase table that
orders commands (RFC 5321 section 4.1.4), HELO/EHLO/LHLO arguments, and
(re-exported from L{twisted_smtpd._core.address}) MAIL and RCPT arguments and
xtext.

Bytes and values in; values, or L{CommandError} carrying the reply to send,
out.  Nothing here touches a reactor or a transport.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import NamedTuple

from twisted_smtpd._core.address import (
    MailRequest,
    decodeXtext,
    encodeXtext,
    parseMail,
    parseRcpt,
)
from twisted_smtpd._core.replies import (
    BAD_ATTRIBUTE,
    BAD_HELO_HOSTNAME,
    BDAT_SYNTAX,
    HELO_REQUIRES_DOMAIN,
    HELO_SYNTAX,
    HELO_TOO_LONG,
    LHLO_SYNTAX,
    NEED_HELO,
    NEED_LHLO,
    NEED_MAIL,
    NEED_RCPT,
    NESTED_MAIL,
    UNKNOWN_COMMAND,
    CommandError,
    Reply,
)

__all__ = [
    "AUTH_LINE_LIMIT",
    "LMTP_REFUSED",
    "SMTP_REFUSED",
    "XCLIENT_ATTRIBUTES",
    "XFORWARD_ATTRIBUTES",
    "Command",
    "CommandError",
    "MailRequest",
    "Phase",
    "Verb",
    "checkPhase",
    "decodeXtext",
    "encodeXtext",
    "lineLimit",
    "looksLikeBdat",
    "looksLikeHTTP",
    "looksLikeTLS",
    "parseAttributes",
    "parseBdat",
    "parseCommand",
    "parseHelo",
    "parseMail",
    "parseRcpt",
]


class Phase(enum.Enum):
    """
    Where a session stands in the command sequence.
    """

    # Members are singletons: hash them by identity, in C, not by name.
    __hash__ = object.__hash__

    CONNECTED = "connected"  # banner sent, no HELO yet
    GREETED = "greeted"  # HELO/EHLO/LHLO accepted, no transaction
    MAIL = "mail"  # reverse-path accepted
    RCPT = "rcpt"  # at least one recipient accepted


class Verb(enum.Enum):
    """
    The commands the server knows; each value is the upper-case name.
    """

    # Members are singletons: hash them by identity, in C, not by name.
    __hash__ = object.__hash__

    EHLO = "EHLO"
    HELO = "HELO"
    LHLO = "LHLO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    HELP = "HELP"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    XCLIENT = "XCLIENT"
    XFORWARD = "XFORWARD"


class Command(NamedTuple):
    """
    One command line, split.  A named tuple: made once per command line,
    it costs less than an attrs class.

    @ivar verb: The command.
    @ivar argument: The text after the verb and the spaces separating it,
        trailing spaces and tabs removed; C{b""} when there is none.
    """

    verb: Verb
    argument: bytes


_VERBS: dict[bytes, Verb] = {verb.value.encode("ascii"): verb for verb in Verb}
_LONGEST_VERB = max(len(name) for name in _VERBS)


def parseCommand(line: bytes) -> Command:
    """
    Split one command line (without its CRLF) into verb and argument.

    The verb is case-insensitive and ends at the first space or at the end
    of the line, so C{b"MAILX"} is unknown and C{b"mail from:<a>"} is MAIL.

    @raise CommandError: With C{UNKNOWN_COMMAND} (500) for an empty line or
        a verb the server does not know.
    """
    space = line.find(b" ")
    if space == -1:
        word = line.rstrip(b" \t")
        argument = b""
    else:
        word = line[:space]
        argument = line[space + 1 :].lstrip(b" ").rstrip(b" \t")
    if len(word) > _LONGEST_VERB:
        raise CommandError(UNKNOWN_COMMAND)
    verb = _VERBS.get(word.upper())
    if verb is None:
        raise CommandError(UNKNOWN_COMMAND)
    return Command(verb, argument)


#: How much longer than the configured limit a MAIL or RCPT line may be: ESMTP
#: parameters raise the limit (RFC 5321 section 4.5.3.1.4), MAIL's by 500
#: octets for AUTH (RFC 4954 section 5) plus SIZE (RFC 1870), BODY, RET and a
#: 100-character ENVID (RFC 3461), SMTPUTF8 and REQUIRETLS, RCPT's by NOTIFY
#: and a 500-character ORCPT (RFC 3461): each under 700 in all.
PARAMETER_ALLOWANCE = 1024


#: RFC 4954 section 4: an AUTH command line (and each line of its exchange)
#: may be up to 12288 octets.
AUTH_LINE_LIMIT = 12288


def lineLimit(line: bytes, maxLineLength: int) -> int:
    """
    The longest a command line (without its CRLF) may be in octets: the
    configured C{maxLineLength}, more for MAIL and RCPT by
    L{PARAMETER_ALLOWANCE}, and L{AUTH_LINE_LIMIT} for AUTH.
    """
    word = line[:5].upper()
    if word == b"MAIL " or word == b"RCPT ":
        return maxLineLength + PARAMETER_ALLOWANCE
    if word == b"AUTH ":
        return max(maxLineLength, AUTH_LINE_LIMIT)
    return maxLineLength


_HTTP_METHODS = frozenset(
    {b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT", b"PATCH", b"TRACE"}
)
_HTTP_HEADERS = frozenset(
    {
        b"host:",
        b"user-agent:",
        b"accept:",
        b"accept-charset:",
        b"accept-encoding:",
        b"accept-language:",
        b"authorization:",
        b"cache-control:",
        b"connection:",
        b"content-length:",
        b"content-type:",
        b"cookie:",
        b"dnt:",
        b"expect:",
        b"if-modified-since:",
        b"if-none-match:",
        b"origin:",
        b"pragma:",
        b"proxy-authorization:",
        b"proxy-connection:",
        b"range:",
        b"referer:",
        b"sec-websocket-key:",
        b"sec-websocket-version:",
        b"te:",
        b"transfer-encoding:",
        b"upgrade:",
        b"upgrade-insecure-requests:",
        b"x-forwarded-for:",
    }
)
_HTTP_VERSION = re.compile(rb"\sHTTP/\d(?:\.\d)?[ \t]*\Z", re.IGNORECASE)


def looksLikeHTTP(line: bytes) -> bool:
    """
    Whether a line the server could not parse as a command is an HTTP request
    line or header: a browser or a cross-protocol attack talking to the SMTP
    port, to be answered with 421 and disconnected.

    @return: C{True} for a line starting with an HTTP method and a space, a
        line ending in C{" HTTP/1.1"} (or another version), or a line starting
        with a common HTTP header name and its colon.
    """
    word, space, _ = line.partition(b" ")
    if space and word.upper() in _HTTP_METHODS:
        return True
    if _HTTP_VERSION.search(line) is not None:
        return True
    return word.lower() in _HTTP_HEADERS


def looksLikeTLS(line: bytes) -> bool:
    """
    Whether a line the server could not parse as a command, or the start
    of one, is a TLS ClientHello: a client speaking TLS at once (one meant
    for an implicit TLS port, a scanner) to a session that wants STARTTLS
    first, to be answered with 421 and disconnected, as Postfix's
    C{smtpd_forbidden_commands} does for a line that does not begin with a
    letter.

    @return: C{True} for a TLS handshake record (content type 22, version
        3.x), or an SSL 2.0 style ClientHello (a two-octet length with its
        high bit set, message type 1, version 2 or 3.x).
    """
    if line[:2] == b"\x16\x03":
        return True
    return len(line) >= 4 and line[0] & 0x80 != 0 and line[2] == 1 and line[3] in (0, 3)


def looksLikeBdat(line: bytes) -> bool:
    """
    Whether a command line (without its CRLF) starts with the BDAT verb
    followed by a space, a tab or nothing: a line the client may have meant
    as BDAT, with octets following it, even if it cannot be parsed.
    """
    return line[:4].upper() == b"BDAT" and line[4:5] in (b"", b" ", b"\t")


def _phaseTable(lmtp: bool) -> dict[tuple[Verb, Phase], Reply]:
    """
    The commands refused in each phase, with the 503 (or 500) reply.
    """
    needHello = NEED_LHLO if lmtp else NEED_HELO
    table: dict[tuple[Verb, Phase], Reply] = {}
    for verb in (Verb.MAIL, Verb.RCPT, Verb.DATA, Verb.BDAT):
        table[verb, Phase.CONNECTED] = needHello
    table[Verb.MAIL, Phase.MAIL] = NESTED_MAIL
    table[Verb.MAIL, Phase.RCPT] = NESTED_MAIL
    table[Verb.RCPT, Phase.GREETED] = NEED_MAIL
    for verb in (Verb.DATA, Verb.BDAT):
        table[verb, Phase.GREETED] = NEED_MAIL
        table[verb, Phase.MAIL] = NEED_RCPT
    unknown = (Verb.HELO, Verb.EHLO) if lmtp else (Verb.LHLO,)
    for verb in unknown:
        for phase in Phase:
            table[verb, phase] = UNKNOWN_COMMAND
    return table


#: The commands refused in each phase of an SMTP session, with the reply
#: (L{checkPhase}'s table, for a caller that looks it up itself).
SMTP_REFUSED: Mapping[tuple[Verb, Phase], Reply] = _phaseTable(False)
#: The same for an LMTP session.
LMTP_REFUSED: Mapping[tuple[Verb, Phase], Reply] = _phaseTable(True)


def checkPhase(verb: Verb, phase: Phase, lmtp: bool) -> None:
    """
    Check C{verb} may be given in C{phase} (RFC 5321 section 4.1.4; RFC 2033
    section 4.1 for LMTP).

    MAIL, RCPT, DATA and BDAT need a greeting first; MAIL cannot nest; RCPT
    needs MAIL; DATA and BDAT need a recipient.  In LMTP, HELO and EHLO are
    unknown; in SMTP, LHLO is.  Every other command is allowed in every
    phase: the finer rules of STARTTLS, AUTH, XCLIENT and the like are the
    caller's.

    @raise CommandError: With a 503 reply (C{NEED_HELO}, C{NEED_LHLO},
        C{NESTED_MAIL}, C{NEED_MAIL}, C{NEED_RCPT}), or C{UNKNOWN_COMMAND}
        for the greeting of the other protocol.
    """
    refused = (LMTP_REFUSED if lmtp else SMTP_REFUSED).get((verb, phase))
    if refused is not None:
        raise CommandError(refused)


#: The longest HELO, EHLO or LHLO name in octets: a domain or address
#: literal (RFC 5321 section 4.5.3.1.2).
MAX_HELO = 255

# C0 controls, DEL and the C1 controls (U+0080 to U+009F, UTF-8 C2 80 to
# C2 9F), as MAIL and RCPT refuse them.
_HELO_CONTROL = re.compile(rb"[\x00-\x1f\x7f]|\xc2[\x80-\x9f]")


#: The 501 for a greeting without a name, naming the command sent.
_HELO_SYNTAX = {"EHLO": HELO_REQUIRES_DOMAIN, "HELO": HELO_SYNTAX, "LHLO": LHLO_SYNTAX}


def parseHelo(argument: bytes, lenient: bool = False, verb: str = "EHLO") -> str:
    """
    Parse the argument of HELO, EHLO or LHLO: the client's domain or address
    literal (RFC 5321 section 4.1.1.1).

    As permissive as Postfix: any printable name is accepted (underscores,
    trailing dots, bare words such as C{localhost}, unchecked literals), and
    the text after the first space is ignored.  Control characters anywhere
    in the argument (C0, DEL and C1, as for MAIL and RCPT) are refused, and
    so is a name longer than a domain can be (L{MAX_HELO}, 255 octets): it
    is written into C{Received:} headers and log lines.

    @param lenient: Also accept a name that is not UTF-8 (old clients send
        their Windows host name in a legacy encoding); its undecodable bytes
        become U+FFFD.
    @param verb: The command, C{"EHLO"}, C{"HELO"} or C{"LHLO"}, that the
        reply to an empty argument names.
    @return: The name as sent.
    @raise CommandError: With C{HELO_REQUIRES_DOMAIN} (C{HELO_SYNTAX},
        C{LHLO_SYNTAX} for those verbs) when the argument is empty,
        C{BAD_HELO_HOSTNAME} for control characters or (unless lenient)
        invalid UTF-8, or C{HELO_TOO_LONG} for a name over L{MAX_HELO}
        octets.
    """
    name = argument.lstrip(b" ").split(b" ", 1)[0]
    if not name:
        raise CommandError(_HELO_SYNTAX[verb])
    if len(name) > MAX_HELO:
        raise CommandError(HELO_TOO_LONG)
    if _HELO_CONTROL.search(argument) is not None:
        raise CommandError(BAD_HELO_HOSTNAME)
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        if lenient:
            return name.decode("utf-8", "replace")
        raise CommandError(BAD_HELO_HOSTNAME) from None


XCLIENT_ATTRIBUTES = frozenset(
    {"NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT"}
)
XFORWARD_ATTRIBUTES = frozenset({"NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"})
_ATTRIBUTE = re.compile(rb"([A-Za-z]+)=([\x21-\x7e]*)")


def parseAttributes(argument: bytes, names: frozenset[str]) -> dict[str, str]:
    """
    Parse the C{NAME=value ...} arguments of Postfix's XCLIENT and XFORWARD
    commands; values are xtext (RFC 3461 section 4).

    @param names: The attribute names allowed, upper case.
    @return: The attributes, names upper case, values decoded.
    @raise CommandError: 501 for an empty argument, an unknown name or a
        malformed value.
    """
    words = argument.split()
    if not words:
        raise CommandError(BAD_ATTRIBUTE)
    attributes: dict[str, str] = {}
    for word in words:
        match = _ATTRIBUTE.fullmatch(word)
        if match is None:
            raise CommandError(BAD_ATTRIBUTE)
        name = match.group(1).decode("ascii").upper()
        if name not in names:
            raise CommandError(BAD_ATTRIBUTE)
        try:
            attributes[name] = decodeXtext(match.group(2).decode("ascii"))
        except ValueError as e:
            raise CommandError(BAD_ATTRIBUTE) from e
    return attributes


_BDAT = re.compile(rb"(\d{1,18})(?:[ \t]+(LAST))?", re.IGNORECASE)


def parseBdat(argument: bytes) -> tuple[int, bool]:
    """
    Parse the arguments of C{BDAT chunk-size [LAST]} (RFC 3030 section 2).

    A size that parses means that many octets follow the line, whether the
    command is then accepted or refused.

    @return: The chunk size and whether it is the last chunk.
    @raise CommandError: 501 for anything else.
    """
    match = _BDAT.fullmatch(argument)
    if match is None:
        raise CommandError(BDAT_SYNTAX)
    return int(match.group(1)), match.group(2) is not None
