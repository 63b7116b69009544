# -*- test-case-name: tests.test_maildir -*-
"""
Group commit of L{MaildirHandler}: many finished messages share one data
flush (C{syncfs(2)}) and one fsync of C{new/}, and none reaches C{new/}
before its bytes are durable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.disklog import DiskErrorLog
from tests.test_handlers import (
    ImmediateReactor,
    ManualThreadPool,
    feed,
    listDir,
    makeSession,
    readFile,
)
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import Address, Envelope
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import MaildirHandler, _maildirdirs, _maildirdisk, maildir
from twisted_smtpd.handlers._diskfailure import describe, diskError, logDiskFailure
from twisted_smtpd.handlers._maildirdelivery import Delivery
from twisted_smtpd.handlers._maildirnames import recipientDirectory
from twisted_smtpd.handlers._syncfs import loadSyncfs


def fdPath(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class _CommitHarness(SynchronousTestCase):
    """
    A Maildir handler whose batches run step by step in a manual thread
    pool, with every flush, rename and link recorded in order.
    """

    #: Whether the handler writes unnamed tmp files (C{O_TMPFILE}).
    unnamed = False

    def setUp(self) -> None:
        if not self.unnamed:
            # Named tmp files, whose state at each flush shows in tmp/.
            self.patch(_maildirdisk, "_O_TMPFILE", 0)
        self.path = os.path.abspath(self.mktemp())
        self.pool = ManualThreadPool()
        self.handler = MaildirHandler(
            self.path,
            reactor=ImmediateReactor(),
            threadpool=self.pool,  # type: ignore[arg-type]
        )
        self.events: list[tuple[str, str]] = []
        self.syncfsResult: OSError | None = None
        realFsync, realRename = os.fsync, _maildirdisk._rename

        def syncfs(fd: int) -> None:
            # What is on disk when the flush runs: every message still in tmp/.
            self.events.append(("syncfs", fdPath(fd)))
            self.tmpAtFlush = {n: readFile(os.path.join(self.tmp, n)) for n in listDir(self.tmp)}
            self.newAtFlush = listDir(self.new) if os.path.isdir(self.new) else []
            if self.syncfsResult is not None:
                raise self.syncfsResult
            os.sync()

        def fsync(fd: int) -> None:
            kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            self.events.append((kind, fdPath(fd)))
            realFsync(fd)

        def rename(source: str, directory: _maildirdirs.Directory, name: str) -> None:
            self.events.append(("rename", os.path.join(directory.path, name)))
            realRename(source, directory, name)

        realLink = _maildirdisk._link

        def link(fd: int, directory: _maildirdirs.Directory, name: str) -> None:
            self.events.append(("link", os.path.join(directory.path, name)))
            realLink(fd, directory, name)

        self.patch(_maildirdisk, "_syncfs", syncfs)
        self.patch(_maildirdisk, "_fsync", fsync)
        self.patch(_maildirdisk, "_rename", rename)
        self.patch(_maildirdisk, "_link", link)
        self.tmp = os.path.join(self.path, "tmp")
        self.new = os.path.join(self.path, "new")

    def deliverAll(self, bodies: list[bytes], ending: tuple[MessageStream, ...] = ()) -> list[Any]:
        """
        Start one delivery per body and end them all while the committer is
        busy with an earlier message (the lead), so that they form the next
        cycle; run the lead's cycle, which queues theirs (not run yet).

        @param ending: Streams already started, ended first in that cycle.
        """
        lead = MessageStream()
        self.lead = self.handler.onData(lead, makeSession(id="lead"))
        feed(lead, b"lead\r\n")
        for stream in ending:
            stream._finish()
        results = []
        for i, body in enumerate(bodies):
            stream = MessageStream()
            results.append(self.handler.onData(stream, makeSession(id=f"s{i}")))
            feed(stream, body)
        self.pool.runOne()
        self.assertNoResult(self.lead)
        (self.leadName,) = listDir(self.new)
        del self.events[:]
        return results

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def perRecipientHandler(self) -> tuple[str, MaildirHandler]:
        """
        A handler delivering a copy to each recipient, in a Maildir of its
        own, committing in the same manual pool; and that Maildir's path.
        """
        path = os.path.abspath(self.mktemp())
        handler = MaildirHandler(
            path,
            reactor=ImmediateReactor(),
            threadpool=self.pool,  # type: ignore[arg-type]
            perRecipient=True,
            hostname="mx.example",
        )
        return path, handler


class UnnamedTmpFileTests(_CommitHarness):
    """
    Where the file system allows it (Linux, C{O_TMPFILE}), a message is
    written to an unnamed file in C{tmp/} and linked into C{new/} once its
    data is durable: the same order of flushes as with a named file, one
    directory entry less, and nothing left in C{tmp/}.
    """

    unnamed = True

    def test_usedWhereItWorks(self) -> None:
        """
        On Linux the handler finds unnamed files to work in its C{tmp/};
        without C{O_TMPFILE} it writes named ones.
        """
        self.assertEqual(self.handler.unnamedFiles, sys.platform.startswith("linux"))
        self.patch(_maildirdisk, "_O_TMPFILE", 0)
        self.assertFalse(_maildirdisk.unnamedFilesWork(self.tmp))
        self.assertFalse(MaildirHandler(self.mktemp()).unnamedFiles)

    def test_probeLeavesNothing(self) -> None:
        """
        Finding out whether unnamed files work leaves no file behind.
        """
        self.assertTrue(_maildirdisk.unnamedFilesWork(self.tmp))
        self.assertEqual(listDir(self.tmp), [])

    def test_dataDurableBeforeAnyLink(self) -> None:
        """
        The flush runs while no message of the cycle is in C{new/} (and none
        is ever in C{tmp/}); the links come after it and the fsync of
        C{new/} after the last one, before any reply.
        """
        bodies = [b"x" * (1000 + i) for i in range(20)]
        results = self.deliverAll(bodies)
        self.pool.runAll()
        self.assertEqual(self.kinds(), ["syncfs"] + ["link"] * 20 + ["dir"])
        self.assertEqual(self.newAtFlush, [self.leadName])
        self.assertEqual(self.tmpAtFlush, {})
        names = [self.successResultOf(d).removeprefix("OK: queued as ") for d in results]
        for name, body in zip(names, bodies, strict=True):
            self.assertEqual(readFile(os.path.join(self.new, name)), body)
        self.assertEqual(listDir(self.tmp), [])

    def test_linkFailureFailsOneMessage(self) -> None:
        """
        A message whose link into C{new/} fails gets 451 and leaves nothing
        behind, its descriptor closed; the others of its cycle are
        delivered.
        """
        log = DiskErrorLog(self)

        def link(fd: int, directory: _maildirdirs.Directory, name: str) -> None:
            self.events.append(("link", os.path.join(directory.path, name)))
            raise OSError(errno.EIO, "I/O error")

        opened = len(os.listdir("/proc/self/fd"))
        results = self.deliverAll([b"one\r\n"])
        self.patch(_maildirdisk, "_link", link)
        self.pool.runAll()
        failure = self.failureResultOf(results[0], SMTPError)
        self.assertEqual(failure.value.code, 451)
        log.assertLines(1, "Delivering ", "I/O error (EIO)")
        self.assertEqual(listDir(self.new), [self.leadName])
        self.assertEqual(listDir(self.tmp), [])
        self.assertEqual(len(os.listdir("/proc/self/fd")), opened)

    def test_spilledMessage(self) -> None:
        """
        A message past the spill threshold is written to its unnamed file as
        it arrives and linked whole.
        """
        self.handler.spillThreshold = 1000
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession())
        stream._write(b"a" * 1500)
        self.pool.runOne()
        self.assertEqual(listDir(self.tmp), [])
        stream._write(b"b" * 10)
        stream._finish()
        self.pool.runAll()
        name = self.successResultOf(d).removeprefix("OK: queued as ")
        self.assertEqual(readFile(os.path.join(self.new, name)), b"a" * 1500 + b"b" * 10)
        self.assertEqual(listDir(self.tmp), [])


class RemovedDirectoriesTests(_CommitHarness):
    """
    A Maildir whose C{tmp/}, C{new/} or C{cur/} were removed while the
    handler runs has them made again by the next message, durably before
    its reply; one removed whole is not made again.
    """

    def deliverAlone(self, body: bytes = b"alone\r\n") -> Any:
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession())
        feed(stream, body)
        self.pool.runAll()
        return d

    def test_subdirectoriesMadeAgain(self) -> None:
        """
        With C{tmp/}, C{new/} and C{cur/} removed (a clean-up of empty
        directories), the next message makes them again (mode 0700) and is
        answered 250 once the Maildir's own entries are durable too, not
        451 until the server is restarted.
        """
        for sub in ("tmp", "new", "cur"):
            os.rmdir(os.path.join(self.path, sub))
        d = self.deliverAlone()
        name = self.successResultOf(d).removeprefix("OK: queued as ")
        self.assertEqual(readFile(os.path.join(self.new, name)), b"alone\r\n")
        for sub in ("tmp", "new", "cur"):
            mode = os.stat(os.path.join(self.path, sub)).st_mode
            self.assertEqual(stat.S_IMODE(mode), 0o700)
        self.assertEqual(self.kinds()[-1:], ["syncfs"])
        self.assertEqual(listDir(self.tmp), [])

    def test_newMadeAgainAtTheRename(self) -> None:
        """
        A C{new/} removed while the message arrives is made again at its
        rename (or link), and the Maildir's entries made durable with the
        message's name, each directory fsynced where C{syncfs} is missing.
        """
        self.patch(_maildirdisk, "_syncfs", None)
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession())
        feed(stream, b"late\r\n")
        os.rmdir(self.new)
        self.pool.runAll()
        name = self.successResultOf(d).removeprefix("OK: queued as ")
        self.assertEqual(readFile(os.path.join(self.new, name)), b"late\r\n")
        self.assertEqual(sorted(self.events[-2:]), [("dir", self.path), ("dir", self.new)])
        self.assertEqual(self.events[-3][1], os.path.join(self.new, name))

    def test_maildirGoneNotMadeAgain(self) -> None:
        """
        A Maildir removed whole (or a file system not mounted under it) is
        not made again: the message is answered 451 with one log line
        naming its session, and waits with its sender; once the Maildir is back, mail is taken
        again.
        """
        log = DiskErrorLog(self)
        shutil.rmtree(self.path)
        error = self.failureResultOf(self.deliverAlone(), SMTPError).value
        self.assertEqual(error.code, 451)
        log.assertLines(1, "s1d Delivering ", "No such file or directory (ENOENT)")
        self.assertFalse(os.path.exists(self.path))
        os.mkdir(self.path)
        self.successResultOf(self.deliverAlone())


class UnnamedRemovedDirectoriesTests(RemovedDirectoriesTests):
    """
    L{RemovedDirectoriesTests} with unnamed tmp files (C{O_TMPFILE}).
    """

    unnamed = True


class GroupCommitTests(_CommitHarness):
    """
    One batch of many messages with named tmp files, with every flush
    recorded in order.
    """

    def test_manyDeliveriesShareOneFlush(self) -> None:
        """
        100 messages finishing together are committed by one cycle: one
        C{syncfs} for their data (which also makes the lead's name durable),
        no fsync per file, the renames, then, nothing else waiting, one
        fsync of C{new/}; every reply waits for that cycle and names its
        byte-exact file.
        """
        bodies = [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(100)]
        results = self.deliverAll(bodies)
        self.assertEqual(len(self.pool.jobs), 1)
        for d in results:
            self.assertNoResult(d)
        self.pool.runOne()
        self.assertEqual(self.pool.jobs, [])
        self.successResultOf(self.lead)
        # The lead's cycle, then this one.
        self.assertEqual(self.handler.commitBatches, 2)
        self.assertEqual(self.kinds().count("syncfs"), 1)
        self.assertEqual(self.kinds().count("file"), 0)
        self.assertEqual([e for e in self.events if e[0] == "dir"], [("dir", self.new)])
        names = [self.successResultOf(d).removeprefix("OK: queued as ") for d in results]
        self.assertEqual(sorted([*names, self.leadName]), listDir(self.new))
        for name, body in zip(names, bodies, strict=True):
            self.assertEqual(readFile(os.path.join(self.new, name)), body)
        self.assertEqual(listDir(self.tmp), [])

    def test_nextGroupSharesTheFlush(self) -> None:
        """
        Messages finishing while a cycle runs wait for the next one, whose
        single C{syncfs} makes both their data and the earlier group's names
        durable: the earlier group is answered only after that flush.
        """
        first = self.deliverAll([b"one\r\n", b"two\r\n"])
        stream = MessageStream()
        later = self.handler.onData(stream, makeSession(id="later"))
        feed(stream, b"three\r\n")
        self.pool.runOne()
        self.assertEqual(self.kinds(), ["syncfs", "rename", "rename"])
        for d in first:
            self.assertNoResult(d)
        del self.events[:]
        self.pool.runOne()
        self.assertEqual(self.kinds(), ["syncfs", "rename", "dir"])
        for d in [*first, later]:
            self.successResultOf(d)
        self.assertEqual(self.pool.jobs, [])

    def test_dataDurableBeforeAnyRename(self) -> None:
        """
        The flush runs while every message of the cycle is complete in
        C{tmp/} and none is in C{new/}; all renames come after it and the
        fsync of C{new/} after the last rename, before any reply: a crash
        before that fsync can only leave complete files, none answered.
        """
        bodies = [b"x" * (1000 + i) for i in range(20)]
        results = self.deliverAll(bodies)
        for d in results:
            self.assertNoResult(d)
        self.pool.runAll()
        self.assertEqual(self.kinds(), ["syncfs"] + ["rename"] * 20 + ["dir"])
        self.assertEqual(self.newAtFlush, [self.leadName])
        self.assertEqual(sorted(self.tmpAtFlush.values()), sorted(bodies))
        for d in results:
            self.successResultOf(d)

    def test_syncfsFailureFailsTheGroup(self) -> None:
        """
        When the flush fails, every message of the cycle and the lead, whose
        name it was to make durable, fail with 451 4.3.0 and are logged;
        nothing is left in C{tmp/} or C{new/}.
        """
        log = DiskErrorLog(self)
        self.syncfsResult = OSError(errno.EIO, "I/O error")
        results = self.deliverAll([b"one\r\n", b"two\r\n", b"three\r\n"])
        self.pool.runAll()
        for d in [self.lead, *results]:
            failure = self.failureResultOf(d, SMTPError)
            self.assertEqual((failure.value.code, failure.value.enhanced), (451, "4.3.0"))
        self.assertEqual(listDir(self.tmp), [])
        self.assertEqual(listDir(self.new), [])
        self.assertNotIn("rename", self.kinds())
        log.assertLines(4, "Delivering ", "I/O error (EIO)")

    def test_fullDiskInTheGroup(self) -> None:
        """
        A flush failing for lack of space answers 452 4.3.1 to every message
        it covered.
        """
        log = DiskErrorLog(self)
        self.syncfsResult = OSError(errno.ENOSPC, "No space left on device")
        results = self.deliverAll([b"one\r\n", b"two\r\n"])
        self.pool.runAll()
        for d in [self.lead, *results]:
            failure = self.failureResultOf(d, SMTPError)
            self.assertEqual((failure.value.code, failure.value.enhanced), (452, "4.3.1"))
        log.assertLines(3, "Delivering ", "No space left on device (ENOSPC)")

    def test_flushThroughTheFirstOpenedFile(self) -> None:
        """
        C{syncfs} is called on the cycle's file opened first (here a large
        message spilled before the others began), so that it reports any
        write-back error since before every write it covers.
        """
        spilled = MessageStream()
        big = self.handler.onData(spilled, makeSession(id="big"))
        spilled._write(b"y" * (self.handler.spillThreshold + 1))
        self.pool.runAll()
        small = self.deliverAll([b"small 1\r\n", b"small 2\r\n"], ending=(spilled,))
        self.pool.runAll()
        flush = [path for kind, path in self.events if kind == "syncfs"]
        bigName = self.successResultOf(big).removeprefix("OK: queued as ")
        self.assertEqual(flush, [os.path.join(self.tmp, bigName)])
        self.assertEqual(self.kinds().count("file"), 0)
        for d in small:
            self.successResultOf(d)

    def test_singleMessageFsyncedAlone(self) -> None:
        """
        A message alone is committed by one job, as without group commit:
        its file fsynced (not the whole file system), renamed, C{new/}
        fsynced, then the reply.
        """
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession())
        feed(stream, b"alone\r\n")
        self.assertNoResult(d)
        self.pool.runOne()
        self.assertEqual(self.pool.jobs, [])
        name = self.successResultOf(d).removeprefix("OK: queued as ")
        self.assertEqual(
            self.events,
            [
                ("file", os.path.join(self.tmp, name)),
                ("rename", os.path.join(self.new, name)),
                ("dir", self.new),
            ],
        )

    def test_withoutSyncfsEveryFileFsyncedBeforeRename(self) -> None:
        """
        Where C{syncfs} is missing, each file is fsynced, and so is C{new/}
        for the lead, all before the first rename; then C{new/} once more.
        """
        self.patch(_maildirdisk, "_syncfs", None)
        results = self.deliverAll([b"a\r\n", b"b\r\n", b"c\r\n"])
        self.pool.runAll()
        self.assertEqual(self.kinds(), ["file"] * 3 + ["dir"] + ["rename"] * 3 + ["dir"])
        for d in [self.lead, *results]:
            self.successResultOf(d)

    def test_unknownFileSystemFsyncedAlone(self) -> None:
        """
        When the file system of a file's C{tmp/} cannot be told (its
        C{stat} fails), the file is fsynced on its own rather than counted
        on the shared C{syncfs}, which still covers C{new/} for the lead.
        """
        realStat = os.stat

        def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
            if path == self.tmp:
                raise OSError(errno.EIO, "I/O error")
            return realStat(path, *args, **kwargs)

        results = self.deliverAll([b"a\r\n", b"b\r\n"])
        self.patch(os, "stat", stat)
        self.pool.runAll()
        self.assertEqual(self.kinds(), ["syncfs", "file", "file"] + ["rename"] * 2 + ["dir"])
        for d in [self.lead, *results]:
            self.successResultOf(d)

    def test_perRecipientDirectoriesInOneFlush(self) -> None:
        """
        With C{perRecipient}, the new recipient Maildirs and every directory
        created on the way are made durable by one C{syncfs}, not by an
        fsync each.
        """
        path, handler = self.perRecipientHandler()
        d = handler.onData(stream := MessageStream(), makeSession())
        feed(stream, b"copies\r\n")
        self.pool.runAll()
        self.assertEqual(self.kinds(), ["file", "syncfs"])
        self.assertEqual(self.events[1][1], path)
        name = self.successResultOf(d).removeprefix("OK: queued as ")
        for domain, local in [("example.org", "bob"), ("example.net", "carol")]:
            mailbox = os.path.join(path, "domains", domain, local, "new")
            self.assertEqual(listDir(mailbox), [name])

    def test_unexpectedCycleFailureLeavesNothing(self) -> None:
        """
        A commit cycle failing in a way it does not handle itself (here its
        flush raising) fails every message it held with 451, and closes
        their descriptors and removes their files: nothing is left in
        C{tmp/} or C{new/} but the lead, delivered before.
        """
        opened = len(os.listdir("/proc/self/fd"))
        results = self.deliverAll([b"one\r\n", b"two\r\n"])

        def flush(*args: object) -> None:
            raise RuntimeError("unexpected")

        self.patch(_maildirdisk, "_flush", flush)
        self.pool.runAll()
        for d in [self.lead, *results]:
            self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        self.assertEqual(listDir(self.tmp), [])
        self.assertEqual(listDir(self.new), [])
        self.assertEqual(len(os.listdir("/proc/self/fd")), opened)

    def daveThenErin(self) -> tuple[str, Any, Any, int]:
        """
        Two messages to a per-recipient handler's Maildirs, one to dave
        (the lead, committed first), one to erin; their bodies ended.

        @return: The handler's path, the two results, and how many
            descriptors the process has open.
        """
        path, handler = self.perRecipientHandler()

        def session(sid: str, recipient: str) -> Any:
            envelope = Envelope(mailFrom=Address("a@example.com"), rcptTo=[Address(recipient)])
            return makeSession(id=sid, envelope=envelope)

        lead = handler.onData(stream := MessageStream(), session("lead", "dave@example.com"))
        feed(stream, b"lead\r\n")
        later = handler.onData(stream := MessageStream(), session("later", "erin@example.com"))
        feed(stream, b"later\r\n")
        return path, lead, later, len(os.listdir("/proc/self/fd"))

    def test_removedMaildirFailsOnlyItsMessage(self) -> None:
        """
        With C{perRecipient}, a recipient Maildir removed between the link of
        a message into it and the flush meant to make that link durable
        fails that message alone (451): the other messages of the cycle are
        delivered, and no descriptor or file is left behind.
        """
        log = DiskErrorLog(self)
        path, lead, later, opened = self.daveThenErin()
        # The lead's cycle links it into dave's Maildir; the next makes it durable.
        self.pool.runOne()
        self.assertNoResult(lead)
        shutil.rmtree(os.path.join(path, "domains", "example.com", "dave"))
        self.pool.runAll()
        failure = self.failureResultOf(lead, SMTPError)
        self.assertEqual(failure.value.code, 451)
        log.assertLines(1, "Delivering ", "No such file or directory (ENOENT)")
        name = self.successResultOf(later).removeprefix("OK: queued as ")
        erin = os.path.join(path, "domains", "example.com", "erin", "new")
        self.assertEqual(listDir(erin), [name])
        self.assertEqual(listDir(os.path.join(path, "tmp")), [])
        self.assertEqual(len(os.listdir("/proc/self/fd")), opened)

    def test_movedMaildirKeepsItsMessage(self) -> None:
        """
        With C{perRecipient}, a recipient Maildir moved away (renamed)
        between the link of a message into it and the flush meant to make
        that link durable keeps the message: the flush reaches the moved
        directory and the message is answered 250, its copy where the
        Maildir went, not answered 451 with its copy left behind to be
        delivered twice.
        """
        path, lead, later, opened = self.daveThenErin()
        self.pool.runOne()
        self.assertNoResult(lead)
        domain = os.path.join(path, "domains", "example.com")
        os.rename(os.path.join(domain, "dave"), os.path.join(path, "archived-dave"))
        self.pool.runAll()
        name = self.successResultOf(lead).removeprefix("OK: queued as ")
        self.assertEqual(listDir(os.path.join(path, "archived-dave", "new")), [name])
        self.assertEqual(readFile(os.path.join(path, "archived-dave", "new", name)), b"lead\r\n")
        later = self.successResultOf(later).removeprefix("OK: queued as ")
        self.assertEqual(listDir(os.path.join(domain, "erin", "new")), [later])
        self.assertEqual(listDir(os.path.join(path, "tmp")), [])
        self.assertEqual(len(os.listdir("/proc/self/fd")), opened)

    def test_movedNewDirectoryKeepsItsMessage(self) -> None:
        """
        A C{new/} moved away between the link of a message into it and the
        flush meant to make that link durable keeps the message, answered
        250 in the moved directory; a message of the next cycle goes to a
        C{new/} made again, and leaves nothing behind in C{tmp/}.
        """
        results = self.deliverAll([b"one\r\n"])
        moved = os.path.join(self.path, "moved")
        os.rename(self.new, moved)
        self.pool.runAll()
        self.assertEqual(self.successResultOf(self.lead), f"OK: queued as {self.leadName}")
        self.assertEqual(listDir(moved), [self.leadName])
        name = self.successResultOf(results[0]).removeprefix("OK: queued as ")
        self.assertEqual(listDir(self.new), [name])
        self.assertEqual(listDir(self.tmp), [])

    def test_replacedNewDirectoryFsyncedWhereTheLinkIs(self) -> None:
        """
        Where each directory is fsynced on its own (no C{syncfs}), a
        C{new/} replaced by another between the link of a message and the
        fsync meant to make it durable: the directory fsynced is the one
        that holds the link, the moved one, before the message is answered.
        """
        self.patch(_maildirdisk, "_syncfs", None)
        results = self.deliverAll([b"one\r\n"])
        moved = os.path.join(self.path, "moved")
        os.rename(self.new, moved)
        os.mkdir(self.new)
        self.pool.runAll()
        self.assertEqual(self.successResultOf(self.lead), f"OK: queued as {self.leadName}")
        self.assertEqual(listDir(moved), [self.leadName])
        self.assertIn(("dir", moved), self.events)
        name = self.successResultOf(results[0]).removeprefix("OK: queued as ")
        self.assertEqual(listDir(self.new), [name])
        self.assertIn(("dir", self.new), self.events)

    def test_directoriesByPathWithoutDescriptors(self) -> None:
        """
        When no descriptor is left to hold C{new/} open (C{EMFILE}),
        messages are linked into it, fsynced and answered through its path.
        """
        self.patch(_maildirdisk, "_syncfs", None)

        def exhausted(path: str) -> int:
            raise OSError(errno.EMFILE, "Too many open files")

        self.patch(_maildirdirs, "openDirectory", exhausted)
        opened = len(os.listdir("/proc/self/fd"))
        results = self.deliverAll([b"one\r\n"])
        self.pool.runAll()
        self.assertEqual(self.successResultOf(self.lead), f"OK: queued as {self.leadName}")
        name = self.successResultOf(results[0]).removeprefix("OK: queued as ")
        self.assertEqual(listDir(self.new), sorted([self.leadName, name]))
        self.assertEqual(self.kinds().count("dir"), 2)
        self.assertEqual(len(os.listdir("/proc/self/fd")), opened)

    def test_directoryFailureOtherThanExhaustion(self) -> None:
        """
        A C{new/} that cannot be opened for another reason than a lack of
        descriptors fails the messages to go there (451), leaving nothing.
        """
        log = DiskErrorLog(self)

        def denied(path: str) -> int:
            raise PermissionError(errno.EACCES, "Permission denied")

        lead = MessageStream()
        d = self.handler.onData(lead, makeSession(id="lead"))
        self.patch(_maildirdirs, "openDirectory", denied)
        feed(lead, b"lead\r\n")
        self.pool.runAll()
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)
        log.assertLines(1, "Delivering ", "Permission denied (EACCES)")
        self.assertEqual(listDir(self.tmp), [])
        self.assertEqual(listDir(self.new), [])

    def test_heldDirectoriesBounded(self) -> None:
        """
        Beyond L{_maildirdirs.Directory.HELD_LIMIT} directories open at
        once, the others are reached by their paths: a message to several
        recipients' Maildirs is delivered to each, and once it is answered
        no directory is held open for it.
        """
        before = _maildirdirs.Directory._held
        self.patch(_maildirdirs.Directory, "HELD_LIMIT", before + 1)
        held: list[str] = []
        realInit = _maildirdirs.Directory.__init__

        def counting(directory: _maildirdirs.Directory, *args: Any) -> None:
            realInit(directory, *args)
            if directory.fd is not None:
                held.append(directory.path)

        self.patch(_maildirdirs.Directory, "__init__", counting)
        path, handler = self.perRecipientHandler()
        recipients = [Address(f"{local}@example.com") for local in ("ann", "bob", "cid")]
        envelope = Envelope(mailFrom=Address("a@example.com"), rcptTo=recipients)
        d = handler.onData(stream := MessageStream(), makeSession(envelope=envelope))
        feed(stream, b"three copies\r\n")
        self.pool.runAll()
        name = self.successResultOf(d).removeprefix("OK: queued as ")
        for local in ("ann", "bob", "cid"):
            mailbox = os.path.join(path, "domains", "example.com", local, "new")
            self.assertEqual(listDir(mailbox), [name])
        self.assertEqual(len(held), 1)
        self.assertEqual(_maildirdirs.Directory._held, before)


class TurnReactor:
    """
    A reactor whose turns the test runs: C{callLater} calls run at the next
    L{turn}, which runs only those made before it began; C{callFromThread}
    runs at once.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.queued: list[tuple[Any, tuple[Any, ...]]] = []

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, f: Any, *args: Any) -> object:
        self.queued.append((f, args))
        return f

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)

    def turn(self, seconds: float = 0.0) -> None:
        self.now += seconds
        calls, self.queued = self.queued, []
        for f, args in calls:
            f(*args)


class GatherTests(SynchronousTestCase):
    """
    An idle committer given a message while other bodies are still
    arriving starts its cycle once a turn of the reactor brings no other
    finished message, or none is left arriving, so that messages finishing
    over a few turns share one flush; at most L{maildir.GATHER_LIMIT}
    seconds after the first.  A message alone starts its cycle at once.
    """

    def setUp(self) -> None:
        self.reactor = TurnReactor()
        self.pool = ManualThreadPool()
        self.handler = MaildirHandler(
            os.path.abspath(self.mktemp()),
            reactor=self.reactor,
            threadpool=self.pool,  # type: ignore[arg-type]
        )

    def begin(self) -> tuple[MessageStream, Any]:
        """
        A message whose body has begun to arrive.
        """
        stream = MessageStream()
        return stream, self.handler.onData(stream, makeSession())

    def end(self, stream: MessageStream) -> None:
        feed(stream, b"Subject: gathered\r\n\r\nbody\r\n")

    def test_loneMessageAtOnce(self) -> None:
        """
        A message that finishes while no other body arrives is committed
        at once, without waiting for a turn.
        """
        stream, d = self.begin()
        self.end(stream)
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.runAll()
        self.successResultOf(d)
        self.assertEqual(self.reactor.queued, [])

    def test_messagesOfConsecutiveTurnsShareACycle(self) -> None:
        """
        Messages finishing turn after turn wait for each other: the cycle
        starts once no other body is arriving, and commits them all.
        """
        started = [self.begin() for _ in range(3)]
        self.end(started[0][0])
        self.end(started[1][0])
        self.reactor.turn()
        self.assertEqual(self.pool.jobs, [])
        self.end(started[2][0])
        self.reactor.turn()
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.runAll()
        for _, d in started:
            self.successResultOf(d)
        self.assertEqual(self.handler.commitBatches, 1)

    def test_quietTurnStartsTheCycle(self) -> None:
        """
        A turn that brings no finished message starts the cycle, although
        another body is still arriving; that message goes to a later cycle.
        """
        (first, done), (slow, later) = self.begin(), self.begin()
        self.end(first)
        self.assertEqual(self.pool.jobs, [])
        self.reactor.turn()
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.runAll()
        self.successResultOf(done)
        self.end(slow)
        self.pool.runAll()
        self.successResultOf(later)
        self.assertEqual(self.handler.commitBatches, 2)

    def test_gatheringEndsAtTheLimit(self) -> None:
        """
        While messages keep finishing at every turn and others arrive, the
        cycle starts L{maildir.GATHER_LIMIT} seconds after the first;
        later messages wait for the next cycle.
        """
        step = maildir.GATHER_LIMIT / 4
        slow, slowResult = self.begin()
        started = [self.begin() for _ in range(6)]
        self.end(started[0][0])
        for stream, _ in started[1:4]:
            self.end(stream)
            self.reactor.turn(step)
            self.assertEqual(self.pool.jobs, [])
        self.end(started[4][0])
        self.reactor.turn(step)
        self.assertEqual(len(self.pool.jobs), 1)
        self.end(started[5][0])
        self.pool.runOne()
        # The cycle wrote the five messages it started with, not the later one.
        self.assertEqual(len(listDir(os.path.join(self.handler.path, "new"))), 5)
        self.end(slow)
        self.pool.runAll()
        for _, d in [*started, (slow, slowResult)]:
            self.successResultOf(d)

    def test_failedBodyNoLongerAwaited(self) -> None:
        """
        A body that fails is no longer waited for: a message finishing
        afterwards alone is committed at once.
        """
        (broken, failed), (stream, d) = self.begin(), self.begin()
        broken._fail(Failure(ConnectionLost()))
        self.failureResultOf(failed, ConnectionLost)
        self.end(stream)
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.runAll()
        self.successResultOf(d)


class LoadSyncfsTests(SynchronousTestCase):
    """
    L{loadSyncfs} offers C{syncfs} only where it reports
    write-back errors.
    """

    def test_notLinux(self) -> None:
        """
        Off Linux there is no C{syncfs}.
        """
        self.assertIsNone(loadSyncfs("darwin", "23.1.0"))
        self.assertIsNone(loadSyncfs("win32", "10"))

    def test_oldOrUnknownKernel(self) -> None:
        """
        Linux before 5.8 (whose C{syncfs} returns success after a failed
        write-back) and an unparsable release get no C{syncfs}.
        """
        self.assertIsNone(loadSyncfs("linux", "5.7.19"))
        self.assertIsNone(loadSyncfs("linux", "4.19.0-amd64"))
        self.assertIsNone(loadSyncfs("linux", "custom"))

    def test_callsTheKernel(self) -> None:
        """
        On a current Linux, C{syncfs} flushes the file system of a real
        descriptor and raises L{OSError} with the C library's errno for a
        bad one.
        """
        syncfs = loadSyncfs("linux", "6.1.0")
        assert syncfs is not None
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            syncfs(fd)
        finally:
            os.close(fd)
        error = self.assertRaises(OSError, syncfs, fd)
        self.assertEqual(error.errno, errno.EBADF)


class FailureTypeTests(SynchronousTestCase):
    """
    The per-message results of a batch are L{Failure}s carrying the disk
    error.
    """

    def test_resultsCarryTheError(self) -> None:
        """
        A message whose file cannot be created gets a L{Failure} of that
        L{OSError}; the others in its cycle are committed into C{new/}.
        """
        path = os.path.abspath(self.mktemp())
        handler = MaildirHandler(path)
        first = Delivery(handler, "first")
        second = Delivery(handler, "second")
        second.tmpDirectory = os.path.join(path, "missing")
        first.chunks, second.chunks = [b"1"], [b"2"]
        results, placed, settled = _maildirdisk._commitCycle([first, second], [], path)
        self.assertEqual(placed, [])
        self.assertTrue(settled)
        self.assertIsNone(results[0])
        failure = results[1]
        assert isinstance(failure, Failure)
        self.assertIsInstance(failure.value, FileNotFoundError)
        self.assertEqual(listDir(os.path.join(path, "new")), ["first"])


class WriteAllTests(SynchronousTestCase):
    """
    L{_maildirdisk._writeAll} writes a message whole, however little each
    C{write(2)} takes.
    """

    def test_shortWrites(self) -> None:
        """
        Writes that take only part of what they are given are followed by
        writes of the rest, in order, for one chunk as for several.
        """
        realWrite = os.write
        sizes: list[int] = []

        def write(fd: int, data: Any) -> int:
            sizes.append(len(data))
            return realWrite(fd, bytes(data)[:3])

        path = self.mktemp()
        for chunks in ([b"0123456789"], [b"0123", b"456789"]):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            self.addCleanup(os.close, fd)
            sizes.clear()
            patched = self.patch(os, "write", write)
            _maildirdisk._writeAll(fd, chunks)
            patched.restore()
            with open(path, "rb") as f:
                self.assertEqual(f.read(), b"0123456789")
            self.assertEqual(sizes, [10, 7, 4, 1])


class DiskFailureLogTests(SynchronousTestCase):
    """
    L{logDiskFailure}: a refusal of the system is one error line, anything
    else a failure with its traceback.
    """

    def test_systemErrorIsOneLine(self) -> None:
        """
        An L{OSError} is logged at error level, as one line naming the
        system's text and the error's symbolic name, without the file name
        the error carries and without a traceback.
        """
        log = DiskErrorLog(self)
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", "/m/new/x\nforged")
        except OSError:
            logDiskFailure(Logger(), Failure(), "Delivering {path} failed", path="/m/new/1.M2")
        log.assertLines(1, "Delivering /m/new/1.M2 failed: Disk quota exceeded (EDQUOT)")

    def test_withoutErrno(self) -> None:
        """
        An L{OSError} without an error number is described by its text.
        """
        self.assertEqual(describe(OSError("unexpected end")), "unexpected end")
        self.assertEqual(describe(OSError()), "OSError")

    def test_defectKeepsItsTraceback(self) -> None:
        """
        An error that is not the system's (a defect) is logged as a failure,
        with its traceback.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        try:
            raise ValueError("a defect")
        except ValueError:
            logDiskFailure(Logger(), Failure(), "Delivering {path} failed", path="/m/new/1.M2")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(events[0]["log_level"], LogLevel.critical)

    def test_replies(self) -> None:
        """
        A full disk or quota answers 452 4.3.1, any other error 451 4.3.0.
        """
        for code in (errno.ENOSPC, errno.EDQUOT):
            error = diskError(OSError(code, "full"))
            self.assertEqual((error.code, error.enhanced), (452, "4.3.1"))
        for other in (OSError(errno.EIO, "I/O error"), ValueError("x"), None):
            error = diskError(other)
            self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))


class HeldDirectoryTests(SynchronousTestCase):
    """
    The directories a commit cycle holds open from the link of a message to
    the flush that makes it durable, and those it reaches by their paths.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.handler = MaildirHandler(self.path, perRecipient=True, hostname="localhost")
        self.domain = os.path.join(self.handler.path, "domains", "localhost")
        self.bob = os.path.join(self.domain, "bob")
        self.carol = os.path.join(self.domain, "carol")

    def delivery(self, unique: str, *targets: str) -> Delivery:
        delivery = Delivery(self.handler, unique)
        delivery.unnamed = False
        delivery.targets = list(targets)
        delivery.chunks = [unique.encode() + b"\r\n"]
        return delivery

    def moveBob(self, replace: bool = False) -> bool:
        # Called by the cycle once its messages are linked, before the flush
        # of their names: the owner moves bob's Maildir away.
        os.rename(self.bob, self.bob + ".moved")
        if replace:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(self.bob, sub))
        return False

    def test_directoryClosedByAFailureIsOpenedAgain(self) -> None:
        """
        A message that fails in a cycle releases the directories it shared
        with a later message of the same cycle; that message holds its own
        again, so that its Maildir moved away keeps it (250, in the moved
        Maildir), not a 451 with its copy left there.
        """
        for sub in ("tmp", "cur"):
            os.makedirs(os.path.join(self.carol, sub))
        with open(os.path.join(self.carol, "new"), "wb"):
            pass
        first = self.delivery("A", self.bob, self.carol)
        second = self.delivery("B", self.bob)
        held = _maildirdirs.Directory._held
        results, _, settled = _maildirdisk._commitCycle(
            [first, second], [], self.handler.path, self.moveBob
        )
        self.assertTrue(settled)
        failure = results[0]
        assert isinstance(failure, Failure)
        self.assertIsInstance(failure.value, NotADirectoryError)
        self.assertIsNone(results[1])
        self.assertEqual(listDir(os.path.join(self.bob + ".moved", "new")), ["B"])
        self.assertEqual(_maildirdirs.Directory._held, held)

    def test_byPathReplacedDirectoryFails(self) -> None:
        """
        A directory reached by its path (none may be held open) and replaced
        by another between the link of a message and the flush meant to make
        it durable fails the message (451): the directory at its path does
        not hold it, and is never fsynced in its place.  The same with and
        without C{syncfs}.
        """
        self.patch(_maildirdirs.Directory, "HELD_LIMIT", 0)
        realFsync = os.fsync
        for syncfs in (_maildirdisk._syncfs, None):
            self.patch(_maildirdisk, "_syncfs", syncfs)
            synced: list[int] = []

            def fsync(fd: int, synced: list[int] = synced) -> None:
                synced.append(os.fstat(fd).st_ino)
                realFsync(fd)

            self.patch(_maildirdisk, "_fsync", fsync)
            delivery = self.delivery(f"M{len(synced)}{syncfs is None}", self.bob)
            results, _, _ = _maildirdisk._commitCycle(
                [delivery], [], self.handler.path, lambda: self.moveBob(replace=True)
            )
            failure = results[0]
            assert isinstance(failure, Failure)
            self.assertIsInstance(failure.value, FileNotFoundError)
            self.assertIn("moved or replaced", str(failure.value))
            newDirectory = os.stat(os.path.join(self.bob, "new")).st_ino
            self.assertNotIn(newDirectory, synced)
            shutil.rmtree(self.bob + ".moved")

    def test_logNamesTheRecipientMaildir(self) -> None:
        """
        The log line of a message failed by a recipient's Maildir names
        that Maildir's directory, not the root's C{new/}.
        """
        log = DiskErrorLog(self)
        pool = ManualThreadPool()
        handler = MaildirHandler(
            self.path,
            reactor=ImmediateReactor(),
            threadpool=pool,  # type: ignore[arg-type]
            perRecipient=True,
            hostname="localhost",
        )
        for sub in ("tmp", "cur"):
            os.makedirs(os.path.join(self.carol, sub))
        with open(os.path.join(self.carol, "new"), "wb"):
            pass
        envelope = Envelope(mailFrom=Address("a@example.com"), rcptTo=[Address("carol@localhost")])
        d = handler.onData(stream := MessageStream(), makeSession(envelope=envelope))
        feed(stream, b"body\r\n")
        pool.runAll()
        self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 451)
        log.assertLines(
            1,
            f"Delivering {os.path.join(self.carol, 'new')} for carol@localhost failed: "
            "Not a directory",
        )

    def test_logNamesTheRecipientCopy(self) -> None:
        """
        A message whose link into a recipient's C{new/} fails (the
        recipient's file system full), or whose copy there fails (no link
        possible, then no space for the copy), is logged naming its file in
        that recipient's C{new/}, not the root's C{tmp/} file nor the root's
        C{new/}, where it never goes; the reply is 452.
        """
        pool = ManualThreadPool()
        handler = MaildirHandler(
            self.path,
            reactor=ImmediateReactor(),
            threadpool=pool,  # type: ignore[arg-type]
            perRecipient=True,
            hostname="localhost",
        )
        envelope = Envelope(mailFrom=Address("a@example.com"), rcptTo=[Address("carol@localhost")])
        full = os.strerror(errno.ENOSPC)

        def linkFull(
            source: str,
            directory: _maildirdirs.Directory,
            name: str,
            sourceDirectory: int | None = None,
        ) -> None:
            raise OSError(errno.ENOSPC, full, source, None, name)

        def noLink(
            source: str,
            directory: _maildirdirs.Directory,
            name: str,
            sourceDirectory: int | None = None,
        ) -> None:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), source, None, name)

        def copyFull(source: object, target: object) -> None:
            raise OSError(errno.ENOSPC, full)

        for link, copy in [(linkFull, shutil.copyfileobj), (noLink, copyFull)]:
            log = DiskErrorLog(self)
            self.patch(_maildirdisk, "linkInto", link)
            self.patch(shutil, "copyfileobj", copy)
            d = handler.onData(stream := MessageStream(), makeSession(envelope=envelope))
            feed(stream, b"body\r\n")
            pool.runAll()
            self.assertEqual(self.failureResultOf(d, SMTPError).value.code, 452)
            log.assertLines(1, f"Delivering {os.path.join(self.carol, 'new')}/", f"{full} (ENOSPC)")
            self.assertEqual(listDir(os.path.join(self.carol, "tmp")), [])
            self.assertEqual(listDir(os.path.join(self.path, "tmp")), [])

    def test_logNamesWhatFailedForRecipients(self) -> None:
        """
        With C{perRecipient}, a message whose file cannot be written or
        flushed in the root's C{tmp/} (that file system full) is logged
        naming that file, and one whose recipient's C{new/} cannot be
        flushed is logged naming that directory: not the root's C{new/},
        where such a message never goes.
        """
        pool = ManualThreadPool()
        handler = MaildirHandler(
            self.path,
            reactor=ImmediateReactor(),
            threadpool=pool,  # type: ignore[arg-type]
            perRecipient=True,
            hostname="localhost",
        )
        envelope = Envelope(mailFrom=Address("a@example.com"), rcptTo=[Address("carol@localhost")])
        full = os.strerror(errno.ENOSPC)
        newCarol = os.path.join(self.carol, "new")
        realFsync = _maildirdisk._fsync

        def writeFull(fd: int, chunks: list[bytes]) -> None:
            raise OSError(errno.ENOSPC, full)

        def fsyncFull(fd: int) -> None:
            raise OSError(errno.ENOSPC, full)

        def directoryFsyncFails(fd: int) -> None:
            if os.path.isdir(newCarol) and os.path.samestat(os.fstat(fd), os.stat(newCarol)):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            realFsync(fd)

        tmp = os.path.join(self.path, "tmp") + "/"
        for name, replacement, fragments in [
            ("_writeAll", writeFull, (f"Delivering {tmp}", f"{full} (ENOSPC)")),
            ("_fsync", fsyncFull, (f"Delivering {tmp}", f"{full} (ENOSPC)")),
            ("_fsync", directoryFsyncFails, (f"Delivering {newCarol} failed: ", "(EIO)")),
        ]:
            log = DiskErrorLog(self)
            with contextlib.ExitStack() as stack:
                stack.callback(setattr, _maildirdisk, name, getattr(_maildirdisk, name))
                setattr(_maildirdisk, name, replacement)
                self.patch(_maildirdisk, "_syncfs", None)
                d = handler.onData(stream := MessageStream(), makeSession(envelope=envelope))
                feed(stream, b"body\r\n")
                pool.runAll()
            self.assertEqual(self.failureResultOf(d, SMTPError).value.code // 100, 4)
            log.assertLines(1, *fragments)
            self.assertEqual(listDir(os.path.join(self.path, "tmp")), [])
            self.assertEqual(listDir(newCarol) if os.path.isdir(newCarol) else [], [])


class UnicodeDomainTests(SynchronousTestCase):
    """
    With C{perRecipient}, a domain spelled in Unicode (C{SMTPUTF8}) and
    its A-label, as clients without C{SMTPUTF8} spell it, name one
    Maildir: the A-label's.
    """

    def test_oneDirectoryForBothSpellings(self) -> None:
        """
        C{bücher.example}, its full-width and upper-case forms, and
        C{xn--bcher-kva.example} in any case all name
        C{xn--bcher-kva.example}; labels separated by the ideographic full
        stop are labels too; an ASCII domain is left as it was.
        """
        for address in [
            "a@bücher.example",
            "a@BÜCHER.example",
            "a@ｂüｃｈｅｒ\uff0eexample",
            "a@xn--bcher-kva.example",
            "a@XN--BCHER-KVA.EXAMPLE",
        ]:
            self.assertEqual(
                recipientDirectory(address, "mx.example"), ("xn--bcher-kva.example", "a")
            )
        self.assertEqual(
            recipientDirectory("a@例え。テスト", "mx.example"), ("xn--r8jz45g.xn--zckzah", "a")
        )
        self.assertEqual(recipientDirectory("a@Example.ORG", "mx.example"), ("example.org", "a"))

    def test_asciiLabelsBesideULabels(self) -> None:
        """
        A domain with an ASCII label holding an underscore beside a U-label
        names the directory of its A-label form, the ASCII label lower-cased
        with its underscore kept, which clients without C{SMTPUTF8} reach
        by that name too.
        """
        for address in [
            "a@_DMARC.bücher.example",
            "a@_dmarc.xn--bcher-kva.example",
            "a@_dmarc.XN--BCHER-KVA.bücher\u3002example",
        ]:
            directory = recipientDirectory(address, "mx.example")[0]
            self.assertEqual(directory.split(".")[0], "_dmarc", address)
        self.assertEqual(
            recipientDirectory("a@Under_Score.bücher.example", "mx.example"),
            ("under_score.xn--bcher-kva.example", "a"),
        )

    def test_noIDNA2003Mapping(self) -> None:
        """
        No IDNA 2003 mapping merges two domains: C{faß.de} is not
        C{fass.de}.
        """
        self.assertEqual(recipientDirectory("a@faß.de", "mx.example"), ("xn--fa-hia.de", "a"))
        self.assertEqual(recipientDirectory("a@fass.de", "mx.example"), ("fass.de", "a"))

    def test_oneDirectoryForEveryIDNASpelling(self) -> None:
        """
        Two Unicode spellings that IDNA 2008 with the UTS 46 mapping (RFC
        5891, as Postfix's C{smtputf8_enable} and clients' IDNA libraries
        convert them) makes one A-label name that A-label's directory, the
        one a client without C{SMTPUTF8} reaches: U+1F80 (alpha with
        psili and ypogegrammeni) is U+1F00 U+03B9, a Cherokee small letter
        its capital.  Lower-casing alone named a directory no DNS name has
        (C{xn--0qg.example}, C{xn--kz9a.example}).
        """
        for address, aLabel in [
            ("a@\u1f80.example", "xn--uxa970l.example"),
            ("a@\u1f00\u03b9.example", "xn--uxa970l.example"),
            ("a@xn--uxa970l.example", "xn--uxa970l.example"),
            ("a@\uab70.example", "xn--58d.example"),
            ("a@\u13a0.example", "xn--58d.example"),
            ("a@xn--58d.example", "xn--58d.example"),
            ("a@\u1e9e.example", "xn--zca.example"),
        ]:
            self.assertEqual(recipientDirectory(address, "mx.example"), (aLabel, "a"), address)

    def test_unsafeOrTooLongRefused(self) -> None:
        """
        A Unicode domain with an empty label, or whose A-labels are longer
        than a directory name may be, is refused with 553 5.1.3, as its
        Unicode form would be.
        """
        for address in ["a@bücher..example", "a@" + "ü" * 100 + "." + "ä" * 100]:
            error = self.assertRaises(SMTPError, recipientDirectory, address, "mx.example")
            self.assertEqual((error.code, error.enhanced), (553, "5.1.3"))

    def test_existingMailboxFoundBySMTPUTF8Spelling(self) -> None:
        """
        With C{existingOnly}, a mailbox made under the A-label (as
        operators type it) is found for a recipient spelled in Unicode,
        and the message delivered there; before, the recipient was refused
        550 5.1.1, permanently.
        """
        path = os.path.abspath(self.mktemp())
        pool = ManualThreadPool()
        handler = MaildirHandler(
            path,
            reactor=ImmediateReactor(),
            threadpool=pool,  # type: ignore[arg-type]
            perRecipient=True,
            existingOnly=True,
            hostname="mx.example",
        )
        mailbox = os.path.join(path, "domains", "xn--bcher-kva.example", "alice")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(mailbox, sub))
        recipient = Address("Alice@Bücher.example")
        checked = handler.onRcptTo(recipient, makeSession())
        pool.runAll()
        self.assertIsNone(self.successResultOf(checked))  # type: ignore[arg-type]
        session = makeSession(
            envelope=Envelope(mailFrom=Address("b@example.com"), rcptTo=[recipient])
        )
        stream = MessageStream()
        d = handler.onData(stream, session)
        feed(stream, b"Subject: hi\r\n\r\nbody\r\n")
        pool.runAll()
        name = self.successResultOf(d).removeprefix("OK: queued as ")
        self.assertEqual(listDir(os.path.join(mailbox, "new")), [name])
        self.assertEqual(os.listdir(os.path.join(path, "domains")), ["xn--bcher-kva.example"])
