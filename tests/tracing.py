"""
The C{Received:} field the relay and LMTP-forwarding handlers write before
each message they pass on, as the tests expect it on a next hop.
"""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd.handlers.relay import defaultHeloName

#: The date of a C{Received:} field (RFC 5322 section 3.3, as
#: L{email.utils.formatdate} writes it).
DATE = rb"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}"


#: The recipient of the unit tests' messages, named in the field's C{for}
#: clause.
RECIPIENT = "bob@example.org"


def _text(value: str | None) -> bytes:
    """
    C{value} as a pattern: itself, or any name when C{None}.
    """
    return rb"[^\s()]+" if value is None else re.escape(value.encode())


def traceField(
    helo: str | None = "client.example",
    client: str | None = "unknown [127.0.0.1]",
    by: str | None = "relay.example",
    protocol: str = "ESMTP",
    newline: bytes = b"\r\n",
    recipient: str | None = RECIPIENT,
) -> re.Pattern[bytes]:
    """
    The field written first, whole: all of it but the session id and the
    date as given.

    @param helo: The client's greeting name (C{None}: a name the test
        does not choose, such as smtplib's).
    @param client: Its reverse DNS name and address literal (C{None}: any
        name, then C{[127.0.0.1]}).
    @param by: The forwarding server's name (C{None}: a name the test does
        not choose, such as the machine's).
    @param protocol: The C{with} clause.
    @param newline: Its line end as the next hop stored it (a Dovecot
        mailbox has LF).
    @param recipient: The message's one recipient, named in its C{for}
        clause (C{None}: several, and no such clause); by default the one
        the unit tests send to (L{tests.test_relay.send}).
    """
    return re.compile(
        b"Received: from "
        + _text(helo)
        + b" \\("
        + (_text(None) + rb" \[127\.0\.0\.1\]" if client is None else _text(client))
        + b"\\) by "
        + _text(by)
        + b" with "
        + re.escape(protocol.encode())
        + b" id [0-9A-Za-z]+"
        + (b"" if recipient is None else b" for <" + re.escape(recipient.encode()) + b">")
        + b"; "
        + DATE
        + re.escape(newline)
    )


def untraced(testCase: SynchronousTestCase, stored: bytes, **field: object) -> bytes:
    """
    The message a next hop stored after the C{Received:} field it must
    begin with (L{traceField}, given C{field}), asserted there once.
    """
    match = traceField(**field).match(stored)  # type: ignore[arg-type]
    testCase.assertIsNotNone(match, stored[:400])
    assert match is not None
    rest = stored[match.end() :]
    testCase.assertFalse(traceField(**field).match(rest), rest[:400])  # type: ignore[arg-type]
    return rest


def forwardedMessage(testCase: SynchronousTestCase, stored: bytes, recipient: str | None) -> bytes:
    """
    A message that C{twistd smtpd --relay} or C{--lmtp-to} passed on from
    an smtplib client (greeting with the machine's name, over ESMTP),
    after its C{Received:} field (L{untraced}), which names this machine
    and C{recipient} (C{None}: the message had several).
    """
    return untraced(
        testCase, stored, helo=None, client=None, by=defaultHeloName(), recipient=recipient
    )
