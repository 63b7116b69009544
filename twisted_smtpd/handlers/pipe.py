# -*- test-case-name: tests.test_pipe -*-
"""
L{PipeHandler}: deliver every message to a command's standard input, as
Postfix's C{pipe} and Sendmail's C{prog} mailers do.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IConsumer, IDelayedCall, IProducer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_smtpd._errors import SMTPError
from twisted_smtpd._session import Session
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

# sysexits.h: a temporary failure, try again later.
EX_TEMPFAIL = 75
# How much standard error is kept to find its first line.
_STDERR_KEEP = 4096
_MAX_REASON = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def firstLine(data: bytes) -> str:
    """
    The first non-empty line of C{data}, decoded, control characters
    replaced, at most 200 characters: safe to put in a reply.
    """
    for raw in data.splitlines():
        line = _CONTROL.sub(" ", raw.decode("utf-8", "replace")).strip()
        if line:
            return line[:_MAX_REASON]
    return ""


def _envValue(value: str) -> str:
    return value.replace("\x00", "")


@implementer(IConsumer)
class _Stdin:
    """
    The L{IConsumer} the message stream is piped into: writes to the
    process's standard input and registers the stream as its streaming
    producer, so that a full pipe pauses the client.
    """

    def __init__(self, run: _Run) -> None:
        self._run = run

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        transport = self._run.transport
        if transport is None or self._run.exited is not None:
            producer.stopProducing()
            return
        # Process transports take a producer for standard input.
        cast(IConsumer, transport).registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        transport = self._run.transport
        if transport is not None and self._run.exited is None:
            cast(IConsumer, transport).unregisterProducer()

    def write(self, data: bytes) -> None:
        transport = self._run.transport
        if transport is not None and self._run.exited is None:
            transport.write(data)


class _Run(ProcessProtocol):
    """
    One run of the command for one message.
    """

    def __init__(self) -> None:
        self.stderr = b""
        self.exited: Failure | None = None
        self.ended: Deferred[None] = Deferred()

    def errReceived(self, data: bytes) -> None:
        if len(self.stderr) < _STDERR_KEEP:
            self.stderr += data[: _STDERR_KEEP - len(self.stderr)]

    def outReceived(self, data: bytes) -> None:
        """
        Standard output is discarded.
        """

    def processEnded(self, reason: Failure) -> None:
        self.exited = reason
        self.ended.callback(None)

    def kill(self) -> None:
        if self.exited is None and self.transport is not None:
            with contextlib.suppress(ProcessExitedAlready):
                self.transport.signalProcess("KILL")


class PipeHandler(BaseHandler):
    """
    Run C{command} once per message, without a shell, its standard input
    the message body as received (CRLF line ends, no dot-stuffing), with
    these environment variables:

      - C{SENDER}: the reverse-path (empty for C{<>});
      - C{RECIPIENT}: the recipients, separated by spaces;
      - C{ORIGINAL_RECIPIENT}: the first recipient;
      - C{CLIENT_ADDRESS}, C{CLIENT_HELO}: the client's IP address and the
        name it gave in HELO/EHLO;
      - C{SESSION_ID}: the session's id;

    plus C{PATH} from our own environment and C{env}.  The reply depends on
    the exit status: 0 is 250, 75 (C{EX_TEMPFAIL}) is 451 4.3.0, anything
    else, or death by a signal, is 554 5.3.0; a failure's reply carries the
    first line of the command's standard error.  Standard output is
    discarded.  The same reply goes to every recipient in LMTP mode.

    If the body does not arrive whole, or the command runs longer than
    C{timeout}, it is killed (C{SIGKILL}); a timeout is answered 451 4.3.0.
    """

    _log = Logger()

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        reactor: Any = None,
    ) -> None:
        """
        @param command: The command line, split like a POSIX shell would
            (C{shlex.split}) but run without one; or the argument list.
            The program is looked up in C{PATH} now.
        @param env: More environment variables (they override C{PATH}; the
            message's variables override them).
        @param timeout: Seconds the command may run.
        @param reactor: The reactor (the global one by default).
        @raise ValueError: C{command} is empty or its program is not found.
        """
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not argv:
            raise ValueError("pipe command must not be empty")
        path = (env or {}).get("PATH", os.environ.get("PATH", os.defpath))
        executable = shutil.which(argv[0], path=path)
        if executable is None:
            raise ValueError(f"command not found: {argv[0]!r}")
        self.argv = argv
        self._executable = executable
        self._env = dict(env or {})
        self._path = path
        self._timeout = timeout
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor = reactor

    def environment(self, session: Session) -> dict[str, str]:
        """
        The environment the command runs with for the message on
        C{session}.
        """
        envelope = session.envelope
        recipients = [address.address for address in envelope.rcptTo]
        env = {"PATH": self._path}
        env.update(self._env)
        env.update(
            SENDER=envelope.mailFrom.address if envelope.mailFrom is not None else "",
            RECIPIENT=" ".join(recipients),
            ORIGINAL_RECIPIENT=recipients[0] if recipients else "",
            CLIENT_ADDRESS=session.remoteAddress[0],
            CLIENT_HELO=session.hostNameAppearsAs or "",
            SESSION_ID=session.id,
        )
        return {key: _envValue(value) for key, value in env.items()}

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[str]:
        """
        Spawn the command and stream the body to it.

        @return: A L{Deferred} firing with the 250 text once the command
            exited 0, or failing with L{SMTPError} (451 or 554), or with the
            stream's failure if the body did not arrive whole.
        """
        return Deferred.fromCoroutine(self._deliver(stream, session))

    async def _deliver(self, stream: IMessageStream, session: Session) -> str:
        run = _Run()
        self._reactor.spawnProcess(
            run,
            self._executable,
            self.argv,
            env=self.environment(session),
            childFDs={0: "w", 1: "r", 2: "r"},
        )
        timedOut = []

        def timeOut() -> None:
            timedOut.append(True)
            run.kill()

        timer: IDelayedCall = self._reactor.callLater(self._timeout, timeOut)
        try:
            piped: Deferred[int] = stream.pipe(_Stdin(run))
            try:
                await piped
            except Exception:
                run.kill()
                await run.ended
                raise
            if run.exited is None and run.transport is not None:
                run.transport.closeStdin()
            await run.ended
        finally:
            if timer.active():
                timer.cancel()
        if timedOut:
            self._log.warn("{session} pipe command timed out", session=session.id)
            raise SMTPError(451, "Error: delivery command timed out", "4.3.0")
        assert run.exited is not None
        return self._verdict(run.exited, run.stderr, session)

    def _verdict(self, reason: Failure, stderr: bytes, session: Session) -> str:
        if reason.check(ProcessDone):
            return f"OK: delivered to {os.path.basename(self.argv[0])}"
        value = reason.value
        code = getattr(value, "exitCode", None)
        signal = getattr(value, "signal", None)
        detail = firstLine(stderr)
        self._log.warn(
            "{session} pipe command failed (exit {code}, signal {signal}): {detail}",
            session=session.id,
            code=code,
            signal=signal,
            detail=detail,
        )
        if isinstance(value, ProcessTerminated) and code == EX_TEMPFAIL:
            raise SMTPError(451, detail or "Error: temporary failure, try again later", "4.3.0")
        what = f"signal {signal}" if code is None else f"exit status {code}"
        text = f"Error: delivery command failed ({what})"
        if detail:
            text += f": {detail}"
        raise SMTPError(554, text, "5.3.0")
