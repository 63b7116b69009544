# -*- test-case-name: tests.test_logfile -*-
"""
Where C{twistd smtpd} writes its log: standard output, or C{--logfile}
opened for appending and opened again on SIGUSR1 (L{ReopenOnSignal}).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import sys
import threading
from typing import Any

from twisted.application.service import Service
from twisted.logger import ILogObserver, Logger
from twisted.python.logfile import LogFile

from twisted_smtpd._serving.logwriter import BufferedLogWriter
from twisted_smtpd._twistd.heldsignals import HELD
from twisted_smtpd._twistd.tapconfig import exitWithError, reason
from twisted_smtpd._twistd.tapflags import DEFAULT_ROTATE_LENGTH, DEFAULT_ROTATED_LOGS


class AppendingLogFile(LogFile):
    """
    C{twistd}'s L{LogFile} (rotated at C{rotateLength} bytes, never with
    0, reopened with L{reopen}; with C{maxRotatedFiles}, the rotated files
    past that many deleted at each rotation),
    written with C{O_APPEND}: every write lands at the end of the file as
    it is then, so a file another program truncated (logrotate's
    C{copytruncate}) goes on from its new end instead of from the old
    offset, which would leave a hole of NUL bytes.
    """

    #: Whether the last write stopped in the middle of a line (the disk
    #: filled up, or a file size limit was reached, part way through it).
    _cut = False

    def _openFile(self) -> None:
        super()._openFile()
        self._cut = False
        fd = self._file.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)

    def write(self, data: str | bytes) -> None:
        """
        Write all of C{data}, or raise: the file is unbuffered, and a write
        the disk takes only part of (it filled up, C{ENOSPC}, or the file
        reached C{RLIMIT_FSIZE}, C{EFBIG}) otherwise loses the rest
        silently.  The first write after one cut short starts on a line of
        its own, not glued to the cut one.

        @raise OSError: The disk took none of it, or only part.
        """
        if self.shouldRotate():
            self.flush()
            self.rotate()
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if self._cut:
            raw = b"\n" + raw
        view = memoryview(raw)
        written = 0
        try:
            while written < len(raw):
                count = self._file.write(view[written:])
                if not count:
                    raise OSError(errno.EIO, "the log file took no bytes")
                written += count
        finally:
            if written:
                self._cut = raw[written - 1] != 0x0A
                self.size += written

    #: Why the last rotation could not open the next file (the lines go on
    #: into the old one), or C{None}.
    _rotationFailed: str | None = None
    #: Where the lines went meanwhile.
    _writtenInto = ""
    #: A line about a rotation, to be logged once (L{takeNotice}).
    _notice: str | None = None
    #: Whether a rotation was skipped (the file or its directory cannot be
    #: written), said once.
    _unrotatable = False

    def rotate(self) -> None:
        """
        Move the file to C{path.1} (the older ones up by one) and open a
        new one at C{path}, as L{LogFile.rotate} does, but the old file is
        closed only once the new one is open: one that cannot be made (no
        inode or quota left, no file descriptor) leaves the lines going on
        into the old one, now C{path.1}, and the new one is tried again at
        each write, never the whole log lost until SIGUSR1.  A file or
        directory that cannot be written skips the rotation, as in
        L{LogFile}, but not silently.  A C{path} that
        no longer names the file written (deleted, or moved away without
        SIGUSR1) is opened again, without renaming anything.  Each of these
        events leaves one line (L{takeNotice}).
        """
        if not os.access(self.directory, os.W_OK):
            self._cannotRotate(f"its directory {self.directory} cannot be written")
            return
        gone = False
        if self._rotationFailed is None:
            if not self._namesOpenFile():
                # Deleted, or moved away without SIGUSR1: LogFile would
                # skip every rotation from now on, writing on into a file
                # nobody sees, however large it grows.
                gone = True
                self._writtenInto = "the file written before, no longer at that path"
            elif not os.access(self.path, os.W_OK):
                self._cannotRotate("it cannot be written")
                return
            else:
                self._shift()
                self._writtenInto = f"{self.path}.1"
        old = self._file
        try:
            self._openFile()
        except OSError as e:
            self._file = old
            if self._rotationFailed is None:
                self._rotationFailed = _why(e)
                self._notice = (
                    f"Rotating the log file {self.path} failed, the next file could not be"
                    f" opened ({self._rotationFailed}): the lines go on into"
                    f" {self._writtenInto}, and the next file is tried again at each write"
                )
            return
        old.close()
        self._unrotatable = False
        if gone:
            self._notice = (
                f"Log file {self.path} no longer named the file written when it was to be"
                " rotated (deleted, or moved away without SIGUSR1): it is opened again"
            )
        if self._rotationFailed is not None:
            self._notice = (
                f"Log file {self.path} opened at last after its rotation failed"
                f" ({self._rotationFailed}): the lines before are in {self._writtenInto}"
            )
            self._rotationFailed = None

    def _cannotRotate(self, why: str) -> None:
        """
        Say once, until a rotation succeeds, that the file cannot be rotated
        and grows on.
        """
        if not self._unrotatable:
            self._unrotatable = True
            self._notice = (
                f"Log file {self.path} not rotated: {why}; it grows on past"
                f" {self.rotateLength} bytes, its rotation tried again at each write"
            )

    def _namesOpenFile(self) -> bool:
        """
        Whether C{path} names the file open now.
        """
        try:
            named = os.stat(self.path)
            written = os.fstat(self._file.fileno())
        except (OSError, ValueError):
            return False
        return (named.st_dev, named.st_ino) == (written.st_dev, written.st_ino)

    def _shift(self) -> None:
        """
        Rename C{path.N} to C{path.N+1}, oldest first, and C{path} to
        C{path.1}, as L{LogFile.rotate} does.
        """
        for number in reversed(self.listLogs()):
            name = f"{self.path}.{number}"
            if self.maxRotatedFiles is not None and number >= self.maxRotatedFiles:
                os.remove(name)
            else:
                os.rename(name, f"{self.path}.{number + 1}")
        os.rename(self.path, f"{self.path}.1")

    def takeNotice(self) -> str | None:
        """
        The line to log about the last rotation, once: that it could not
        open the next file, or that it could at last.
        """
        notice, self._notice = self._notice, None
        return notice

    def reopen(self) -> None:
        """
        Open the file at C{path} again (logrotate moved the old one); the
        old file is closed only once the new one is open.

        @raise OSError: It cannot be opened; writes go on into the old one.
        """
        old = self._file
        try:
            self._openFile()
        except OSError:
            self._file = old
            raise
        old.close()
        self._rotationFailed = None


def _why(error: OSError) -> str:
    """
    C{error} as the log's lines name it: C{No space left on device (ENOSPC)}.
    """
    why = error.strerror or str(error) or type(error).__name__
    code = errno.errorcode.get(error.errno or 0)
    return f"{why} ({code})" if code else why


_startLog = Logger(namespace="twisted_smtpd.startup")


class GivesLogObserver(Service):
    """
    Base of the service C{twistd smtpd} runs (whichever its options make):
    joining C{twistd}'s application, it has C{twistd} log through
    C{logObserver} when one is set.

    @ivar logObserver: The observer to log through instead of C{twistd}'s
        own, or C{None}.
    """

    logObserver: ILogObserver | None = None

    def setServiceParent(self, parent: Any) -> None:
        """
        Join C{parent}; when it is C{twistd}'s application and a log
        observer is set, C{twistd} logs through it.
        """
        super().setServiceParent(parent)
        setComponent = getattr(parent, "setComponent", None)
        if self.logObserver is not None and setComponent is not None:
            setComponent(ILogObserver, self.logObserver)


def _logPath(parent: Any) -> str | None:
    """
    The absolute path of the file C{twistd} would write text logs to, given
    its own options C{parent}, or C{None} for standard output.
    """
    logfile = parent.get("logfile")
    if logfile == "-" or (parent.get("nodaemon", True) and not logfile):
        return None
    return os.path.abspath(logfile or "twistd.log")


def jsonBesideSyslog(config: Any) -> str | None:
    """
    A warning line when C{twistd --syslog} is given with C{--log-format
    json}: JSON lines are never written to syslog, but where C{twistd}
    writes text without C{--syslog} (L{logDestination}), so C{--syslog}
    (and C{--prefix}) change nothing.

    @param config: The options of C{smtpd}, whose C{parent} holds
        C{twistd}'s own.
    @return: The line, naming where the lines go, or C{None}.
    """
    parent: Any = getattr(config, "parent", None) or {}
    if config["log-format"] != "json" or not parent.get("syslog"):
        return None
    where = _logPath(parent) or "standard output"
    return (
        f"twistd --syslog has no effect with --log-format json: the JSON lines go to"
        f" {where}, not to syslog (--log-format text goes to syslog)"
    )


def rotateKeepUnused(config: Any) -> str | None:
    """
    A warning line when C{--log-rotate-keep} or C{--log-rotate-length} is
    given where no log file is written by the server: the log goes to
    standard output, or C{twistd --syslog} writes the text lines.

    @param config: The options of C{smtpd}, whose C{parent} holds
        C{twistd}'s own.
    @return: The line, or C{None}.
    """
    given = config.get("given") or ()
    flags = [f"--{name}" for name in ("log-rotate-keep", "log-rotate-length") if name in given]
    if not flags:
        return None
    parent: Any = getattr(config, "parent", None) or {}
    if config["log-format"] != "json" and parent.get("syslog"):
        why = "twistd --syslog writes the log (--log-format text)"
    elif _logPath(parent) is None:
        why = "the log goes to standard output (no twistd --logfile)"
    else:
        return None
    verb = "has" if len(flags) == 1 else "have"
    return f"{' and '.join(flags)} {verb} no effect: {why}"


def logDestination(config: Any) -> Any:
    """
    Where C{twistd} would write text logs: standard output, or its log file,
    rotated at C{--log-rotate-length} bytes (never with 0), which keeps
    C{--log-rotate-keep} rotated files (all of them with 0).
    A log file that cannot be opened ends the start with one line
    (L{exitWithError}).

    @param config: The parsed options of C{smtpd}, whose C{parent} holds
        C{twistd}'s own.
    @raise SystemExit: The log file cannot be opened (its directory is
        missing, it is a directory, ...): after one line on standard error
        (L{exitWithError}).
    """
    path = _logPath(getattr(config, "parent", None) or {})
    if path is None:
        return sys.stdout
    keep = int(config.get("log-rotate-keep", DEFAULT_ROTATED_LOGS))
    length = int(config.get("log-rotate-length", DEFAULT_ROTATE_LENGTH))
    try:
        logFile = AppendingLogFile.fromFullPath(
            path, rotateLength=length, maxRotatedFiles=keep or None
        )
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else reason(e)
        exitWithError(f"--logfile {path!r}: {why}")
    if length and not _canWrite(logFile.directory):
        _startLog.warn(
            "--logfile {path!r}: its directory cannot be written, so the file is never"
            " rotated at {size} bytes and grows on: give it a directory the server's user"
            " can write, or rotate it with logrotate's copytruncate",
            path=path,
            size=logFile.rotateLength,
        )
    return logFile


def _canWrite(directory: str) -> bool:
    """
    Whether the effective user (C{twistd --uid}'s, within L{asRunUser
    <twisted_smtpd._twistd.runuser.asRunUser>}) can write C{directory}.
    """
    if os.access in os.supports_effective_ids:
        return os.access(directory, os.W_OK, effective_ids=True)
    return os.access(directory, os.W_OK)


class ReopenOnSignal:
    """
    SIGUSR1 opens the log file again, for logrotate's
    C{postrotate kill -USR1}; each time leaves one line.  Without a log file
    (standard output, or C{twistd}'s syslog observer) there is nothing to
    reopen, and the signal only leaves its line: it never ends the process.
    """

    _log = Logger()

    def __init__(self, writer: BufferedLogWriter | None, reactor: Any) -> None:
        """
        @param writer: The process's log writer, or C{None} when C{twistd}'s
            syslog observer writes the log.
        @param reactor: What runs the reopening, outside the signal handler.
        """
        self._writer = writer
        self._reactor = reactor
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        """
        Handle SIGUSR1 from now on (in the main thread only, where signals
        can be handled).
        """
        if not self._installed and threading.current_thread() is threading.main_thread():
            self._previous = HELD.handle(signal.SIGUSR1, self._received)
            self._installed = True

    def uninstall(self) -> None:
        """
        Put back the handler SIGUSR1 had before L{install}.
        """
        if self._installed:
            signal.signal(signal.SIGUSR1, self._previous)
            self._installed = False
            self._previous = None

    def _received(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self.reopen)

    def reopen(self) -> None:
        """
        Open the log file again and say so; a file that cannot be opened
        leaves an error line and the old file in use.
        """
        writer = self._writer
        path = None if writer is None else writer.path
        if writer is None or path is None:
            destination = "syslog" if writer is None else "standard output"
            self._log.info(
                "SIGUSR1: logging to {destination}, no log file to reopen",
                destination=destination,
            )
            return
        try:
            writer.reopen()
        except OSError as e:
            self._log.error(
                "Reopening the log file {path} failed, logging on into the old one: {error}",
                path=path,
                error=reason(e),
            )
            return
        self._log.info("Log file {path} reopened (SIGUSR1)", path=path)
