# -*- test-case-name: tests.test_tap -*-
"""
Logs of C{twistd smtpd}: one line per session event, and JSON output.

L{SessionLogger} is a server observer (L{SMTPServerFactory.addObserver}):
it turns the per-session and per-message events (connect, auth, message,
close) into C{twisted.logger} events in the C{twisted_smtpd.session}
namespace, each carrying the session id and its values as fields.  Events
of single commands (HELO, MAIL, RCPT, rejections) return at once, so the
per-command path does no logging work.

L{jsonLogObserver} writes every log event as one JSON object per line;
C{twistd smtpd --log-format json} installs it, and
C{twistd --logger twisted_smtpd._logging.jsonLogObserver} does the same for
any C{twistd} plugin.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any, cast

from twisted.logger import ILogObserver, LogEvent, Logger, formatEvent, jsonFileLogObserver
from zope.interface import provider

from twisted_smtpd._printable import printable
from twisted_smtpd._replies import Reply
from twisted_smtpd._session import Session

NAMESPACE = "twisted_smtpd.session"

_log = Logger(namespace=NAMESPACE)


def formatPeer(address: tuple[str, int]) -> str:
    """
    C{host:port}, C{[v6]:port}, or C{unix} for a connection without an IP
    address.
    """
    host, port = address
    if not host and not port:
        return "unix"
    host = printable(host)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class SessionLogger:
    """
    Log connect, auth, message and close events of every session at info
    level, except sessions from C{ignoredHosts}.

    The fields of each event: C{session} (the id) always; C{client} (the
    peer as text), C{clientHostname} and C{local} for connect; C{method} and
    C{username} for auth; C{size} (bytes), C{sender}, C{recipients} (count),
    C{codes} (every reply code; one per recipient in LMTP) and C{reply} (the
    first reply's text) for message.  Every text from outside (names,
    addresses, user names, reply texts) is made L{printable} first, in the
    fields as in the formatted line.
    """

    def __init__(self, ignoredHosts: Iterable[str] = ()) -> None:
        """
        @param ignoredHosts: Client IP addresses whose sessions are not
            logged (health checks, monitoring).
        """
        self._ignored = frozenset(ignoredHosts)

    def __call__(self, event: str, session: Session, data: dict[str, Any]) -> None:
        """
        Log C{event} if it is a per-session or per-message one.
        """
        if event not in ("connect", "message", "close", "auth"):
            return
        if self._ignored and session.remoteAddress[0] in self._ignored:
            return
        if event == "connect":
            _log.info(
                "{session} connect from {client} ({clientHostname}) to {local}",
                session=session.id,
                client=formatPeer(session.remoteAddress),
                clientHostname=printable(session.clientHostname),
                local=formatPeer(session.localAddress),
            )
        elif event == "message":
            self._message(session, data)
        elif event == "auth":
            _log.info(
                "{session} auth {method} as '{username}'",
                session=session.id,
                method=data.get("method"),
                username=printable(str(data.get("username", ""))),
            )
        else:
            _log.info("{session} close", session=session.id)

    def _message(self, session: Session, data: dict[str, Any]) -> None:
        # Once per message: the text is built here with one f-string, so
        # that the logger formats a single field ("{text}").
        replies: tuple[Reply, ...] = tuple(data.get("replies", ()))
        codes = [reply.code for reply in replies]
        mailFrom = session.envelope.mailFrom
        sender = "" if mailFrom is None else printable(mailFrom.address)
        size = data.get("size", 0)
        recipients = len(session.envelope.rcptTo)
        codesText = ",".join(str(code) for code in codes)
        reply = printable(" ".join(replies[0].lines)) if replies else ""
        _log.info(
            "{text}",
            text=(
                f"{session.id} message {size} bytes from <{sender}> to {recipients}"
                f" recipient(s): {codesText} {reply}"
            ),
            session=session.id,
            size=size,
            sender=sender,
            recipients=recipients,
            codes=codes,
            reply=reply,
        )


def jsonLogObserver(outFile: IO[Any] | None = None) -> ILogObserver:
    """
    An observer writing each event as one line of JSON (no record
    separator), for log shippers that read JSON lines: Twisted's own
    serialisation (C{log_time}, C{log_level}, C{log_namespace},
    C{log_format} and the event's fields) plus C{text}, the formatted
    message.

    @param outFile: A text file; standard output by default.
    """
    serialise = jsonFileLogObserver(sys.stdout if outFile is None else outFile, recordSeparator="")

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        serialise({**event, "text": formatEvent(event)})

    return cast(ILogObserver, observe)
