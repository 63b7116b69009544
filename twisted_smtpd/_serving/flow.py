# -*- test-case-name: tests.test_protocol -*-
"""
Flow control between a session's connection and the handler reading a
message body (the reasons to stop reading, and the producer a message stream
pauses), and the way replies are written.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

#: Reasons to stop reading from the client, as bits.
PAUSE_HOOK = 1  # a hook has not answered; replies must stay in order
PAUSE_STREAM = 2  # the handler reads the message body slower than it comes
PAUSE_WRITE = 4  # the client does not read its replies


class Pausable(Protocol):
    """
    What L{StreamUpstream} drives: the session's reading switch, and the
    message it now reads.
    """

    @property
    def receiver(self) -> object: ...

    def setPause(self, reason: int, paused: bool) -> None: ...


@implementer(IPushProducer)
class StreamUpstream:
    """
    What a L{MessageStream} pauses when its consumer cannot keep up: reading
    from the session's connection.
    """

    def __init__(self, protocol: Pausable) -> None:
        self._protocol = protocol
        #: The message (its receiver) whose body the stream carries: once
        #: the session reads another one, this stream's calls are ignored,
        #: so that a slow consumer of a finished message cannot resume the
        #: reading the next message's stream paused.
        self.receiver: object = None

    def _setPause(self, paused: bool) -> None:
        protocol = self._protocol
        if protocol.receiver is self.receiver:
            protocol.setPause(PAUSE_STREAM, paused)

    def pauseProducing(self) -> None:
        """
        Stop reading from the client.
        """
        self._setPause(True)

    def resumeProducing(self) -> None:
        """
        Read from the client again.
        """
        self._setPause(False)

    def stopProducing(self) -> None:
        """
        The stream wants no more flow control.
        """
        self._setPause(False)


def writeThrough(transport: Any, data: bytes, plainTCP: bool) -> None:
    """
    Send C{data}: straight to the socket when a plain TCP transport has
    nothing queued (saving the reactor two epoll updates and a wake-up per
    reply), else through the transport, which queues what is left.

    @param plainTCP: Whether C{transport} is Twisted's C{tcp.Server}; TLS,
        PROXY and test transports always go through C{write}.
    """
    if (
        plainTCP
        and not transport.TLS
        and not transport.dataBuffer
        and not transport._tempDataBuffer
        and transport.connected
        and not transport.disconnecting
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
