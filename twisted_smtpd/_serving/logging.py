# -*- test-case-name: tests.test_tap -*-
"""
Logs of C{twistd smtpd}: one line per session event, and JSON output.

L{SessionLogger} is a server observer (L{SMTPServerFactory.addObserver}):
it turns the per-session and per-message events (connect, auth, message,
close) into C{twisted.logger} events in the C{twisted_smtpd.session}
namespace, each carrying the session id and its values as fields.  Events
of single commands (HELO, MAIL, RCPT, rejections) return at once, so the
per-command path does no logging work.

L{jsonLogObserver} (defined in L{twisted_smtpd._serving.jsonlines}) writes
every log event as one JSON object per line; C{twistd smtpd --log-format
json} installs it, and
C{twistd --logger twisted_smtpd._serving.logging.jsonLogObserver} does the same for
any C{twistd} plugin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from twisted_smtpd._core.grammar import Verb
from twisted_smtpd._core.optionvalues import normaliseHosts
from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.replies import TOO_MANY_AUTH_FAILURES, Reply
from twisted_smtpd._core.session import Session, TLSInfo, unixPeer
from twisted_smtpd._core.xclient import UNAVAILABLE, forwardedClient

# The JSON lines, in their own module; named here too, where
# C{twistd --logger twisted_smtpd._serving.logging.jsonLogObserver} finds it.
from twisted_smtpd._serving.jsonlines import jsonDefault as jsonDefault
from twisted_smtpd._serving.jsonlines import jsonEvent as jsonEvent
from twisted_smtpd._serving.jsonlines import jsonLogObserver as jsonLogObserver

if TYPE_CHECKING:
    from twisted_smtpd._serving.context import SessionControl
    from twisted_smtpd._serving.logwriter import BufferedLogWriter

NAMESPACE = "twisted_smtpd.session"

_log = Logger(namespace=NAMESPACE)

#: The most recipients (and, in LMTP, their reply codes) a C{message} line
#: names; the others are counted (C{to <a@example.com>,...,<j@example.com>
#: and 990 more: 250,...,250 and 990 more}), so that the line stays a few
#: kilobytes long however many recipients a message has.
MAX_LOGGED_RECIPIENTS = 10

#: The fields of a text line: none, since only its text is written
#: (read-only, shared by every line).
_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})


def unlogged(p: SessionControl) -> bool:
    """
    Whether C{p}'s client is one of C{ignoredHosts}, whose sessions leave
    no log line (a health check): not for a deadline it missed, a TLS
    handshake or session it broke off, or a message it dropped.  A
    handler's own deadline is the server's affair and is logged for every
    client.
    """
    return p.session.remoteAddress[0] in p.options.ignoredHosts


def formatPeer(address: tuple[str, int]) -> str:
    """
    C{host:port}, C{[v6]:port}, or for a UNIX socket its path (a
    listener's) or C{unix} (a client's, which has none).
    """
    host, port = address
    if not port and (not host or "/" in host):
        # hostPort's (path, 0): no IP address, no port.
        return loggable(host) if host else "unix"
    host = loggable(host)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def loggable(value: str | bytes | None, limit: int = 200) -> str:
    """
    Text from outside (a client's argument, a PTR name, a user name) made
    safe for one log line: bytes are decoded as UTF-8 (an undecodable byte
    is escaped), it is cut at C{limit} characters, and every character that
    could break or disguise the line is escaped by L{printable}.
    """
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value[: limit * 4].decode("utf-8", "surrogateescape")
    if len(value) > limit:
        value = value[:limit] + "..."
    return printable(value)


def _clientCertificate(tls: TLSInfo) -> tuple[str | None, str | None]:
    """
    The client certificate of a TLS session for its log line, as Postfix
    tells a C{Trusted} from an C{Untrusted} one and names it by its
    fingerprint (C{check_ccert_access}): C{"verified"} or C{"unverified"}
    and its SHA-256 fingerprint (C{AB:CD:...}), or C{(None, None)} without
    one.  Never its subject: the client wrote it (control characters,
    escape sequences, names that are not UTF-8), and it proves nothing
    unverified.
    """
    if tls.peerCertificate is None:
        return None, None
    trust = "verified" if tls.peerCertificateVerified else "unverified"
    return trust, tls.peerCertificate.digest("sha256").decode("ascii")


def clientAddress(address: tuple[str, int]) -> str:
    """
    The client's address as the log lines name it: its IP address, or
    C{unix} for a UNIX socket's client whatever path it bound its socket to.
    That path is the client's own choice (a line break, C{x][192.0.2.1}, a
    host name, C{192.0.2.01}): written, it would let a local client forge
    a line, or have a reader such as fail2ban take it for an address to
    ban.

    @param address: The client's, as
        L{hostPort <twisted_smtpd._core.session.hostPort>} gives it.
    """
    return "unix" if unixPeer(address) else address[0]


def formatClient(session: Session) -> str:
    """
    The client as Postfix writes it: C{name[1.2.3.4]}, or C{unknown[1.2.3.4]}
    without a reverse name; C{localhost[unix]} for a UNIX socket's client
    (L{clientAddress}).
    """
    name = session.clientHostname
    if not name or name.startswith("["):
        name = "unknown"
    return f"{loggable(name, 255)}[{clientAddress(session.remoteAddress)}]"


def commandWord(word: bytes) -> str:
    """
    The first word of a command line that did not parse, for the C{reject:}
    line: upper-cased and L{loggable}, and every white-space character left
    in it (a no-break or em space: the line was split at ASCII white space
    only) escaped, so that the word stays one word to a reader and to a
    filter such as fail2ban's (C{\\S+}, which Unicode white space ends).
    """
    text = loggable(word.upper(), 16)
    if not any(c.isspace() for c in text):
        return text
    return "".join(
        (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") if c.isspace() else c
        for c in text
    )


def _namedAddress(argument: bytes) -> str:
    """
    The C{<address>} a MAIL or RCPT argument names, for a log line: what
    follows its colon (nothing for C{FROM:} alone, as for C{FROM:<>}), or the
    whole argument when it has no colon.
    """
    start = argument.find(b"<")
    if start >= 0:
        end = argument.find(b">", start)
        if end > 0:
            return loggable(argument[start + 1 : end])
    head, colon, rest = argument.partition(b":")
    return loggable(rest.strip() if colon else head.strip())


def refusal(
    reply: Reply, verb: Verb | None, argument: bytes | None, auth: Any, closing: bool
) -> dict[str, Any]:
    """
    The data of a C{reject} event: the C{reply}, the C{command} (C{None} for
    a line that did not parse, or at connect) and its C{argument}, whether
    the session is C{closing}, whether the refusal came at C{connect},
    before any line; for AUTH the C{mechanism} (as AUTH parsed it, one the
    server offers) and the C{username} of the request this refusal decides,
    or C{None} for any other refusal (a syntax error, a limit closing the
    session), the C{failures} so far, never the credentials, and whether
    it is the C{lockout} (C{maxAuthFailures} reached).
    A connection refused for a limit also has the C{limit} (added by the
    protocol), described as it was logged.

    @param argument: The refused line's argument (the whole line when it
        did not parse), or C{None} before the first line.
    @param auth: The session's L{AuthCommand}, or C{None}.
    """
    data: dict[str, Any] = {"reply": reply, "closing": closing, "connect": argument is None}
    if argument is None:
        argument = b""
    if verb is Verb.AUTH:
        # A limit closing the session is never the refusal of a request,
        # even one refused just before.
        request = None if auth is None or closing else auth.request
        # The mechanism AUTH parsed and knows, never the client's bytes.
        data["mechanism"] = None if request is None else request.method
        data["username"] = None if request is None else request.username
        authzid = None if request is None else request.authorizationIdentity
        data["authzid"] = authzid if authzid and authzid != data["username"] else None
        data["failures"] = 0 if auth is None else auth.failures
        data["lockout"] = closing and reply == TOO_MANY_AUTH_FAILURES
        argument = b""
    data["command"] = None if verb is None else verb.value
    data["argument"] = argument
    return data


class SessionLogger:
    """
    Log the events of every session at info level, except sessions from
    C{ignoredHosts}: connect, TLS, AUTH (success and failure), the AUTH
    lockout, every refused command, each message, and close.

    The lines follow Postfix's where one exists (C{reject: RCPT from
    name[1.2.3.4]: 550 5.1.1 <x@example.com>: ...}), so that fail2ban and
    pflogsumm style tools can read them.  Every event carries C{session} (the
    id) and its values as fields; see C{docs/operator.md} for each line.
    Events of accepted commands (HELO, MAIL, RCPT) return at once, so the
    per-command path does no logging work.
    Every text from outside (names, addresses, user names, reply texts) is
    escaped by L{twisted_smtpd._core.printable.printable} and cut to length
    first, in the fields as in the formatted line.
    """

    #: The events it logs, the only ones it is told of
    #: (L{SMTPServer.addObserver <twisted_smtpd.SMTPServer.addObserver>}).
    events = frozenset({"connect", "message", "close", "auth", "reject", "secure"})

    #: The events it logs with C{refusalsOnly} (C{twistd smtpd --quiet}):
    #: refused commands, failed AUTH and its lockout, limits closing a
    #: session; never the lines of every connection and message.
    refusals = frozenset({"reject"})

    def __init__(
        self,
        ignoredHosts: Iterable[str] = (),
        writer: BufferedLogWriter | None = None,
        refusalsOnly: bool = False,
    ) -> None:
        """
        @param ignoredHosts: Client IP addresses whose sessions are not
            logged (health checks, monitoring).
        @param writer: Where the lines go directly (C{twistd smtpd}'s log),
            skipping C{twisted.logger}'s publisher; by default they are
            C{twisted.logger} events in the C{twisted_smtpd.session}
            namespace.
        @param refusalsOnly: Log the L{refusals} only, which fail2ban and
            audits read: no line per connection, TLS session, AUTH success
            and message.
        """
        if refusalsOnly:
            self.events = self.refusals
        self._ignored = frozenset(normaliseHosts(ignoredHosts))
        self._writer = writer
        # Only JSON lines and twisted.logger events carry the fields: for
        # text lines, those of every connection and message (connect,
        # message, close) are not even gathered.
        self._structured = writer is None or writer.json

    def _emit(self, text: str, fields: Mapping[str, Any]) -> None:
        # Every line's text is made here with f-strings: Twisted's
        # formatEvent alone costs more than the whole budget of a line.
        writer = self._writer
        if writer is not None:
            writer.line(text, fields)
        else:
            _log.info("{text}", text=text, **fields)

    def __call__(self, event: str, session: Session, data: dict[str, Any]) -> None:
        """
        Log C{event} if it is one that is logged.
        """
        if event not in self.events:
            return
        if self._ignored and session.remoteAddress[0] in self._ignored:
            if event == "connect" and data:
                self._handedOver(session, data)
            return
        try:
            sid = session.id
            if event == "message":
                self._message(session, data)
            elif event == "connect":
                client = formatPeer(session.remoteAddress)
                name = loggable(session.clientHostname, 255)
                local = formatPeer(session.localAddress)
                # Only an XCLIENT LOGIN (a session starting over as a client
                # its front end authenticated) has a user here, as Postfix
                # logs sasl_username for it.
                user = None if session.user is None else loggable(str(session.user))
                login = "" if user is None else f" as '{user}' (XCLIENT LOGIN)"
                fields: Mapping[str, Any] = _NO_FIELDS
                if self._structured:
                    fields = {
                        "session": sid,
                        "client": client,
                        "clientHostname": name,
                        "local": local,
                    }
                    if user is not None:
                        fields["username"] = user
                self._emit(f"{sid} connect from {client} ({name}) to {local}{login}", fields)
            elif event == "reject":
                self._reject(session, data)
            elif event == "auth":
                method = data.get("method")
                username = loggable(data.get("username"))
                self._emit(
                    f"{sid} auth {method} as '{username}'",
                    {"session": sid, "method": method, "username": username},
                )
            elif event == "secure":
                tls = session.tls or TLSInfo()
                servername = loggable(tls.servername) if tls.servername else None
                client = formatClient(session)
                trust, fingerprint = _clientCertificate(tls)
                ccert = "" if trust is None else f" ccert={trust} sha256={fingerprint}"
                self._emit(
                    f"{sid} TLS {tls.protocol} {tls.cipher} from {client} sni={servername}{ccert}",
                    {
                        "session": sid,
                        "protocol": tls.protocol,
                        "cipher": tls.cipher,
                        "servername": servername,
                        "client": client,
                        "clientCertificate": trust,
                        "clientCertificateSHA256": fingerprint,
                    },
                )
            else:
                self._emit(f"{sid} close", {"session": sid} if self._structured else _NO_FIELDS)
        except (AttributeError, TypeError) as error:
            # A handler that put values of the wrong type into the session
            # (a str as envelope.mailFrom): the line cannot be made, and
            # one line says so in its place, without a traceback.  Any
            # other error is the observer's own, logged with its traceback.
            self._unwritten(event, session, error)

    def _unwritten(self, event: str, session: Session, error: Exception) -> None:
        try:
            why = str(error)
        except Exception:
            why = "?"
        kind = printable(type(error).__name__)
        why = loggable(why, 200)
        sid = loggable(session.id) if isinstance(session.id, str) else "?"
        self._emit(
            f"{sid} {event} line not written: the session holds a value of the wrong"
            f" type ({kind}: {why})",
            {"session": sid, "event": event, "error": f"{kind}: {why}"},
        )

    def _handedOver(self, session: Session, data: dict[str, Any]) -> None:
        """
        End the lines of a session XCLIENT started over as a client of
        C{ignoredHosts}, whose lines are not written, when they were
        written for the client before: its C{connect} line gets its
        C{close}, which names the client it went on as.
        """
        before = data.get("previousAddress")
        if before is None or before[0] in self._ignored:
            return
        sid = session.id
        client = clientAddress(session.remoteAddress)
        self._emit(
            f"{sid} close (XCLIENT: the session goes on as ignored client {client})",
            {"session": sid, "handedOverTo": client} if self._structured else _NO_FIELDS,
        )

    def _reject(self, session: Session, data: dict[str, Any]) -> None:
        if "limit" in data or "proxy" in data:
            # A connection limit, or a refusal at the PROXY layer: the
            # factory or the PROXY wrapper logged its one line.
            return
        reply: Reply = data["reply"]
        command = data.get("command")
        sid = session.id
        client = formatClient(session)
        enhanced = f"{reply.enhanced} " if reply.enhanced else ""
        replyText = f"{reply.code} {enhanced}{' '.join(reply.lines)}"
        if data.get("lockout"):
            failures = data.get("failures", 0)
            self._emit(
                f"{sid} auth lockout: {client} after {failures} failed attempt(s): {replyText}",
                {
                    "session": sid,
                    "client": client,
                    "failures": failures,
                    "code": reply.code,
                    "reply": replyText,
                },
            )
            return
        if command == "AUTH" and data.get("username") is not None:
            mechanism = loggable(data.get("mechanism"), 20)
            username = loggable(data["username"])
            authzid = data.get("authzid")
            asked = "" if authzid is None else f" authzid=<{loggable(authzid)}>"
            self._emit(
                f"{sid} auth failed: {mechanism} from {client} user=<{username}>{asked}:"
                f" {replyText}",
                {
                    "session": sid,
                    "mechanism": mechanism,
                    "client": client,
                    "username": username,
                    "authzid": None if authzid is None else loggable(authzid),
                    "code": reply.code,
                    "reply": replyText,
                },
            )
            return
        argument: bytes = data.get("argument", b"")
        address = None
        if command is None:
            # The line did not parse: its first word stands for the command;
            # no line at all is a refusal at connect.
            word = argument.split(None, 1)[0] if argument.strip() else b""
            command = "CONNECT" if data.get("connect") else commandWord(word) or "(empty line)"
            named = ""
        elif command in ("MAIL", "RCPT"):
            address = _namedAddress(argument)
            named = f"<{address}>: "
        elif argument:
            named = f"<{loggable(argument, 80)}>: "
        else:
            named = ""
        mailFrom = session.envelope.mailFrom
        sender = "" if mailFrom is None else f"; from=<{loggable(mailFrom.address)}>"
        self._emit(
            f"{sid} reject: {command} from {client}: {reply.code} {enhanced}{named}"
            f"{' '.join(reply.lines)}{sender}",
            {
                "session": sid,
                "command": command,
                "client": client,
                "code": reply.code,
                "enhanced": reply.enhanced,
                "address": address,
                "reply": replyText,
            },
        )

    def _message(self, session: Session, data: dict[str, Any]) -> None:
        replies: tuple[Reply, ...] = data.get("replies", ())
        # One reply and one recipient, nearly always (LMTP gives a reply
        # per recipient): then no list is made for the text line.
        codeText = (
            str(replies[0].code)
            if len(replies) == 1
            else ",".join([str(item.code) for item in replies[:MAX_LOGGED_RECIPIENTS]])
        )
        if len(replies) > MAX_LOGGED_RECIPIENTS:
            # As for the recipients: the codes of the first ten named.
            codeText += f" and {len(replies) - MAX_LOGGED_RECIPIENTS} more"
        envelope = session.envelope
        mailFrom = envelope.mailFrom
        # printable's test, inline: most texts are printable as they are.
        sender = "" if mailFrom is None else mailFrom.address
        if not sender.isprintable():
            sender = printable(sender)
        size = data.get("size", 0)
        rcptTo = envelope.rcptTo
        recipients = None
        count = len(rcptTo)
        if count == 1 and not self._structured:
            recipientText = rcptTo[0].address
            if not recipientText.isprintable():
                recipientText = printable(recipientText)
        else:
            # At most MAX_LOGGED_RECIPIENTS named: a thousand recipients of
            # 256 octets would make one line of 256 KB.
            recipients = [printable(rcpt.address) for rcpt in rcptTo[:MAX_LOGGED_RECIPIENTS]]
            recipientText = ">,<".join(recipients)
        more = f" and {count - MAX_LOGGED_RECIPIENTS} more" if count > MAX_LOGGED_RECIPIENTS else ""
        reply = printable(" ".join(replies[0].lines)) if replies else ""
        others: Sequence[str] = ()
        otherText = ""
        if len(replies) > 1:
            # LMTP: why each other recipient was refused (or its own queue
            # id), not the first text alone.
            others, unnamed = _otherReplies(replies)
            otherText = "".join([f"; {other}" for other in others])
            if unnamed:
                otherText += f" and {unnamed} more replies"
        sid = session.id
        unanswered = bool(data.get("unanswered"))
        late = " (session ended before this answer: not sent)" if unanswered else ""
        # What a trusted XFORWARD said of the message's origin (mostly
        # nothing: then no work).
        origin = _forwarded(session.xForward) if session.xForward else None
        forwarded = (
            "".join(f" {key}={value}" for key, value in origin.items() if value) if origin else ""
        )
        fields: Mapping[str, Any] = _NO_FIELDS
        if self._structured:
            fields = {
                "unanswered": unanswered,
                "session": sid,
                "size": size,
                "sender": sender,
                "recipients": recipients,
                "recipientCount": count,
                "codes": [item.code for item in replies],
                "reply": reply,
                "otherReplies": others,
            }
            if origin:
                fields.update(
                    origClient=origin.get("orig_client"),
                    origHelo=origin.get("orig_helo"),
                    origQueueId=origin.get("orig_queue_id"),
                )
        self._emit(
            f"{sid} message {size} bytes from <{sender}> to <{recipientText}>{more}"
            f"{forwarded}: {codeText} {reply}{otherText}{late}",
            fields,
        )


def _otherReplies(replies: tuple[Reply, ...]) -> tuple[list[str], int]:
    """
    The replies of an LMTP message that differ from its first one, each
    once and in order, as C{code text}: at most L{MAX_LOGGED_RECIPIENTS}
    minus one named, so that the line names ten texts at most.

    @param replies: The message's replies, one per recipient.
    @return: The replies named, and how many other different ones there
        were.
    """
    first = replies[0]
    seen = {(first.code, first.lines)}
    named: list[str] = []
    unnamed = 0
    for item in replies[1:]:
        key = (item.code, item.lines)
        if key in seen:
            continue
        seen.add(key)
        if len(named) < MAX_LOGGED_RECIPIENTS - 1:
            named.append(printable(f"{item.code} {' '.join(item.lines)}"))
        else:
            unnamed += 1
    return named, unnamed


def _forwarded(attributes: Mapping[str, str]) -> dict[str, str | None]:
    """
    What XFORWARD said of a message's origin, for its log line, as Postfix
    logs it (C{orig_client=name[address]}, C{orig_queue_id=}), with the
    original client's HELO name (C{orig_helo=}); every value escaped.
    """
    client = forwardedClient(attributes)
    ident = attributes.get("IDENT")
    out: dict[str, str | None] = {}
    if client is not None:
        out["orig_client"] = f"{loggable(client.name, 255)}[{loggable(client.address)}]"
        out["orig_helo"] = None if client.helo is None else loggable(client.helo, 255)
    if ident is not None and ident != UNAVAILABLE:
        out["orig_queue_id"] = loggable(ident, 255)
    return out
