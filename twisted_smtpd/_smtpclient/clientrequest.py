# -*- test-case-name: tests.test_client -*-
"""
What a L{twisted_smtpd._smtpclient.clientprotocol.ClientProtocol} is asked
to do (L{Request}), and the consumer a message body is piped into
(L{_BodyWriter}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IOpenSSLClientConnectionCreator, IProducer
from zope.interface import implementer

from twisted_smtpd._smtpclient.clientwire import DotStuffer
from twisted_smtpd.interfaces import IMessageStream

if TYPE_CHECKING:
    from twisted_smtpd._smtpclient.clientprotocol import ClientProtocol

TLSMode = Literal["required", "opportunistic", "none"]


class PipedBody(Protocol):
    """
    A message body as the client sends it: piped into a consumer.  An
    L{IMessageStream} is one, and so is what a proxying handler makes of
    it (L{twisted_smtpd.handlers._proxytrace.TracedStream}).
    """

    def pipe(self, consumer: IConsumer) -> Deferred[int]: ...


@frozen
class Request:
    """
    How to talk to the server: the envelope and body for a single delivery
    (unused for a session opened for a pool), EHLO name, TLS mode and
    creator, credentials, the reply timeout.
    """

    sender: str
    recipients: tuple[str, ...]
    stream: IMessageStream | None
    lmtp: bool
    heloName: str
    tls: str
    tlsCreator: IOpenSSLClientConnectionCreator | None
    verify: bool
    username: str | None
    password: str | None
    smtpUtf8: bool
    requireTls: bool
    timeout: float


@implementer(IConsumer)
class _BodyWriter:
    """
    The L{IConsumer} a message stream is piped into: stuffs each chunk and
    writes it to the connection, registering the stream as the connection's
    streaming producer so that a full send buffer pauses it.
    """

    def __init__(self, protocol: ClientProtocol) -> None:
        self._protocol = protocol
        self.stuffer = DotStuffer()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        transport = self._protocol.transport
        if transport is not None and self._protocol.connected:
            transport.registerProducer(producer, streaming)  # type: ignore[attr-defined]
        else:
            producer.stopProducing()

    def unregisterProducer(self) -> None:
        transport = self._protocol.transport
        if transport is not None and self._protocol.connected:
            transport.unregisterProducer()  # type: ignore[attr-defined]

    def write(self, data: bytes) -> None:
        self._protocol.writeBody(self.stuffer.encode(data))
