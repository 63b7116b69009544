# -*- test-case-name: tests.test_relayhostile -*-
"""
The relay and LMTP-delivery handlers in front of a hostile next hop: a
small scripted SMTP/LMTP server on 127.0.0.1 (port 0) that answers out of
turn, with malformed or poisoned replies, or closes at the worst moment.

For each misbehaviour, the client of the front server gets a clear reply
(a 250 only when the next hop took the message with a 250), no text of the
next hop reaches that reply or the log unsanitised, and the session to the
next hop is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.test_client import startServer
from tests.test_relay import closeWith
from twisted_smtpd._smtpclient.clientprotocol import QUIT_TIMEOUT
from twisted_smtpd._smtpclient.clientwire import MAX_REPLY_LINE, MAX_REPLY_LINES
from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler
from twisted_smtpd.handlers.relay import RelayHandler

#: What the next hop answers at each step unless the test says otherwise.
DEFAULTS: dict[str, bytes] = {
    "greeting": b"220 nexthop.example ESMTP\r\n",
    "ehlo": b"250-nexthop.example\r\n250 8BITMIME\r\n",
    "mail": b"250 2.1.0 Sender ok\r\n",
    "rcpt": b"250 2.1.5 Recipient ok\r\n",
    "data": b"354 Go ahead\r\n",
    "final": b"250 2.0.0 Queued as HOSTILE1\r\n",
    "bdat": b"250 2.0.0 Chunk received\r\n",
    "rset": b"250 2.0.0 Flushed\r\n",
    "quit": b"221 2.0.0 Bye\r\n",
}

_STEPS = {b"EHLO": "ehlo", b"LHLO": "ehlo", b"MAIL": "mail", b"RCPT": "rcpt"}
_STEPS.update({b"DATA": "data", b"RSET": "rset", b"QUIT": "quit", b"STAR": "starttls"})

Action = bytes | Callable[["HostileNextHop"], None]

BODY = b"Subject: hostile\r\n\r\nbody\r\n.\r\n"

#: TLS modes and whether the certificate is verified: only the last falls
#: back to plain text after a failed handshake.
TLS_CASES = (("required", False), ("opportunistic", True), ("opportunistic", False))

#: Line and paragraph separators, a bidirectional override.
UNSAFE_UTF8 = ("\u2028".encode(), "\u2029".encode(), "\u202e".encode())

#: Reply text a terminal or a log reader would act on: escape sequences
#: (7-bit and C1), NUL, BEL, DEL, a bare CR, separators, a bidirectional
#: override, an invalid octet, and length.
POISON = (
    b"\x1b[2J\x1b]0;owned\x07 \xc2\x9b31m \x00nul \x7f \rcr "
    + b"".join(UNSAFE_UTF8)
    + b" \xff "
    + b"y" * 3000
)


class HostileNextHop(Protocol):
    """
    One session of the scripted next hop: each step (the greeting, a
    command, the end of the data) is answered with the bytes the script
    gives, or by calling the script's function with this protocol.
    """

    factory: HostileFactory

    def __init__(self) -> None:
        self._buffer = b""
        self._inData = False
        # The size of the BDAT chunk being read, and whether it is the last.
        self._chunk: tuple[int, bool] | None = None
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.factory.sessions.append(self)
        self.act("greeting")

    def act(self, step: str) -> None:
        action = self.factory.script.get(step, DEFAULTS.get(step, b"500 5.5.2 What?\r\n"))
        if isinstance(action, bytes):
            self.transport.write(action)  # type: ignore[union-attr]
        else:
            action(self)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while self.connected:
            if self._chunk is not None:
                size, last = self._chunk
                if len(self._buffer) < size:
                    return
                self._buffer, self._chunk = self._buffer[size:], None
                self.act("final" if last else "bdat")
                continue
            if b"\n" not in self._buffer:
                return
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if self._inData:
                if line == b".":
                    self._inData = False
                    self.act("final")
                continue
            self.factory.commands.append(line)
            if line[:5].upper() == b"BDAT ":
                words = line.split()
                self._chunk = (int(words[1]), len(words) > 2)
                continue
            step = _STEPS.get(line[:4].upper(), "unknown")
            self.act(step)
            if step == "data":
                answer = self.factory.script.get("data", DEFAULTS["data"])
                self._inData = not isinstance(answer, bytes) or answer.startswith(b"354")
            if step == "quit" and isinstance(self.factory.script.get("quit", b""), bytes):
                self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self.lost.callback(None)


class HostileFactory(Factory):
    """
    Makes L{HostileNextHop}s following C{script}, which a test may change
    between sessions.

    @ivar commands: Every command line received, over all sessions.
    @ivar sessions: Every session, in order.
    """

    protocol = HostileNextHop
    noisy = False

    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        self.commands: list[bytes] = []
        self.sessions: list[HostileNextHop] = []


def thenClose(data: bytes) -> Action:
    """
    An action writing C{data}, then closing the connection.
    """

    def act(hop: HostileNextHop) -> None:
        hop.transport.write(data)  # type: ignore[union-attr]
        hop.transport.loseConnection()  # type: ignore[union-attr]

    return act


def silent(hop: HostileNextHop) -> None:
    """
    An action answering nothing and keeping the connection open.
    """


def reset(hop: HostileNextHop) -> None:
    """
    An action resetting the connection (RST).
    """
    hop.transport.abortConnection()  # type: ignore[union-attr]


class RawClient(Protocol):
    """
    The front server's client: sends one command at a time and keeps each
    reply as the bytes received.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._lines: list[bytes] = []
        self.replies: DeferredQueue[bytes] = DeferredQueue()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            self._lines.append(line + b"\r\n")
            if line[3:4] != b"-":
                self.replies.put(b"".join(self._lines))
                self._lines = []

    async def send(self, data: bytes) -> bytes:
        """
        Send C{data}; return the next reply.
        """
        self.transport.write(data)  # type: ignore[union-attr]
        return await self.replies.get()


def code(reply: bytes) -> bytes:
    """
    The code and enhanced code of C{reply}'s last line.
    """
    return b" ".join(reply.splitlines()[-1].split(b" ")[:2])


class HostileTestsMixin:
    """
    A front server relaying to a L{HostileNextHop}; a raw client of it.
    """

    lmtpFront = False

    async def start(self: Any, script: dict[str, Any], lmtp: bool = False, **relay: Any) -> int:
        """
        Start the next hop with C{script}, and a front server passing mail
        on to it (with the LMTP-delivery handler if C{lmtp}, given the
        handler's arguments C{relay}); return the front server's port.
        """
        self.hop = HostileFactory(script)
        listening: IListeningPort = reactor.listenTCP(  # type: ignore[attr-defined]
            0, self.hop, interface="127.0.0.1"
        )
        self.addCleanup(listening.stopListening)
        port = listening.getHost().port  # type: ignore[attr-defined]
        handler: Any
        relay.setdefault("timeout", 10)
        if lmtp:
            handler = LMTPDeliveryHandler(
                f"tcp:127.0.0.1:{port}", heloName="relay.example", **relay
            )
        else:
            relay.setdefault("tls", "none")
            handler = RelayHandler("127.0.0.1", port, heloName="relay.example", **relay)
        self.handler = closeWith(self, handler)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server, frontPort = await startServer(self, handler, lmtp=self.lmtpFront)
        return frontPort

    async def client(self: Any, port: int) -> RawClient:
        """
        A client greeted by the front server on C{port}.
        """
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = await connectProtocol(endpoint, RawClient())
        self.addCleanup(client.transport.loseConnection)
        greeting = await client.replies.get()
        self.assertTrue(greeting.startswith(b"220 "))
        hello = b"LHLO" if self.lmtpFront else b"EHLO"
        self.assertTrue((await client.send(hello + b" client.example\r\n")).startswith(b"250"))
        return client

    async def transaction(
        self: Any, client: RawClient, recipients: int = 1, body: bytes = BODY
    ) -> list[bytes]:
        """
        MAIL, C{recipients} RCPTs, DATA and the body, as far as the front
        server lets them go; return every reply.
        """
        replies = [await client.send(b"MAIL FROM:<alice@example.com>\r\n")]
        if not replies[-1].startswith(b"250"):
            return replies
        for index in range(recipients):
            replies.append(await client.send(b"RCPT TO:<r%d@example.org>\r\n" % index))
        replies.append(await client.send(b"DATA\r\n"))
        if replies[-1].startswith(b"354"):
            replies.append(await client.send(body))
            if self.lmtpFront:
                accepted = sum(1 for r in replies[1:-2] if r.startswith(b"250"))
                for _ in range(accepted - 1):
                    replies.append(await client.replies.get())
        return replies

    def logLines(self: Any) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def assertClean(self: Any, data: bytes | str) -> None:
        """
        C{data} (a reply or log lines) carries none of the control
        characters the next hop put in its replies.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        for control in (b"\x1b", b"\x00", b"\x07", b"\x7f", b"\xc2\x9b", *UNSAFE_UTF8):
            self.assertNotIn(control, data)
        lines = data.split(b"\r\n")
        for line in lines:
            self.assertNotIn(b"\r", line)
            self.assertNotIn(b"\n", line)


class HostileRelayTests(HostileTestsMixin, TestCase):
    """
    L{RelayHandler} in front of a next hop that misbehaves.
    """

    async def test_finalReplyThenGarbage(self) -> None:
        """
        A 250 after the body followed, in the same packet, by a line that
        is no reply: the next hop has the message, so the client gets 250
        (a 451 would have it sent twice); the session is then closed.
        """
        for garbage in (b"garbage here\r\n", b"x" * (MAX_REPLY_LINE + 10), b"2x0 no\r\n"):
            port = await self.start({"final": b"250 2.0.0 Queued as H1\r\n" + garbage})
            client = await self.client(port)
            replies = await self.transaction(client)
            self.assertEqual(code(replies[-1]), b"250 2.0.0", replies)
            self.assertIn(b"Queued as H1", replies[-1])
            await self.hop.sessions[-1].lost

    async def test_closedAfterFinalReply(self) -> None:
        """
        A next hop closing right after its 250 to the body has the message:
        250.
        """
        port = await self.start({"final": thenClose(b"250 2.0.0 Queued as H2\r\n")})
        client = await self.client(port)
        self.assertEqual(code((await self.transaction(client))[-1]), b"250 2.0.0")

    async def test_refusedGreetingSanitised(self) -> None:
        """
        A greeting refusing the session with escape sequences, NUL and 8-bit
        octets in its text: the client's MAIL gets 451 4.4.1 giving its
        code, not its words; the one log line quotes them, with none of
        those characters.
        """
        greeting = b"554 5.7.1 \x1b[31mgo\x00away\x07\xff\x1b]0;title\x07\r\n"
        port = await self.start({"greeting": greeting})
        client = await self.client(port)
        [reply] = await self.transaction(client)
        self.assertEqual(code(reply), b"451 4.4.1")
        self.assertIn(b"refused the session (554)", reply)
        self.assertNotIn(b"away", reply)
        self.assertClean(reply)
        lines = [line for line in self.logLines() if "next hop" in line]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("away", lines[0])
        self.assertClean(lines[0])

    async def test_refusedGreetingQuitUnanswered(self) -> None:
        """
        A next hop refusing its greeting, then never answering QUIT: the
        client's MAIL gets 451 4.4.1 without waiting for a reply to QUIT
        (well before the 10 s the relay would wait for it), and the
        connection to the next hop is closed all the same.
        """
        port = await self.start({"greeting": b"554 5.7.1 not now\r\n", "quit": silent})
        client = await self.client(port)
        answered = Deferred.fromCoroutine(client.send(b"MAIL FROM:<alice@example.com>\r\n"))
        reply = await answered.addTimeout(QUIT_TIMEOUT / 2, reactor)
        self.assertEqual(code(reply), b"451 4.4.1")
        await self.hop.sessions[-1].lost.addTimeout(QUIT_TIMEOUT / 2, reactor)
        self.assertEqual(self.hop.commands, [b"QUIT"])

    async def test_malformedReplies(self) -> None:
        """
        A reply to MAIL that is not a well-formed reply (a code with a
        letter, out of range, changing inside a multi-line reply, an endless
        multi-line reply, a line with no end): 451 4.5.0, and the
        connection to the next hop is closed.
        """
        endless = b"250-x\r\n" * (MAX_REPLY_LINES + 5)
        cases = [b"2x0 ok\r\n", b"999 ok\r\n", b"250-a\r\n251 b\r\n", endless, b"2" * 1000000]
        for answer in cases:
            port = await self.start({"mail": answer})
            client = await self.client(port)
            [reply] = await self.transaction(client)
            self.assertEqual(code(reply), b"451 4.5.0", answer[:20])
            self.assertClean(reply)
            await self.hop.sessions[-1].lost

    async def test_poisonedTexts(self) -> None:
        """
        Refusals at MAIL, at RCPT and after the body, and the 250 after the
        body, carrying escape sequences, controls, separators and 3,000
        octets: the client gets each verdict's code with the text made
        safe (no control, no separator, no line over 512 octets), and so
        does every log line.
        """
        steps = [
            ("mail", b"550 5.7.1 ", b"550 5.7.1", 0),
            ("rcpt", b"550 5.1.1 ", b"550 5.1.1", 1),
            ("final", b"554 5.6.0 ", b"554 5.6.0", 3),
            ("final", b"250 2.0.0 ", b"250 2.0.0", 3),
        ]
        for step, prefix, expected, index in steps:
            port = await self.start({step: prefix + POISON + b"\r\n"})
            client = await self.client(port)
            replies = await self.transaction(client)
            self.assertEqual(code(replies[index]), expected, step)
            for reply in replies:
                self.assertClean(reply)
                for line in reply.split(b"\r\n"):
                    self.assertLessEqual(len(line), 512)
        for line in self.logLines():
            self.assertClean(line)

    async def test_chunkRefusedThenAccepted(self) -> None:
        """
        BDAT to a next hop refusing a chunk, then answering the last one
        with 250: the message was refused (RFC 3030 section 2: the
        transaction failed), the client gets the refusal, never a 250.
        """
        ehlo = b"250-nexthop.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
        port = await self.start({"ehlo": ehlo, "bdat": b"552 5.3.4 Too much\r\n"})
        client = await self.client(port)
        body = b"Subject: big\r\n\r\n" + b"z" * 998 + b"\r\n" * 200 + b".\r\n"
        replies = await self.transaction(client, body=body)
        self.assertEqual(code(replies[-1]), b"552 5.3.4")
        self.assertIn(b"BDAT", b" ".join(self.hop.commands))
        await self.hop.sessions[-1].lost

    async def test_chunkRefusedThenClosed(self) -> None:
        """
        BDAT to a next hop refusing the first chunk with a poisoned 552 and
        closing the connection behind it, while later chunks are on their
        way: its permanent refusal, received before the close, is the
        client's answer (with its text made safe), not a 451 for the lost
        connection.
        """
        ehlo = b"250-nexthop.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
        refusal = b"552 5.3.4 " + POISON + b"\r\n"
        port = await self.start({"ehlo": ehlo, "bdat": thenClose(refusal)})
        client = await self.client(port)
        body = b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 300 + b".\r\n"
        replies = await self.transaction(client, body=body)
        self.assertEqual(code(replies[-1]), b"552 5.3.4", replies[-1][:100])
        self.assertClean(replies[-1])
        self.assertEqual(len(self.hop.sessions), 1)
        for line in self.logLines():
            self.assertClean(line)

    async def test_resetAtEveryStage(self) -> None:
        """
        A connection reset instead of the greeting, or of the reply to
        EHLO, MAIL, RCPT, DATA or the body: the client gets 451 4.4.2 where
        the reset happened (after the body for DATA, which the front server
        answers with 354 itself), never a 250 after the body; its next
        transaction goes to a new session.
        """
        script: dict[str, Any] = {}
        # A session per message: each one is greeted and says EHLO.
        port = await self.start(script, idleTimeout=0)
        client = await self.client(port)
        stages = [("greeting", 0), ("ehlo", 0), ("mail", 0), ("rcpt", 1), ("data", 3)]
        stages.append(("final", 3))
        for stage, index in stages:
            script.clear()
            script[stage] = reset
            replies = await self.transaction(client)
            self.assertEqual(code(replies[index]), b"451 4.4.2", (stage, replies))
            self.assertFalse(any(r.startswith(b"250 2.0.0") for r in replies[3:]), stage)
            if index:
                self.assertEqual((await client.send(b"RSET\r\n"))[:3], b"250")
            script.clear()
            self.assertEqual(code((await self.transaction(client))[-1]), b"250 2.0.0", stage)

    async def test_closingReplyToMessageDropsSession(self) -> None:
        """
        A 421 to DATA or after the body, the connection left open: the
        client gets 451, and the next message goes to a new session, the
        one the next hop said it closes never given an RSET.
        """
        for step in ("data", "final"):
            script: dict[str, Any] = {step: b"421 4.3.2 Shutting down\r\n"}
            port = await self.start(script)
            client = await self.client(port)
            replies = await self.transaction(client)
            self.assertEqual(code(replies[-1]), b"451 4.3.2", step)
            script.clear()
            replies = await self.transaction(client)
            self.assertEqual(code(replies[-1]), b"250 2.0.0", step)
            self.assertEqual(len(self.hop.sessions), 2, step)
            self.assertNotIn(b"RSET", self.hop.commands, step)
            await self.hop.sessions[0].lost

    async def test_replyBeforeCommand(self) -> None:
        """
        A reply sent before the command it would answer (a RCPT not yet
        sent): the RCPT gets 451 4.5.0 and is never sent on that session.
        """
        port = await self.start({"mail": b"250 2.1.0 ok\r\n250 2.1.5 early\r\n"})
        client = await self.client(port)
        replies = await self.transaction(client)
        self.assertEqual(code(replies[1]), b"451 4.5.0")
        self.assertEqual([c for c in self.hop.commands if c.startswith(b"RCPT")], [])

    async def test_goAheadThenClose(self) -> None:
        """
        A 354 followed by the connection closing: the client's body is read
        and answered 451, and its next transaction goes to a new session.
        """
        script: dict[str, Any] = {"data": thenClose(b"354 go\r\n")}
        port = await self.start(script)
        client = await self.client(port)
        replies = await self.transaction(client, body=b"x" * 998 + b"\r\n" * 1000 + BODY)
        self.assertEqual(code(replies[-1]), b"451 4.4.2")
        del script["data"]
        replies = await self.transaction(client)
        self.assertEqual(code(replies[-1]), b"250 2.0.0")
        self.assertEqual(len(self.hop.sessions), 2)

    async def test_notARefusalToMail(self) -> None:
        """
        A 354 to MAIL (a reply that refuses nothing and accepts nothing) is
        never taken for an acceptance: 451 4.5.0; the session, out of step,
        is dropped, and the next transaction goes to a new one.
        """
        script: dict[str, Any] = {"mail": b"354 go ahead\r\n"}
        port = await self.start(script)
        client = await self.client(port)
        [reply] = await self.transaction(client)
        self.assertEqual(code(reply), b"451 4.5.0")
        del script["mail"]
        self.assertEqual(code((await self.transaction(client))[-1]), b"250 2.0.0")
        self.assertEqual(len(self.hop.sessions), 2)
        self.assertNotIn(b"RSET", self.hop.commands)
        await self.hop.sessions[0].lost

    async def test_notARefusalToRcpt(self) -> None:
        """
        A 354 to RCPT: 451 4.5.0, and the session, out of step (what is sent
        next would be read as message text), is dropped: the later RCPT
        gets 451 4.4.2 at once, without being sent.
        """
        port = await self.start({"rcpt": b"354 go ahead\r\n"})
        client = await self.client(port)
        replies = await self.transaction(client, recipients=2)
        self.assertEqual([code(r) for r in replies[1:3]], [b"451 4.5.0", b"451 4.4.2"])
        self.assertEqual(len([c for c in self.hop.commands if c.startswith(b"RCPT")]), 1)
        await self.hop.sessions[0].lost

    async def test_plaintextAfterStartTLS(self) -> None:
        """
        A next hop answering STARTTLS with 220, then plain-text replies
        instead of a handshake: the handshake fails, and no MAIL is sent on
        that connection.  With TLS required, or opportunistic with the
        certificate to be verified, the client gets 451 4.7.5; opportunistic
        without verification tries once more in plain text on a new
        connection (as Postfix at level C{may}), where the message goes.
        """

        ehlo = b"250-nexthop.example\r\n250 STARTTLS\r\n"
        injected = b"250-injected\r\n250 PIPELINING\r\n"
        for mode, verify in TLS_CASES:
            # The ClientHello is taken for commands, answered in plain text.
            script = {"ehlo": ehlo, "starttls": b"220 2.0.0 Ready\r\n", "unknown": injected}
            port = await self.start(script, tls=mode, verify=verify)
            await self.assertHandshakeFailed(port, fallback=not verify and mode != "required")

    async def test_closedAfterStartTLS(self) -> None:
        """
        A next hop closing right after its 220 to STARTTLS: no MAIL on that
        connection; 451 4.7.5 unless TLS is opportunistic without
        verification, which tries once more in plain text.
        """
        ehlo = b"250-nexthop.example\r\n250 STARTTLS\r\n"
        for mode, verify in TLS_CASES:
            script = {"ehlo": ehlo, "starttls": thenClose(b"220 2.0.0 Ready\r\n")}
            port = await self.start(script, tls=mode, verify=verify)
            await self.assertHandshakeFailed(port, fallback=not verify and mode != "required")

    async def assertHandshakeFailed(self, port: int, fallback: bool) -> None:
        """
        A transaction through the front server on C{port}, whose next hop
        fails the TLS handshake of its first session: 451 4.7.5 without a
        fallback; with one, the message goes over a second session that
        never sent STARTTLS, and one log line says so.
        """
        client = await self.client(port)
        replies = await self.transaction(client)
        first = self.hop.sessions[0]
        await first.lost
        lines = [line for line in self.logLines() if "trying again in plain text" in line]
        if not fallback:
            self.assertEqual(code(replies[0]), b"451 4.7.5")
            self.assertEqual(len(self.hop.sessions), 1)
            self.assertEqual([c for c in self.hop.commands if c.startswith(b"MAIL")], [])
            self.assertEqual(lines, [])
            return
        self.assertEqual(code(replies[-1]), b"250 2.0.0", replies)
        self.assertEqual(len(self.hop.sessions), 2)
        commands = self.hop.commands
        self.assertEqual(commands.count(b"STARTTLS"), 1)
        # The first session ended at the handshake; the second said EHLO
        # again, then MAIL, never STARTTLS.
        starttls = commands.index(b"STARTTLS")
        mail = commands.index(b"MAIL FROM:<alice@example.com>")
        self.assertIn(b"EHLO relay.example", commands[starttls + 1 : mail])
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("127.0.0.1:", lines[0])


class HostileLMTPTests(HostileTestsMixin, TestCase):
    """
    L{LMTPDeliveryHandler} behind an LMTP front, in front of an LMTP server
    that misbehaves after the body.
    """

    lmtpFront = True

    async def test_repliesThenGarbage(self) -> None:
        """
        Each recipient's reply after the body, then garbage in the same
        packet: each recipient keeps its own reply (the message was
        delivered to both).
        """
        final = b"250 2.0.0 r0 delivered\r\n452 4.2.2 r1 over quota\r\n\x00junk\x1b\r\n"
        port = await self.start({"final": final}, lmtp=True)
        client = await self.client(port)
        replies = await self.transaction(client, recipients=2)
        self.assertEqual([code(r) for r in replies[-2:]], [b"250 2.0.0", b"452 4.2.2"])
        self.assertIn(b"over quota", replies[-1])

    async def test_fewerReplies(self) -> None:
        """
        One reply for two recipients, then the connection closes: the
        first keeps its 250, the second gets 451 4.4.2.
        """
        port = await self.start({"final": thenClose(b"250 2.0.0 r0 ok\r\n")}, lmtp=True)
        client = await self.client(port)
        replies = await self.transaction(client, recipients=2)
        self.assertEqual([code(r) for r in replies[-2:]], [b"250 2.0.0", b"451 4.4.2"])

    async def test_moreReplies(self) -> None:
        """
        Three replies for two recipients: each gets its own, the extra one
        is not kept for anything, and the connection is closed.
        """
        final = b"250 2.0.0 r0 ok\r\n250 2.0.0 r1 ok\r\n250 2.0.0 stray\r\n"
        port = await self.start({"final": final}, lmtp=True)
        client = await self.client(port)
        replies = await self.transaction(client, recipients=2)
        self.assertEqual([code(r) for r in replies[-2:]], [b"250 2.0.0", b"250 2.0.0"])
        self.assertNotIn(b"stray", b"".join(replies))
        await self.hop.sessions[-1].lost

    async def test_closingReplyForOneRecipient(self) -> None:
        """
        A recipient's reply after the body is 421, the connection left
        open: that recipient gets 451, the other keeps its 250, and the next
        message goes to a new session.
        """
        script: dict[str, Any] = {"final": b"250 2.0.0 r0 ok\r\n421 4.3.2 Shutting down\r\n"}
        port = await self.start(script, lmtp=True)
        client = await self.client(port)
        replies = await self.transaction(client, recipients=2)
        self.assertEqual([code(r) for r in replies[-2:]], [b"250 2.0.0", b"451 4.3.2"])
        script["final"] = b"250 2.0.0 r0 ok\r\n250 2.0.0 r1 ok\r\n"
        replies = await self.transaction(client, recipients=2)
        self.assertEqual([code(r) for r in replies[-2:]], [b"250 2.0.0", b"250 2.0.0"])
        self.assertEqual(len(self.hop.sessions), 2)
        self.assertNotIn(b"RSET", self.hop.commands)
        await self.hop.sessions[0].lost

    async def test_intermediateReplyForOneRecipient(self) -> None:
        """
        A recipient's reply after the body is 354, which no message's end
        asks for: the next hop broke the protocol, that recipient gets
        451 4.5.0, the other keeps its 250, one log line quotes the 354, a
        report to the sender would say 4.5.0 (never 3.0.0), and the next
        message goes to a new session, never sent on this one.
        """
        script: dict[str, Any] = {"final": b"250 2.0.0 r0 ok\r\n354 Go on\r\n"}
        port = await self.start(script, lmtp=True)
        client = await self.client(port)
        replies = await self.transaction(client, recipients=2)
        self.assertEqual([code(r) for r in replies[-2:]], [b"250 2.0.0", b"451 4.5.0"])
        self.assertIn(b"unexpected reply from the next hop (354)", replies[-1])
        self.assertNotIn(b"Go on", replies[-1])
        [line] = [line for line in self.logLines() if "r1@example.org" in line]
        self.assertIn("failed before its reply for r1@example.org: 451 4.5.0", line)
        self.assertIn("354 Go on", line)
        script["final"] = b"250 2.0.0 r0 ok\r\n250 2.0.0 r1 ok\r\n"
        replies = await self.transaction(client, recipients=2)
        self.assertEqual([code(r) for r in replies[-2:]], [b"250 2.0.0", b"250 2.0.0"])
        self.assertEqual(len(self.hop.sessions), 2)
        self.assertNotIn(b"RSET", self.hop.commands)
        await self.hop.sessions[0].lost

    async def test_poisonedPerRecipient(self) -> None:
        """
        Per-recipient replies after the body carrying escape sequences,
        controls and separators: each recipient gets its own code with the
        text made safe, and so does every log line.
        """
        final = b"250 2.0.0 " + POISON + b"\r\n452 4.2.2 " + POISON + b"\r\n"
        port = await self.start({"final": final}, lmtp=True)
        client = await self.client(port)
        replies = await self.transaction(client, recipients=2)
        self.assertEqual([code(r) for r in replies[-2:]], [b"250 2.0.0", b"452 4.2.2"])
        for reply in replies:
            self.assertClean(reply)
        for line in self.logLines():
            self.assertClean(line)
