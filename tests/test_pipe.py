# -*- test-case-name: tests.test_pipe -*-
"""
Tests for L{PipeHandler}: unit tests with a fake process reactor, then real
commands run by the real reactor in a temporary directory.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.error import ConnectionLost, ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.test_handlers import Upstream, feed, makeSession
from twisted_smtpd import SMTPError
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers.pipe import PipeHandler, firstLine
from twisted_smtpd.interfaces import ISMTPHandler

BODY = b"From: alice@example.com\r\nSubject: pipe\r\n\r\n.dot stays single\r\n"


class FakeProcess:
    """
    The transport of a spawned process: records what reaches its standard
    input and the signals sent.
    """

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.stdin: list[bytes] = []
        self.producer: Any = None
        self.streaming: bool | None = None
        self.stdinClosed = False
        self.signals: list[str] = []

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer
        self.streaming = streaming

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.stdin.append(data)

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)

    def exit(self, code: int | None = 0, signal: int | None = None) -> None:
        """
        End the process with exit status C{code} or by C{signal}.
        """
        if code == 0 and signal is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(code, signal))
        self.protocol.processEnded(reason)


class ProcessReactor(Clock):
    """
    A clock that records spawned processes instead of running them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[str, list[str], dict[str, str], FakeProcess]] = []

    def spawnProcess(
        self,
        protocol: Any,
        executable: str,
        args: list[str],
        env: dict[str, str],
        childFDs: Any = None,
    ) -> FakeProcess:
        process = FakeProcess(protocol)
        protocol.makeConnection(process)
        self.spawned.append((executable, args, env, process))
        return process


class PipeUnitTests(SynchronousTestCase):
    """
    L{PipeHandler} against a fake process.
    """

    def start(self, command: Any = "cat -u", **kwargs: Any) -> tuple[Any, MessageStream, Any]:
        self.reactor = ProcessReactor()
        handler = PipeHandler(command, reactor=self.reactor, **kwargs)
        self.upstream = Upstream()
        stream = MessageStream(upstream=self.upstream, maxBuffer=10)
        d = handler.onData(stream, makeSession())
        return d, stream, self.reactor.spawned[0][3]

    def test_interface(self) -> None:
        """
        L{PipeHandler} provides L{ISMTPHandler}.
        """
        self.assertTrue(verifyObject(ISMTPHandler, PipeHandler("true")))

    def test_commandLine(self) -> None:
        """
        A string is split like a shell would, without a shell; the program is
        found in C{PATH}.
        """
        self.start("sh -c 'cat > \"$OUT\"'")
        executable, args, env, process = self.reactor.spawned[0]
        self.assertEqual(args, ["sh", "-c", 'cat > "$OUT"'])
        self.assertTrue(os.path.isabs(executable))
        self.assertEqual(os.path.basename(executable), "sh")

    def test_environment(self) -> None:
        """
        The envelope and the client are described in the environment, with
        C{PATH} and the configured variables.
        """
        self.start(["cat"], env={"OUT": "/tmp/x", "SENDER": "overridden"})
        env = self.reactor.spawned[0][2]
        self.assertEqual(
            {key: env[key] for key in env if key != "PATH"},
            {
                "OUT": "/tmp/x",
                "SENDER": "alice@example.com",
                "RECIPIENT": "bob@example.org carol@example.net",
                "ORIGINAL_RECIPIENT": "bob@example.org",
                "CLIENT_ADDRESS": "192.0.2.1",
                "CLIENT_HELO": "helo.example",
                "SESSION_ID": "s1d",
            },
        )
        self.assertEqual(env["PATH"], os.environ.get("PATH", os.defpath))

    def test_flowControl(self) -> None:
        """
        The stream is the streaming producer of the process's standard
        input: while the pipe is full nothing is written, and the client is
        paused once the stream holds too much.  At the end standard input
        is closed.
        """
        d, stream, process = self.start()
        self.assertIs(process.producer, stream)
        self.assertTrue(process.streaming)
        stream._write(b"first\r\n")
        stream.pauseProducing()
        stream._write(b"second line\r\n")
        self.assertEqual(process.stdin, [b"first\r\n"])
        self.assertTrue(self.upstream.paused)
        stream.resumeProducing()
        self.assertFalse(self.upstream.paused)
        self.assertFalse(process.stdinClosed)
        stream._finish()
        self.assertEqual(b"".join(process.stdin), b"first\r\nsecond line\r\n")
        self.assertTrue(process.stdinClosed)
        self.assertIsNone(process.producer)
        self.assertNoResult(d)
        process.exit(0)
        self.assertEqual(self.successResultOf(d), "OK: delivered to cat")

    def test_tempfail(self) -> None:
        """
        Exit status 75 is a temporary failure carrying the first line of
        standard error.
        """
        d, stream, process = self.start()
        feed(stream, BODY)
        process.protocol.errReceived(b"\nmailbox is locked\nmore\n")
        process.exit(75)
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual(
            (error.code, error.enhanced, error.message), (451, "4.3.0", "mailbox is locked")
        )

    def test_failure(self) -> None:
        """
        Any other exit status is a permanent failure; the first line of
        standard error is sanitised and cut to 200 characters.
        """
        d, stream, process = self.start()
        feed(stream, BODY)
        process.protocol.errReceived(b"bad\x1b[31m " + b"x" * 300 + b"\n")
        process.exit(2)
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (554, "5.3.0"))
        self.assertIn("exit status 2", error.message)
        detail = error.message.split("): ", 1)[1]
        self.assertEqual(len(detail), 200)
        self.assertNotIn("\x1b", detail)

    def test_signal(self) -> None:
        """
        A command killed by a signal is a permanent failure.
        """
        d, stream, process = self.start()
        feed(stream, BODY)
        process.exit(None, 11)
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual(error.code, 554)
        self.assertIn("signal 11", error.message)

    def test_streamFailureKills(self) -> None:
        """
        When the body does not arrive whole the command is killed, and the
        stream's failure is passed on once it has exited.
        """
        d, stream, process = self.start()
        stream._write(b"partial")
        stream._fail(ConnectionLost())
        self.assertEqual(process.signals, ["KILL"])
        self.assertNoResult(d)
        process.exit(None, 9)
        self.failureResultOf(d, ConnectionLost)

    def test_timeout(self) -> None:
        """
        A command running longer than C{timeout} is killed: 451.
        """
        d, stream, process = self.start(timeout=60)
        feed(stream, BODY)
        self.reactor.advance(59)
        self.assertEqual(process.signals, [])
        self.reactor.advance(1)
        self.assertEqual(process.signals, ["KILL"])
        process.exit(None, 9)
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))

    def test_notFound(self) -> None:
        """
        An empty command or a program not in C{PATH} is refused at once.
        """
        self.assertRaises(ValueError, PipeHandler, "")
        self.assertRaises(ValueError, PipeHandler, "no-such-program-here-at-all")

    def test_firstLine(self) -> None:
        """
        L{firstLine} skips blank lines and replaces control characters.
        """
        self.assertEqual(firstLine(b"\n \r\n\tuser unknown\x00!\nnext"), "user unknown !")
        self.assertEqual(firstLine(b""), "")


class PipeProcessTests(TestCase):
    """
    L{PipeHandler} running real commands.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.out = os.path.join(self.directory, "out")

    def deliver(self, command: Any, body: bytes = BODY, chunkSize: int = 65536) -> Any:
        handler = PipeHandler(command, env={"OUT": self.out}, reactor=reactor)
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, body, chunkSize)
        return d

    def read(self) -> bytes:
        with open(self.out, "rb") as f:
            return f.read()

    async def test_cat(self) -> None:
        """
        The command reads the body byte for byte; exit 0 is 250.
        """
        text = await self.deliver(["/bin/sh", "-c", 'cat > "$OUT"'])
        self.assertEqual(text, "OK: delivered to sh")
        self.assertEqual(self.read(), BODY)

    async def test_largeBody(self) -> None:
        """
        A body much larger than a pipe's buffer flows through whole.
        """
        body = b"0123456789" * 800_000
        await self.deliver("sh -c 'cat > \"$OUT\"'", body, chunkSize=32768)
        self.assertEqual(self.read(), body)

    async def test_environment(self) -> None:
        """
        The command sees the envelope in its environment.
        """
        script = (
            'printf "%s|%s|%s|%s|%s|%s" "$SENDER" "$RECIPIENT" "$ORIGINAL_RECIPIENT"'
            ' "$CLIENT_ADDRESS" "$CLIENT_HELO" "$SESSION_ID" > "$OUT"'
        )
        await self.deliver(["sh", "-c", script])
        self.assertEqual(
            self.read(),
            b"alice@example.com|bob@example.org carol@example.net|bob@example.org"
            b"|192.0.2.1|helo.example|s1d",
        )

    async def test_tempfail(self) -> None:
        """
        C{exit 75} is 451 4.3.0 with the command's message.
        """
        with self.assertRaises(SMTPError) as caught:
            await self.deliver(["sh", "-c", "echo 'mailbox locked' >&2; exit 75"])
        self.assertEqual(
            (caught.exception.code, caught.exception.enhanced, caught.exception.message),
            (451, "4.3.0", "mailbox locked"),
        )

    async def test_false(self) -> None:
        """
        C{false} is 554 5.3.0.
        """
        with self.assertRaises(SMTPError) as caught:
            await self.deliver("false")
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (554, "5.3.0"))

    async def test_exitsWithoutReading(self) -> None:
        """
        A command that exits without reading a large body still gets its
        verdict; the rest of the body is discarded.
        """
        text = await self.deliver("true", b"x" * 2_000_000)
        self.assertEqual(text, "OK: delivered to true")
