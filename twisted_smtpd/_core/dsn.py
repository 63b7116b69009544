# -*- test-case-name: tests.test_dsn -*-
"""
Delivery status notifications (RFC 3464), built with Python's C{email}
package: a C{multipart/report} (RFC 6522) with a human-readable part and a
C{message/delivery-status} part, sent from the null reverse-path.

Pure: values in, bytes out.
"""

from __future__ import annotations

import email.utils
from collections.abc import Sequence
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP, SMTPUTF8, Policy

from attrs import frozen

from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.replies import sanitiseText
from twisted_smtpd._core.xtext import encodeUtf8Address


@frozen
class RecipientStatus:
    """
    What became of the message for one recipient, as a DSN reports it.

    @ivar address: The recipient (the forward-path).
    @ivar orcpt: Its C{ORCPT} (C{"rfc822;a@example.com"}), or C{None}.
    @ivar action: C{"failed"}, C{"delayed"}, C{"delivered"}, C{"relayed"} or
        C{"expanded"} (RFC 3464 section 2.3.3).
    @ivar status: The enhanced status code (C{"5.1.1"}).
    @ivar diagnostic: The next hop's reply (C{"550 5.1.1 No such user"}), or
        C{None}.
    """

    address: str
    orcpt: str | None
    action: str
    status: str
    diagnostic: str | None = None


def _clean(text: str, limit: int = 400) -> str:
    """
    Outside text made safe for one header field: control characters
    replaced, lines joined, length bounded.
    """
    return " ".join(sanitiseText(text))[:limit]


def _ascii(text: str, limit: int = 400) -> str:
    """
    Outside text made safe for a field of the C{message/delivery-status}
    part, which is US-ASCII (RFC 3464 section 2.1.1): L{_clean}, then each
    non-ASCII character as the C{\\x{HEX}} escape of RFC 6533 section 3
    (C{"\\x{E9}"} for U+00E9), so that an address, an C{ENVID} or a reply
    in UTF-8 can neither stop the report from being made nor need an 8-bit
    header.
    """
    text = _clean(text, limit)
    if text.isascii():
        return text
    return _bounded("".join(c if c.isascii() else f"\\x{{{ord(c):X}}}" for c in text))


#: The longest field value of the report, escapes included: with its
#: field's name, a line stays within the 998 octets of RFC 5322 (section
#: 2.1.1), which the email package is let write as it is (L{_policy}).
_MAX_VALUE = 900


def _bounded(value: str) -> str:
    """
    C{value} cut to L{_MAX_VALUE} characters, never inside a C{\\x{HEX}}
    escape: a value of many escapes (an address or a reply in UTF-8) can be
    up to ten times the length of what it stands for.
    """
    if len(value) <= _MAX_VALUE:
        return value
    value = value[:_MAX_VALUE]
    escape = value.rfind("\\x{")
    if escape != -1 and "}" not in value[escape:]:
        value = value[:escape]
    return value


def _envelopeValue(text: str) -> str:
    """
    A value the client gave in its envelope (an C{ENVID}) as the
    C{message/delivery-status} part writes it: printable ASCII as it is,
    every other character (non-ASCII, and the line and paragraph
    separators, bidirectional and other format controls among them) as
    its C{\\x{HEX}} escape (RFC 6533 section 3), bounded (L{_bounded}).
    Unlike L{_ascii}, no character becomes a space: the value reads back
    as the client gave it, never as another value (C{a+E2+80+A8b} as
    C{a+20b}).
    """
    if text.isascii() and text.isprintable():
        return _bounded(text)
    return _bounded("".join(c if " " <= c <= "~" else f"\\x{{{ord(c):02X}}}" for c in text))


def _policy(sender: str) -> Policy:
    """
    How to write the report: CRLF line ends, a sender that is not ASCII
    in UTF-8 (RFC 6532), and each field on one line up to 998 octets.  The
    email package folds a longer field, and a word that does not fit in its
    default 78 columns (a long C{ENVID}, address or reply) it writes as
    RFC 2047 encoded-words, which no reader of a C{message/delivery-status}
    part decodes (RFC 3464 fields are not encoded).
    """
    return (SMTP if sender.isascii() else SMTPUTF8).clone(max_line_length=998)


def _addressField(addressType: str, separator: str, address: str) -> str:
    """
    An C{Original-Recipient} or C{Final-Recipient} value: C{address} after
    its type; an address that is not ASCII becomes a C{utf-8} address in the
    7-bit form RFC 6533 section 3 gives for C{message/delivery-status}
    (C{utf-8-addr-xtext}), as does a C{utf-8} address (a decoded C{ORCPT}),
    whose space, C{"+"}, C{"="} and C{"\\"} are escaped too.  So does an
    address holding a character that is not printable (a line separator,
    a bidirectional override): each is escaped, none replaced, so that the
    address reported is the one given.
    """
    if address.isascii() and address.isprintable() and addressType.lower() != "utf-8":
        return f"{_clean(addressType, 40)}{separator}{_bounded(address)}"
    return f"utf-8{separator}{_bounded(encodeUtf8Address(address))}"


_EXPLANATIONS = {
    "failed": "could not be delivered to the following recipients; this server will not try again",
    "relayed": (
        "was relayed to the following recipients by a server that does not "
        "offer delivery status notifications; no further report will come "
        "from the next hop"
    ),
    "delivered": "was delivered to the following recipients",
    "delayed": "has not yet been delivered to the following recipients",
}


def buildReport(
    *,
    reportingMta: str,
    sender: str,
    recipients: Sequence[RecipientStatus],
    envid: str | None = None,
    received: str | None = None,
    messageId: str | None = None,
) -> bytes:
    """
    A DSN for C{recipients}, all with the same action, to C{sender}.

    @param reportingMta: This server's name (C{Reporting-MTA: dns; name}).
    @param sender: The original reverse-path, the DSN's recipient; never
        empty (no DSN for a null sender, RFC 3461 section 6.2).
    @param recipients: At least one.
    @param envid: The C{ENVID} given with the original message.
    @param received: The name of the client the message came from.
    @param messageId: The DSN's C{Message-ID}; a new one by default.
    @return: The message, CRLF line ends.
    @raise ValueError: C{sender} is empty or there is no recipient.
    """
    if not sender:
        raise ValueError("no DSN for the null reverse-path")
    if not recipients:
        raise ValueError("a DSN reports on at least one recipient")
    action = recipients[0].action
    name = _ascii(reportingMta, 200)
    lines = [
        f"This is the mail system at {name}.",
        "",
        f"Your message {_EXPLANATIONS.get(action, 'has the following status')}:",
        "",
    ]
    for r in recipients:
        lines.append(f"  <{_clean(r.address)}>: {_clean(r.diagnostic or r.status)}")
    text = "\n".join(lines) + "\n"
    human = MIMEText(text, "plain", "us-ascii" if text.isascii() else "utf-8")
    human["Content-Description"] = "Notification"

    perMessage = Message()
    perMessage["Reporting-MTA"] = f"dns; {name}"
    if envid is not None:
        perMessage["Original-Envelope-Id"] = _envelopeValue(envid)
    if received:
        perMessage["Received-From-MTA"] = f"dns; {_ascii(received, 200)}"
    perMessage["Arrival-Date"] = email.utils.formatdate(localtime=False)
    blocks: list[Message | str] = [perMessage]
    for r in recipients:
        block = Message()
        if r.orcpt:
            addressType, _, original = r.orcpt.partition(";")
            block["Original-Recipient"] = _addressField(addressType, ";", original)
        block["Final-Recipient"] = _addressField("rfc822", "; ", r.address)
        block["Action"] = r.action
        block["Status"] = r.status
        if r.diagnostic:
            block["Diagnostic-Code"] = f"smtp; {_ascii(r.diagnostic)}"
        blocks.append(block)
    status = Message()
    status["Content-Type"] = "message/delivery-status"
    status["Content-Description"] = "Delivery report"
    status.set_payload(blocks)

    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{name}>"
    # The sender as printable() escapes it: a line or paragraph separator
    # in it (U+2028, U+2029, allowed with SMTPUTF8 in a quoted local part)
    # would be written by the email package as a line break, starting a
    # header field of the sender's choosing.
    report["To"] = f"<{printable(sender)}>"
    subjects = {
        "failed": "Undelivered Mail Returned to Sender",
        "relayed": "Successful Mail Delivery Report (relayed)",
        "delivered": "Successful Mail Delivery Report",
        "delayed": "Delayed Mail (still being retried)",
    }
    report["Subject"] = subjects.get(action, "Delivery Status Notification")
    report["Date"] = email.utils.formatdate(localtime=False)
    report["Message-ID"] = messageId or email.utils.make_msgid(domain=name or None)
    report["Auto-Submitted"] = "auto-replied"
    report.attach(human)
    report.attach(status)
    # Every field but To is ASCII by now; a sender that is not ASCII can
    # only be written in UTF-8 (RFC 6532), and the report then goes with
    # SMTPUTF8 as the message it reports on did.
    return report.as_bytes(policy=_policy(sender))
