# -*- test-case-name: tests.test_amqp -*-
"""
What an AMQP 0-9-1 publish may hold: the sizes of its frames and names, and
the body gathered for it.
"""

from __future__ import annotations

from typing import Any

import pika

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd._stream import COLLECT_PIECE
from twisted_smtpd.handlers._envelope import envelopeFields

# AMQP 0-9-1 section 4.2.6: the properties (the envelope in their headers)
# travel in one content header frame, which may not exceed the connection's
# frame_max: the frame's type, channel and size (7 octets), class id,
# weight and body size (12), the properties, the frame end (1).
HEADER_FRAME_OVERHEAD = 7 + 12 + 1
# AMQP 0-9-1 section 4.2.5.3: the longest short string (exchange, queue and
# routing key names).
SHORT_STRING = 255
# What one recipient adds to the headers' array: its type and length.
PER_RECIPIENT = 1 + 4
# Kept free for what may still change between RCPT and the publish.
HEADER_MARGIN = 64


class Body:
    """
    The message gathered in memory for one publish (pika publishes whole
    bodies), refused with 552 past the size limit.

    Chunks shorter than L{COLLECT_PIECE} (a body read a few octets at a
    time: tiny TLS records) are joined as they come, so that the memory
    held stays close to the body's size rather than twenty times it.
    """

    def __init__(self, limit: int) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self._limit = limit
        self._short = bytearray()

    def write(self, chunk: bytes) -> None:
        """
        Add C{chunk}.

        @raise SMTPError: 552: the body is now past the limit.
        """
        length = len(chunk)
        self.size += length
        if self.size > self._limit:
            self.parts = []
            self._short.clear()
            raise SMTPError(552, "Error: message too big for the message broker", "5.3.4")
        short = self._short
        if length < COLLECT_PIECE:
            short += chunk
            if len(short) >= COLLECT_PIECE:
                self.parts.append(bytes(short))
                short.clear()
            return
        if short:
            self.parts.append(bytes(short))
            short.clear()
        self.parts.append(chunk)

    def take(self) -> bytes:
        """
        The whole body gathered, joined; the parts are forgotten.
        """
        parts, self.parts = self.parts, []
        if self._short:
            parts.append(bytes(self._short))
            self._short.clear()
        return b"".join(parts)


def encodedSize(properties: Any) -> int:
    """
    The octets C{properties} (a C{pika.BasicProperties}) take in a content
    header frame.
    """
    return sum(len(part) for part in properties.encode())


def publishProperties(fields: dict[str, Any], timestamp: int) -> pika.BasicProperties:
    """
    The properties a message with envelope C{fields} is published with.
    """
    return pika.BasicProperties(
        content_type="message/rfc822",
        delivery_mode=2,
        message_id=fields["messageId"],
        timestamp=timestamp,
        app_id="twisted-smtpd",
        headers=fields,
    )


def headerFrameSize(session: Session, address: Address) -> int:
    """
    The octets the content header frame of C{session}'s message would take
    with C{address} as one more recipient, with L{HEADER_MARGIN} to spare.
    """
    fields = envelopeFields(session)
    fields["recipients"] = []
    size = HEADER_FRAME_OVERHEAD + HEADER_MARGIN + encodedSize(publishProperties(fields, 0))
    for recipient in (*session.envelope.rcptTo, address):
        size += PER_RECIPIENT + len(recipient.address.encode("utf-8"))
    return size


def checkNames(exchange: str, queue: str, routingKey: str) -> None:
    """
    Refuse an exchange, queue or routing key name over L{SHORT_STRING}
    octets in UTF-8 (AMQP 0-9-1 section 4.2.5.3: a short string), which
    would fail every declare or publish in pika.

    @raise ValueError: Naming the first one too long.
    """
    for what, name in (("exchange", exchange), ("queue", queue), ("routing key", routingKey)):
        if len(name.encode("utf-8")) > SHORT_STRING:
            raise ValueError(f"the {what} name is over {SHORT_STRING} octets")
