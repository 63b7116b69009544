# -*- test-case-name: tests.test_pipe -*-
"""
L{PipeHandler}: deliver every message to a command's standard input, as
Postfix's C{pipe} and Sendmail's C{prog} mailers do.

The message is spooled to an anonymous temporary file while it arrives
(bounded memory); the command starts only once the whole message has passed
every check (size limit, bare line ends), with that file as its standard
input, so that a command never sees a message the client is then told was
refused.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.optionvalues import handlerSeconds
from twisted_smtpd._core.printable import UNSAFE
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers._childlimit import limited
from twisted_smtpd.handlers._concurrency import DeliveryBound, checkConcurrency
from twisted_smtpd.handlers._diskfailure import diskError, logDiskFailure
from twisted_smtpd.handlers._piperun import CommandRun, KillThreads
from twisted_smtpd.handlers._spool import Spool
from twisted_smtpd.interfaces import IMessageStream

# sysexits.h: a temporary failure, try again later.
EX_TEMPFAIL = 75
_MAX_REASON = 200
# Linux's limit on one argument or environment string, its NUL included
# (MAX_ARG_STRLEN, 32 pages of 4 KiB): C{RECIPIENT} must stay under it.
MAX_ARG_STRLEN = 32 * 4096
# What execve counts for each string besides its bytes: its NUL and the
# pointer to it.
_PER_STRING = 1 + 8
# Kept free of ARG_MAX for what execve and the loader add (the program's
# path, the vectors' terminators, the auxiliary vector).
_EXEC_RESERVE = 8192


def _argMax() -> int:
    """
    The most bytes the arguments and environment of a new program may take,
    C{os.sysconf("SC_ARG_MAX")} (Linux: a quarter of the stack limit, at
    least 128 KiB), or 128 KiB when it is unknown.
    """
    try:
        value = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        value = -1
    return value if value > 0 else MAX_ARG_STRLEN


def _size(text: str) -> int:
    """
    How many bytes C{text} takes in an argument or environment string.
    """
    return len(os.fsencode(text))


def spawnSize(argv: Sequence[str], env: Mapping[str, str]) -> tuple[int, int]:
    """
    What C{execve} counts for C{argv} and C{env}: the total of every string
    with its NUL and pointer, and the longest single string with its NUL.
    """
    strings = [_size(a) for a in argv] + [_size(k) + 1 + _size(v) for k, v in env.items()]
    total = sum(strings) + _PER_STRING * len(strings) + 2 * 8
    return total, max(strings, default=0) + 1


#: A whole argument of the command: replaced by one argument per recipient.
RECIPIENT_PLACEHOLDER = "${recipient}"
#: A whole argument of the command: replaced by the sender (empty for C{<>}).
SENDER_PLACEHOLDER = "${sender}"
_PLACEHOLDERS = (RECIPIENT_PLACEHOLDER, SENDER_PLACEHOLDER)


def _startsWithHyphen(address: str) -> bool:
    """
    Whether C{address}, or its quoted local part once unquoted, begins with
    C{-}: given to a command it could be taken for an option.  In a quoted
    local part the hyphen may be written as the quoted pair C{\\-} (RFC
    5321 section 4.1.2), which names the same mailbox.
    """
    return address.startswith(("-", '"-', '"\\-'))


def firstLine(data: bytes) -> str:
    """
    The first non-empty line of C{data}, decoded, every character that
    could break or disguise a line (L{UNSAFE}: C0 and C1 controls, line and
    paragraph separators, bidirectional controls, invisible format
    characters such as a zero-width space) replaced by a space, at
    most 200 characters: safe to put in a reply and a log line.
    """
    for raw in data.splitlines():
        line = UNSAFE.sub(" ", raw.decode("utf-8", "replace")).strip()
        if line:
            return line[:_MAX_REASON]
    return ""


def _envValue(value: str) -> str:
    return value.replace("\x00", "")


class _Delivery:
    """
    The delivery in flight for one session: whether the session ended, its
    wait for a turn to run, the command's run once started, and whether
    its time limit or the session's end killed it.
    """

    def __init__(self) -> None:
        self.sessionEnded = False
        self.turn: Deferred[bool] | None = None
        self.run: CommandRun | None = None
        self.timedOut = False
        self.killed = False


class PipeHandler(BaseHandler):
    """
    Run C{command} once per message, without a shell, its standard input
    the message body as received (CRLF line ends, no dot-stuffing), with
    these environment variables:

      - C{SENDER}: the reverse-path (empty for C{<>});
      - C{RECIPIENT_COUNT}: how many recipients there are, and
        C{RECIPIENT_0}, C{RECIPIENT_1}, ...: each recipient in its own
        variable, in envelope order;
      - C{RECIPIENT}: the recipients, one per line (an address never holds
        a line break nor any other control character, so the list is
        unambiguous, unlike a list separated by spaces, which a quoted local
        part may hold);
      - C{ORIGINAL_RECIPIENT}: the first recipient;
      - C{CLIENT_ADDRESS}, C{CLIENT_HELO}: the client's IP address and the
        name it gave in HELO/EHLO;
      - C{SESSION_ID}: the session's id;

    plus C{PATH} from our own environment and C{env}.  An argument of the
    command that is exactly C{${recipient}} becomes one argument per
    recipient, as in Postfix's C{pipe}; one that is exactly C{${sender}}
    becomes the sender.  A placeholder inside a longer argument is refused
    at construction: substituted into, say, a C{sh -c} script, an address
    (whose quoted local part may hold C{$}, C{;} or backquotes) could run
    as shell code.  Each recipient is thus always exactly one argument.

    A sender or recipient beginning with C{-} (C{"-} or C{"\\-} for a
    quoted local part) is refused at MAIL or RCPT with 553
    (5.1.7 and 5.1.3) and one log line, so that no address can pass for an
    option, as Postfix does by default (C{allow_min_user = no}).

    The body is spooled to an anonymous temporary file (in
    C{spoolDirectory}) while it arrives, and the command starts only once
    the whole message has passed every check, with that file as its
    standard input.  The reply depends on the exit status: 0 is 250, 75
    (C{EX_TEMPFAIL}) is 451 4.3.0, death by a signal is 451 4.3.0
    (C{Error: command died with signal N}, deferred as Postfix's C{pipe}
    does), anything else is 554 5.3.0; a failure's reply other than the
    signal's carries the first line of the command's standard error.
    Standard output is discarded.  The same reply goes to every recipient
    in LMTP mode.  A spool that cannot be written is answered 452 (disk
    full) or 451.

    A command running longer than C{timeout} is killed (C{SIGKILL}, with
    every process below it, on Linux, found in a thread of its own: see
    L{CommandRun.kill <twisted_smtpd.handlers._piperun.CommandRun.kill>}) and
    answered 451 4.3.0.  One still running when its session ends (the
    client left, the server's C{handlerTimeout}, or its stop past
    C{closeTimeout}: the client was told 421 or nothing, and will send the
    message again) is killed too (C{SIGKILL}, in L{onClose}, with one log
    line), and a message whose session ended before its command started
    never starts one: no delivery goes on that the client was not told of.

    At most C{maxConcurrent} commands run at once (Postfix bounds a
    transport's processes with C{maxproc}): a message beyond waits for one
    of them to end, that wait counting within its C{timeout} (the command
    gets what is left of it); one that gets no turn in time is answered
    451 4.4.5 with one log line, and a line says when the bound is reached
    (not one for each message waiting).  A message whose session ends
    while it waits never starts its command.

    The kernel bounds a command's arguments and environment
    (L{MAX_ARG_STRLEN} for one string, C{ARG_MAX} for all): a recipient
    that would take them past is refused at RCPT with 452 4.5.3 (see
    L{onRcptTo}), and a command that cannot be started is answered 451
    4.3.0 with one log line.

    @ivar argv: The command's arguments, placeholders unexpanded.
    @ivar spoolDirectory: Where spool files are made (C{None}: C{TMPDIR}).
    """

    _log = Logger()

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        reactor: Any = None,
        threadpool: ThreadPool | None = None,
        spoolDirectory: str | None = None,
        openFiles: int | None = None,
        maxConcurrent: int = 20,
    ) -> None:
        """
        @param command: The command line, split like a POSIX shell would
            (C{shlex.split}) but run without one; or the argument list.
            The program is looked up in C{PATH} now.
        @param env: More environment variables (they override C{PATH}; the
            message's variables override them).
        @param timeout: Seconds the command may run, its wait for a turn
            to run (C{maxConcurrent}) included.
        @param reactor: The reactor (the global one by default).
        @param threadpool: Where spool writes run; C{reactor.getThreadPool()}
            by default.
        @param spoolDirectory: Where the spool files are made; the system's
            temporary directory (C{TMPDIR}) by default.
        @param openFiles: The soft limit on open files the command runs
            with, if not ours (C{twistd smtpd}: the one it was started with,
            before it raised its own); the command is then run through
            C{/bin/sh}, its C{argv[0]} the program's path.
        @param maxConcurrent: The most commands running at once (above 0).
        @raise ValueError: C{command} is empty, its program is not found,
            a placeholder is part of a longer argument, C{timeout} is not
            positive and finite, or C{maxConcurrent} is not above 0.
        """
        handlerSeconds("timeout", timeout)
        checkConcurrency("maxConcurrent", maxConcurrent)
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not argv:
            raise ValueError("pipe command must not be empty")
        for argument in argv:
            for placeholder in _PLACEHOLDERS:
                if placeholder in argument and argument != placeholder:
                    raise ValueError(f"{placeholder} must be a whole argument, not part of one")
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
        self._threadpool = threadpool
        self.spoolDirectory = spoolDirectory
        self._openFiles = openFiles
        self._argMax = _argMax()
        self._recipientArguments = self.argv.count(RECIPIENT_PLACEHOLDER)
        self._deliveries: dict[str, _Delivery] = {}
        self._bound = DeliveryBound("pipe commands", maxConcurrent, reactor)
        #: Runs a kill's walk of the command's processes in a thread.
        self._startKill: Callable[..., object] = KillThreads(reactor).start

    def _inThread(self, f: Any, *args: Any) -> Deferred[Any]:
        pool = self._threadpool or self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, f, *args)

    def _closeSource(self, source: IO[bytes]) -> None:
        """
        Close the spool file C{source} in the thread pool, never on the
        reactor thread: on NFS a close writes the file's dirty pages back
        first, which would stall the whole server while the server is slow
        or away.  Nothing waits for it; a failure is dropped, as the file
        is.
        """
        self._inThread(source.close).addErrback(lambda failure: None)

    def onMailFrom(self, address: Address, session: Session) -> None:
        """
        Refuse a sender beginning with C{-}.

        @raise SMTPError: 553 5.1.7.
        """
        if _startsWithHyphen(address.address):
            raise SMTPError(553, "Error: sender address must not begin with '-'", "5.1.7")

    def onRcptTo(self, address: Address, session: Session) -> None:
        """
        Refuse a recipient beginning with C{-}, or one that would make the
        command's arguments and environment too large to run it.

        Each recipient is in C{RECIPIENT}, in its own C{RECIPIENT_N} and in
        each C{${recipient}} argument; C{execve} fails with C{E2BIG} once
        one string reaches L{MAX_ARG_STRLEN} or all of them together
        C{ARG_MAX} (C{os.sysconf("SC_ARG_MAX")}).  A recipient past either
        bound is answered C{452 4.5.3} (RFC 5321 section 4.5.3.1.10: the
        client sends the message to those accepted, then to the others in
        another transaction).

        @raise SMTPError: 553 5.1.3, or 452 4.5.3.
        """
        if _startsWithHyphen(address.address):
            raise SMTPError(553, "Error: recipient address must not begin with '-'", "5.1.3")
        if not self._fits(session, address):
            raise SMTPError(452, "Error: too many recipients", "4.5.3")

    def _fits(self, session: Session, address: Address) -> bool:
        """
        Whether the command can still be run once C{address} is added to
        the recipients of C{session}'s envelope.
        """
        recipients = [r.address for r in session.envelope.rcptTo]
        recipients.append(address.address)
        # Everything but the recipients, measured exactly.
        env = self._environment(session, [])
        fixed, longest = spawnSize(self._command(self._expand(session, []), env, True)[1], env)
        sizes = [_size(r) for r in recipients]
        digits = len(str(len(sizes)))
        joined = sum(sizes) + len(sizes) - 1
        # RECIPIENT, ORIGINAL_RECIPIENT and RECIPIENT_COUNT's contents, then
        # RECIPIENT_0, RECIPIENT_1, ... and the ${recipient} arguments.
        total = fixed + joined + sizes[0] + digits
        total += sum(sizes) + len(sizes) * (len("RECIPIENT_=") + digits + _PER_STRING)
        total += self._recipientArguments * (sum(sizes) + len(sizes) * _PER_STRING)
        longest = max(
            longest, len("RECIPIENT=") + joined + 1, len("ORIGINAL_RECIPIENT=") + sizes[0] + 1
        )
        return longest <= MAX_ARG_STRLEN and total <= self._argMax - _EXEC_RESERVE

    def arguments(self, session: Session) -> list[str]:
        """
        The command's arguments for the message on C{session}: each
        C{${recipient}} argument replaced by one argument per recipient, each
        C{${sender}} argument by the sender.
        """
        return self._expand(session, [address.address for address in session.envelope.rcptTo])

    def _expand(self, session: Session, recipients: list[str]) -> list[str]:
        envelope = session.envelope
        sender = envelope.mailFrom.address if envelope.mailFrom is not None else ""
        argv = [self.argv[0]]
        for argument in self.argv[1:]:
            if argument == RECIPIENT_PLACEHOLDER:
                argv.extend(recipients)
            elif argument == SENDER_PLACEHOLDER:
                argv.append(sender)
            else:
                argv.append(argument)
        return [_envValue(argument) for argument in argv]

    def _command(self, argv: list[str], env: dict[str, str], always: bool) -> tuple[str, list[str]]:
        if self._openFiles is None:
            return self._executable, argv
        return limited(self._executable, argv, self._openFiles, env, always=always)

    def environment(self, session: Session) -> dict[str, str]:
        """
        The environment the command runs with for the message on
        C{session}.
        """
        return self._environment(session, [address.address for address in session.envelope.rcptTo])

    def _environment(self, session: Session, recipients: list[str]) -> dict[str, str]:
        envelope = session.envelope
        env = {"PATH": self._path}
        env.update(self._env)
        env.update(
            SENDER=envelope.mailFrom.address if envelope.mailFrom is not None else "",
            RECIPIENT="\n".join(recipients),
            RECIPIENT_COUNT=str(len(recipients)),
            ORIGINAL_RECIPIENT=recipients[0] if recipients else "",
            CLIENT_ADDRESS=session.remoteAddress[0],
            CLIENT_HELO=session.hostNameAppearsAs or "",
            SESSION_ID=session.id,
        )
        env.update((f"RECIPIENT_{index}", r) for index, r in enumerate(recipients))
        return {key: _envValue(value) for key, value in env.items()}

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[str]:
        """
        Spool the body, then run the command with it as standard input.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing
            with the 250 text once the command exited 0, or failing with
            L{SMTPError} (451, 452 or 554), or with the stream's failure if
            the body did not arrive whole (the command is then never
            started).
        """
        delivery = self._deliveries[session.id] = _Delivery()

        def forget(result: object) -> object:
            if self._deliveries.get(session.id) is delivery:
                del self._deliveries[session.id]
            return result

        return Deferred.fromCoroutine(self._deliver(stream, session, delivery)).addBoth(forget)

    def onClose(self, session: Session) -> None:
        """
        Kill the command still running for C{session}'s message (its client
        will never hear the verdict, and sends the message again), and keep
        one not started yet from starting.
        """
        delivery = self._deliveries.pop(session.id, None)
        if delivery is None:
            return
        delivery.sessionEnded = True
        if delivery.turn is not None:
            delivery.turn.cancel()
        run = delivery.run
        if run is None:
            return
        if run.exited is None and not delivery.timedOut:
            delivery.killed = True
            problem = run.kill(self._startKill)
            if problem is None:
                self._log.warn(
                    "{session} pipe command killed: the session ended before it exited",
                    session=session.id,
                )
            else:
                self._log.warn(
                    "{session} pipe command could not be killed ({problem}):"
                    " the session ended before it exited",
                    session=session.id,
                    problem=problem,
                )
            return
        run.kill(self._startKill)

    async def _deliver(self, stream: IMessageStream, session: Session, delivery: _Delivery) -> str:
        spool = Spool(self.spoolDirectory, self._inThread)
        piped: Deferred[int] = stream.pipe(spool)
        try:
            await piped
        except BaseException:
            await spool.close()
            raise
        try:
            source: IO[bytes] = await spool.finish()
        except OSError as e:
            logDiskFailure(
                self._log,
                Failure(),
                "{session} spooling the message into {directory} failed",
                session=session.id,
                directory=self.spoolDirectory or tempfile.gettempdir(),
            )
            raise diskError(e) from None
        if delivery.sessionEnded:
            self._closeSource(source)
            self._log.info(
                "{session} pipe command not started: the session ended", session=session.id
            )
            raise SMTPError(451, "Error: the session ended", "4.3.0")
        deadline = self._reactor.seconds() + self._timeout
        try:
            await self._turn(session, delivery)
        except BaseException:
            self._closeSource(source)
            raise
        try:
            return await self._run(session, delivery, source, deadline)
        finally:
            self._bound.release()

    async def _turn(self, session: Session, delivery: _Delivery) -> None:
        """
        Wait, for at most C{timeout} seconds, for fewer than C{maxConcurrent} commands
        running: a turn that comes with no time left is not taken.

        @raise SMTPError: 451 4.4.5 if none ended in time, 451 4.3.0 if
            the session ended meanwhile.
        """
        turn = delivery.turn = self._bound.acquire(self._timeout)
        try:
            taken = await turn
        except CancelledError:
            self._log.info(
                "{session} pipe command not started: the session ended before its turn",
                session=session.id,
            )
            raise SMTPError(451, "Error: the session ended", "4.3.0") from None
        finally:
            delivery.turn = None
        if not taken:
            self._log.warn(
                "{session} pipe command not started: no turn in {seconds}s ({limit} running)",
                session=session.id,
                limit=self._bound.limit,
                seconds=self._timeout,
            )
            raise SMTPError(451, "Error: too many delivery commands running", "4.4.5")

    async def _run(
        self, session: Session, delivery: _Delivery, source: IO[bytes], deadline: float
    ) -> str:
        """
        Run the command, C{source} its standard input, until C{deadline}.
        """
        run = delivery.run = CommandRun(self._reactor)
        env = self.environment(session)
        executable, argv = self._command(self.arguments(session), env, False)
        try:
            self._reactor.spawnProcess(
                run,
                executable,
                argv,
                env=env,
                childFDs={0: source.fileno(), 1: "r", 2: "r"},
            )
        except OSError as e:
            # E2BIG (an envelope not checked at RCPT), EMFILE, ENOMEM, ...
            self._log.error(
                "{session} pipe command could not be started: {error}",
                session=session.id,
                error=os.strerror(e.errno) if e.errno else str(e),
            )
            raise SMTPError(451, "Error: delivery command could not be started", "4.3.0") from None
        finally:
            # The command has its own copy of the descriptor.
            self._closeSource(source)

        def timeOut() -> None:
            delivery.timedOut = True
            problem = run.kill(self._startKill)
            if problem is not None:
                self._log.warn(
                    "{session} pipe command could not be killed at its time limit ({problem})",
                    session=session.id,
                    problem=problem,
                )

        left = max(deadline - self._reactor.seconds(), 0)
        timer: IDelayedCall = self._reactor.callLater(left, timeOut)
        try:
            await run.ended
        finally:
            if timer.active():
                timer.cancel()
        if delivery.timedOut:
            self._log.warn("{session} pipe command timed out", session=session.id)
            raise SMTPError(451, "Error: delivery command timed out", "4.3.0")
        assert run.exited is not None
        if delivery.killed:
            # Logged by onClose.
            raise SMTPError(451, "Error: the session ended", "4.3.0")
        return self._verdict(run.exited, run.stderr, session)

    def _verdict(self, reason: Failure, stderr: bytes, session: Session) -> str:
        if reason.check(ProcessDone):
            return f"OK: delivered to {os.path.basename(self.argv[0])}"
        value = reason.value
        code = getattr(value, "exitCode", None)
        signum = getattr(value, "signal", None)
        detail = firstLine(stderr)
        self._log.warn(
            "{session} pipe command failed ({how}){detail}",
            session=session.id,
            how=f"exit {code}" if code is not None else f"signal {signum}",
            detail=f": {detail}" if detail else "",
        )
        if isinstance(value, ProcessTerminated) and code == EX_TEMPFAIL:
            raise SMTPError(451, detail or "Error: temporary failure, try again later", "4.3.0")
        if code is None:
            # Killed (the OOM killer, a crash): nothing says the message is
            # at fault, so the client tries again later, as Postfix's pipe
            # (pipe_command.c) defers with "Command died with signal N".
            raise SMTPError(451, f"Error: command died with signal {signum}", "4.3.0")
        text = f"Error: delivery command failed (exit status {code})"
        if detail:
            text += f": {detail}"
        raise SMTPError(554, text, "5.3.0")
