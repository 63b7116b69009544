# -*- test-case-name: tests.test_pipelimits -*-
"""
Tests for the bounds L{PipeHandler} keeps on what it hands a command: the
recipients' share of the arguments and environment, and a command that
cannot be started.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.test_handlers import feed, makeSession
from tests.test_pipe import ProcessReactor
from twisted_smtpd import SMTPError
from twisted_smtpd._core.session import Address, Envelope, Session
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import pipe
from twisted_smtpd.handlers.pipe import MAX_ARG_STRLEN, PipeHandler, spawnSize


def longAddress(index: int) -> Address:
    """
    A recipient of 243 octets, well inside RFC 5321's 256-octet path.
    """
    return Address(f"{'a' * 60}{index:04d}@{'d' * 170}.example")


def accept(handler: PipeHandler, session: Session, count: int) -> SMTPError | None:
    """
    Offer C{count} long recipients to C{handler} as the protocol does,
    adding each accepted one to the envelope; stop at the first refusal.

    @return: The refusal, or C{None} when all were accepted.
    """
    for index in range(count):
        address = longAddress(index)
        try:
            handler.onRcptTo(address, session)
        except SMTPError as e:
            return e
        session.envelope.rcptTo.append(address)
    return None


def emptySession() -> Session:
    """
    A session in a transaction with no recipient yet.
    """
    return makeSession(envelope=Envelope(mailFrom=Address("alice@example.com"), rcptTo=[]))


class RecipientBoundTests(SynchronousTestCase):
    """
    L{PipeHandler.onRcptTo} refuses a recipient with 452 4.5.3 once the
    command could no longer be run with it.
    """

    def test_recipientStringBound(self) -> None:
        """
        C{RECIPIENT} holds every recipient, so it reaches Linux's 128 KiB
        per-string limit (C{MAX_ARG_STRLEN}) first: the recipient that
        would take it past is refused with 452 4.5.3, logged by the session
        alone; the command's arguments and environment for those accepted
        stay within both limits.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        handler = PipeHandler("cat", reactor=ProcessReactor())
        session = emptySession()
        error = accept(handler, session, 1000)
        assert error is not None
        self.assertEqual((error.code, error.enhanced), (452, "4.5.3"))
        accepted = len(session.envelope.rcptTo)
        # 244 octets each with its line break: 537 fit in 128 KiB, 538 not.
        self.assertEqual(accepted, 537)
        self.assertEqual(accepted, (MAX_ARG_STRLEN - len("RECIPIENT=")) // 244)
        env = handler.environment(session)
        total, longest = spawnSize(handler.arguments(session), env)
        self.assertLessEqual(longest, MAX_ARG_STRLEN)
        self.assertEqual(longest, len("RECIPIENT=") + len(env["RECIPIENT"]) + 1)
        self.assertLessEqual(total, os.sysconf("SC_ARG_MAX"))
        # The session's reject line is the refusal's one line.
        self.assertEqual([formatEvent(event) for event in events], [])

    def test_totalBound(self) -> None:
        """
        With a small C{ARG_MAX} the total counts: each recipient is in
        C{RECIPIENT}, in its C{RECIPIENT_N} and in each C{${recipient}}
        argument, so fewer fit, and what is accepted fits in C{ARG_MAX}.
        """
        self.patch(pipe, "_argMax", lambda: 128 * 1024)
        handler = PipeHandler(["cat", "${recipient}", "${recipient}"], reactor=ProcessReactor())
        session = emptySession()
        error = accept(handler, session, 1000)
        assert error is not None
        self.assertEqual((error.code, error.enhanced), (452, "4.5.3"))
        accepted = len(session.envelope.rcptTo)
        total, longest = spawnSize(handler.arguments(session), handler.environment(session))
        self.assertLessEqual(total, 128 * 1024)
        # Four copies of ~255 bytes each: 128 KiB hold about 128.
        self.assertGreater(accepted, 100)
        self.assertLess(accepted, 130)

    def test_ordinaryRecipientsAccepted(self) -> None:
        """
        A thousand ordinary recipients (C{maxRecipients}' default) are all
        accepted.
        """
        handler = PipeHandler("cat", reactor=ProcessReactor())
        session = emptySession()
        for index in range(1000):
            self.assertIsNone(handler.onRcptTo(Address(f"user{index:04d}@example.com"), session))
            session.envelope.rcptTo.append(Address(f"user{index:04d}@example.com"))

    def test_spawnFailure(self) -> None:
        """
        A command that cannot be started (here C{E2BIG}) is answered
        451 4.3.0 with one log line and no traceback.
        """
        processes = ProcessReactor()

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.E2BIG, os.strerror(errno.E2BIG))

        processes.spawnProcess = refuse  # type: ignore[method-assign]
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        handler = PipeHandler("cat", reactor=processes)
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, b"Subject: x\r\n\r\nx\r\n")
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(error.message, "Error: delivery command could not be started")
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["s1d pipe command could not be started: Argument list too long"],
        )
        self.assertTrue(all("log_failure" not in event for event in events))


class RecipientBoundProcessTests(TestCase):
    """
    The bound against the real C{execve}.
    """

    async def test_acceptedRecipientsDelivered(self) -> None:
        """
        The most long recipients accepted at RCPT, with C{${recipient}}
        arguments too, reach a real command, each one.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        out = os.path.join(directory, "out")
        handler = PipeHandler(
            ["/bin/sh", "-c", 'echo "$#" > "$OUT"; cat > /dev/null', "sh", "${recipient}"],
            env={"OUT": out},
            reactor=reactor,
        )
        session = emptySession()
        error = accept(handler, session, 1000)
        assert error is not None
        stream = MessageStream()
        d = handler.onData(stream, session)
        feed(stream, b"Subject: x\r\n\r\nx\r\n")
        self.assertEqual(await d, "OK: delivered to sh")
        with open(out) as f:
            self.assertEqual(int(f.read()), len(session.envelope.rcptTo))

    async def test_tooLargeEnvelopeIsTemporary(self) -> None:
        """
        An envelope never checked at RCPT (600 long recipients handed
        straight to C{onData}) makes the real C{execve} fail: 451 4.3.0
        and one log line, not an internal error with a traceback.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        session = makeSession(
            envelope=Envelope(
                mailFrom=Address("alice@example.com"), rcptTo=[longAddress(i) for i in range(600)]
            )
        )
        handler = PipeHandler(["/bin/sh", "-c", "cat > /dev/null"], reactor=reactor)
        stream = MessageStream()
        d = handler.onData(stream, session)
        feed(stream, b"Subject: x\r\n\r\nx\r\n")
        with self.assertRaises(SMTPError) as caught:
            await d
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (451, "4.3.0"))
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["s1d pipe command could not be started: Argument list too long"],
        )


class OpenFilesTests(TestCase):
    """
    C{openFiles}: the soft limit on open files the command runs with, lower
    than ours (C{twistd smtpd} raises its own at start).
    """

    def setUp(self) -> None:
        self.soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if not 0 < self.soft <= 65536:
            raise SkipTest(f"no lower soft limit to test with than {self.soft}")
        directory = self.mktemp()
        os.makedirs(directory)
        self.out = os.path.join(directory, "out")

    async def deliver(self, handler: PipeHandler, session: Session | None = None) -> str:
        stream = MessageStream()
        d = handler.onData(stream, session or makeSession())
        feed(stream, b"Subject: x\r\n\r\nx\r\n")
        return await d

    async def test_limitAndEnvironment(self) -> None:
        """
        The command runs with C{openFiles} as its soft limit, the message
        on its standard input and exactly the environment
        L{PipeHandler.environment} gives, nothing the shell that lowered
        the limit would add (C{PWD}).
        """
        script = (
            "import json, os, resource, sys\n"
            "seen = [resource.getrlimit(resource.RLIMIT_NOFILE)[0], dict(os.environ),"
            " sys.stdin.read()]\n"
            "with open(os.environ['OUT'], 'w') as f: json.dump(seen, f)\n"
        )
        handler = PipeHandler(
            [sys.executable, "-c", script],
            # Else Python sets LC_CTYPE in its own environment (PEP 538).
            env={"OUT": self.out, "PYTHONCOERCECLOCALE": "0"},
            reactor=reactor,
            openFiles=128,
        )
        self.assertEqual(
            await self.deliver(handler), "OK: delivered to " + os.path.basename(sys.executable)
        )
        with open(self.out) as f:
            limit, environment, body = json.load(f)
        self.assertEqual((limit, body), (128, "Subject: x\r\n\r\nx\r\n"))
        if "bash" in os.path.basename(os.path.realpath("/bin/sh")):
            # bash as /bin/sh exports SHLVL and _ at exec, whatever is unset
            # (documented in docs/operator.md); dash adds nothing.
            environment.pop("SHLVL", None)
            environment.pop("_", None)
        self.assertEqual(environment, handler.environment(makeSession()))

    def test_sameLimitRunsCommandItself(self) -> None:
        """
        With C{openFiles} our own limit, the command is run directly, no
        shell in between.
        """
        fake = ProcessReactor()
        handler = PipeHandler("cat -u", reactor=fake, openFiles=self.soft)
        handler.onData(MessageStream(), makeSession())
        stream = MessageStream()
        handler.onData(stream, makeSession(id="s2"))
        feed(stream, b"x\r\n")
        self.assertEqual(fake.spawned[0][:2], (handler._executable, ["cat", "-u"]))

    async def test_programGoneIsTemporary(self) -> None:
        """
        A program gone since it was looked up is a temporary failure, as
        its failed start is without C{openFiles}: 451 4.3.0.
        """
        program = os.path.join(os.path.dirname(self.out), "deliver")
        with open(program, "w") as f:
            f.write("#!/bin/sh\ncat > /dev/null\n")
        os.chmod(program, 0o755)
        handler = PipeHandler([program], reactor=reactor, openFiles=128)
        os.remove(program)
        with self.assertRaises(SMTPError) as caught:
            await self.deliver(handler)
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (451, "4.3.0"))

    async def test_acceptedRecipientsDelivered(self) -> None:
        """
        The bound on recipients counts the shell's arguments: the most
        long recipients accepted at RCPT reach the command.
        """
        handler = PipeHandler(
            ["/bin/sh", "-c", 'echo "$#" > "$OUT"; cat > /dev/null', "sh", "${recipient}"],
            env={"OUT": self.out},
            reactor=reactor,
            openFiles=128,
        )
        session = emptySession()
        self.assertIsNotNone(accept(handler, session, 1000))
        self.assertEqual(await self.deliver(handler, session), "OK: delivered to sh")
        with open(self.out) as f:
            self.assertEqual(int(f.read()), len(session.envelope.rcptTo))
