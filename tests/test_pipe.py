# -*- test-case-name: tests.test_pipe -*-
"""
Tests for L{PipeHandler}: unit tests with a fake process reactor, then real
commands run by the real reactor in a temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Any

from twisted.internet import reactor
from twisted.internet.error import ConnectionLost, ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests import replies
from tests.disklog import DiskErrorLog
from tests.test_handlers import Upstream, feed, makeSession
from tests.test_mbox import ImmediateThreadPool
from twisted_smtpd import SMTPError
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Address, Envelope
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import _spool
from twisted_smtpd.handlers.pipe import PipeHandler, firstLine
from twisted_smtpd.interfaces import ISMTPHandler
from twisted_smtpd.testing import memorySession

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

    def loseConnection(self) -> None:
        self.stdinClosed = True

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
    A clock that records spawned processes instead of running them, and
    runs thread pool jobs at once.

    @ivar stdin: For each process, what its standard input (a file
        descriptor of ours) held when it was spawned.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[str, list[str], dict[str, str], FakeProcess]] = []
        self.stdin: list[bytes] = []

    def getThreadPool(self) -> ImmediateThreadPool:
        return ImmediateThreadPool()

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)

    def spawnProcess(
        self,
        protocol: Any,
        executable: str,
        args: list[str],
        env: dict[str, str],
        childFDs: Any = None,
    ) -> FakeProcess:
        process = FakeProcess(protocol)
        self.spawned.append((executable, args, env, process))
        protocol.makeConnection(process)
        fd = childFDs[0]
        data = b""
        if isinstance(fd, int):
            while block := os.pread(fd, 65536, len(data)):
                data += block
        self.stdin.append(data)
        return process


def runNow(f: Any, *args: Any) -> None:
    """
    Start a kill's thread: run it at once, in the calling thread.
    """
    f(*args)


class _TrackingPool(ImmediateThreadPool):
    """
    An L{ImmediateThreadPool} saying whether one of its jobs is running.
    """

    running = False

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, object], None], func: Callable[..., object], *args: Any
    ) -> None:
        def tracked() -> object:
            self.running = True
            try:
                return func(*args)
            finally:
                self.running = False

        super().callInThreadWithCallback(onResult, tracked)


class _RecordedFile:
    """
    A spool file recording, at each close, whether a job of C{pool} runs.
    """

    def __init__(self, file: IO[bytes], pool: _TrackingPool, closes: list[bool]) -> None:
        self._file = file
        self._pool = pool
        self._closes = closes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def close(self) -> None:
        self._closes.append(self._pool.running)
        self._file.close()


class PipeUnitTests(SynchronousTestCase):
    """
    L{PipeHandler} against a fake process.
    """

    def handler(self, command: Any = "cat -u", **kwargs: Any) -> PipeHandler:
        self.reactor = ProcessReactor()
        handler = PipeHandler(command, reactor=self.reactor, **kwargs)
        handler._startKill = runNow
        return handler

    def start(
        self, command: Any = "cat -u", body: bytes = BODY, session: Any = None, **kwargs: Any
    ) -> tuple[Any, MessageStream, Any]:
        """
        Deliver C{body} whole; return the result, the stream and the
        process started for it.
        """
        handler = self.handler(command, **kwargs)
        self.upstream = Upstream()
        stream = MessageStream(upstream=self.upstream, maxBuffer=10)
        d = handler.onData(stream, session or makeSession())
        feed(stream, body)
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
                "RECIPIENT": "bob@example.org\ncarol@example.net",
                "RECIPIENT_COUNT": "2",
                "RECIPIENT_0": "bob@example.org",
                "RECIPIENT_1": "carol@example.net",
                "ORIGINAL_RECIPIENT": "bob@example.org",
                "CLIENT_ADDRESS": "192.0.2.1",
                "CLIENT_HELO": "helo.example",
                "SESSION_ID": "s1d",
            },
        )
        self.assertEqual(env["PATH"], os.environ.get("PATH", os.defpath))

    def test_startsOnceMessageWhole(self) -> None:
        """
        The command is not started while the body arrives; once it has ended
        whole, the command starts with the whole body as its standard input.
        """
        handler = self.handler()
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        stream._write(b"first\r\n")
        stream._write(b"second line\r\n")
        self.assertEqual(self.reactor.spawned, [])
        stream._finish()
        self.assertEqual(self.reactor.stdin, [b"first\r\nsecond line\r\n"])
        process = self.reactor.spawned[0][3]
        self.assertNoResult(d)
        process.exit(0)
        self.assertEqual(self.successResultOf(d), "OK: delivered to cat")

    def test_largeBodySpooled(self) -> None:
        """
        A body larger than the spool threshold is written to the spool file
        as it arrives and reaches the command whole.
        """
        body = b"0123456789abcdef" * 65536
        d, stream, process = self.start(body=body)
        self.assertEqual(self.reactor.stdin, [body])
        process.exit(0)
        self.successResultOf(d)

    def test_pipeRefusedMessageNeverRuns(self) -> None:
        """
        A message the client is told was refused, for a bare LF (550) or
        for its size (552), never reaches the command: it is not started.
        """
        for options, body, reply in [
            ({}, b"Subject: x\r\n\nbare\r\n.\r\n", replies.BARE_NEWLINE),
            ({"size": 100}, b"x" * 200 + b"\r\n.\r\n", replies.SIZE_EXCEEDED),
        ]:
            handler = self.handler(["cat"])
            session = memorySession(
                handler,
                ServerOptions(name="mx.example.com", disableReverseLookup=True, **options),
            )
            session.send(
                b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
            )
            self.assertEqual(session.send(body), reply)
            self.assertEqual(self.reactor.spawned, [])

    def test_pipeRecipientsUnambiguous(self) -> None:
        """
        A quoted local part holding spaces and another address cannot make
        that address appear as a recipient: each recipient is one argument
        where the command says C{${recipient}}, one C{RECIPIENT_<n>}
        variable, and one line of C{RECIPIENT}.
        """
        tricky = '"x victim@evil.example y"@example.org'
        envelope = Envelope(
            mailFrom=Address("alice@example.com"),
            rcptTo=[Address(tricky), Address("bob@example.org")],
        )
        d, stream, process = self.start(
            "cat -f ${sender} -- ${recipient}",
            session=makeSession(envelope=envelope),
        )
        executable, args, env, process = self.reactor.spawned[0]
        self.assertEqual(
            args,
            [
                "cat",
                "-f",
                "alice@example.com",
                "--",
                tricky,
                "bob@example.org",
            ],
        )
        self.assertNotIn("victim@evil.example", args)
        self.assertEqual(
            (env["RECIPIENT_COUNT"], env["RECIPIENT_0"], env["RECIPIENT_1"]),
            ("2", tricky, "bob@example.org"),
        )
        self.assertEqual(env["RECIPIENT"].split("\n"), [tricky, "bob@example.org"])
        self.assertNotIn("RECIPIENT_2", env)
        process.exit(0)
        self.successResultOf(d)

    def test_placeholderMustBeWholeArgument(self) -> None:
        """
        A placeholder inside a longer argument (a C{sh -c} script, an
        C{--option=}) is refused at construction: an address substituted
        into a script could run as code.
        """
        for command in [
            "sh -c 'deliver ${recipient}'",
            "cat --to=${recipient}",
            "cat -f${sender}",
        ]:
            self.assertRaises(ValueError, PipeHandler, command)

    def test_pipeHyphenRefused(self) -> None:
        """
        A sender or recipient beginning with C{-}, quoted or not, is refused
        with 553 (5.1.7, 5.1.3), logged by the session alone; a hyphen
        elsewhere and the null sender are accepted.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        handler = self.handler()
        session = makeSession()
        for sender in ["-oQ/tmp/x@example.com", '"-f"@example.com']:
            error = self.assertRaises(SMTPError, handler.onMailFrom, Address(sender), session)
            self.assertEqual((error.code, error.enhanced), (553, "5.1.7"))
        for rcpt in ["-bob@example.org", '"-x y"@example.org']:
            error = self.assertRaises(SMTPError, handler.onRcptTo, Address(rcpt), session)
            self.assertEqual((error.code, error.enhanced), (553, "5.1.3"))
        # The session's reject line is the refusal's one line.
        self.assertEqual([formatEvent(event) for event in events], [])
        self.assertIsNone(handler.onMailFrom(Address(""), session))
        self.assertIsNone(handler.onMailFrom(Address("a-b@example.com"), session))
        self.assertIsNone(handler.onRcptTo(Address("b-@example.org"), session))

    def test_pipeQuotedPairHyphenRefused(self) -> None:
        """
        A quoted local part whose first character is the quoted pair
        C{\\-} is the same mailbox as one beginning with C{"-}: refused
        too, at MAIL (5.1.7) and at RCPT (5.1.3).
        """
        handler = self.handler()
        session = makeSession()
        error = self.assertRaises(
            SMTPError, handler.onMailFrom, Address('"\\-oQ/tmp/x"@example.com'), session
        )
        self.assertEqual((error.code, error.enhanced), (553, "5.1.7"))
        error = self.assertRaises(
            SMTPError, handler.onRcptTo, Address('"\\-oX"@example.org'), session
        )
        self.assertEqual((error.code, error.enhanced), (553, "5.1.3"))
        self.assertIsNone(handler.onRcptTo(Address('"a\\-b"@example.org'), session))

    def test_spoolFailure(self) -> None:
        """
        A spool that cannot be written answers 452 (disk full), logs it and
        starts nothing.
        """
        log = DiskErrorLog(self)

        def full(directory: str | None) -> Any:
            raise OSError(28, "No space left on device")

        self.patch(_spool, "_createSpool", full)
        handler = self.handler()
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, b"x" * 300000)
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (452, "4.3.1"))
        self.assertEqual(self.reactor.spawned, [])
        log.assertLines(1, "spooling the message into ", "No space left on device (ENOSPC)")

    def test_tempfail(self) -> None:
        """
        Exit status 75 is a temporary failure carrying the first line of
        standard error.
        """
        d, stream, process = self.start()
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
        process.protocol.errReceived(b"bad\x1b[31m " + b"x" * 300 + b"\n")
        process.exit(2)
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (554, "5.3.0"))
        self.assertIn("exit status 2", error.message)
        detail = error.message.split("): ", 1)[1]
        self.assertEqual(len(detail), 200)
        self.assertNotIn("\x1b", detail)

    def test_failureLogLine(self) -> None:
        """
        A failed command leaves one warning saying how it ended, its exit
        status or the signal that killed it, and the first line of its
        standard error when it wrote one.
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import formatEvent, globalLogPublisher

        for stderr, code, signal, line in [
            (b"", 75, None, "pipe command failed (exit 75)"),
            (b"no such user\n", 67, None, "pipe command failed (exit 67): no such user"),
            (b"segfault\n", None, 11, "pipe command failed (signal 11): segfault"),
        ]:
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            d, stream, process = self.start()
            process.protocol.errReceived(stderr)
            process.exit(code, signal)
            self.failureResultOf(d, SMTPError)
            texts = [formatEvent(e) for e in events if "pipe command" in formatEvent(e)]
            self.assertEqual([t.split(" ", 1)[1] for t in texts], [line])

    def test_signal(self) -> None:
        """
        A command killed by a signal is a temporary failure (Postfix's
        C{pipe} defers with C{4.3.0 Command died with signal N}): the
        message itself is not at fault.
        """
        d, stream, process = self.start()
        process.protocol.errReceived(b"segfault\n")
        process.exit(None, 11)
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(error.message, "Error: command died with signal 11")

    def test_spoolClosedInThreadPool(self) -> None:
        """
        The spool file is closed in the thread pool, never on the reactor
        thread: on NFS a close writes the file's dirty pages back first,
        and blocks while the server is slow or away, which would stall the
        whole server.  So it is once the command started, and when the
        session ended before it could.
        """
        pool = _TrackingPool()
        closes: list[bool] = []
        real = _spool._createSpool

        def record(directory: str | None) -> Any:
            return _RecordedFile(real(directory), pool, closes)

        self.patch(_spool, "_createSpool", record)
        d, stream, process = self.start(threadpool=pool, body=b"x" * 600000)
        self.assertEqual(self.reactor.stdin, [b"x" * 600000])
        process.exit(0)
        self.successResultOf(d)
        self.assertEqual(closes, [True])

        handler = self.handler(threadpool=pool)
        session = makeSession(id="s2")
        stream = MessageStream()
        d = handler.onData(stream, session)
        stream._write(b"x" * 600000)
        handler.onClose(session)
        stream._finish()
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)
        self.assertEqual(closes, [True, True])

    def test_streamFailureStartsNothing(self) -> None:
        """
        When the body does not arrive whole no command is started, and the
        stream's failure is passed on.
        """
        handler = self.handler()
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        stream._write(b"partial" * 100000)
        stream._fail(ConnectionLost())
        self.failureResultOf(d, ConnectionLost)
        self.assertEqual(self.reactor.spawned, [])

    def test_timeout(self) -> None:
        """
        A command running longer than C{timeout} is killed: 451.
        """
        d, stream, process = self.start(timeout=60)
        self.reactor.advance(59)
        self.assertEqual(process.signals, [])
        self.reactor.advance(1)
        self.assertEqual(process.signals, ["STOP", "KILL"])
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

    def test_firstLineUnicodeControls(self) -> None:
        """
        L{firstLine} also replaces what a command's standard error could
        use to forge or disguise the log line quoting it: the C1 controls
        (C{U+009B} starts an ANSI escape sequence, C{U+0085} is a line
        break to some readers), the line and paragraph separators and the
        bidirectional controls.
        """
        stderr = "a\u009b31mred\u0085b\u2028c\u2029d\u202ee\n".encode()
        self.assertEqual(firstLine(stderr), "a 31mred b c d e")


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
            b"alice@example.com|bob@example.org\ncarol@example.net|bob@example.org"
            b"|192.0.2.1|helo.example|s1d",
        )

    async def test_recipientArguments(self) -> None:
        """
        A real command gets one argument per recipient for C{${recipient}}
        and each recipient in its own variable.
        """
        script = 'printf "%s|" "$@" "$RECIPIENT_COUNT" "$RECIPIENT_0" "$RECIPIENT_1" > "$OUT"'
        await self.deliver(["sh", "-c", script, "sh", "${recipient}"])
        self.assertEqual(
            self.read(),
            b"bob@example.org|carol@example.net|2|bob@example.org|carol@example.net|",
        )

    async def test_backgroundChildDoesNotHoldReply(self) -> None:
        """
        A command that exits 0 leaving a background process with its output
        pipes open is answered 250 at once, not when that process ends nor
        at the timeout.
        """
        handler = PipeHandler(["sh", "-c", "(sleep 25 &); exit 0"], timeout=20, reactor=reactor)
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, BODY)
        self.assertEqual(await d, "OK: delivered to sh")

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
