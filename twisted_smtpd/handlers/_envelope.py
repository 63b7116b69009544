# -*- test-case-name: tests.test_webhook -*-
"""
The envelope of a message as the webhook and message-broker handlers hand it
on: plain values, safe to serialise as JSON and to put in HTTP or AMQP
headers.
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted_smtpd._core.session import Session

_UNSAFE = re.compile(r"[^\x20-\x7e]+")
_MAX_REASON = 200


def messageId(session: Session) -> str:
    """
    The id of the message of the current transaction of C{session}: the
    session id and the transaction number, unique per accepted message of
    one server process (C{"abcdefgh.1"}).
    """
    return f"{session.id}.{session.transaction}"


def _userName(user: object) -> str | None:
    if user is None:
        return None
    if isinstance(user, bytes):
        return user.decode("utf-8", "replace")
    return str(user)


def envelopeFields(session: Session) -> dict[str, Any]:
    """
    The envelope of the message being received on C{session}.

    @return: A dictionary with C{sender} (C{""} for C{<>}), C{recipients}
        (a list), C{clientAddress}, C{clientPort}, C{helo}, C{user} (the
        authenticated user or C{None}), C{tls} (C{None} or the protocol and
        cipher), C{sessionId} and C{messageId}.
    """
    envelope = session.envelope
    tls: dict[str, Any] | None = None
    if session.secure:
        info = session.tls
        tls = {
            "protocol": info.protocol if info is not None else None,
            "cipher": info.cipher if info is not None else None,
        }
    return {
        "sender": envelope.mailFrom.address if envelope.mailFrom is not None else "",
        "recipients": [address.address for address in envelope.rcptTo],
        "clientAddress": session.remoteAddress[0],
        "clientPort": session.remoteAddress[1],
        "helo": session.hostNameAppearsAs,
        "user": _userName(session.user),
        "tls": tls,
        "sessionId": session.id,
        "messageId": messageId(session),
    }


def envelopeJSON(fields: dict[str, Any]) -> str:
    """
    C{fields} as compact JSON, ASCII only (other characters as C{\\uXXXX}
    escapes): one line, safe in a request body part or a log line.
    """
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def sanitise(text: str | bytes) -> str:
    """
    Text from outside made safe for a reply or a log line: printable ASCII
    only (anything else becomes a space, runs of spaces one space), trimmed, at most 200
    characters.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(_UNSAFE.sub(" ", text).split())[:_MAX_REASON]
