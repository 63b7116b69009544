# -*- test-case-name: tests.test_replies -*-
"""
SMTP replies: the value class, their serialisation and the catalogue of every
reply text the server sends by itself.

Pure: bytes and values only.  Reply codes follow RFC 5321 section 4.2 and the
enhanced status codes RFC 3463; RFC 2034 section 3 exempts the greeting and the
replies to HELO/EHLO/LHLO from carrying one, so those replies have
C{enhanced=None}.
"""

from __future__ import annotations

from functools import lru_cache

from attrs import frozen

from twisted_smtpd._core.printable import UNSAFE, printable


@frozen(cache_hash=True)
class Reply:
    """
    One SMTP reply.

    @ivar code: The three-digit reply code.
    @ivar enhanced: The RFC 3463 enhanced status code (C{"2.1.0"}) or C{None}
        for replies that never carry one.
    @ivar lines: The text lines, at least one.
    """

    code: int
    enhanced: str | None
    lines: tuple[str, ...]


class CommandError(Exception):
    """
    A command could not be accepted; C{reply} says why.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply)
        self.reply = reply


def reply(code: int, enhanced: str | None, *lines: str) -> Reply:
    """
    Build a L{Reply} from positional text lines.
    """
    return Reply(code, enhanced, lines)


#: The most text octets of one reply line made from untrusted text: RFC 5321
#: section 4.5.3.1.5 allows 512 per line with the codes and CRLF.
MAX_TEXT_OCTETS = 480

#: The most lines of a reply made from untrusted text.
MAX_TEXT_LINES = 20

# Text of at most this many characters is at most MAX_TEXT_OCTETS in UTF-8.
_SHORT_TEXT = MAX_TEXT_OCTETS // 4


def sanitiseText(text: str) -> tuple[str, ...]:
    """
    Make untrusted text (from a handler, an option or a next hop's reply)
    safe to send: split it on line breaks and replace every other character
    that could break or disguise a line (those L{printable} escapes:
    controls, U+2028, U+2029, bidirectional controls) with a space, so that
    it can never inject a line into the dialogue.  At most
    L{MAX_TEXT_LINES} lines are kept, each cut to L{MAX_TEXT_OCTETS}
    octets; a cut is marked with C{"..."}.

    A C{str} subclass (a handler's text) is read as the plain C{str} of
    its characters: its own methods (C{isprintable}, C{__format__}) never
    decide what is sent.

    @return: One or more lines, none containing CR, LF or another such
        character.
    @raise TypeError: C{text} is not a C{str}.
    """
    if type(text) is not str:
        text = str.__str__(text)
    if len(text) <= _SHORT_TEXT and text.isprintable():
        # No line break, nothing unsafe, short: one line, as it is.
        return (text,)
    parts = text.replace("\r\n", "\n").replace("\r", "\n").split("\n", MAX_TEXT_LINES)
    if len(parts) > MAX_TEXT_LINES:
        parts = parts[:MAX_TEXT_LINES]
        parts[-1] += "..."
    return tuple(_cut(UNSAFE.sub(" ", part)) for part in parts)


def _cut(line: str) -> str:
    if len(line) <= _SHORT_TEXT:
        return line
    encoded = line.encode("utf-8")
    if len(encoded) <= MAX_TEXT_OCTETS:
        return line
    return encoded[: MAX_TEXT_OCTETS - 3].decode("utf-8", "ignore") + "..."


def defaultEnhanced(code: int) -> str:
    """
    The generic enhanced status code for a reply code (RFC 3463 section 3.1).
    """
    return f"{code // 100}.0.0"


def asciiEscaped(text: str) -> str:
    """
    C{text} made L{printable} and US-ASCII: every other character written
    as its escape (C{\xfc} for C{ü}, C{\u4f8b}), as RFC 5321 section 4.2
    has reply text.
    """
    return printable(text).encode("ascii", "backslashreplace").decode("ascii")


def formatReply(r: Reply, enhancedCodes: bool, utf8: bool = True) -> bytes:
    """
    Serialise C{r}, multi-line as in RFC 5321 section 4.2.1; a line holding
    a control character is escaped (L{printable}), so it stays one line.

    @param enhancedCodes: Whether to prefix every line's text with the
        enhanced status code (ENHANCEDSTATUSCODES is on).
    @param utf8: Whether the text may hold non-ASCII characters, sent as
        UTF-8: in a mail transaction whose MAIL carried C{SMTPUTF8}, whose
        client takes UTF-8 addresses in replies (RFC 6531 section
        3.7.4.1).  Otherwise each is written as its escape
        (L{asciiEscaped}), reply text being US-ASCII (RFC 5321 section
        4.2), and the line cut again to L{MAX_TEXT_OCTETS}.
    """
    code = str(r.code)
    prefix = f"{r.enhanced} " if enhancedCodes and r.enhanced else ""
    lines = r.lines or ("",)
    last = len(lines) - 1
    out = []
    for index, line in enumerate(lines):
        sep = " " if index == last else "-"
        # The last defence: a text from outside that reached a reply
        # unchecked can never end its line early and forge another reply.
        if not line.isprintable() and UNSAFE.search(line) is not None:
            line = printable(line)
        if not utf8 and not line.isascii():
            # str.isascii is a flag test: an ASCII line costs no more.
            line = _cut(asciiEscaped(line))
        out.append(f"{code}{sep}{prefix}{line}\r\n")
    return "".join(out).encode("utf-8", "replace")


# The catalogue.  Texts are plain and standard.


# The replies below are made for every session from a few texts: each is
# made once and the same object returned, so that the protocol's cache of
# encoded replies finds it by identity, without comparing texts.  The
# caches are bounded: the text of a HELO or EHLO reply holds the client's
# name, of which there are as many as clients.


@lru_cache(maxsize=64)
def greeting(name: str, banner: str | None, lmtp: bool) -> Reply:
    """
    The 220 greeting (RFC 5321 section 4.3.1).
    """
    kind = "LMTP" if lmtp else "ESMTP"
    text = f"{name} {kind}" + (f" {banner}" if banner else "")
    return Reply(220, None, (text,))


@lru_cache(maxsize=64)
def closing(name: str) -> Reply:
    """
    The 221 reply to QUIT.
    """
    return Reply(221, "2.0.0", (f"{name} Closing connection",))


@lru_cache(maxsize=256)
def ehlo(name: str, greetingText: str, extensions: tuple[str, ...]) -> Reply:
    """
    The 250 reply to EHLO or LHLO, listing the extensions.
    """
    del name
    return Reply(250, None, (greetingText, *extensions))


@lru_cache(maxsize=256)
def helo(greetingText: str) -> Reply:
    """
    The 250 reply to HELO.
    """
    return Reply(250, None, (greetingText,))


OK = reply(250, "2.0.0", "OK")
RESET = reply(250, "2.0.0", "Flushed")
MAIL_OK = reply(250, "2.1.0", "Accepted")
RCPT_OK = reply(250, "2.1.5", "Accepted")
DATA_OK = reply(250, "2.0.0", "OK: message queued")
START_DATA = reply(354, None, "End data with <CR><LF>.<CR><LF>")
VRFY = reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = reply(214, "2.0.0", "See https://www.rfc-editor.org/rfc/rfc5321")

TIMEOUT = reply(421, "4.4.2", "Error: timeout exceeded")
SHUTDOWN = reply(421, "4.3.2", "Service shutting down, closing connection")
TOO_MANY_CLIENTS = reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_FROM_ADDRESS = reply(
    421, "4.7.0", "Error: too many connections from your address, try again later"
)
CONNECTION_RATE = reply(
    421, "4.7.0", "Error: too many connections from your address recently, try again later"
)
AUTH_RATE = reply(450, "4.7.1", "Error: too many AUTH commands from your address, try again later")
TOO_SLOW = reply(421, "4.4.2", "Error: data transfer too slow")
HANDLER_TIMEOUT = reply(421, "4.3.0", "Error: timeout waiting for the mail system, try again later")
#: Replies that end a session with a log line of their own (a stop, the
#: deadlines), not as a refusal.
LOGGED_APART = frozenset({SHUTDOWN, TIMEOUT, HANDLER_TIMEOUT, TOO_SLOW})
TOO_MANY_ERRORS = reply(421, "4.7.0", "Too many errors, closing connection")
HTTP_REFUSED = reply(421, "4.7.0", "This is an SMTP server, not an HTTP server")
TLS_WITHOUT_STARTTLS = reply(421, "4.7.0", "Error: TLS handshake without STARTTLS")
LOCAL_ERROR = reply(451, "4.3.0", "Error: internal error, try again later")
TOO_MANY_RECIPIENTS = reply(452, "4.5.3", "Error: too many recipients")

UNKNOWN_COMMAND = reply(500, "5.5.2", "Error: command not recognized")
LINE_TOO_LONG = reply(500, "5.5.6", "Error: line too long")
SYNTAX_ERROR = reply(501, "5.5.4", "Error: syntax error in parameters or arguments")
NOT_IMPLEMENTED = reply(502, "5.5.1", "Error: command not implemented")
NEED_HELO = reply(503, "5.5.1", "Error: send HELO/EHLO first")
NEED_LHLO = reply(503, "5.5.1", "Error: send LHLO first")
NEED_MAIL = reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = reply(503, "5.5.1", "Error: need RCPT command")
NESTED_MAIL = reply(503, "5.5.1", "Error: nested MAIL command")
SIZE_EXCEEDED_MAIL = reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size")
SIZE_EXCEEDED = reply(552, "5.3.4", "Error: message exceeds fixed maximum message size")
BARE_NEWLINE = reply(550, "5.5.2", "Error: bare <CR> or <LF> received in message")
UNKNOWN_PARAMETER = reply(555, "5.5.4", "Error: unsupported MAIL FROM/RCPT TO parameter")
UTF8_NOT_ALLOWED = reply(553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8")
REQUIRETLS_NEEDS_TLS = reply(530, "5.7.10", "REQUIRETLS needs a TLS session")

# Command argument syntax (RFC 5321 sections 4.1.1 and 4.1.2, RFC 3461, RFC
# 6531).  Replies to HELO/EHLO/LHLO carry no enhanced code (RFC 2034 section 3).
HELO_REQUIRES_DOMAIN = reply(501, None, "Syntax: EHLO hostname")
# The same for HELO and LHLO: each names the command sent, as Postfix does.
HELO_SYNTAX = reply(501, None, "Syntax: HELO hostname")
LHLO_SYNTAX = reply(501, None, "Syntax: LHLO hostname")
BAD_HELO_HOSTNAME = reply(501, None, "Error: invalid characters in hostname")
# RFC 5321 section 4.5.3.1.2: a domain is at most 255 octets.
HELO_TOO_LONG = reply(501, None, "Error: hostname too long")
MAIL_SYNTAX = reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
RCPT_SYNTAX = reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
BAD_SENDER_SYNTAX = reply(501, "5.1.7", "Error: bad sender address syntax")
BAD_RECIPIENT_SYNTAX = reply(501, "5.1.3", "Error: bad recipient address syntax")
PATH_TOO_LONG = reply(501, "5.5.4", "Error: path too long")
BAD_PARAMETER_SYNTAX = reply(501, "5.5.4", "Error: bad parameter syntax")
DUPLICATE_PARAMETER = reply(501, "5.5.4", "Error: duplicate parameter")
NON_ASCII_PARAMETER = reply(501, "5.5.4", "Error: non-ASCII parameter value requires SMTPUTF8")
BAD_SIZE = reply(501, "5.5.4", "Error: bad SIZE syntax")
BAD_BODY = reply(501, "5.5.4", "Error: bad BODY keyword syntax")
BAD_SMTPUTF8 = reply(501, "5.5.4", "Error: SMTPUTF8 takes no value")
BAD_REQUIRETLS = reply(501, "5.5.4", "Error: REQUIRETLS takes no value")
BAD_RET = reply(501, "5.5.4", "Error: bad RET syntax")
BAD_ENVID = reply(501, "5.5.4", "Error: bad ENVID syntax")
BAD_AUTH_PARAMETER = reply(501, "5.5.4", "Error: bad AUTH parameter syntax")
BAD_NOTIFY = reply(501, "5.5.4", "Error: bad NOTIFY syntax")
BAD_ORCPT = reply(501, "5.5.4", "Error: bad ORCPT syntax")

# Protocol
BINARYMIME_NEEDS_BDAT = reply(503, "5.5.1", "Error: BODY=BINARYMIME requires BDAT")
# DATA or BDAT once the handler took every recipient away (Postfix's answer
# when none is valid).
NO_VALID_RECIPIENTS = reply(554, "5.5.1", "Error: no valid recipients")

# AUTH and TLS (RFC 4954 sections 4 and 6)
AUTH_UNRECOGNIZED = reply(504, "5.5.4", "Unrecognized authentication type")
# RFC 4954 section 4 asks for 501 and names no enhanced code; 5.7.0 (other
# security status, RFC 3463 section 3.8), as Postfix's smtpd answers.
AUTH_ABORTED = reply(501, "5.7.0", "Authentication aborted")
AUTH_BAD_BASE64 = reply(501, "5.5.2", "Error: invalid base64")
AUTH_MALFORMED = reply(501, "5.5.2", "Error: malformed authentication data")
AUTH_INITIAL_RESPONSE_NOT_ALLOWED = reply(501, "5.5.4", "Error: initial response not allowed")
XOAUTH2_FAILURE_DONE = reply(535, "5.7.8", "Error: authentication credentials invalid")
READY_FOR_TLS = reply(220, "2.0.0", "Ready to start TLS")
# RFC 3207 names no reply for STARTTLS on an encrypted session: 554, as
# Postfix and Exim answer it.
ALREADY_SECURE = reply(554, "5.5.1", "Error: TLS already active")
TLS_UNAVAILABLE = reply(454, "4.7.0", "TLS not available due to temporary reason")
TOO_MANY_UNAUTHENTICATED = reply(421, "4.7.0", "Error: too many unauthenticated commands")
AUTH_OK = reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = reply(535, "5.7.8", "Error: authentication credentials invalid")
# RFC 4616 section 2: the authentication identity may not act as the
# authorization identity asked for (Postfix with Cyrus SASL's text).
AUTH_NOT_AUTHORIZED = reply(535, "5.7.8", "Error: authentication failed: authorization failure")
# RFC 4954 section 6: what decides AUTH failed (the handler's bug, its
# database down), not the credentials; the client should not ask for
# another password.
AUTH_TEMPORARY_FAILURE = reply(454, "4.7.0", "Temporary authentication failure")
AUTH_NOT_ENABLED = reply(503, "5.5.1", "Error: authentication not enabled")
ALREADY_AUTHENTICATED = reply(503, "5.5.1", "Error: already authenticated")
AUTH_IN_TRANSACTION = reply(503, "5.5.1", "Error: MAIL transaction in progress")
AUTH_NEEDS_TLS = reply(538, "5.7.11", "Error: must issue a STARTTLS command first")
TOO_MANY_AUTH_FAILURES = reply(421, "4.7.0", "Error: too many failed authentication attempts")


def authRequired(text: str) -> Reply:
    """
    The 530 reply to MAIL before AUTH, with the configured text.
    """
    return Reply(530, "5.7.0", sanitiseText(text))


def challenge(text: str) -> Reply:
    """
    A 334 SASL challenge (RFC 4954 section 4); C{text} is already base64.
    """
    return Reply(334, None, (text,))


# XCLIENT, XFORWARD and PROXY (Postfix's XCLIENT_README and XFORWARD_README)
BAD_ATTRIBUTE = reply(501, "5.5.4", "Error: bad attribute syntax")
NOT_AUTHORIZED = reply(550, "5.7.0", "Error: insufficient authorization")
UNTRUSTED_PROXY = reply(421, "4.7.0", "Error: PROXY header from an untrusted address")
MALFORMED_PROXY = reply(421, "4.5.0", "Error: malformed PROXY header")
PROXY_TIMEOUT = reply(421, "4.4.2", "Error: timeout waiting for the PROXY header")


def badAttributeValue(name: str, value: str) -> Reply:
    """
    The 501 reply to an XCLIENT or XFORWARD attribute whose value is
    invalid, naming it as Postfix does (C{Bad ADDR syntax: ...}); the value
    is made L{printable} and US-ASCII (every other character written as
    its escape, C{\\xfc}, as RFC 5321 section 4.2 has reply text), and the
    text cut to L{MAX_TEXT_OCTETS} (marked with C{...}) so that the reply
    is one line of at most 512 octets however long the value and its
    escapes.
    """
    return Reply(501, "5.5.4", (_cut(f"Bad {name} syntax: {asciiEscaped(value)}"),))


# CHUNKING (RFC 3030)
BDAT_SYNTAX = reply(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]")
BDAT_IN_PROGRESS = reply(503, "5.5.1", "Error: BDAT transfer in progress")
# A chunk after the one that took its message past the size limit.
BDAT_DISCARDED = reply(
    552, "5.3.4", "Error: chunk discarded, message exceeds fixed maximum message size"
)
# A BDAT line whose size cannot be read: the octets that follow cannot be
# told from commands, so the session ends (as Postfix does).
BDAT_SYNTAX_CLOSE = reply(521, "5.5.4", "Syntax: BDAT chunk-size [LAST]")


def chunkReceived(octets: int) -> Reply:
    """
    The 250 reply to a BDAT chunk that is not the last one.
    """
    return Reply(250, "2.0.0", (f"OK: {octets} octets received",))


def loggedApart(reply: Reply) -> bool:
    """
    Whether C{reply} is one of L{LOGGED_APART}, the server's own: a
    handler's refusal with the same code and text is still a refusal.
    """
    return any(reply is apart for apart in LOGGED_APART)
