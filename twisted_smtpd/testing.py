# -*- test-case-name: tests.test_testing -*-
"""
Helpers for your own tests: a real SMTP server that catches mail, in memory
or on a loopback port.

In memory, with no reactor and no socket::

    from twisted_smtpd.testing import MessageRecorder, memorySession

    recorder = MessageRecorder()
    session = memorySession(recorder)
    session.send(b"EHLO c\\r\\nMAIL FROM:<a@example.com>\\r\\n"
                 b"RCPT TO:<b@example.com>\\r\\nDATA\\r\\nhi\\r\\n.\\r\\n")
    assert recorder.messages[0].data == b"hi\\r\\n"

On 127.0.0.1, for code that speaks SMTP itself::

    server = yield listenForTests(recorder)   # in a trial TestCase
    self.addCleanup(server.close)
    yourMailer.send(host="127.0.0.1", port=server.port)
    messages = yield recorder.waitForMessages(1)
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.names.resolve import ResolverChain

from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd._serving.protocol import SMTPProtocol
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd._serving.service import SMTPServer
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.interfaces import IMessageStream, ISMTPHandler

__all__ = [
    "MemorySession",
    "MessageRecorder",
    "ReceivedMessage",
    "TestServer",
    "listenForTests",
    "memorySession",
]


@frozen
class ReceivedMessage:
    """
    One message a L{MessageRecorder} caught.

    @ivar mailFrom: The reverse-path (C{""} for C{<>}).
    @ivar rcptTo: The forward-paths, in order.
    @ivar data: The message as received, after dot-unstuffing.
    @ivar session: The session it came on.
    """

    mailFrom: str
    rcptTo: tuple[str, ...]
    data: bytes
    session: Session

    @property
    def recipients(self) -> tuple[Address, ...]:
        """
        The forward-paths with their parameters.
        """
        return tuple(self.session.envelope.rcptTo)


class MessageRecorder(BaseHandler):
    """
    A handler that accepts everything and keeps every message.

    @ivar messages: What arrived, in order.
    """

    def __init__(self) -> None:
        self.messages: list[ReceivedMessage] = []
        self._waiting: list[tuple[int, Deferred[list[ReceivedMessage]]]] = []

    def onData(self, stream: IMessageStream, session: Session) -> object:
        """
        Keep the message; the reply names its index.
        """
        envelope = session.envelope
        mailFrom = envelope.mailFrom.address if envelope.mailFrom is not None else ""
        rcptTo = tuple(a.address for a in envelope.rcptTo)
        # The server's size limit bounds the message; the recorder keeps all of it.
        d: Deferred[bytes] = stream.collect(maxBytes=0)

        def received(data: bytes) -> str:
            self.messages.append(ReceivedMessage(mailFrom, rcptTo, data, session))
            self._notify()
            return f"OK: recorded as message {len(self.messages)}"

        return d.addCallback(received)

    def waitForMessages(self, count: int) -> Deferred[list[ReceivedMessage]]:
        """
        Fire with the messages once at least C{count} have arrived.
        """
        d: Deferred[list[ReceivedMessage]] = Deferred()
        self._waiting.append((count, d))
        self._notify()
        return d

    def _notify(self) -> None:
        ready = [(n, d) for n, d in self._waiting if len(self.messages) >= n]
        self._waiting = [(n, d) for n, d in self._waiting if len(self.messages) < n]
        for _, d in ready:
            d.callback(list(self.messages))


class MemorySession:
    """
    A session over a L{StringTransport}, driven by hand.

    @ivar protocol: The server's protocol.
    @ivar transport: What it wrote to, and whether it disconnected.
    @ivar clock: The clock its timeouts use; C{advance} it to test them.
    """

    def __init__(self, protocol: SMTPProtocol, transport: StringTransport, clock: Clock) -> None:
        self.protocol = protocol
        self.transport = transport
        self.clock = clock

    def send(self, data: bytes) -> bytes:
        """
        Feed C{data} from the client.

        @return: What the server wrote since the last call (the greeting
            included, on the first call).
        """
        self.protocol.dataReceived(data)
        return self.read()

    def read(self) -> bytes:
        """
        What the server wrote since the last read.
        """
        value: bytes = self.transport.value()
        self.transport.clear()
        return value


def memorySession(
    handler: ISMTPHandler | None = None,
    options: ServerOptions | None = None,
    clientAddress: tuple[str, int] = ("192.0.2.1", 40000),
) -> MemorySession:
    """
    A connected session in memory: no reactor, no socket, no DNS.

    @param handler: The handler (a L{MessageRecorder} by default).
    @param options: Server options; reverse lookups are turned off when none
        are given.  Options that leave them on get a resolver that knows no
        name, answering at once: the greeting is not held back and no DNS
        query is sent.
    """
    clock = Clock()
    if options is None:
        options = ServerOptions(name="mx.test.invalid", disableReverseLookup=True)
    factory = SMTPServerFactory(
        handler if handler is not None else MessageRecorder(),
        options,
        reactor=clock,
        resolver=ResolverChain([]),
    )
    protocol = factory.buildProtocol(IPv4Address("TCP", *clientAddress))
    transport = StringTransport(
        peerAddress=IPv4Address("TCP", *clientAddress),
        hostAddress=IPv4Address("TCP", "192.0.2.25", 25),
    )
    protocol.makeConnection(transport)
    return MemorySession(protocol, transport, clock)


class TestServer:
    """
    A server listening on 127.0.0.1 for a test.

    @ivar port: The port it listens on.
    @ivar server: The L{SMTPServer}.
    """

    def __init__(self, server: SMTPServer, port: int) -> None:
        self.server = server
        self.port = port
        self.host = "127.0.0.1"

    def close(self) -> Deferred[None]:
        """
        Stop listening and close every session.
        """
        return self.server.close()


def listenForTests(
    handler: ISMTPHandler | None = None,
    options: ServerOptions | None = None,
    *,
    reactor: Any = None,
) -> Deferred[TestServer]:
    """
    Listen on an ephemeral port of 127.0.0.1.

    @param handler: The handler (a L{MessageRecorder} by default).
    @param options: Server options; reverse lookups are turned off when none
        are given.
    @return: A L{Deferred} firing with the L{TestServer}.
    """
    if options is None:
        options = ServerOptions(name="mx.test.invalid", disableReverseLookup=True)
    server = SMTPServer(
        handler if handler is not None else MessageRecorder(), options, reactor=reactor
    )
    d = server.listen("tcp:0:interface=127.0.0.1")

    def listening(port: Any) -> TestServer:
        return TestServer(server, port.getHost().port)

    return d.addCallback(listening)
