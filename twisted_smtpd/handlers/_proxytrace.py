# -*- test-case-name: tests.test_relaytrace -*-
"""
The trace a proxying handler (L{twisted_smtpd.handlers._proxying}) gives
the message it passes on: its C{Received:} field written first (RFC 5321
section 4.4), as Postfix's C{smtpd} writes its own into the stream it
proxies, and the hop count that refuses a message looping between relays
(section 6.3).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer
from zope.interface import implementer

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd.handlers._tracefields import HopCounter
from twisted_smtpd.interfaces import IMessageStream


def hopsError(limit: int) -> SMTPError:
    """
    The refusal of a message with more than C{limit} C{Received:} fields:
    554 5.4.6, a routing loop (RFC 3463 section 3.5), as Postfix's
    C{hopcount_limit} refuses one.
    """
    return SMTPError(
        554, f"Error: too many hops (more than {limit} Received: fields): mail loop", "5.4.6"
    )


@implementer(IConsumer)
class _TracingConsumer:
    """
    The L{IConsumer} a message stream is piped into on its way to the next
    hop's: the C{Received:} field goes first, once the body flows, then the
    body unchanged (after an empty line when its first line begins with
    white space, which would continue the field, as Postfix's C{smtpd}
    writes one), while its C{Received:} fields are counted.

    A piece that brings the count above the limit is not passed on: its
    C{write} raises the 554 (L{hopsError}), so the stream fails the pipe,
    and the session to the next hop, which has not seen the body's end, is
    dropped as for a body that failed midway: the next hop delivers
    nothing.
    """

    def __init__(
        self,
        consumer: IConsumer,
        field: bytes,
        limit: int,
        refused: Callable[[int], None],
    ) -> None:
        self._consumer = consumer
        self._field = field
        self._first = bool(field)
        self._limit = limit
        self._refused = refused
        self._hops = HopCounter()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._consumer.registerProducer(producer, streaming)
        if self._field:
            self._consumer.write(self._field)

    def unregisterProducer(self) -> None:
        self._consumer.unregisterProducer()

    def write(self, data: bytes) -> None:
        hops = self._hops
        if hops.inHeader and hops.feed(data) > self._limit:
            self._refused(hops.count)
            raise hopsError(self._limit)
        if self._first and data:
            self._first = False
            if data[:1] in (b" ", b"\t"):
                data = b"\r\n" + data
        self._consumer.write(data)


class TracedStream:
    """
    What a proxying handler gives its session to the next hop for the body
    (L{twisted_smtpd._smtpclient.clientsession.ClientSession.data} and
    C{bdat}, which only L{pipe} it): the client's stream behind the
    C{Received:} field, its hops counted.
    """

    def __init__(
        self,
        stream: IMessageStream,
        field: bytes,
        limit: int,
        refused: Callable[[int], None],
    ) -> None:
        """
        @param stream: The client's message stream.
        @param field: The C{Received:} field to write first, or C{b""}.
        @param limit: The most C{Received:} fields a message may arrive
            with.
        @param refused: Called with the count, before the pipe fails, when
            a message is refused for having more.
        """
        self._stream = stream
        self._field = field
        self._limit = limit
        self._refused = refused

    def pipe(self, consumer: IConsumer) -> Deferred[int]:
        """
        Pipe the stream into C{consumer}, the field first.

        @return: The stream's L{Deferred}, failing with L{hopsError} for a
            message with too many hops.
        """
        tracing = _TracingConsumer(consumer, self._field, self._limit, self._refused)
        return self._stream.pipe(tracing)
