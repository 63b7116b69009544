# -*- test-case-name: tests.test_relaypool -*-
"""
The session pool of L{RelayHandler} before a failing or hostile next hop,
and before many clients at once: each client gets a clear reply, one log
line says what went wrong, and no session of the pool is left taken.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.test_relayfinalreply import endless
from tests.test_relayhostile import (
    HostileNextHop,
    HostileTestsMixin,
    code,
    reset,
    silent,
)


async def settled(condition: Callable[[], bool]) -> bool:
    """
    Whether C{condition} holds within 5 seconds (checked every 10 ms).
    """
    for _ in range(500):
        if condition():
            return True
        await deferLater(reactor, 0.01, lambda: None)
    return condition()


def hopLines(lines: list[str]) -> list[str]:
    """
    The log lines about the next hop or its sessions.
    """
    return [line for line in lines if "next hop" in line]


class FailingNextHopTests(HostileTestsMixin, TestCase):
    """
    A next hop that fails at each step: one clear reply, one log line, the
    pool's session given back (closed).
    """

    async def failOnce(self, script: dict[str, Any]) -> tuple[list[bytes], list[str]]:
        """
        One transaction through a next hop following C{script}; return the
        client's replies and the log lines about the next hop, once its
        connection is closed.
        """
        port = await self.start(script, timeout=0.5)
        self.hop.pending = []

        def cancel() -> None:
            for call in self.hop.pending:
                if call.active():
                    call.cancel()

        self.addCleanup(cancel)
        client = await self.client(port)
        replies = await self.transaction(client)
        for session in self.hop.sessions:
            await session.lost
        self.assertEqual((self.handler.pool.busy, self.handler.pool.idle), (0, 0))
        return replies, hopLines(self.logLines())

    async def test_neverGreets(self) -> None:
        """
        A next hop that accepts the connection and never greets: 451 at
        MAIL once the deadline passes, one line.
        """
        replies, lines = await self.failOnce({"greeting": silent})
        self.assertEqual([code(r) for r in replies], [b"451 4.4.2"])
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("unavailable", lines[0])

    async def test_stallsAtMail(self) -> None:
        """
        A next hop that greets, then never answers MAIL: 451, one line.
        """
        replies, lines = await self.failOnce({"mail": silent})
        self.assertEqual([code(r) for r in replies], [b"451 4.4.2"])
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("failed at MAIL", lines[0])

    async def test_stallsAtRcpt(self) -> None:
        """
        A next hop that stalls mid-transaction (RCPT): 451, and the rest of
        the transaction refused, one line.
        """
        replies, lines = await self.failOnce({"rcpt": silent})
        self.assertEqual(code(replies[0]), b"250 2.1.0")
        self.assertEqual(code(replies[1]), b"451 4.4.2")
        self.assertFalse(any(r.startswith(b"250") for r in replies[2:]), replies)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("failed at RCPT", lines[0])

    async def test_stallsAtData(self) -> None:
        """
        A next hop that never answers DATA: 451 after the body, never 250,
        one line.
        """
        replies, lines = await self.failOnce({"data": silent})
        self.assertEqual(code(replies[-1]), b"451 4.4.2", replies)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("during the message", lines[0])

    async def test_closesAtMail(self) -> None:
        """
        A 421 to MAIL: the client gets 451 (a 421 is not the front server
        closing), one line.
        """
        replies, lines = await self.failOnce({"mail": b"421 4.3.2 Going down\r\n"})
        self.assertEqual([code(r) for r in replies], [b"451 4.3.2"])
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("refused MAIL", lines[0])

    async def test_dropsMidData(self) -> None:
        """
        The next hop resets the connection in the middle of the message
        text: 451, never 250, one line.
        """

        def dropLater(hop: HostileNextHop) -> None:
            hop.transport.write(b"354 Go ahead\r\n")  # type: ignore[union-attr]
            hop.factory.pending.append(  # type: ignore[attr-defined]
                reactor.callLater(0.05, reset, hop)  # type: ignore[attr-defined]
            )

        body = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n"
        port = await self.start({"data": dropLater}, timeout=2)
        self.hop.pending = []
        client = await self.client(port)
        self.assertEqual(code(await client.send(b"MAIL FROM:<a@example.com>\r\n")), b"250 2.1.0")
        self.assertEqual(code(await client.send(b"RCPT TO:<b@example.org>\r\n")), b"250 2.1.5")
        self.assertTrue((await client.send(b"DATA\r\n")).startswith(b"354"))
        client.transport.write(body * 100)  # type: ignore[union-attr]
        await self.hop.sessions[0].lost
        reply = await client.send(body * 10 + b".\r\n")
        self.assertEqual(code(reply)[:5], b"451 4", reply)
        lines = hopLines(self.logLines())
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("during the message", lines[0])
        self.assertEqual((self.handler.pool.busy, self.handler.pool.idle), (0, 0))

    async def test_endlessReplyToMail(self) -> None:
        """
        A multi-line reply to MAIL that never ends: 451 4.5.0, one line,
        the connection dropped.
        """
        replies, lines = await self.failOnce({"mail": endless})
        self.assertEqual([code(r) for r in replies], [b"451 4.5.0"])
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("too many lines", lines[0])


class ManyClientsTests(HostileTestsMixin, TestCase):
    """
    More clients at once than the pool has sessions.
    """

    async def test_manyAtOnce(self) -> None:
        """
        Sixteen clients at once through four sessions: every message is
        relayed, at most four sessions were opened, the bound being
        reached is logged without a line for each waiting message, and
        every session is idle at the end.
        """
        port = await self.start({}, maxSessions=4)
        clients = [await self.client(port) for _ in range(16)]
        results = await gatherResults(
            [Deferred.fromCoroutine(self.transaction(c)) for c in clients]
        )
        self.assertEqual({code(r[-1]) for r in results}, {b"250 2.0.0"})
        self.assertLessEqual(self.handler.pool.opened, 4)
        pool = self.handler.pool
        self.assertEqual((pool.busy, pool.idle), (0, pool.opened))
        reached = [line for line in self.logLines() if "the most at once" in line]
        self.assertGreaterEqual(len(reached), 1)
        self.assertLess(len(reached), 16)
        self.assertNotIn("unavailable", " ".join(self.logLines()))

    async def test_waitTimesOut(self) -> None:
        """
        A MAIL that waits longer than the timeout for the only session,
        held by another client's transaction: 451 4.4.5, and one line
        naming its session and the wait; the held session stays with its
        client.
        """
        port = await self.start({}, maxSessions=1, timeout=0.3)
        first = await self.client(port)
        self.assertEqual(code(await first.send(b"MAIL FROM:<a@example.com>\r\n")), b"250 2.1.0")
        second = await self.client(port)
        reply = await second.send(b"MAIL FROM:<c@example.com>\r\n")
        self.assertEqual(code(reply), b"451 4.4.5", reply)
        [line] = [line for line in hopLines(self.logLines()) if "the most at once" not in line]
        self.assertRegex(
            line,
            r"^\S+ next hop 127\.0\.0\.1:\d+ unavailable: 451 4\.4\.5 no session to"
            r" the next hop free after 0\.3 s \(1 busy\) \(connect\)$",
        )
        self.assertEqual((self.handler.pool.busy, self.handler.pool.idle), (1, 0))
        self.assertEqual(code(await first.send(b"QUIT\r\n")), b"221 2.0.0")
        pool = self.handler.pool
        self.assertTrue(await settled(lambda: (pool.busy, pool.idle) == (0, 1)))

    async def test_leavesWhileWaiting(self) -> None:
        """
        A client that disconnects while its MAIL waits for the only
        session: it leaves the queue, the session is not taken (no RSET,
        no MAIL) for it, and is idle once the first client is done.
        """
        port = await self.start({}, maxSessions=1)
        first = await self.client(port)
        self.assertEqual(code(await first.send(b"MAIL FROM:<a@example.com>\r\n")), b"250 2.1.0")
        second = await self.client(port)
        second.transport.write(b"MAIL FROM:<c@example.com>\r\n")  # type: ignore[union-attr]
        pool = self.handler.pool
        self.assertTrue(await settled(lambda: len(pool._waiters) == 1))
        # Reset: after a FIN what was sent is still answered, hooks
        # included (docs/behaviour.md), so MAIL would still wait its turn.
        second.transport.abortConnection()  # type: ignore[union-attr]
        self.assertTrue(await settled(lambda: not pool._waiters))
        self.assertEqual(code(await first.send(b"RSET\r\n")), b"250 2.0.0")
        self.assertEqual(code(await first.send(b"QUIT\r\n")), b"221 2.0.0")
        pool = self.handler.pool
        self.assertTrue(await settled(lambda: (pool.busy, pool.idle) == (0, 1)))
        self.assertEqual(self.hop.commands.count(b"MAIL FROM:<c@example.com>"), 0)
        self.assertEqual(self.hop.commands.count(b"RSET"), 0)
        self.assertEqual(
            [line for line in hopLines(self.logLines()) if "the most at once" not in line], []
        )
