# -*- test-case-name: tests.test_handlers -*-
"""
Tests for the ready-made handlers in L{twisted_smtpd.handlers}.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import sys
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.disklog import DiskErrorLog
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import Address, Envelope, Session
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import (
    BaseHandler,
    DebuggingHandler,
    MaildirHandler,
    SinkHandler,
    _maildirdirs,
    _maildirdisk,
    maildir,
)
from twisted_smtpd.interfaces import ISMTPHandler

MiB = 1 << 20
NAME = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)\.(.+)$")
Job = tuple[Callable[[bool, object], None], Callable[..., object], tuple[Any, ...]]


def makeSession(**kwargs: Any) -> Session:
    """
    A session with a complete envelope, as the protocol hands it to onData.
    """
    values: dict[str, Any] = {
        "id": "s1d",
        "remoteAddress": ("192.0.2.1", 40123),
        "clientHostname": "client.example",
        "hostNameAppearsAs": "helo.example",
        "transmissionType": "ESMTP",
        "envelope": Envelope(
            mailFrom=Address("alice@example.com"),
            rcptTo=[Address("bob@example.org"), Address("carol@example.net")],
        ),
    }
    values.update(kwargs)
    return Session(**values)


def feed(stream: MessageStream, body: bytes, chunkSize: int = 65536) -> None:
    """
    Write C{body} into C{stream} in chunks and end it.
    """
    for start in range(0, len(body), chunkSize):
        stream._write(body[start : start + chunkSize])
    stream._finish()


class Upstream:
    """
    The producer behind a L{MessageStream}: records flow control.
    """

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.onResume: Callable[[], object] | None = None

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        if self.onResume is not None:
            self.onResume()

    def stopProducing(self) -> None:
        pass


class ManualThreadPool:
    """
    A thread pool that runs its jobs only when told, in the calling thread.
    """

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, object], None], func: Callable[..., object], *args: Any
    ) -> None:
        self.jobs.append((onResult, func, args))

    def runOne(self) -> None:
        onResult, func, args = self.jobs.pop(0)
        try:
            result = func(*args)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)

    def runAll(self) -> None:
        while self.jobs:
            self.runOne()


class ImmediateReactor:
    """
    Just enough reactor for L{deferToThreadPool} with L{ManualThreadPool},
    and for the Maildir committer's wait for a turn of the reactor:
    C{callLater} runs its call at once, as if that turn brought nothing.
    """

    def callFromThread(self, f: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)

    def callLater(self, delay: float, f: Callable[..., object], *args: Any) -> None:
        f(*args)

    def seconds(self) -> float:
        return 0.0


def listDir(path: str) -> list[str]:
    return sorted(os.listdir(path))


def readFile(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class MaildirLayoutTests(SynchronousTestCase):
    """
    Creating the Maildir and naming its files.
    """

    def test_createsDirectories(self) -> None:
        """
        C{tmp}, C{new} and C{cur} are created with mode 0700, parents too.
        """
        path = os.path.join(self.mktemp(), "deep", "Maildir")
        handler = MaildirHandler(path, reactor=ImmediateReactor(), threadpool=ManualThreadPool())  # type: ignore[arg-type]
        self.assertEqual(handler.path, os.path.abspath(path))
        for sub in ("tmp", "new", "cur"):
            mode = os.stat(os.path.join(path, sub)).st_mode
            self.assertTrue(stat.S_ISDIR(mode))
            self.assertEqual(stat.S_IMODE(mode) & 0o077, 0)

    def test_existingMaildirKept(self) -> None:
        """
        An existing Maildir is used as it is; its messages stay.
        """
        path = self.mktemp()
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(path, sub))
        with open(os.path.join(path, "cur", "old:2,S"), "wb") as f:
            f.write(b"old")
        MaildirHandler(path, reactor=ImmediateReactor(), threadpool=ManualThreadPool())  # type: ignore[arg-type]
        self.assertEqual(readFile(os.path.join(path, "cur", "old:2,S")), b"old")

    def test_pathIsAFile(self) -> None:
        """
        A path that cannot become a Maildir raises an L{OSError} naming it.
        """
        path = self.mktemp()
        with open(path, "wb"):
            pass
        e = self.assertRaises(OSError, MaildirHandler, path, reactor=ImmediateReactor())
        self.assertIn(path, str(e))

    def test_emptyPath(self) -> None:
        """
        An empty path is refused.
        """
        self.assertRaises(ValueError, MaildirHandler, "", reactor=ImmediateReactor())

    def test_uniqueNameFormat(self) -> None:
        """
        Names follow C{<seconds>.M<usec>P<pid>Q<counter>.<host>}, with C{/} and
        C{:} of the host name escaped.
        """
        name = maildir._uniqueName("mx:1/a.example")
        match = NAME.match(name)
        assert match is not None
        seconds, usec, pid, counter, host = match.groups()
        self.assertLess(abs(int(seconds) - time.time()), 60)
        self.assertGreater(int(counter), 0)
        self.assertEqual(int(pid), os.getpid())
        self.assertLess(int(usec), 1_000_000)
        self.assertEqual(host, "mx\\0721\\057a.example")
        self.assertNotIn("/", name)
        self.assertNotIn(":", name)

    def test_uniqueNameInForkedChild(self) -> None:
        """
        A process forked from this one (a C{--workers} worker) names its
        files with its own pid, not its parent's.
        """
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover (the child process)
            try:
                os.write(write, f"{os.getpid()} {maildir._uniqueName('h')}".encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            pid, name = pipe.read().decode().split()
        os.waitpid(child, 0)
        match = NAME.match(name)
        assert match is not None
        self.assertEqual(match.group(3), pid)
        self.assertNotEqual(int(pid), os.getpid())

    def test_uniqueNamesDistinct(self) -> None:
        """
        Names made in the same microsecond still differ, by their counter.
        """
        names = {maildir._uniqueName("h") for _ in range(2000)}
        self.assertEqual(len(names), 2000)


class MaildirFlowTests(SynchronousTestCase):
    """
    Buffering, spilling and committing, step by step with a manual thread
    pool.
    """

    def setUp(self) -> None:
        # Named tmp files, whose progress shows in tmp/ (UnnamedTmpFileTests
        # covers unnamed ones).
        self.patch(maildir._maildirdisk, "_O_TMPFILE", 0)
        self.path = self.mktemp()
        self.pool = ManualThreadPool()
        self.handler = MaildirHandler(self.path, reactor=ImmediateReactor(), threadpool=self.pool)  # type: ignore[arg-type]
        self.assertFalse(self.handler.unnamedFiles)
        self.upstream = Upstream()
        self.stream = MessageStream(self.upstream)

    def dirs(self) -> tuple[list[str], list[str]]:
        return (
            listDir(os.path.join(self.path, "tmp")),
            listDir(os.path.join(self.path, "new")),
        )

    def test_smallMessageTouchesDiskOnlyAtCommit(self) -> None:
        """
        A small message stays in memory: one commit job writes it, and the
        reply comes only once that job is done.
        """
        d = self.handler.onData(self.stream, makeSession())
        feed(self.stream, b"Subject: hi\r\n\r\nbody\r\n")
        self.assertEqual(len(self.pool.jobs), 1)
        self.assertEqual(self.dirs(), ([], []))
        self.assertNoResult(d)
        self.pool.runAll()
        reply = self.successResultOf(d)
        tmp, new = self.dirs()
        self.assertEqual(tmp, [])
        self.assertEqual(reply, f"OK: queued as {new[0]}")
        self.assertEqual(
            readFile(os.path.join(self.path, "new", new[0])), b"Subject: hi\r\n\r\nbody\r\n"
        )

    def test_spillPausesAndResumes(self) -> None:
        """
        Past the threshold the body is written to C{tmp/} while it arrives;
        the client is paused while a write is in flight and the buffer is
        full again, and resumed when the write is done.
        """
        d = self.handler.onData(self.stream, makeSession())
        chunk = b"x" * 65536
        for _ in range(16):
            self.stream._write(chunk)
        self.assertEqual(len(self.pool.jobs), 1)
        self.assertFalse(self.upstream.paused)
        for _ in range(16):
            self.stream._write(chunk)
        # The handler has paused the stream, which pauses the client once
        # more than its own buffer (256 KiB) is waiting.
        self.assertFalse(self.upstream.paused)
        for _ in range(5):
            self.stream._write(chunk)
        self.assertTrue(self.upstream.paused)
        self.pool.runOne()
        self.assertFalse(self.upstream.paused)
        tmp, new = self.dirs()
        self.assertEqual(len(tmp), 1)
        self.assertEqual(new, [])
        self.assertEqual(len(self.pool.jobs), 1)
        self.stream._write(b"end\r\n")
        self.stream._finish()
        self.assertNoResult(d)
        self.pool.runAll()
        self.successResultOf(d)
        tmp, new = self.dirs()
        self.assertEqual(tmp, [])
        self.assertEqual(readFile(os.path.join(self.path, "new", new[0])), chunk * 37 + b"end\r\n")

    def test_tinyPiecesSpilledByTheirMemory(self) -> None:
        """
        A body arriving two octets at a time (tiny TLS records) is spilled
        once the memory its pieces take reaches the threshold, not only
        their octets: what the handler holds stays near the threshold,
        instead of about twenty times it; the file is still exact.
        """
        self.handler.spillThreshold = 64 * 1024
        d = self.handler.onData(self.stream, makeSession())
        pieces = 20_000
        for _ in range(pieces):
            self.stream._write(b"xy")
            if self.pool.jobs:
                self.pool.runOne()
        # 40,000 octets, far below the threshold in octets: spilled.
        tmp, new = self.dirs()
        self.assertEqual(len(tmp), 1)
        self.stream._finish()
        self.pool.runAll()
        self.successResultOf(d)
        tmp, new = self.dirs()
        self.assertEqual(readFile(os.path.join(self.path, "new", new[0])), b"xy" * pieces)

    def test_failureAfterSpillRemovesTmp(self) -> None:
        """
        A body that fails after part of it was spilled leaves nothing in
        C{tmp/} or C{new/}, and the stream's failure is passed on once the
        tmp file is gone.
        """
        d = self.handler.onData(self.stream, makeSession())
        for _ in range(20):
            self.stream._write(b"y" * 65536)
        self.pool.runAll()
        self.assertEqual(len(self.dirs()[0]), 1)
        self.stream._fail(Failure(SMTPError(552, "Error: too big", "5.3.4")))
        self.assertNoResult(d)
        self.pool.runAll()
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual(error.code, 552)
        self.assertEqual(self.dirs(), ([], []))

    def test_failureDuringSpillWrite(self) -> None:
        """
        A body failing while a spill write is in flight is reported only
        after that write finished and the tmp file was removed.
        """
        d = self.handler.onData(self.stream, makeSession())
        for _ in range(20):
            self.stream._write(b"y" * 65536)
        self.stream._fail(Failure(ConnectionLost()))
        self.assertNoResult(d)
        self.pool.runAll()
        self.failureResultOf(d, ConnectionLost)
        self.assertEqual(self.dirs(), ([], []))

    def test_spillWriteFailure(self) -> None:
        """
        A disk error while spilling keeps reading the body (discarding it)
        and answers 452 for a full disk, with one log line naming the
        session; the tmp file is removed.
        """
        log = DiskErrorLog(self)

        def full(path: str) -> Any:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(_maildirdisk, "_createTmp", full)
        d = self.handler.onData(self.stream, makeSession())
        for _ in range(40):
            self.stream._write(b"z" * 65536)
        self.assertTrue(self.upstream.paused)
        self.pool.runAll()
        self.assertFalse(self.upstream.paused)
        for _ in range(40):
            self.stream._write(b"z" * 65536)
        self.assertEqual(self.pool.jobs, [])
        self.stream._finish()
        self.pool.runAll()
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (452, "4.3.1"))
        self.assertEqual(self.dirs(), ([], []))
        log.assertLines(1, "s1d Writing message ", "No space left on device (ENOSPC)")

    def test_spillFileTooBig(self) -> None:
        """
        A message file grown past what the system lets the process write
        (C{EFBIG}: a file size limit) is refused for good, 552 5.3.4, as
        Postfix's C{smtpd} answers for its queue file: sending it again
        cannot mend it.
        """
        log = DiskErrorLog(self)

        def tooBig(path: str) -> Any:
            raise OSError(errno.EFBIG, "File too large")

        self.patch(_maildirdisk, "_createTmp", tooBig)
        d = self.handler.onData(self.stream, makeSession())
        for _ in range(40):
            self.stream._write(b"z" * 65536)
        self.pool.runAll()
        self.stream._finish()
        self.pool.runAll()
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (552, "5.3.4"))
        self.assertEqual(self.dirs(), ([], []))
        log.assertLines(1, "s1d Writing message ", "File too large (EFBIG)")

    def test_batchesWaitForRunningCommit(self) -> None:
        """
        Messages ending while a commit cycle runs form the next one, whose
        flush also makes the first message's name durable; then, nothing
        else waiting, that cycle flushes its own names: every message is
        answered after two cycles.
        """
        streams = [MessageStream() for _ in range(4)]
        results = [self.handler.onData(s, makeSession()) for s in streams]
        feed(streams[0], b"first\r\n")
        self.assertEqual(self.handler.commitBatches, 1)
        for s in streams[1:]:
            feed(s, b"later\r\n")
        self.assertEqual(self.handler.commitBatches, 1)
        self.pool.runOne()
        self.assertNoResult(results[0])
        self.assertEqual(self.handler.commitBatches, 2)
        for d in results[1:]:
            self.assertNoResult(d)
        self.pool.runOne()
        for d in results:
            self.successResultOf(d)
        self.assertEqual(self.handler.commitBatches, 2)
        self.assertEqual(self.pool.jobs, [])
        self.assertEqual(len(self.dirs()[1]), 4)


class StaleTemporaryFilesTests(SynchronousTestCase):
    """
    Files a crash left in C{tmp/} (never acknowledged) are removed when the
    handler starts, once they are older than the Maildir convention's 36
    hours; younger ones may belong to a delivery in progress.
    """

    def test_staleFilesRemovedAtStart(self) -> None:
        path = self.mktemp()
        os.makedirs(os.path.join(path, "tmp"))
        old = os.path.join(path, "tmp", "1.crashed.host")
        young = os.path.join(path, "tmp", "2.inprogress.host")
        for name in (old, young):
            with open(name, "wb") as f:
                f.write(b"partial")
        then = time.time() - 37 * 3600
        os.utime(old, (then, then))
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        MaildirHandler(path)
        self.assertEqual(os.listdir(os.path.join(path, "tmp")), ["2.inprogress.host"])
        self.assertEqual(len(events), 1)
        self.assertIn("removed 1 file(s) older than 36 hours", formatEvent(events[0]))

    def test_nothingStaleNothingLogged(self) -> None:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        MaildirHandler(self.mktemp())
        self.assertEqual(len(events), 0)

    def unremovable(self, perRecipient: bool) -> tuple[list[str], list[str]]:
        """
        Start a handler on a Maildir whose C{tmp/} holds two stale files,
        one of which (its name holding a line feed) cannot be removed.

        @return: What is left in C{tmp/}, and the log lines.
        """
        path = self.mktemp()
        os.makedirs(os.path.join(path, "tmp"))
        stuck = "1.stuck\nforged line"
        for name in (stuck, "2.crashed.host"):
            full = os.path.join(path, "tmp", name)
            with open(full, "wb") as f:
                f.write(b"partial")
            then = time.time() - 37 * 3600
            os.utime(full, (then, then))
        realUnlink = os.unlink

        def unlink(name: Any, *args: Any, **kwargs: Any) -> None:
            if "stuck" in os.fsdecode(name):
                raise PermissionError(errno.EPERM, "Operation not permitted", name)
            realUnlink(name, *args, **kwargs)

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        os.unlink = unlink  # type: ignore[assignment]
        try:
            MaildirHandler(path, perRecipient=perRecipient, hostname="mx.example.com")
        finally:
            os.unlink = realUnlink
        return os.listdir(os.path.join(path, "tmp")), [formatEvent(e) for e in events]

    def test_unremovableStaleFileLogged(self) -> None:
        """
        A stale file in C{tmp/} that cannot be removed (immutable, or
        another user's in a sticky directory) does not stop the handler:
        the others are removed, and one line names the first file left and
        why, its name made printable.
        """
        left, lines = self.unremovable(perRecipient=False)
        self.assertEqual(left, ["1.stuck\nforged line"])
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("removed 1 file(s) older than 36 hours", lines[0])
        self.assertIn("could not remove 1 file(s) older than 36 hours", lines[1])
        self.assertIn("first 1.stuck\\x0aforged line: Operation not permitted (EPERM)", lines[1])
        self.assertNotIn("\n", lines[1])

    def test_unremovableStaleFileLoggedPerRecipient(self) -> None:
        """
        The same for the root C{tmp/} of per-recipient Maildirs.
        """
        left, lines = self.unremovable(perRecipient=True)
        self.assertEqual(left, ["1.stuck\nforged line"])
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("could not remove 1 file(s) older than 36 hours", lines[1])


class MaildirDeliveryTests(TestCase):
    """
    End-to-end delivery through the reactor's thread pool.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.handler = MaildirHandler(self.path)
        self.fsyncs: list[tuple[str, bool]] = []
        realFsync = _maildirdisk._fsync

        def recordingFsync(fd: int) -> None:
            mode = os.fstat(fd).st_mode
            kind = "dir" if stat.S_ISDIR(mode) else "file"
            inNew = any(
                os.stat(os.path.join(self.path, "new", n)).st_ino == os.fstat(fd).st_ino
                for n in os.listdir(os.path.join(self.path, "new"))
            )
            self.fsyncs.append((kind, inNew))
            realFsync(fd)

        self.patch(_maildirdisk, "_fsync", recordingFsync)

    def newDir(self) -> str:
        return os.path.join(self.path, "new")

    def tmpDir(self) -> str:
        return os.path.join(self.path, "tmp")

    def test_verifyObject(self) -> None:
        """
        L{MaildirHandler} provides L{ISMTPHandler}.
        """
        self.assertTrue(verifyObject(ISMTPHandler, self.handler))

    def test_byteExactAndRenamedBeforeReply(self) -> None:
        """
        The file in C{new/} holds exactly the body bytes, and is there, with
        C{tmp/} empty, when the reply fires.
        """
        body = b"Subject: t\r\n\r\n\x00\xff bare\n cr\r\r\n.\r\n..x\r\n" * 100
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession())
        feed(stream, body, 333)
        self.assertNoResult(d)

        def check(reply: str) -> None:
            names = listDir(self.newDir())
            self.assertEqual(len(names), 1)
            self.assertEqual(reply, f"OK: queued as {names[0]}")
            self.assertIsNotNone(NAME.match(names[0]))
            self.assertEqual(readFile(os.path.join(self.newDir(), names[0])), body)
            self.assertEqual(listDir(self.tmpDir()), [])

        return d.addCallback(check)

    def test_fsyncFileThenDirectory(self) -> None:
        """
        The message file is fsynced while still in C{tmp/}, then C{new/} is
        fsynced after the rename.
        """
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession())
        feed(stream, b"hello\r\n")

        def check(reply: str) -> None:
            self.assertEqual(self.fsyncs, [("file", False), ("dir", False)])

        return d.addCallback(check)

    def test_emptyBody(self) -> None:
        """
        An empty body makes an empty file.
        """
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession())
        stream._finish()

        def check(reply: str) -> None:
            (name,) = listDir(self.newDir())
            self.assertEqual(readFile(os.path.join(self.newDir(), name)), b"")

        return d.addCallback(check)

    def test_smallFailureLeavesNothing(self) -> None:
        """
        A body refused by the size limit fails with the stream's 552 and
        leaves C{tmp/} and C{new/} empty.
        """
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession())
        stream._write(b"part of it\r\n")
        stream._fail(Failure(SMTPError(552, "Error: too big", "5.3.4")))

        def check(failure: Failure) -> None:
            failure.trap(SMTPError)
            self.assertEqual(failure.value.code, 552)
            self.assertEqual(listDir(self.newDir()), [])
            self.assertEqual(listDir(self.tmpDir()), [])
            self.assertEqual(self.fsyncs, [])

        return d.addCallbacks(self.fail, check)

    def test_largeMessageWithFlowControl(self) -> None:
        """
        A 5 MiB body fed as fast as the handler lets it is spilled while it
        arrives (the client is paused at least once) and lands byte-exact.
        """
        body = bytes(range(256)) * (5 * MiB // 256) + b"tail\r\n"
        upstream = Upstream()
        stream = MessageStream(upstream)
        d = self.handler.onData(stream, makeSession())
        position = 0

        def pump() -> None:
            nonlocal position
            while not upstream.paused and position < len(body):
                stream._write(body[position : position + 65536])
                position += 65536
            if position >= len(body) and not stream.ended:
                stream._finish()

        def resumed() -> None:
            reactor.callLater(0, pump)  # type: ignore[attr-defined]

        upstream.onResume = resumed
        pump()
        self.assertTrue(upstream.paused)
        self.assertLess(position, len(body))

        def check(reply: str) -> None:
            (name,) = listDir(self.newDir())
            self.assertEqual(readFile(os.path.join(self.newDir(), name)), body)
            self.assertEqual(listDir(self.tmpDir()), [])
            self.assertGreater(upstream.pauses, 0)

        return d.addCallback(check)

    def test_concurrentMessagesBatched(self) -> None:
        """
        50 messages ending in the same reactor turn all land, under distinct
        names, in fewer than 50 commit batches and directory fsyncs; where
        C{syncfs} is missing, each file is fsynced on its own.
        """
        self.patch(_maildirdisk, "_syncfs", None)
        streams = [MessageStream() for _ in range(50)]
        results = [self.handler.onData(s, makeSession(id=f"s{i}")) for i, s in enumerate(streams)]
        for i, s in enumerate(streams):
            feed(s, b"message %d\r\n" % (i,))

        def check(replies: list[str]) -> None:
            names = [r.removeprefix("OK: queued as ") for r in replies]
            self.assertEqual(len(set(names)), 50)
            self.assertEqual(sorted(names), listDir(self.newDir()))
            for i, name in enumerate(names):
                self.assertEqual(
                    readFile(os.path.join(self.newDir(), name)), b"message %d\r\n" % (i,)
                )
            self.assertLess(self.handler.commitBatches, 50)
            dirSyncs = [f for f in self.fsyncs if f[0] == "dir"]
            self.assertLess(len(dirSyncs), 50)
            self.assertEqual(len(self.fsyncs) - len(dirSyncs), 50)

        return gatherResults(results).addCallback(check)

    def test_oneJobFailsAlone(self) -> None:
        """
        A commit failure fails only its own message (451, tmp file removed);
        the rest of the batch is delivered.
        """
        log = DiskErrorLog(self)
        realRename, realLink = _maildirdisk._rename, _maildirdisk._link

        def rename(src: str, directory: _maildirdirs.Directory, name: str) -> None:
            if readFile(src).startswith(b"FAIL"):
                raise OSError(errno.EIO, "I/O error")
            realRename(src, directory, name)

        def link(fd: int, directory: _maildirdirs.Directory, name: str) -> None:
            if readFile(f"/proc/self/fd/{fd}").startswith(b"FAIL"):
                raise OSError(errno.EIO, "I/O error")
            realLink(fd, directory, name)

        self.patch(_maildirdisk, "_rename", rename)
        self.patch(_maildirdisk, "_link", link)
        streams = [MessageStream() for _ in range(3)]
        results = [self.handler.onData(s, makeSession()) for s in streams]
        for body, s in zip([b"ok 1\r\n", b"FAIL\r\n", b"ok 2\r\n"], streams, strict=True):
            feed(s, body)

        def failed(failure: Failure) -> str:
            failure.trap(SMTPError)
            self.assertEqual((failure.value.code, failure.value.enhanced), (451, "4.3.0"))
            return "failed"

        def check(outcomes: list[str]) -> None:
            self.assertEqual(outcomes[1], "failed")
            self.assertEqual(
                sorted(o.removeprefix("OK: queued as ") for o in (outcomes[0], outcomes[2])),
                listDir(self.newDir()),
            )
            self.assertEqual(listDir(self.tmpDir()), [])
            log.assertLines(1, "Delivering ", " failed: ")

        results[1].addErrback(failed)
        return gatherResults(results).addCallback(check)

    def test_directoryFsyncFailureFailsBatch(self) -> None:
        """
        When C{new/} cannot be fsynced (here where C{syncfs} is missing),
        every message waiting for it fails with 451 4.3.0 and none is left
        in C{new/} to be delivered twice.
        """
        log = DiskErrorLog(self)
        self.patch(_maildirdisk, "_syncfs", None)

        def fsync(fd: int) -> None:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise OSError(errno.EIO, "I/O error")
            os.fsync(fd)

        self.patch(_maildirdisk, "_fsync", fsync)
        streams = [MessageStream() for _ in range(3)]
        results = [self.handler.onData(s, makeSession()) for s in streams]
        for s in streams:
            feed(s, b"body\r\n")

        def failed(failure: Failure) -> int:
            failure.trap(SMTPError)
            self.assertEqual((failure.value.code, failure.value.enhanced), (451, "4.3.0"))
            return 1

        def check(outcomes: list[int]) -> None:
            self.assertEqual(outcomes, [1, 1, 1])
            self.assertEqual(listDir(self.newDir()), [])
            self.assertEqual(listDir(self.tmpDir()), [])
            log.assertLines(3, "Delivering ", "I/O error (EIO)")

        return gatherResults([d.addCallbacks(self.fail, failed) for d in results]).addCallback(
            check
        )

    def test_traceHeaders(self) -> None:
        """
        With C{traceHeaders}, C{Return-Path:} and C{Received:} are prepended
        to the body.
        """
        handler = MaildirHandler(self.path, traceHeaders=True, hostname="mx.example")
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, b"Subject: x\r\n\r\nbody\r\n")

        def check(reply: str) -> None:
            (name,) = listDir(self.newDir())
            data = readFile(os.path.join(self.newDir(), name))
            returnPath, received, rest = data.split(b"\r\n", 2)
            self.assertEqual(returnPath, b"Return-Path: <alice@example.com>")
            prefix = (
                b"Received: from helo.example (client.example [192.0.2.1])"
                b" by mx.example with ESMTP id s1d; "
            )
            self.assertTrue(received.startswith(prefix), received)
            parsedate_to_datetime(received[len(prefix) :].decode())
            self.assertEqual(rest, b"Subject: x\r\n\r\nbody\r\n")

        return d.addCallback(check)

    def test_traceHeadersNullSenderAndUnsafeText(self) -> None:
        """
        The null reverse-path gives C{Return-Path: <>}; an unresolved client
        is C{unknown}; control characters never reach the headers: they are
        escaped.
        """
        handler = MaildirHandler(self.path, traceHeaders=True, hostname="mx.example")
        session = makeSession(
            envelope=Envelope(mailFrom=Address(""), rcptTo=[Address("b@example.org")]),
            hostNameAppearsAs="evil\r\nX-Injected: 1",
            clientHostname="[192.0.2.1]",
        )
        stream = MessageStream()
        d = handler.onData(stream, session)
        feed(stream, b"\r\n")

        def check(reply: str) -> None:
            (name,) = listDir(self.newDir())
            lines = readFile(os.path.join(self.newDir(), name)).split(b"\r\n")
            self.assertEqual(lines[0], b"Return-Path: <>")
            self.assertTrue(
                lines[1].startswith(
                    b"Received: from evil\\x0d\\x0aX-Injected:?1 (unknown [192.0.2.1]) by"
                ),
                lines[1],
            )
            self.assertEqual(lines[2:], [b"", b""])

        return d.addCallback(check)

    async def test_traceHeadersNotContinuedByBody(self) -> None:
        """
        A message whose first line begins with white space (a continuation
        line, to a header parser) gets an empty line after the trace
        headers, as Postfix's C{smtpd} inserts one: the client's line can
        never become part of the C{Received:} field.  It is then the
        message's body.
        """
        handler = MaildirHandler(self.path, traceHeaders=True, hostname="mx.example")
        for first in (b" ", b"\t"):
            stream = MessageStream()
            d = handler.onData(stream, makeSession())
            stream._write(first)
            stream._write(b"by forged.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n")
            feed(stream, b"Subject: x\r\n\r\nbody\r\n")
            name = (await d).rpartition(" ")[2]
            data = readFile(os.path.join(self.newDir(), name))
            returnPath, received, rest = data.split(b"\r\n", 2)
            self.assertTrue(received.startswith(b"Received: from helo.example"), received)
            self.assertEqual(
                rest,
                b"\r\n" + first + b"by forged.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                b"Subject: x\r\n\r\nbody\r\n",
            )

    def test_lmtpOneFile(self) -> None:
        """
        An LMTP message with several recipients is stored once, with one
        reply text.
        """
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession(transmissionType="LMTP"))
        feed(stream, b"lmtp\r\n")

        def check(reply: str) -> None:
            (name,) = listDir(self.newDir())
            self.assertEqual(reply, f"OK: queued as {name}")

        return d.addCallback(check)


class SinkHandlerTests(SynchronousTestCase):
    """
    L{SinkHandler} accepts and discards.
    """

    def test_verifyObject(self) -> None:
        """
        L{SinkHandler} provides L{ISMTPHandler} and is a L{BaseHandler}.
        """
        self.assertTrue(verifyObject(ISMTPHandler, SinkHandler()))
        self.assertIsInstance(SinkHandler(), BaseHandler)

    def test_accepts(self) -> None:
        """
        The reply comes when the body has ended, with no text of its own.
        """
        stream = MessageStream()
        d = SinkHandler().onData(stream, makeSession())
        stream._write(b"x" * 100000)
        self.assertNoResult(d)
        stream._finish()
        self.assertIsNone(self.successResultOf(d))

    def test_failurePassedOn(self) -> None:
        """
        An oversized body fails with the stream's 552.
        """
        stream = MessageStream()
        d = SinkHandler().onData(stream, makeSession())
        stream._fail(Failure(SMTPError(552, "Error: too big", "5.3.4")))
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 552)


class DebuggingHandlerTests(SynchronousTestCase):
    """
    L{DebuggingHandler} prints each message.
    """

    def test_verifyObject(self) -> None:
        """
        L{DebuggingHandler} provides L{ISMTPHandler}.
        """
        self.assertTrue(verifyObject(ISMTPHandler, DebuggingHandler(io.StringIO())))

    def test_output(self) -> None:
        """
        The block holds the markers, the envelope, the peer and the message
        decoded as UTF-8 with undecodable bytes replaced.
        """
        out = io.StringIO()
        stream = MessageStream()
        d = DebuggingHandler(out).onData(stream, makeSession())
        stream._write(b"Subject: caf\xc3\xa9\r\n\r\nbad \xff byte\r\n")
        stream._finish()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(
            out.getvalue(),
            "---------- MESSAGE FOLLOWS ----------\n"
            "mail from: alice@example.com\n"
            "rcpt to: bob@example.org\n"
            "rcpt to: carol@example.net\n"
            "peer: 192.0.2.1:40123\n"
            "session: s1d\n"
            "\n"
            "Subject: caf\u00e9\n"
            "\n"
            "bad \ufffd byte\n"
            "------------ END MESSAGE ------------\n",
        )

    def test_controlCharactersEscaped(self) -> None:
        """
        Control characters of the body (ESC, a C1 CSI, NUL, DEL, a lone CR,
        form feed, U+2028) are escaped in place and never end a line: each
        line of the message stays one printed line, and no byte of it can
        drive a terminal or forge a log line.
        """
        out = io.StringIO()
        stream = MessageStream()
        d = DebuggingHandler(out).onData(stream, makeSession())
        stream._write(
            "Subject: x\r\n\r\nhello \x1b[2J\x1b[31mred \u009b31m \x00nul \x7fdel\r\n"
            "cr\rhere\x0cff\u2028ls\r\nlast\r\n".encode()
        )
        stream._finish()
        self.successResultOf(d)
        body = out.getvalue().split("\n\n", 1)[1]
        self.assertEqual(
            body,
            "Subject: x\n"
            "\n"
            "hello \\x1b[2J\\x1b[31mred \\x9b31m \\x00nul \\x7fdel\n"
            "cr\\x0dhere\\x0cff\\u2028ls\n"
            "last\n"
            "------------ END MESSAGE ------------\n",
        )

    def test_markersInBodyEscaped(self) -> None:
        """
        A line of the body that reads as the end or the begin marker (as
        it is, with spaces around it, or fullwidth hyphens) has its first
        character escaped, and an invisible format character before it is
        itself escaped (C{\\u200b}) as all text printed is: the body cannot
        end its message early and print a message of its own after it,
        with a forged envelope and peer.  Other lines of hyphens are
        printed as they are.
        """
        out = io.StringIO()
        stream = MessageStream()
        d = DebuggingHandler(out).onData(stream, makeSession())
        end = "------------ END MESSAGE ------------"
        begin = "---------- MESSAGE FOLLOWS ----------"
        wide = end.replace("-", "\uff0d")
        stream._write(
            f"Subject: x\r\n\r\n{end}\r\n{begin}\r\nmail from: root@example.com\r\n"
            f"peer: 127.0.0.1:25\r\n\r\n {end} \r\n\u200b{end}\r\n"
            f"{wide}\r\n------------ NOT A MARKER\r\n".encode()
        )
        stream._finish()
        self.successResultOf(d)
        lines = out.getvalue().splitlines()
        self.assertEqual(lines.count(begin), 1)
        self.assertEqual(lines.count(end), 1)
        self.assertEqual(lines[-1], end)
        self.assertEqual(
            lines[9:],
            [
                "\\x2d----------- END MESSAGE ------------",
                "\\x2d--------- MESSAGE FOLLOWS ----------",
                "mail from: root@example.com",
                "peer: 127.0.0.1:25",
                "",
                " \\x2d----------- END MESSAGE ------------ ",
                "\\u200b------------ END MESSAGE ------------",
                "\\uff0d" + "\uff0d" * 11 + " END MESSAGE " + "\uff0d" * 12,
                "------------ NOT A MARKER",
                end,
            ],
        )

    def test_markerShorterThanItReads(self) -> None:
        """
        A line shorter than the markers that reads as one once its
        compatibility forms are made plain (U+1F14D SQUARED SS is C{SS})
        has its first character escaped too: the length of the line as
        written does not exempt it.
        """
        out = io.StringIO()
        stream = MessageStream()
        d = DebuggingHandler(out).onData(stream, makeSession())
        squared = "------------ENDME\U0001f14dAGE------------"
        stream._write(f"Subject: x\r\n\r\n{squared}\r\n".encode())
        stream._finish()
        self.successResultOf(d)
        lines = out.getvalue().splitlines()
        self.assertEqual(
            lines[-2:], ["\\x2d" + squared[1:], "------------ END MESSAGE ------------"]
        )

    def test_envelopeEscaped(self) -> None:
        """
        A line separator or a bidirectional override in a UTF-8 address is
        escaped in the envelope lines: no address can print a line of its
        own (a forged C{rcpt to:}) or reorder the line it is on.
        """
        out = io.StringIO()
        session = makeSession(
            envelope=Envelope(
                mailFrom=Address('"a\u202e"@example.com'),
                rcptTo=[Address('"x\u2028rcpt to: root"@example.org')],
            )
        )
        stream = MessageStream()
        d = DebuggingHandler(out).onData(stream, session)
        stream._finish()
        self.successResultOf(d)
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[1], 'mail from: "a\\u202e"@example.com')
        self.assertEqual(lines[2], 'rcpt to: "x\\u2028rcpt to: root"@example.org')
        self.assertEqual(lines[3], "peer: 192.0.2.1:40123")

    def test_envelopeTakenAtStart(self) -> None:
        """
        The envelope printed is the one of the transaction the body belongs
        to, even if the session moves on before the body ends.
        """
        out = io.StringIO()
        session = makeSession(remoteAddress=("2001:db8::1", 25))
        stream = MessageStream()
        d = DebuggingHandler(out).onData(stream, session)
        session.envelope = Envelope()
        stream._finish()
        self.successResultOf(d)
        self.assertIn("rcpt to: bob@example.org\n", out.getvalue())
        self.assertIn("peer: [2001:db8::1]:25\n", out.getvalue())

    def test_defaultFollowsStdout(self) -> None:
        """
        Without C{out}, the block goes to C{sys.stdout} as it is when the
        message arrives.
        """
        handler = DebuggingHandler()
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, b"hello\r\n")
        self.successResultOf(d)
        self.assertIn("\nhello\n", out.getvalue())

    def test_failurePassedOn(self) -> None:
        """
        A body that does not arrive whole prints nothing and fails.
        """
        out = io.StringIO()
        stream = MessageStream()
        d = DebuggingHandler(out).onData(stream, makeSession())
        stream._write(b"partial")
        stream._fail(Failure(ConnectionLost()))
        self.failureResultOf(d, ConnectionLost)
        self.assertEqual(out.getvalue(), "")


class MaildirPerRecipientTests(TestCase):
    """
    L{MaildirHandler} with C{perRecipient}: one copy per recipient in
    C{<path>/domains/<domain>/<localpart>/}.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.handler = MaildirHandler(self.path, perRecipient=True, hostname="MX.Example")
        self.synced: list[str] = []
        realSync = _maildirdisk._syncDirectory

        def recordingSync(directory: _maildirdirs.Directory) -> None:
            self.synced.append(directory.path)
            realSync(directory)

        self.patch(_maildirdisk, "_syncDirectory", recordingSync)

    def deliver(self, body: bytes, *recipients: str) -> Any:
        """
        Hand C{body} for C{recipients} to the handler; return its Deferred.
        """
        session = makeSession(
            envelope=Envelope(
                mailFrom=Address("alice@example.com"),
                rcptTo=[Address(r) for r in recipients],
            )
        )
        stream = MessageStream()
        d = self.handler.onData(stream, session)
        feed(stream, body)
        return d

    def newFiles(self, *parts: str) -> list[str]:
        return listDir(os.path.join(self.path, "domains", *parts, "new"))

    def test_copyPerRecipient(self) -> None:
        """
        Each distinct recipient, compared case-insensitively, gets one
        byte-exact copy under the same name in its own lower-cased Maildir
        (with C{tmp}, C{new} and C{cur}); nothing stays in the staging
        C{tmp/} nor lands in C{<path>/new/}.
        """
        body = b"Subject: copies\r\n\r\n.\r\nbody\r\n"
        d = self.deliver(body, "Bob@Example.ORG", "carol@example.net", "bob@example.org")

        def check(reply: str) -> None:
            name = reply.removeprefix("OK: queued as ")
            for parts in [("example.org", "bob"), ("example.net", "carol")]:
                self.assertEqual(self.newFiles(*parts), [name])
                mailbox = os.path.join(self.path, "domains", *parts)
                self.assertEqual(readFile(os.path.join(mailbox, "new", name)), body)
                self.assertEqual(listDir(mailbox), ["cur", "new", "tmp"])
            self.assertEqual(listDir(self.path), ["cur", "domains", "new", "tmp"])
            self.assertEqual(
                listDir(os.path.join(self.path, "domains")), ["example.net", "example.org"]
            )
            self.assertEqual(listDir(os.path.join(self.path, "tmp")), [])
            self.assertEqual(listDir(os.path.join(self.path, "new")), [])

        return d.addCallback(check)

    def test_everyChangedDirectorySynced(self) -> None:
        """
        Before the reply, each recipient's C{new/} and every directory that
        gained an entry (the parents of each created directory) is fsynced;
        a second message to existing Maildirs syncs only their C{new/}
        (here where C{syncfs} is missing: each is fsynced on its own).
        """
        self.patch(_maildirdisk, "_syncfs", None)
        d = self.deliver(b"one\r\n", "bob@example.org")
        domains = os.path.join(self.path, "domains")
        org = os.path.join(domains, "example.org")
        bob = os.path.join(org, "bob")

        def first(reply: str) -> Any:
            self.assertEqual(
                set(self.synced), {self.path, domains, org, bob, os.path.join(bob, "new")}
            )
            del self.synced[:]
            return self.deliver(b"two\r\n", "bob@example.org")

        def second(reply: str) -> None:
            self.assertEqual(self.synced, [os.path.join(bob, "new")])
            self.assertEqual(len(self.newFiles("example.org", "bob")), 2)

        return d.addCallback(first).addCallback(second)

    def test_bareLocalPart(self) -> None:
        """
        A recipient without a domain (C{<postmaster>}) is delivered under
        the handler's host name, lower-cased.
        """
        d = self.deliver(b"to postmaster\r\n", "Postmaster")

        def check(reply: str) -> None:
            self.assertEqual(len(self.newFiles("mx.example", "postmaster")), 1)

        return d.addCallback(check)

    def test_unsafeNamesRefused(self) -> None:
        """
        At RCPT, a local part or domain that is empty, begins with a dot
        (C{..} included), holds a C{/}, a control character or a space, or
        is longer than 255 bytes is refused with 553 5.1.3; ordinary ones,
        in any case, are accepted.
        """
        session = makeSession()
        for address in [
            "../etc@example.org",
            ".hidden@example.org",
            "a/b@example.org",
            "bob@..",
            "bob@.example.org",
            "bob@exa/mple.org",
            "@example.org",
            "bob@",
            "tab\there@example.org",
            "x" * 256 + "@example.org",
            '".."@example.org',
            '"a/b"@example.org',
            '".x"@example.org',
            '"a b"@x',
            '"a\u00a0b"@example.org',
        ]:
            error = self.assertRaises(SMTPError, self.handler.onRcptTo, Address(address), session)
            self.assertEqual((error.code, error.enhanced), (553, "5.1.3"), address)
        for address in ["Bob@Example.org", "o'hara+tag@example.org", "postmaster", '"ab"@x']:
            self.assertIsNone(self.handler.onRcptTo(Address(address), session))

    def test_domainsCannotCollideWithMaildirFolders(self) -> None:
        """
        Mail for the domains C{tmp}, C{new} and C{cur}, in any case or
        Unicode compatibility form, goes to C{<path>/domains/}, never into
        the root Maildir's own folders, which stay empty.
        """
        recipients = [
            "victim@tmp",
            "victim@NEW",
            "victim@cur",
            "other@\uff54\uff4d\uff50",  # full-width "tmp"
            "x@Tmp",
        ]
        d = self.deliver(b"collide\r\n", *recipients)

        def check(reply: str) -> None:
            for folder in ("tmp", "new", "cur"):
                self.assertEqual(listDir(os.path.join(self.path, folder)), [])
            self.assertEqual(listDir(self.path), ["cur", "domains", "new", "tmp"])
            self.assertEqual(listDir(os.path.join(self.path, "domains")), ["cur", "new", "tmp"])
            self.assertEqual(
                listDir(os.path.join(self.path, "domains", "tmp")), ["other", "victim", "x"]
            )
            for parts in [("tmp", "victim"), ("new", "victim"), ("cur", "victim")]:
                self.assertEqual(len(self.newFiles(*parts)), 1)

        return d.addCallback(check)

    def test_unicodeAndLengthTricksRefused(self) -> None:
        """
        Names that become unsafe once normalised (full-width dots making
        C{..}, a full-width solidus), invisible or bidirectional formatting
        characters, line separators, NUL, backslashes, and names over 255
        bytes in UTF-8 (multi-byte characters counted in bytes) are refused
        with 553 5.1.3, logged by the session alone.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        session = makeSession()
        refused = [
            "\uff0e\uff0e@example.org",
            "\u2025@example.org",  # two dot leader: ".." once normalised
            "bob@\uff0e\uff0e",
            "a\uff0fb@example.org",
            "bob@exa\u202emple.org",
            "b\u200bob@example.org",
            "bob\u2028@example.org",
            "bob\x00@example.org",
            "a\\b@example.org",
            "\u00e9" * 128 + "@example.org",
            "bob@" + "x" * 256,
        ]
        for address in refused:
            error = self.assertRaises(SMTPError, self.handler.onRcptTo, Address(address), session)
            self.assertEqual((error.code, error.enhanced), (553, "5.1.3"), address)
        # The session's reject line is the refusal's one line.
        self.assertEqual([formatEvent(event) for event in events], [])
        for address in ["\u00e9" * 127 + "@example.org", "j\u00fcrgen@m\u00fcnchen.example"]:
            self.assertIsNone(self.handler.onRcptTo(Address(address), session))

    def test_quotedLocalPart(self) -> None:
        """
        A quoted local part is unquoted (quoted pairs too), so that
        C{"Bob"@example.org} shares C{bob@example.org}'s Maildir.
        """
        d = self.deliver(b"quoted\r\n", '"Bob"@example.org', '"a\\"b"@example.org')

        def check(reply: str) -> None:
            self.assertEqual(len(self.newFiles("example.org", "bob")), 1)
            self.assertEqual(len(self.newFiles("example.org", 'a"b')), 1)

        return d.addCallback(check)

    def test_plainMaildirAcceptsAnyRecipient(self) -> None:
        """
        Without C{perRecipient}, recipient names are not checked.
        """
        handler = MaildirHandler(self.mktemp())
        self.assertIsNone(handler.onRcptTo(Address("../x@example.org"), makeSession()))

    def test_hostnameMustBeSafe(self) -> None:
        """
        A host name that cannot be a directory name is refused at
        construction when C{perRecipient} is set.
        """
        self.assertRaises(
            ValueError, MaildirHandler, self.mktemp(), perRecipient=True, hostname="a/b"
        )

    def test_copyWhenLinkRefused(self) -> None:
        """
        Where the file system refuses a hard link, each recipient gets a
        separate byte-exact copy, and no copy is left in its C{tmp/}.
        """

        def link(source: str, destination: str, **kwargs: object) -> None:
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        self.patch(os, "link", link)
        body = b"copied\r\n" * 1000
        d = self.deliver(body, "bob@example.org", "carol@example.org")

        def check(reply: str) -> None:
            name = reply.removeprefix("OK: queued as ")
            inodes = set()
            for local in ["bob", "carol"]:
                mailbox = os.path.join(self.path, "domains", "example.org", local)
                path = os.path.join(mailbox, "new", name)
                self.assertEqual(readFile(path), body)
                inodes.add(os.stat(path).st_ino)
                self.assertEqual(listDir(os.path.join(mailbox, "tmp")), [])
            self.assertEqual(len(inodes), 2)

        return d.addCallback(check)

    def test_oneCopyFailsAll(self) -> None:
        """
        When one recipient's Maildir cannot be made, the message fails with
        451 4.3.0 and no copy is kept for the others, so that the client's
        retry delivers each copy once.
        """
        log = DiskErrorLog(self)
        os.makedirs(os.path.join(self.path, "domains", "example.org"))
        with open(os.path.join(self.path, "domains", "example.org", "carol"), "wb"):
            pass
        d = self.deliver(b"all or nothing\r\n", "bob@example.org", "carol@example.org")

        def failed(failure: Failure) -> None:
            failure.trap(SMTPError)
            self.assertEqual((failure.value.code, failure.value.enhanced), (451, "4.3.0"))
            self.assertEqual(self.newFiles("example.org", "bob"), [])
            self.assertEqual(listDir(os.path.join(self.path, "tmp")), [])
            log.assertLines(1, "Delivering ", " failed: ")

        return d.addCallbacks(self.fail, failed)


class MaildirExistingOnlyTests(TestCase):
    """
    L{MaildirHandler} with C{perRecipient} and C{existingOnly}: only the
    recipients whose Maildir exists are accepted.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.handler = MaildirHandler(
            self.path, perRecipient=True, existingOnly=True, hostname="mx.example"
        )
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.path, "domains", "example.org", "bob", sub))

    async def rcpt(self, address: str) -> object:
        return await self.handler.onRcptTo(Address(address), makeSession())  # type: ignore[misc]

    async def test_unknownRefused(self) -> None:
        """
        A recipient with no Maildir is refused with 550 5.1.1, and none is
        made for it.
        """
        with self.assertRaises(SMTPError) as raised:
            await self.rcpt("carol@example.org")
        self.assertEqual(
            (raised.exception.code, raised.exception.enhanced, raised.exception.message),
            (550, "5.1.1", "Recipient address rejected: User unknown"),
        )
        self.assertEqual(os.listdir(os.path.join(self.path, "domains", "example.org")), ["bob"])

    async def test_knownAccepted(self) -> None:
        """
        A recipient whose Maildir exists is accepted, whatever the case of
        its address.
        """
        self.assertIsNone(await self.rcpt("bob@example.org"))
        self.assertIsNone(await self.rcpt("Bob@EXAMPLE.org"))

    async def test_domainOrFolderAlone(self) -> None:
        """
        A domain directory, or a Maildir without its C{new/}, is no mailbox.
        """
        os.makedirs(os.path.join(self.path, "domains", "example.org", "dave"))
        for address in ("example.org@example.org", "dave@example.org", "x@example.net"):
            with self.assertRaises(SMTPError):
                await self.rcpt(address)

    async def test_unsafeNamesStillRefusedFirst(self) -> None:
        """
        A name that cannot be a directory is refused with 553 as before.
        """
        with self.assertRaises(SMTPError) as raised:
            await self.rcpt('"../bob"@example.org')
        self.assertEqual(raised.exception.code, 553)

    def test_needsPerRecipient(self) -> None:
        """
        C{existingOnly} without C{perRecipient} is refused.
        """
        with self.assertRaises(ValueError):
            MaildirHandler(self.mktemp(), existingOnly=True)
