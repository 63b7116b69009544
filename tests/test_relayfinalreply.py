# -*- test-case-name: tests.test_relayfinalreply -*-
"""
The relay in front of a next hop misbehaving between the end of the data
and its final reply: lost before it, reset right after it, trickled octet
by octet, or never ending.  The client gets a 250 only for a 250 the next
hop completed; anything else is a 4xx within the reply deadline, with one
log line saying what happened.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.test_relayhostile import (
    HostileNextHop,
    HostileTestsMixin,
    code,
    reset,
    silent,
)

FINAL = b"250 2.0.0 Queued as TRICKLE1\r\n"


def trickle(data: bytes, delay: float, then: Any = None) -> Any:
    """
    An action writing C{data} one octet at a time, C{delay} seconds apart,
    then calling C{then}.
    """

    def act(hop: HostileNextHop) -> None:
        def step(index: int) -> None:
            if not hop.connected:
                return
            if index == len(data):
                if then is not None:
                    then(hop)
                return
            hop.transport.write(data[index : index + 1])  # type: ignore[union-attr]
            hop.factory.pending.append(reactor.callLater(delay, step, index + 1))  # type: ignore[attr-defined]

        step(0)

    return act


def endless(hop: HostileNextHop) -> None:
    """
    An action answering with a multi-line reply that never ends: a
    continuation line every few milliseconds for as long as the
    connection stays.
    """

    def step() -> None:
        if hop.connected:
            hop.transport.write(b"250-2.0.0 more to come\r\n" * 10)  # type: ignore[union-attr]
            hop.factory.pending.append(reactor.callLater(0.005, step))  # type: ignore[attr-defined]

    step()


def thenReset(data: bytes) -> Any:
    """
    An action writing C{data}, then resetting the connection.
    """

    def act(hop: HostileNextHop) -> None:
        hop.transport.write(data)  # type: ignore[union-attr]
        # The write leaves before the reset (an abort drops what is unsent).
        hop.factory.pending.append(reactor.callLater(0.05, reset, hop))  # type: ignore[attr-defined]

    return act


class FinalReplyTests(HostileTestsMixin, TestCase):
    """
    L{RelayHandler} waiting for the next hop's reply after the body.
    """

    async def relay(self, final: Any, timeout: float = 10) -> list[bytes]:
        port = await self.start({"final": final}, timeout=timeout)
        self.hop.pending = []

        def cancel() -> None:
            for call in self.hop.pending:
                if call.active():
                    call.cancel()

        self.addCleanup(cancel)
        client = await self.client(port)
        return await self.transaction(client)

    def hopLines(self) -> list[str]:
        return [line for line in self.logLines() if "next hop" in line]

    async def test_lostBeforeFinalReply(self) -> None:
        """
        The next hop resets the connection after the end of the data,
        before its reply, or goes silent past the deadline: the client
        gets 451, never 250, and one log line says the next hop failed
        during the message, naming the stage once.
        """
        for final, expected, words in (
            (reset, b"451 4.4.2", "connection lost (reply)"),
            (silent, b"451 4.4.2", "timeout waiting for the server (reply)"),
        ):
            replies = await self.relay(final, timeout=0.5)
            self.assertEqual(code(replies[-1]), expected, replies[-1])
            [line] = [line for line in self.hopLines() if "during the message" in line]
            self.assertIn(words, line)
            self.assertEqual(line.count("(reply)"), 1, line)
            self.assertNotIn("passed to", " ".join(self.logLines()))

    async def test_finalReplyThenReset(self) -> None:
        """
        A 250 after the end of the data, then a reset: the next hop has the
        message, the client gets its 250.
        """
        replies = await self.relay(thenReset(FINAL))
        self.assertEqual(code(replies[-1]), b"250 2.0.0", replies[-1])
        self.assertIn(b"TRICKLE1", replies[-1])

    async def test_finalReplyTrickled(self) -> None:
        """
        The 250 sent one octet at a time, the whole within the deadline:
        the client gets it.
        """
        replies = await self.relay(trickle(FINAL, 0.01), timeout=5)
        self.assertEqual(code(replies[-1]), b"250 2.0.0", replies[-1])
        self.assertIn(b"TRICKLE1", replies[-1])

    async def test_finalReplyTrickledPastDeadline(self) -> None:
        """
        The 250 trickled so slowly that the whole reply takes longer than
        the deadline, each octet well within it: the deadline runs for the
        reply, not per octet; the client gets 451 4.4.2 once it passes.
        """
        started = reactor.seconds()  # type: ignore[attr-defined]
        replies = await self.relay(trickle(FINAL, 0.1), timeout=0.5)
        self.assertEqual(code(replies[-1]), b"451 4.4.2", replies[-1])
        self.assertLess(reactor.seconds() - started, 5)  # type: ignore[attr-defined]

    async def test_endlessMultilineReply(self) -> None:
        """
        A multi-line reply after the body that never ends: refused as
        malformed after L{MAX_REPLY_LINES} lines, 451 4.5.0, the connection
        to the next hop dropped.
        """
        replies = await self.relay(endless)
        self.assertEqual(code(replies[-1]), b"451 4.5.0", replies[-1])
        await self.hop.sessions[-1].lost
        [line] = [line for line in self.hopLines() if "during the message" in line]
        self.assertIn("too many lines", line)
