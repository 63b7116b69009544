# -*- test-case-name: tests.test_logwriter -*-
"""
L{BufferedLogWriter}: the log of C{twistd smtpd}, text or JSON lines,
written in batches.

A line costs a few microseconds of CPU instead of the tens that
C{twisted.logger}'s publisher, C{formatEvent}, C{strftime} and a write per
line cost together: the session lines (L{SessionLogger}) arrive with their
text made, the time prefix is made once a second, and the lines are
written together, at most C{interval} seconds later (and at once when the
buffer passes C{limit} characters, when the reactor is not running, and at
shutdown).  A process killed with SIGKILL loses the lines of its last
C{interval}.

A log that cannot be written (a full disk, a file size limit, a reader of
standard output gone) loses the lines of the writes that fail, counted:
standard error gets one line saying so at most every
L{FAILURE_REPORT_INTERVAL} seconds, and the first write that succeeds
again starts with a line saying how many were lost.

Standard output that is a pipe, a socket or a terminal is written as far
as its reader has room (L{StreamOut}); up to C{behind} bytes wait for it.
A reader that far behind holds the server to its pace while it takes
bytes, as a blocking write would, so that a flood of lines cannot push
others out of a log whose reader is merely slow; one that takes nothing
for L{STALL_WAIT} seconds (a stalled log collector, a pipeline's program
suspended) is given up: lines are lost and counted in the same way until
it reads again, and the server goes on.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import IO, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent
from zope.interface import implementer

from twisted_smtpd._core.printable import printable
from twisted_smtpd._serving.jsonlines import jsonDefault, jsonEvent
from twisted_smtpd._serving.logging import NAMESPACE
from twisted_smtpd._serving.logstream import ReaderRoom, StreamOut, streamDescriptor, writable

_string: Callable[[str], str] = encode_basestring_ascii

#: The least seconds between two lines on standard error about a log that
#: cannot be written.
FAILURE_REPORT_INTERVAL = 60.0

#: The most seconds the last lines wait for the reader of a stream, at
#: exit (the reactor stopped).
FINAL_WAIT = 2.0

#: The most seconds a stream's reader that is C{behind} bytes behind may
#: take nothing before it is given up: until then the server goes at its
#: pace (a slow reader loses nothing, however fast lines come), past it
#: lines are lost, counted, until it takes bytes again.
STALL_WAIT = 5.0

#: What a worker of C{--workers} gives its parent, which reads the
#: workers' lines and gives up on its own reader within L{STALL_WAIT}:
#: longer, so that the parent takes the worker's lines again before the
#: worker gives up, and the lines lost are counted in one place, the
#: parent's log.
PARENT_STALL_WAIT = 3 * STALL_WAIT


_NOISE = frozenset({"Starting factory {factory!r}", "Stopping factory {factory!r}"})
# The last two: the UDP port of twisted.names' resolver (reverse lookups),
# opened and closed around its queries.
_PORT_NOISE = re.compile(
    r"^(\S.{0,200} starting on \S+|\((TCP |UNIX |UDP )?Port \S+ Closed\)"
    r"|(Starting|Stopping) protocol <.{1,200}>)$"
)


def _isPortNoise(event: LogEvent) -> bool:
    message: Any = event.get("message") or ("",)
    return bool(_PORT_NOISE.match(str(message[0])))


def _defaultReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _continued(text: str) -> str:
    """
    C{text} as log lines: its further lines begin with a TAB, and every
    character that could end a line early or drive a terminal (a handler's
    or a traceback's text may hold a client's) is escaped.
    """
    return "\n\t".join(map(printable, text.split("\n")))


@implementer(ILogObserver)
class BufferedLogWriter:
    """
    A log observer (for C{twistd}'s log) and the fast path of the session
    lines, writing text lines as C{twistd} does
    (C{2026-01-02T10:00:00+0000 [namespace#level] text}) or flat JSON lines
    (L{jsonEvent}).

    @ivar json: Whether lines are JSON.
    """

    def __init__(
        self,
        out: IO[Any],
        *,
        json: bool = False,
        reactor: Any = None,
        interval: float = 0.5,
        limit: int = 65536,
        onBrokenPipe: Callable[[], object] | None = None,
        behind: int = 1 << 20,
        stall: float | None = None,
    ) -> None:
        """
        @param out: A text file (standard output, or C{twistd}'s C{LogFile}).
        @param json: Write JSON lines instead of text.
        @param reactor: What schedules the flushes; the global reactor by
            default.
        @param interval: Seconds a line may wait in the buffer.
        @param limit: Characters buffered before a write regardless.
        @param onBrokenPipe: Called once when C{out} is a pipe whose reader
            is gone (a worker's parent, killed); it points C{out} somewhere
            else, and the lines are written there.
        @param behind: The most bytes that wait for the reader of a
            stream (a pipe, a socket, a terminal) that does not take them;
            lines past it are lost.
        @param stall: The most seconds the reader of such a stream may
            take nothing before it is given up (L{STALL_WAIT} if C{None}).
        """
        self._out = out
        self._onBrokenPipe = onBrokenPipe
        self.json = json
        self._reactor = reactor
        self._interval = interval
        self._limit = limit
        self._buffer: list[str] = []
        self._size = 0
        self._pending: IDelayedCall | None = None
        self._second = -1
        self._textPrefix = ""
        self._sessionPrefix = ""
        self._jsonTime = ""
        #: Lines lost since the log last took a write, and why.
        self._lost = 0
        self._lostBecause = ""
        self._reportedAt: float | None = None
        self._behind = behind
        self._stall = stall
        self._stream = self._streamOf(out)
        self._gaveUp = False
        self._stalled = False
        self._watched: ReaderRoom | None = None

    def _streamOf(self, out: IO[Any]) -> StreamOut | None:
        fd = streamDescriptor(out)
        return None if fd is None else StreamOut(fd, self._behind)

    @property
    def reactor(self) -> Any:
        """
        The reactor, the global one unless given.
        """
        if self._reactor is None:
            self._reactor = _defaultReactor()
        return self._reactor

    def _stamp(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._second = second
            when = datetime.fromtimestamp(second, UTC)
            self._textPrefix = when.strftime("%Y-%m-%dT%H:%M:%S+0000")
            self._sessionPrefix = f"{self._textPrefix} [{NAMESPACE}#info] "
            self._jsonTime = when.strftime("%Y-%m-%dT%H:%M:%S")

    def line(self, text: str, fields: Mapping[str, Any]) -> None:
        """
        Log one line of the C{twisted_smtpd.session} namespace at info level.

        @param text: The line's text.
        @param fields: Its fields, for JSON.
        """
        now = time.time()
        if int(now) != self._second:
            self._stamp(now)
        if self.json:
            # One object written by hand: json.dumps costs more than the
            # whole budget of a line; the strings go through the C escaper.
            parts = [
                f'{{"time":"{self._jsonTime}.{int(now * 1000) % 1000:03d}+00:00",'
                f'"level":"info","namespace":"{NAMESPACE}","text":{_string(text)}'
            ]
            for key, value in fields.items():
                kind = type(value)
                if kind is str:
                    parts.append(f'"{key}":{_string(value)}')
                elif kind is int:
                    parts.append(f'"{key}":{value}')
                elif value is None:
                    parts.append(f'"{key}":null')
                elif kind is list and all(type(item) is str for item in value):
                    parts.append(f'"{key}":[{",".join(map(_string, value))}]')
                elif kind is list and all(type(item) is int for item in value):
                    parts.append(f'"{key}":[{",".join(map(str, value))}]')
                else:
                    parts.append(f'"{key}":{json.dumps(value, default=jsonDefault)}')
            self._add(",".join(parts) + "}\n")
        else:
            self._add(self._sessionPrefix + text + "\n")

    def __call__(self, event: LogEvent) -> None:
        """
        Log any C{twisted.logger} event, except Twisted's own noise about
        factories, ports and datagram protocols (the startup summary says
        where the server listens; the DNS resolver's UDP port opens and
        closes around its queries).
        """
        if event.get("log_format") in _NOISE or (
            event.get("log_namespace") == "log_legacy" and _isPortNoise(event)
        ):
            return
        self._add(self._format(event) + "\n")

    def _format(self, event: LogEvent) -> str:
        if self.json:
            try:
                text = json.dumps(jsonEvent(event), default=jsonDefault)
            except (TypeError, ValueError) as e:
                text = json.dumps({"text": f"unserialisable log event: {e}"})
        else:
            when = event.get("log_time") or time.time()
            self._stamp(when)
            level = event.get("log_level")
            system = event.get("log_system")
            if system is None:
                system = f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"
            text = _continued(f"{self._textPrefix} [{system}] {formatEvent(event)}")
            failure = event.get("log_failure")
            if failure is not None:
                text += "\n\t" + _continued(failure.getTraceback().rstrip("\n"))
        return text

    def forward(self, text: str) -> None:
        """
        Log lines another process wrote in this writer's format (a worker
        of C{--workers}), as they are.

        @param text: Whole lines, each ending with a newline.
        """
        self._add(text)

    def _add(self, text: str) -> None:
        self._buffer.append(text)
        self._size += len(text)
        reactor = self._reactor or self.reactor
        if self._size >= self._limit or not getattr(reactor, "running", False):
            self.flush()
        elif self._pending is None:
            self._pending = reactor.callLater(self._interval, self._timed)

    def _timed(self) -> None:
        self._pending = None
        self.flush()

    @property
    def path(self) -> str | None:
        """
        The path of the file written, or C{None} for a stream (standard
        output).
        """
        if callable(getattr(self._out, "reopen", None)):
            path: str | None = getattr(self._out, "path", None)
            return path
        return None

    def reopen(self) -> None:
        """
        Write the buffered lines, then open the log file again (after
        logrotate moved it); a stream (standard output) stays as it is.
        Lines the old file cannot take (the disk is full, a file size limit
        is reached) go into the new one: a full file is no reason not to
        open its successor.

        @raise OSError: The file could not be opened again; lines go on
            into the one open before.
        """
        reopen = getattr(self._out, "reopen", None)
        if not callable(reopen):
            self.flush()
            return
        data = self._take()
        try:
            if data:
                self._write(data)
                data = ""
        except (OSError, ValueError):
            # ValueError: the old file was closed by a rotation that could
            # not open the next one.
            pass
        try:
            reopen()
        finally:
            if data:
                # Written with the next batch, into whichever file is open.
                self._buffer.insert(0, data)
                self._size += len(data)
                reactor = self._reactor or self.reactor
                if self._pending is None and getattr(reactor, "running", False):
                    self._pending = reactor.callLater(self._interval, self._timed)

    def _take(self) -> str:
        """
        Cancel the timed flush and empty the buffer.

        @return: The buffered lines.
        """
        pending, self._pending = self._pending, None
        if pending is not None and pending.active():
            pending.cancel()
        if not self._buffer:
            return ""
        data = "".join(self._buffer)
        self._buffer.clear()
        self._size = 0
        return data

    def flush(self) -> None:
        """
        Write every buffered line now; if the log cannot take them, they
        are lost and counted (L{_failed}).
        """
        data = self._take()
        if self._stream is not None:
            self._flushStream(self._stream, data)
            return
        if not data:
            return
        notice = self._lostNotice() if self._lost else ""
        try:
            self._write(notice + data)
        except (OSError, ValueError) as e:
            # ValueError: a file closed by a rotation that failed.
            self._failed(data.count("\n"), e)
            return
        self._lost = 0
        self._reportedAt = None
        takeNotice = getattr(self._out, "takeNotice", None)
        if takeNotice is not None:
            # What the file says of its rotation (it failed, or succeeded
            # at last): one line, after those that were written.
            rotation = takeNotice()
            if rotation is not None:
                self._add(self._noticeLine(rotation))

    def _flushStream(self, stream: StreamOut, data: str) -> None:
        """
        Give C{data} to the reader of a stream: what it does not take now
        waits, written as soon as it makes room (L{_awaitReader}).  When
        C{data} does not fit under C{behind} bytes waiting, the reader sets
        the pace (L{StreamOut.makeRoom}) unless it took nothing for
        L{STALL_WAIT} seconds; then lines are lost, counted, until it
        takes bytes again.
        """
        reactor = self._reactor or self.reactor
        if stream.stale():
            # Standard output no longer names the terminal written through
            # a descriptor of this process's own: the lines, those waiting
            # first, go where it points now.
            self._repoint(stream, reactor, data)
            return
        running = getattr(reactor, "running", False)
        try:
            if data:
                notice = self._lostNotice() if self._lost else ""
                encoding = getattr(self._out, "encoding", None) or "utf-8"
                encoded = (notice + data).encode(encoding, "backslashreplace")
                kept = stream.put(encoded)
                if not kept and not self._stalled:
                    # A reader this far behind sets the pace while it takes
                    # bytes; one that takes none for STALL_WAIT is given up.
                    stall = STALL_WAIT if self._stall is None else self._stall
                    if not running:
                        stall = min(stall, FINAL_WAIT)
                    try:
                        self._stalled = not stream.makeRoom(len(encoded), stall)
                    except OSError:
                        # Lost, counted, or written elsewhere with the rest.
                        stream.put(encoded, anyway=True)
                        raise
                    # Room made, or none ever would be: C{encoded} alone
                    # is over the limit (a long line, what waited for a
                    # worker's parent that died), taken whole once nothing
                    # else waits.
                    kept = not self._stalled and stream.put(encoded, anyway=True)
                if kept:
                    self._lost = 0
                    self._reportedAt = None
                else:
                    self._failed(
                        data.count("\n"),
                        OSError(errno.EAGAIN, f"its reader is {stream.waiting} bytes behind"),
                    )
            before = stream.waiting
            # At exit the reader gets FINAL_WAIT seconds once, not per line.
            stream.drain(0.0 if running or self._gaveUp else FINAL_WAIT)
            if stream.waiting < before:
                # It takes bytes again: it sets the pace again.
                self._stalled = False
        except OSError as e:
            self._unwatch(reactor)
            onBrokenPipe, self._onBrokenPipe = self._onBrokenPipe, None
            if not isinstance(e, BrokenPipeError) or onBrokenPipe is None:
                self._failed(stream.take().count(b"\n"), e)
                return
            onBrokenPipe()
            # The same descriptor, now another file: the lines go there.
            # Its reader is no worker's parent: it gets STALL_WAIT.
            self._stall = None
            self._repoint(stream, reactor, "")
            return
        self._gaveUp = bool(stream.waiting) and not running
        if not stream.waiting:
            self._unwatch(reactor)
        elif running:
            self._awaitReader(stream, reactor)

    def _repoint(self, stream: StreamOut, reactor: Any, data: str) -> None:
        """
        Write the lines waiting for the reader of C{stream}, then C{data},
        where the output's descriptor points now: C{stream}, and its
        terminal's descriptor of this process's own, are done with.
        """
        self._unwatch(reactor)
        waiting = stream.take().decode("utf-8", "replace") + data
        stream.close()
        self._stream = self._streamOf(self._out)
        if waiting:
            self._buffer.insert(0, waiting)
            self._size += len(waiting)
        self.flush()

    def _awaitReader(self, stream: StreamOut, reactor: Any) -> None:
        """
        Write what waits as soon as the reader of C{stream} makes room:
        the reactor watches it; a reactor that cannot (a test's clock)
        flushes again C{interval} seconds later, and so does one watching a
        stream that took nothing although C{poll} said there was room
        (L{StreamOut.refused}): the reactor would find it writable at once,
        again and again.
        """
        if stream.refused:
            self._unwatch(reactor)
        elif self._watched is not None:
            return
        addWriter = getattr(reactor, "addWriter", None)
        if addWriter is not None and not stream.refused:
            watched = ReaderRoom(stream.fd, self.flush, self._readerGone)
            try:
                addWriter(watched)
            except (OSError, ValueError):
                # A file epoll cannot watch; the timer, then.
                pass
            else:
                self._watched = watched
                return
        if self._pending is None:
            self._pending = reactor.callLater(self._interval, self._timed)

    def _unwatch(self, reactor: Any) -> None:
        """
        The reactor no longer watches the stream.
        """
        watched, self._watched = self._watched, None
        if watched is not None:
            reactor.removeWriter(watched)

    def _readerGone(self) -> None:
        """
        The reactor saw the stream's end and stopped watching it: the
        next write says why.
        """
        self._watched = None
        self.flush()

    def _noticeLine(self, text: str) -> str:
        """
        C{text} as a warning line of the log's own (C{twisted_smtpd.log}).
        """
        event = {
            "log_namespace": "twisted_smtpd.log",
            "log_level": LogLevel.warn,
            "log_format": "{text}",
            "log_time": time.time(),
            "text": text,
        }
        return self._format(event) + "\n"

    def _lostNotice(self) -> str:
        """
        The line saying how many lines were lost, and why.
        """
        event = {
            "log_namespace": "twisted_smtpd.log",
            "log_level": LogLevel.warn,
            "log_format": "log lines lost while the log could not be written ({error}): {lost}",
            "log_time": time.time(),
            "lost": self._lost,
            "error": self._lostBecause,
        }
        return self._format(event) + "\n"

    def _failed(self, lines: int, error: BaseException) -> None:
        """
        Count C{lines} lost because writing failed with C{error}; say so on
        standard error at the first failure, then at most every
        L{FAILURE_REPORT_INTERVAL} seconds while the failures go on.
        """
        self._lost += lines
        why = getattr(error, "strerror", None) or str(error) or type(error).__name__
        code = errno.errorcode.get(getattr(error, "errno", None) or 0)
        self._lostBecause = f"{why} ({code})" if code else why
        now = (self._reactor or self.reactor).seconds()
        if self._reportedAt is not None and now - self._reportedAt < FAILURE_REPORT_INTERVAL:
            return
        self._reportedAt = now
        where = self.path or "standard output"
        text = (
            f"twisted-smtpd: cannot write the log to {where}: {self._lostBecause};"
            f" lines lost so far: {self._lost}, more until it can be written again\n"
        )
        # Not sys.stderr: twistd points it into the log itself.
        errors: Any = sys.__stderr__
        try:
            fd = streamDescriptor(errors)
            if fd is None:
                errors.write(text)
                errors.flush()
            elif writable(fd):
                # Often the same stream as the log (journald): its reader
                # is not waited for either.
                os.write(fd, text.encode("utf-8", "backslashreplace"))
        except (OSError, ValueError, AttributeError):
            pass

    def _write(self, data: str) -> None:
        try:
            self._out.write(data)
            self._out.flush()
        except BrokenPipeError:
            onBrokenPipe, self._onBrokenPipe = self._onBrokenPipe, None
            if onBrokenPipe is None:
                raise
            onBrokenPipe()
            self._out.write(data)
            self._out.flush()
