# -*- test-case-name: tests.test_logstream -*-
"""
The log written into a pipe, a socket or a terminal (standard output read
by journald, a container's log collector or a shell's pipeline) without
waiting for its reader.

A blocking C{write} into a pipe whose reader has stopped reading waits
until it reads again: the whole server (one reactor) would stop with it,
every session and every timer, for as long as the reader likes.  Setting
C{O_NONBLOCK} is no answer: the flag belongs to the open file, shared
with the processes that inherited it (the shell, the other programs of a
pipeline).  So a L{StreamOut} writes only what the reader takes at once:
at most C{PIPE_BUF} bytes at a time, each write made only when C{poll}
says there is room for it (a pipe then has room for C{PIPE_BUF} bytes, a
socket for more).  What the reader does not take waits, up to a bound;
past it the log writer loses lines, counted, as for a full disk.  While
bytes wait, the reactor watches the stream (L{ReaderRoom}) and the writer
gives the reader more as soon as it makes room.

A terminal is the exception to C{poll}'s promise: it says there is room
when there is any, and a blocking write of more than the room left waits
for the reader.  So a terminal is written through a description of its
own (opened again by its name), non-blocking without touching the flag of
the one the other processes share.  A write that takes nothing although
C{poll} said there was room (a non-blocking terminal with room for less
than a line's end) is tried again only after L{RETRY_PAUSE}, and the
reactor does not watch such a stream, which would wake it at once for
ever.
"""

from __future__ import annotations

import os
import select
import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IWriteDescriptor
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.python.failure import Failure

#: The most bytes one write gives the reader: a pipe that C{poll} says is
#: writable takes that many without waiting.
CHUNK: int = getattr(select, "PIPE_BUF", 512)

#: Seconds before writing again into a stream that C{poll} said takes a
#: write, which then took nothing (C{EAGAIN}).
RETRY_PAUSE: float = 0.01


def streamDescriptor(out: Any) -> int | None:
    """
    The file descriptor of C{out} if it is a pipe, a socket or a terminal:
    a file whose writer may wait for its reader.

    @param out: A file object (standard output, a log file).
    @return: The descriptor, or C{None} for a regular file (which a
        C{write} fills, or fails: a full disk), another device
        (C{/dev/null}, which takes every write at once) or an object with
        no descriptor of its own.
    """
    try:
        fd = out.fileno()
        if not isinstance(fd, int):
            return None
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        # io.UnsupportedOperation is an OSError and a ValueError.
        return None
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd)):
        return fd
    return None


def writable(fd: int, timeout: float = 0.0) -> bool:
    """
    Whether C{fd} takes a write of L{CHUNK} bytes without waiting (or an
    error to report, its reader gone), waiting at most C{timeout} seconds.
    """
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(int(timeout * 1000)))


def ownTerminal(fd: int) -> int | None:
    """
    A description of the terminal C{fd} of this process's own,
    non-blocking: a blocking write into a terminal of more than the room
    it has left waits for its reader, whatever C{poll} said, and
    C{O_NONBLOCK} set on C{fd} would be set for every process sharing it
    (the shell, the other programs of a pipeline).

    @param fd: A descriptor of standard output.
    @return: The new descriptor, or C{None} when C{fd} is no terminal or
        its device cannot be opened again (no permission, no name).
    """
    try:
        if not os.isatty(fd):
            return None
        device = os.fstat(fd).st_rdev
        own = os.open(os.ttyname(fd), os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        same = os.fstat(own).st_rdev == device
    except OSError:
        same = False
    if not same:
        os.close(own)
        return None
    return own


class StreamOut:
    """
    Bytes for a stream's reader, written as it takes them: at most
    C{limit} of them wait.

    @ivar fd: The descriptor written: the stream's, or for a terminal one
        of this process's own (L{ownTerminal}).
    @ivar limit: The most bytes that wait for the reader.
    @ivar refused: Whether the last write took nothing although C{poll}
        said there was room: the reactor must not watch the stream, which
        it would find writable at once, again and again.
    """

    def __init__(self, fd: int, limit: int) -> None:
        """
        @param fd: The stream's file descriptor (L{streamDescriptor}).
        @param limit: The most bytes that may wait for the reader.
        """
        self._own = ownTerminal(fd)
        self.fd = fd if self._own is None else self._own
        self.limit = limit
        self.refused = False
        self._waiting = bytearray()
        self._source = fd
        self._device = os.fstat(self._own).st_rdev if self._own is not None else 0

    def stale(self) -> bool:
        """
        Whether this writes through a terminal's descriptor of its own
        while the stream's descriptor no longer names that terminal:
        pointed elsewhere since (C{twistd} daemonizing points standard
        output to C{/dev/null}), its lines are no longer the terminal's.
        """
        if self._own is None:
            return False
        try:
            mode = os.fstat(self._source)
        except OSError:
            return True
        return not stat.S_ISCHR(mode.st_mode) or mode.st_rdev != self._device

    def close(self) -> None:
        """
        Close the descriptor of this process's own, if any (the stream's
        stays open).
        """
        own, self._own = self._own, None
        if own is not None:
            os.close(own)

    def _writeSome(self) -> int:
        """
        Write what the reader takes of the next L{CHUNK} bytes waiting.

        @return: How many it took: 0 when it took nothing although C{poll}
            said there was room (L{refused}).
        """
        try:
            written = os.write(self.fd, self._waiting[:CHUNK])
        except BlockingIOError:
            # A non-blocking descriptor (a terminal's own, or one another
            # holder made so) with less room than the write needs.
            self.refused = True
            return 0
        self.refused = False
        del self._waiting[:written]
        return written

    @property
    def waiting(self) -> int:
        """
        The bytes the reader has not taken yet.
        """
        return len(self._waiting)

    def put(self, data: bytes, anyway: bool = False) -> bool:
        """
        Keep C{data} for the reader, if it fits under the limit.

        @param anyway: Keep it past the limit (lines about to be counted
            as lost, or written elsewhere, with those waiting).
        @return: Whether it was kept; when not, nothing of it was.
        """
        if len(self._waiting) + len(data) > self.limit and not anyway:
            return False
        self._waiting += data
        return True

    def drain(self, wait: float = 0.0) -> None:
        """
        Write what the reader takes now, or within C{wait} seconds (the
        last lines, at exit).

        @raise OSError: The stream cannot be written (C{EPIPE}: its reader
            is gone); the bytes still waiting stay.
        """
        deadline = time.monotonic() + wait
        while self._waiting:
            if not writable(self.fd, max(0.0, deadline - time.monotonic())):
                return
            if not self._writeSome():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                time.sleep(min(RETRY_PAUSE, left))

    def makeRoom(self, size: int, stall: float) -> bool:
        """
        Write, waiting for the reader as a blocking write would, until
        C{size} more bytes fit under the limit, unless the reader takes
        nothing for C{stall} seconds.

        @return: C{False} when the reader took nothing for C{stall}
            seconds; C{True} when the bytes fit now, or never would
            (C{size} alone is over the limit): nothing waits then, and
            they are to be kept anyway (L{put}), not lost.
        @raise OSError: The stream cannot be written (C{EPIPE}: its reader
            is gone); the bytes still waiting stay.
        """
        deadline = time.monotonic() + stall
        while len(self._waiting) + size > self.limit:
            if not self._waiting:
                return True
            left = deadline - time.monotonic()
            if left <= 0 or not writable(self.fd, left):
                return False
            if self._writeSome():
                deadline = time.monotonic() + stall
            else:
                time.sleep(min(RETRY_PAUSE, left))
        return True

    def take(self) -> bytes:
        """
        Empty the bytes waiting.

        @return: What was waiting.
        """
        data = bytes(self._waiting)
        self._waiting.clear()
        return data


@implementer(IWriteDescriptor)
class ReaderRoom:
    """
    What the reactor watches while bytes wait for a stream's reader: it
    calls L{doWrite} as soon as the reader has made room, so that a reader
    that reads as fast as lines come loses none, however briefly it lags.
    """

    def __init__(self, fd: int, onRoom: Callable[[], object], onEnd: Callable[[], object]) -> None:
        """
        @param fd: The stream's file descriptor.
        @param onRoom: Called when the reader made room (or is gone: the
            write then fails and says so).
        @param onEnd: Called when the reactor saw the stream end and
            stopped watching it.
        """
        self._fd = fd
        self._onRoom = onRoom
        self._onEnd = onEnd

    def fileno(self) -> int:
        """
        The stream's file descriptor.
        """
        return self._fd

    def logPrefix(self) -> str:
        """
        What the reactor names this by.
        """
        return "log stream"

    def doWrite(self) -> None:
        """
        The reader has made room, or is gone.
        """
        self._onRoom()

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor saw the stream end (its reader gone) and stopped
        watching it: the next write finds out why.
        """
        self._onEnd()
