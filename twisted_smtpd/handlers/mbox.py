# -*- test-case-name: tests.test_mbox -*-
"""
L{MboxHandler}: append every message to an mbox file, in the C{mboxrd}
format.

Each message is spooled as it arrives to an anonymous temporary file in the
mbox's directory (L{twisted_smtpd.handlers._spool.Spool}: bounded memory,
the client paused while the disk is behind); once it has ended whole, it is
appended under an exclusive lock, converted on the way (line ends to LF,
C{From } quoting) a block at a time, and fsynced, in a thread, before the
250 reply: a 250 means the message is on disk.  Memory stays bounded
whatever the message's size.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import threading
import time
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from twisted_smtpd._core.files import NotRegularFile, openRegular
from twisted_smtpd._core.session import Session
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers._diskfailure import diskError, logDiskFailure
from twisted_smtpd.handlers._dotlock import releaseDotLock, takeDotLock
from twisted_smtpd.handlers._spool import Spool
from twisted_smtpd.interfaces import IMessageStream

# mboxrd: a line made of any number of ">" then "From " gets one more ">".
_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)
# The first byte of a line that is not a quoting ">".
_NOT_QUOTE = re.compile(rb"[^>]")
_UNSAFE_SENDER = re.compile(r"[\x00-\x20\x7f]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# How much of the spool is read, converted and written at a time.
_BLOCK = 1 << 16

# An indirection so that tests can break the disk.
_fsync = os.fsync

#: Seconds an append waits for the mailbox's locks by default (Postfix's
#: C{local} tries C{deliver_lock_attempts} = 20 times, 1 s apart).
LOCK_TIMEOUT = 20.0
# Seconds between two attempts at a lock another program holds.
_LOCK_POLL = 0.1


def _embedded(match: re.Match[str]) -> str:
    return f"\\x{{{ord(match.group()):X}}}"


def fromLine(sender: str, when: float | None = None) -> bytes:
    """
    The C{From } line starting a message: the sender (C{MAILER-DAEMON} for
    the null reverse-path) and the date in C{asctime} form, UTC.

    The line is ASCII, as mbox readers expect it (Python's C{mailbox.mbox}
    cannot read a message whose C{From } line is not): each non-ASCII
    character of an internationalized sender (RFC 6531) is written as
    C{\\x{HEX}}, the embedded form of RFC 6533 section 3; a space or a
    control character, which would end the sender early or break the
    line, becomes C{_}.
    """
    name = _UNSAFE_SENDER.sub("_", sender)
    name = _NON_ASCII.sub(_embedded, name) or "MAILER-DAEMON"
    stamp = time.asctime(time.gmtime(when))
    return f"From {name} {stamp}\n".encode()


class MboxrdEncoder:
    """
    Converts a message to its mboxrd form chunk by chunk: CRLF becomes LF,
    lines starting with C{>*From } get one more C{>}.

    What it holds back between chunks is bounded, however long a line is
    (a message of one line, as C{BINARYMIME} allows, is not kept whole):
    the start of a line that may still become C{>*From } (its C{>} run is
    passed on at once, the quoting C{>} put after it, which reads the
    same), or a CR that may be the start of a CRLF.
    """

    def __init__(self) -> None:
        # Bytes not converted yet: at most "From" while the current line
        # may still start with ">*From ", else at most a CR.
        self._held = b""
        # Whether the current line, as far as it was passed on, is made of
        # ">" only (none at its start): "From " may still follow.
        self._atHead = True
        # Whether what was passed on so far ends a line (or is nothing).
        self._endsLine = True

    def encode(self, chunk: bytes) -> bytes:
        """
        Convert C{chunk}, holding back only what the next chunk decides.
        """
        data = self._held + chunk
        self._held = b""
        out: list[bytes] = []
        position = 0
        if self._atHead:
            position = self._head(data, 0, out)
        if position >= 0:
            newline = data.find(b"\n", position)
            if newline < 0:
                self._midLine(data, position, out)
            else:
                # The rest of the current line, then every complete line.
                end = data.rfind(b"\n") + 1
                out.append(data[position : newline + 1].replace(b"\r\n", b"\n"))
                out.append(self._convert(data[newline + 1 : end]))
                self._atHead = True
                position = self._head(data, end, out)
                if position >= 0:
                    self._midLine(data, position, out)
        converted = b"".join(out)
        if converted:
            self._endsLine = converted.endswith(b"\n")
        return converted

    def end(self) -> bytes:
        """
        The rest of the message, ending with a newline, then the blank line
        separating it from the next.
        """
        rest, self._held = self._held, b""
        if rest or not self._endsLine:
            return rest + b"\n\n"
        return b"\n"

    def _head(self, data: bytes, position: int, out: list[bytes]) -> int:
        """
        Pass on the start of a line at C{position}, quoted if it is a
        C{>*From } line.

        @return: Where the rest of the line starts, now decided, or -1 when
            C{data} ended before that (what may still become C{From } is
            then held back).
        """
        match = _NOT_QUOTE.search(data, position)
        if match is None:
            out.append(data[position:])
            return -1
        first = match.start()
        candidate = data[first : first + 5]
        if candidate == b"From ":
            out.append(data[position:first] + b">")
        elif len(candidate) < 5 and b"From ".startswith(candidate):
            out.append(data[position:first])
            self._held = data[first:]
            return -1
        else:
            out.append(data[position:first])
        self._atHead = False
        return first

    def _midLine(self, data: bytes, position: int, out: list[bytes]) -> None:
        """
        Pass on C{data} from C{position}, inside a line that no newline
        ends, but for a last CR, held back.
        """
        rest = data[position:]
        if rest.endswith(b"\r"):
            rest, self._held = rest[:-1], b"\r"
        out.append(rest.replace(b"\r\n", b"\n"))

    @staticmethod
    def _convert(data: bytes) -> bytes:
        if not data:
            return data
        return _FROM_LINE.sub(rb">\1", data.replace(b"\r\n", b"\n"))


class MboxHandler(BaseHandler):
    """
    Append every message to the mbox file at C{path} (created with mode
    0600 if missing).

    The mailbox is locked with its dot lock (C{<path>.lock}, made with
    C{O_EXCL} as procmail and Postfix's C{local} do; one older than 500
    seconds is taken for stale and removed), then with both C{fcntl}
    (C{lockf}) and C{flock}, while a message is appended, so that mail
    programs using any of them see whole messages; appends from this
    process are also serialised among themselves.  A mailbox removed or
    replaced at its path while an append waited for its locks is opened
    again at its path; anything but a regular file there is refused.  A
    failed append is cut off again, leaving the file as it was, and
    answered 452 (disk or quota full) or 451.  A message is answered once
    it is fsynced, and, when it made the mailbox (or found it empty), once
    the mailbox's directory is fsynced too, so that the file's name
    survives a crash as well.  A mailbox another program
    keeps locked for C{lockTimeout} seconds is not written and the message
    is answered 451, with one log line, so that the client tries again
    later instead of waiting without end.  In LMTP mode the same reply goes
    to every recipient.

    @ivar path: The mbox file's absolute path.
    """

    _log = Logger()

    def __init__(
        self,
        path: str,
        *,
        reactor: Any = None,
        threadpool: ThreadPool | None = None,
        lockTimeout: float = LOCK_TIMEOUT,
    ) -> None:
        """
        @param path: The mbox file.
        @param reactor: The reactor (the global one by default).
        @param threadpool: Where disk work runs; C{reactor.getThreadPool()}
            by default.
        @param lockTimeout: Seconds an append waits for the mailbox's locks
            (L{LOCK_TIMEOUT} by default) before the message is answered 451.
        @raise ValueError: C{path} is empty, or C{lockTimeout} is not
            positive and finite.
        """
        if not path:
            raise ValueError("mbox path must not be empty")
        if not 0 < lockTimeout <= threading.TIMEOUT_MAX:
            # Infinity (or more than a lock can be waited for) would fail
            # every append: the old wait without end is not to be had.
            raise ValueError(f"lockTimeout must be positive and finite, got {lockTimeout!r}")
        self.path = os.path.abspath(path)
        self._lockTimeout = lockTimeout
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor = reactor
        self._threadpool = threadpool
        self._lock = threading.Lock()

    def _inThread(self, f: Any, *args: Any) -> Deferred[Any]:
        pool = self._threadpool or self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, f, *args)

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[str]:
        """
        Spool the body as it arrives, then append it.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with C{"OK: delivered to
            mbox"} once
            the message is fsynced, failing with L{SMTPError} 451/452 on a
            disk failure or with the stream's failure if the body did not
            arrive whole (nothing is then appended).
        """
        mailFrom = session.envelope.mailFrom
        header = fromLine(mailFrom.address if mailFrom is not None else "")
        return Deferred.fromCoroutine(self._deliver(stream, header, session.id))

    async def _deliver(self, stream: IMessageStream, header: bytes, session: str) -> str:
        directory = os.path.dirname(self.path)
        spool = Spool(directory, self._inThread)
        piped: Deferred[int] = stream.pipe(spool)
        try:
            await piped
        except BaseException:
            await spool.close()
            raise
        try:
            source = await spool.finish()
        except OSError as e:
            # The message's own file, not the mailbox: a file size limit
            # reached there is 552 5.3.4, not the mailbox full.
            logDiskFailure(
                self._log,
                Failure(),
                "{session} spooling the message into {directory} failed",
                session=session,
                directory=directory,
            )
            raise diskError(e) from None
        try:
            await self._inThread(self._append, header, source)
        except OSError:
            failure = Failure()
            logDiskFailure(
                self._log,
                failure,
                "{session} Appending to {path} failed",
                session=session,
                path=self.path,
            )
            raise diskError(failure.value, mailbox=True) from None
        return "OK: delivered to mbox"

    def _append(self, header: bytes, source: IO[bytes]) -> None:
        """
        In a pool thread: under the locks, append C{header} then the message
        read from C{source} (which is closed), converted to mboxrd a block at
        a time, and fsync; on failure, cut the file back to its former
        length.
        """
        deadline = time.monotonic() + self._lockTimeout
        try:
            if not self._lock.acquire(timeout=self._lockTimeout):
                raise self._locked("another delivery of this server")
            try:
                dotLock = takeDotLock(self.path, deadline, self._dotLocked)
                try:
                    self._appendLocked(deadline, header, source)
                finally:
                    releaseDotLock(dotLock)
            finally:
                self._lock.release()
        finally:
            source.close()

    def _appendLocked(self, deadline: float, header: bytes, source: IO[bytes]) -> None:
        """
        In a pool thread, the dot lock held: open the mailbox, take its
        kernel locks, append and fsync; on failure, cut the file back.
        """
        fd = self._openLocked(deadline)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                _writeAll(fd, _separator(fd, start) + header)
                encoder = MboxrdEncoder()
                while block := source.read(_BLOCK):
                    _writeAll(fd, encoder.encode(block))
                _writeAll(fd, encoder.end())
                _fsync(fd)
                if start == 0:
                    # A mailbox just made (or emptied): its name is durable
                    # only once its directory is flushed too.
                    _syncDirectory(self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            # Closing the file releases both locks.
            os.close(fd)

    def _openLocked(self, deadline: float) -> int:
        """
        In a pool thread: open the mailbox (creating it if missing) and take
        its locks, until C{deadline}.  A mailbox removed or replaced at its
        path while this waited for the locks (a mail reader such as
        C{movemail} takes the messages, then removes the file, before it
        lets go) is opened again: a message appended to the file it held
        would be lost, or land where no one looks for it.

        @return: The descriptor, open for appending, both locks held.
        @raise OSError: C{EAGAIN} when C{deadline} passed; C{EINVAL} or
            C{ELOOP} as L{openMailbox}, also when the path came to name
            such a file while this waited; any error of C{open}, C{lockf}
            or C{flock}.
        """
        while True:
            fd = openMailbox(self.path)
            try:
                self._lockFile(fd, deadline)
                opened = os.fstat(fd)
                try:
                    named = _namedMailbox(self.path)
                except FileNotFoundError:
                    named = None
            except BaseException:
                os.close(fd)
                raise
            if (
                named is not None
                and opened.st_nlink > 0
                and (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)
            ):
                return fd
            # Closing the file releases both locks.
            os.close(fd)
            if time.monotonic() >= deadline:
                raise OSError(
                    errno.EAGAIN,
                    f"mailbox replaced while locking, again for {self._lockTimeout:g} s",
                )

    def _lockFile(self, fd: int, deadline: float) -> None:
        """
        In a pool thread: take both locks of C{fd}, trying again while
        another program holds either, until C{deadline}.  Neither is kept
        while waiting for the other, so that a program taking them in the
        other order cannot deadlock with this one.

        @raise OSError: C{EAGAIN} when C{deadline} passed; any other error
            of C{lockf} or C{flock}.
        """
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BaseException:
                    fcntl.lockf(fd, fcntl.LOCK_UN)
                    raise
                return
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._locked("another program")
            time.sleep(min(_LOCK_POLL, remaining))

    def _dotLocked(self) -> OSError:
        return self._locked("another program (its dot lock)")

    def _locked(self, holder: str) -> OSError:
        """
        The error of a mailbox still locked after C{lockTimeout} seconds.

        @param holder: Who holds it: another program (the file's locks) or
            another delivery of this server (the handler's own lock).
        """
        return OSError(errno.EAGAIN, f"mailbox locked by {holder} for {self._lockTimeout:g} s")


def openMailbox(path: str) -> int:
    """
    Open the mbox at C{path} for appending, creating it (mode 0600) if
    missing, as Postfix's C{local} opens a mailbox: a symbolic link there is
    followed only if root owns it (only the administrator can have made
    it), so that another user of the mail directory cannot point the path
    at a file the server may write, nor have a link to nothing make a file
    where it points; a file with more than one hard link (another name,
    which could be that of such a file) and anything but a regular file (a
    named pipe would hold the thread without end) are refused.  It is opened for reading too, so
    that the end of the file tells whether a separator is due, unless only
    writing is allowed (a mailbox of mode 0620).

    @return: The descriptor, open for appending.
    @raise OSError: C{ELOOP} for a symbolic link root does not own;
        C{EPERM} for a file with more than one hard link; C{EINVAL} for
        something other than a regular file; any error of C{open}.
    """
    try:
        try:
            fd = _openMailbox(path, os.O_RDWR)
        except PermissionError:
            fd = _openMailbox(path, os.O_WRONLY)
    except NotRegularFile as e:
        raise OSError(errno.EINVAL, str(e)) from None
    try:
        links = os.fstat(fd).st_nlink
        if links > 1:
            raise OSError(errno.EPERM, f"mailbox has {links} hard links")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _openMailbox(path: str, access: int) -> int:
    """
    L{openMailbox} with the access mode C{access}.

    @raise NotRegularFile: Something other than a regular file is there.
    """
    flags = access | os.O_APPEND
    while True:
        try:
            return openRegular(path, flags | os.O_NOFOLLOW, 0o600)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            _rootsLink(os.lstat(path))
            return openRegular(path, flags, 0o600)
        try:
            # Never through a link made meanwhile (O_EXCL follows none).
            return openRegular(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Made by another program meanwhile: opened as it is.
            continue


def _namedMailbox(path: str) -> os.stat_result:
    """
    The file the mbox path names now, through a symbolic link root owns.

    @raise OSError: C{ELOOP} for a symbolic link root does not own.
    """
    named = os.lstat(path)
    if stat.S_ISLNK(named.st_mode):
        _rootsLink(named)
        named = os.stat(path)
    return named


def _rootsLink(link: os.stat_result) -> None:
    """
    Refuse the symbolic link whose C{lstat} is C{link} unless root owns it.

    @raise OSError: C{ELOOP}, naming the link's owner.
    """
    if link.st_uid != 0:
        raise OSError(
            errno.ELOOP, f"mailbox is a symbolic link not owned by root (uid {link.st_uid})"
        )


def _separator(fd: int, end: int) -> bytes:
    """
    What must come before a message appended at C{end} so that its C{From }
    line starts a line after a blank one: nothing for an empty mailbox or
    one ending with a blank line, else the line ends it lacks.  A mailbox
    whose last message was cut short (a writer killed in the middle of an
    append, or a program that does not end its messages) would otherwise
    take the new message's C{From } line into its last line, and hide the
    new message inside the one before it.
    """
    if end == 0:
        return b""
    try:
        tail = os.pread(fd, 2, max(0, end - 2))
    except OSError:
        # Open for writing only: its end cannot be told.
        return b""
    if tail == b"\n\n" or tail == b"\n":
        # A file of a single newline counts as an empty mailbox.
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def _syncDirectory(path: str) -> None:
    """
    Fsync the directory holding the mbox at C{path} (where a symbolic link
    there points), so that a mailbox made by the append being fsynced
    survives a crash with the message acknowledged in it.
    """
    directory = os.path.dirname(os.path.realpath(path))
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _fsync(fd)
    finally:
        os.close(fd)


def _writeAll(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
