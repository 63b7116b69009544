# -*- test-case-name: tests.integration.test_deliverybounds -*-
"""
The bound on the messages C{--webhook} and C{--pipe} hand on at once,
through a real SMTP server on 127.0.0.1: more clients sending at once than
the bound never make more requests in flight at a real HTTP receiver, nor
more commands running, than the bound; every message still gets its 250
once the ones ahead of it end; and a client that leaves while its message
waits takes it out of the queue.
"""

from __future__ import annotations

import os
import smtplib
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.server import Request

from tests.integration.webhookreceiver import (
    TrackingSite,
    WebhookReceiver,
    stopReceiver,
)
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd.handlers.pipe import PipeHandler
from twisted_smtpd.handlers.webhook import WebhookHandler
from twisted_smtpd.testing import listenForTests

MESSAGE = b"From: alice@example.com\r\nSubject: bound\r\n\r\nhello\r\n"
#: The bound, and how many more clients than it send at once.
BOUND = 3
MORE = 3
#: How many times a condition is looked at, every 20 ms, before giving up.
TRIES = 1000


class HoldingReceiver(WebhookReceiver):
    """
    Holds every request unanswered until L{release}; counts the most held
    at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.most = 0

    def render_POST(self, request: Request) -> bytes | int:
        self.script.append(None)
        result = super().render_POST(request)
        self.most = max(self.most, len(self.hanging))
        return result

    def release(self) -> int:
        """
        Answer 200 every request held; return how many.
        """
        held, self.hanging = self.hanging, []
        for request in held:
            request.setResponseCode(200)
            request.setHeader(b"content-type", b"text/plain")
            request.write(b"ok")
            request.finish()
        return len(held)


async def until(condition: Callable[[], bool]) -> None:
    """
    Wait until C{condition()} is true, looking every 20 ms, 20 s at most.
    """
    for _ in range(TRIES):
        if condition():
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("condition not met in 20 s")


def send(port: int) -> tuple[int, bytes]:
    """
    Send one message to the server on C{port}; return the reply to its
    data.
    """
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example")
        client.mail("a@example.com")
        client.rcpt("x@example.org")
        reply: tuple[int, bytes] = client.data(MESSAGE)
        return reply


class WebhookBoundTests(TestCase):
    """
    C{maxConcurrent} of L{WebhookHandler} against a real receiver that
    holds its requests.
    """

    timeout = 60

    async def serve(
        self, receiver: WebhookReceiver, options: ServerOptions | None = None, **kwargs: Any
    ) -> tuple[Any, int]:
        """
        The receiver on 127.0.0.1, a handler posting to it and an SMTP
        server delivering with that handler; the handler and the server's
        port.
        """
        site = TrackingSite(receiver)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(lambda: Deferred.fromCoroutine(stopReceiver(port, site)))
        handler = WebhookHandler(f"http://127.0.0.1:{port.getHost().port}/hook", **kwargs)
        self.addCleanup(handler.close)
        server = await listenForTests(handler, options)
        self.addCleanup(server.close)
        return handler, server.port

    async def test_neverMoreThanTheBound(self) -> None:
        """
        With C{maxConcurrent=3} and six clients sending at once, the
        receiver never holds more than three requests; the three others
        wait, and every client gets 250 once the requests ahead of its
        message are answered.
        """
        receiver = HoldingReceiver()
        handler, port = await self.serve(receiver, maxConcurrent=BOUND)
        sent = gatherResults([deferToThread(send, port) for _ in range(BOUND + MORE)])
        bound = getattr(handler, "_bound", None)
        await until(
            lambda: (
                len(receiver.hanging) > BOUND
                or (len(receiver.hanging) == BOUND and bound is not None and bound.waiting == MORE)
            )
        )
        # Before the fix: all six requests in flight at once.
        self.assertEqual(len(receiver.hanging), BOUND)
        answered = 0
        while answered < BOUND + MORE:
            await until(lambda: bool(receiver.hanging))
            answered += receiver.release()
        replies = await sent
        self.assertEqual([code for code, text in replies], [250] * (BOUND + MORE))
        self.assertEqual(len(receiver.requests), BOUND + MORE)
        self.assertEqual(receiver.most, BOUND)

    async def test_sessionEndsWhileWaiting(self) -> None:
        """
        A message whose session ends while it waits for its turn (here the
        server's C{handlerTimeout}: a client's reset is not read while its
        message's reply is awaited) leaves the queue, and is never posted;
        the turn goes to the next message.
        """
        receiver = HoldingReceiver()
        options = ServerOptions(
            name="mx.test.invalid", disableReverseLookup=True, handlerTimeout=2.0
        )
        handler, port = await self.serve(receiver, options, maxConcurrent=1)
        first = deferToThread(send, port)
        await until(lambda: len(receiver.hanging) == 1)
        second = deferToThread(send, port)
        await until(lambda: handler._bound.waiting == 1)
        self.assertEqual((await second)[0], 421)
        self.assertEqual((await first)[0], 421)
        self.assertEqual(handler._bound.waiting, 0)
        third = deferToThread(send, port)
        await until(lambda: handler._bound.waiting == 1)
        receiver.release()
        await until(lambda: bool(receiver.hanging))
        receiver.release()
        self.assertEqual((await third)[0], 250)
        self.assertEqual(len(receiver.requests), 2)
        await until(lambda: handler._bound.busy == 0)


#: Marks its start, then waits until a file named go exists.
SCRIPT = (
    'touch "$DIR/started.$SESSION_ID"; '
    'while [ ! -e "$DIR/go" ]; do sleep 0.02; done; cat > /dev/null'
)


class PipeBoundTests(TestCase):
    """
    C{maxConcurrent} of L{PipeHandler} with real commands.
    """

    timeout = 60

    async def test_neverMoreThanTheBound(self) -> None:
        """
        With C{maxConcurrent=3} and six clients sending at once, three
        commands start; the three other messages wait, and start once
        those have exited: every client gets 250.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        handler = PipeHandler(["sh", "-c", SCRIPT], env={"DIR": directory}, maxConcurrent=BOUND)
        server = await listenForTests(handler)
        self.addCleanup(server.close)
        go = os.path.join(directory, "go")

        def letGo() -> None:
            with open(go, "w"):
                pass

        # Whatever happens, the commands end.
        self.addCleanup(letGo)

        def started() -> int:
            return sum(name.startswith("started.") for name in os.listdir(directory))

        sent = gatherResults([deferToThread(send, server.port) for _ in range(BOUND + MORE)])
        bound = getattr(handler, "_bound", None)
        await until(
            lambda: (
                started() > BOUND
                or (started() == BOUND and bound is not None and bound.waiting == MORE)
            )
        )
        # Before the fix: six commands running at once.
        self.assertEqual(started(), BOUND)
        letGo()
        replies = await sent
        self.assertEqual([code for code, text in replies], [250] * (BOUND + MORE))
        self.assertEqual(started(), BOUND + MORE)
