# -*- test-case-name: tests.test_maildirlinks -*-
"""
Tests for L{MaildirHandler <twisted_smtpd.handlers.MaildirHandler>} with
C{perRecipient} against symbolic links below its root: a recipient's
Maildir, its C{tmp/} or C{new/}, a domain's directory or C{domains/} made a
link to a directory elsewhere is never followed.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

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
from twisted_smtpd.handlers import MaildirHandler, _maildirdisk
from twisted_smtpd.handlers._maildirbelow import openBelow
from twisted_smtpd.handlers._maildirdelivery import Delivery


def _linkedRoot(
    testCase: SynchronousTestCase, **options: Any
) -> tuple[str, str, ManualThreadPool, MaildirHandler]:
    """
    A per-recipient L{MaildirHandler} (with C{options}) on a root in a new
    directory, and beside that root a directory shaped as a Maildir, where
    the tests' links point.

    @return: The root, the directory outside it, the handler's thread pool
        and the handler.
    """
    base = os.path.abspath(testCase.mktemp())
    root = os.path.join(base, "root")
    outside = os.path.join(base, "outside")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(outside, sub))
    pool = ManualThreadPool()
    handler = MaildirHandler(
        root,
        reactor=ImmediateReactor(),
        threadpool=pool,  # type: ignore[arg-type]
        perRecipient=True,
        hostname="mx.example",
        **options,
    )
    return root, outside, pool, handler


class PerRecipientLinkTests(SynchronousTestCase):
    """
    A per-recipient Maildir reached through a symbolic link below the root
    fails the message (451 4.3.0) with one log line naming the recipient
    and the link, and nothing is written where the link points.
    """

    def setUp(self) -> None:
        self.root, self.outside, self.pool, self.handler = _linkedRoot(self)
        self.domain = os.path.join(self.root, "domains", "example.org")
        self.bob = os.path.join(self.domain, "bob")

    def makeMaildir(self, path: str) -> None:
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)

    def deliver(self, *recipients: str) -> Any:
        """
        Deliver one message to C{recipients}; its Deferred, fired.
        """
        envelope = Envelope(
            mailFrom=Address("alice@example.com"),
            rcptTo=[Address(r) for r in recipients],
        )
        d = self.handler.onData(stream := MessageStream(), makeSession(envelope=envelope))
        feed(stream, b"Subject: linked\r\n\r\nbody\r\n")
        self.pool.runAll()
        return d

    def outsideFiles(self) -> list[str]:
        """
        Every file below the outside directory.
        """
        return sorted(
            os.path.join(directory, name)
            for directory, _, names in os.walk(self.outside)
            for name in names
        )

    def assertRefused(self, d: Any, link: str, *recipients: str) -> None:
        """
        C{d} failed with 451 4.3.0, one error line named the recipient and
        C{link}, and nothing reached the outside directory nor any
        recipient's C{new/}.
        """
        self.assertEqual(self.outsideFiles(), [])
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        for recipient in recipients:
            local, _, domain = recipient.partition("@")
            new = os.path.join(self.root, "domains", domain, local, "new")
            if os.path.isdir(new) and not os.path.islink(new):
                self.assertEqual(listDir(new), [])
        self.assertEqual(listDir(os.path.join(self.root, "tmp")), [])

    def test_maildirLinkNotFollowed(self) -> None:
        """
        A recipient's Maildir that is a symbolic link to a Maildir elsewhere
        is not delivered to.
        """
        log = DiskErrorLog(self)
        os.makedirs(self.domain)
        os.symlink(self.outside, self.bob)
        self.assertRefused(self.deliver("bob@example.org"), self.bob, "bob@example.org")
        log.assertLines(
            1,
            f"Delivering {self.bob} for bob@example.org failed: ",
            "symbolic link not followed (ELOOP)",
        )

    def test_newLinkNotFollowed(self) -> None:
        """
        A recipient's C{new/} that is a symbolic link is not delivered
        through.
        """
        log = DiskErrorLog(self)
        self.makeMaildir(self.bob)
        os.rmdir(os.path.join(self.bob, "new"))
        os.symlink(os.path.join(self.outside, "new"), os.path.join(self.bob, "new"))
        self.assertRefused(self.deliver("bob@example.org"), self.bob, "bob@example.org")
        log.assertLines(
            1,
            f"Delivering {self.bob}/new for bob@example.org failed: ",
            "symbolic link not followed (ELOOP)",
        )

    def test_tmpLinkNotFollowed(self) -> None:
        """
        Where the message is copied (no hard link possible), a recipient's
        C{tmp/} that is a symbolic link does not receive the copy.
        """
        log = DiskErrorLog(self)
        self.makeMaildir(self.bob)
        os.rmdir(os.path.join(self.bob, "tmp"))
        os.symlink(os.path.join(self.outside, "tmp"), os.path.join(self.bob, "tmp"))
        copied: list[str] = []
        realFsync = _maildirdisk._fsync

        def link(source: str, destination: str, **kwargs: object) -> None:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

        def fsync(fd: int) -> None:
            # What lies outside while the copy is made durable.
            copied.extend(self.outsideFiles())
            realFsync(fd)

        self.patch(os, "link", link)
        self.patch(_maildirdisk, "_fsync", fsync)
        self.patch(_maildirdisk, "_syncfs", None)
        self.assertRefused(self.deliver("bob@example.org"), self.bob, "bob@example.org")
        self.assertEqual(copied, [])
        log.assertLines(
            1,
            f"Delivering {self.bob}/tmp for bob@example.org failed: ",
            "symbolic link not followed (ELOOP)",
        )

    def test_domainLinkNotFollowed(self) -> None:
        """
        A domain's directory that is a symbolic link is not followed, nor
        are new Maildirs made where it points.
        """
        log = DiskErrorLog(self)
        os.makedirs(os.path.join(self.root, "domains"))
        os.symlink(self.outside, self.domain)
        self.assertRefused(self.deliver("bob@example.org"), self.bob, "bob@example.org")
        self.assertEqual(listDir(self.outside), ["cur", "new", "tmp"])
        log.assertLines(1, f"Delivering {self.domain} for bob@example.org failed: ")

    def test_domainsLinkNotFollowed(self) -> None:
        """
        The root's C{domains/} that is a symbolic link is not followed.
        """
        log = DiskErrorLog(self)
        domains = os.path.join(self.root, "domains")
        os.symlink(self.outside, domains)
        self.assertRefused(self.deliver("bob@example.org"), self.bob, "bob@example.org")
        self.assertEqual(listDir(self.outside), ["cur", "new", "tmp"])
        log.assertLines(1, f"Delivering {domains} for bob@example.org failed: ")

    def test_danglingLinkNotFollowed(self) -> None:
        """
        A recipient's Maildir that is a symbolic link to a directory not
        there yet is not made where it points.
        """
        os.makedirs(self.domain)
        elsewhere = os.path.join(self.outside, "planted")
        os.symlink(elsewhere, self.bob)
        self.assertRefused(self.deliver("bob@example.org"), self.bob, "bob@example.org")
        self.assertFalse(os.path.lexists(elsewhere))

    def test_linkToAnEmptyDirectoryNotFilled(self) -> None:
        """
        A recipient's Maildir that is a symbolic link to an existing
        directory without C{tmp}, C{new} and C{cur} (C{/etc}, say) gets none
        made there.
        """
        os.makedirs(self.domain)
        empty = os.path.join(self.outside, "etc")
        os.mkdir(empty)
        os.symlink(empty, self.bob)
        self.assertRefused(self.deliver("bob@example.org"), self.bob, "bob@example.org")
        self.assertEqual(listDir(empty), [])

    def test_otherRecipientsKeepNoCopy(self) -> None:
        """
        With one recipient's Maildir a link, the message fails as a whole:
        no copy is kept for the others, so that the client's retry delivers
        each once.
        """
        os.makedirs(self.domain)
        os.symlink(self.outside, self.bob)
        d = self.deliver("carol@example.org", "bob@example.org", "dave@example.org")
        self.assertRefused(d, self.bob, "carol@example.org", "dave@example.org")

    def test_rootLinkFollowed(self) -> None:
        """
        The root itself, as the operator names it, may be a symbolic link:
        it is followed.
        """
        real = os.path.join(self.outside, "real")
        os.rename(self.root, real)
        os.symlink(real, self.root)
        d = self.deliver("bob@example.org")
        name = self.successResultOf(d).removeprefix("OK: queued as ")
        new = os.path.join(real, "domains", "example.org", "bob", "new")
        self.assertEqual(readFile(os.path.join(new, name)), b"Subject: linked\r\n\r\nbody\r\n")

    def test_realDirectoriesDelivered(self) -> None:
        """
        Existing Maildirs, and new ones made on the way, that are real
        directories are delivered to as before.
        """
        self.makeMaildir(self.bob)
        d = self.deliver("bob@example.org", "carol@example.net")
        name = self.successResultOf(d).removeprefix("OK: queued as ")
        for mailbox in (self.bob, os.path.join(self.root, "domains", "example.net", "carol")):
            self.assertEqual(listDir(os.path.join(mailbox, "new")), [name])
            self.assertEqual(listDir(mailbox), ["cur", "new", "tmp"])


class ExistingOnlyLinkTests(SynchronousTestCase):
    """
    With C{existingOnly}, a recipient whose Maildir is reached through a
    symbolic link below the root is refused for now at RCPT.
    """

    def setUp(self) -> None:
        self.root, self.outside, self.pool, self.handler = _linkedRoot(self, existingOnly=True)
        self.domain = os.path.join(self.root, "domains", "example.org")
        os.makedirs(self.domain)

    def rcpt(self, address: str) -> Any:
        d = self.handler.onRcptTo(Address(address), makeSession())
        self.pool.runAll()
        return d

    def test_linkedMaildirRefusedForNow(self) -> None:
        """
        A recipient whose Maildir is a symbolic link gets 451 4.3.0 at
        RCPT, with one log line naming it and the link.
        """
        log = DiskErrorLog(self)
        bob = os.path.join(self.domain, "bob")
        os.symlink(self.outside, bob)
        error = self.failureResultOf(self.rcpt("bob@example.org"), SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        log.assertLines(
            1,
            f"Looking up {bob} for bob@example.org failed: ",
            "symbolic link not followed (ELOOP)",
        )

    def test_realMaildirKnown(self) -> None:
        """
        A recipient whose Maildir is a real directory is accepted; one with
        none is refused with 550 5.1.1, as before.
        """
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.domain, "carol", sub))
        self.assertIsNone(self.successResultOf(self.rcpt("carol@example.org")))
        error = self.failureResultOf(self.rcpt("dave@example.org"), SMTPError).value
        self.assertEqual((error.code, error.enhanced), (550, "5.1.1"))


class RootTmpLinkTests(SynchronousTestCase):
    """
    The root's own C{tmp/}, where each message is written before it is
    linked into every recipient's C{new/}, is reached without following a
    symbolic link too: one put there by whoever may write into the root
    never has the message written, linked or removed where it points.
    """

    def setUp(self) -> None:
        self.root, self.outside, self.pool, self.handler = _linkedRoot(self)
        self.tmp = os.path.join(self.root, "tmp")
        self.bob = os.path.join(self.root, "domains", "example.org", "bob")

    def deliver(self, body: bytes = b"Subject: linked\r\n\r\nbody\r\n") -> Any:
        envelope = Envelope(
            mailFrom=Address("alice@example.com"), rcptTo=[Address("bob@example.org")]
        )
        d = self.handler.onData(stream := MessageStream(), makeSession(envelope=envelope))
        feed(stream, body)
        self.pool.runAll()
        return d

    def test_linkAfterStartNotFollowed(self) -> None:
        """
        C{tmp/} made a link after the handler started: the message fails
        (451 4.3.0) with one line naming C{tmp/}, and no file is ever
        written where the link points.
        """
        log = DiskErrorLog(self)
        opened = len(os.listdir("/proc/self/fd"))
        outsideTmp = os.path.join(self.outside, "tmp")
        os.rmdir(self.tmp)
        os.symlink(outsideTmp, self.tmp)
        seen: list[str] = []
        realFsync = _maildirdisk._fsync

        def fsync(fd: int) -> None:
            # What lies outside while the message is made durable.
            seen.extend(os.listdir(outsideTmp))
            realFsync(fd)

        self.patch(_maildirdisk, "_fsync", fsync)
        self.patch(_maildirdisk, "_syncfs", None)
        error = self.failureResultOf(self.deliver(), SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(seen, [])
        self.assertEqual(listDir(outsideTmp), [])
        self.assertFalse(os.path.exists(os.path.join(self.bob, "new")))
        self.assertEqual(len(os.listdir("/proc/self/fd")), opened)
        log.assertLines(1, f"Delivering {self.tmp} failed: ", "symbolic link not followed (ELOOP)")

    def test_linkAfterWriteNotFollowed(self) -> None:
        """
        C{tmp/} moved away and replaced by a link once the message was
        written there (spilled as it arrived), a file of the same name
        planted where the link points: the message itself is linked into
        the recipient's C{new/} and removed from the C{tmp/} it was written
        in; the planted file is neither delivered nor removed.
        """
        opened = len(os.listdir("/proc/self/fd"))
        self.handler.spillThreshold = 1000
        envelope = Envelope(
            mailFrom=Address("alice@example.com"), rcptTo=[Address("bob@example.org")]
        )
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession(envelope=envelope))
        stream._write(b"a" * 1500)
        self.pool.runAll()
        [name] = listDir(self.tmp)
        moved = os.path.join(self.root, "moved")
        os.rename(self.tmp, moved)
        outsideTmp = os.path.join(self.outside, "tmp")
        os.symlink(outsideTmp, self.tmp)
        planted = os.path.join(outsideTmp, name)
        with open(planted, "wb") as f:
            f.write(b"planted\r\n")
        stream._write(b"b" * 10)
        stream._finish()
        self.pool.runAll()
        self.assertEqual(self.successResultOf(d), f"OK: queued as {name}")
        delivered = os.path.join(self.bob, "new", name)
        self.assertEqual(readFile(delivered), b"a" * 1500 + b"b" * 10)
        self.assertEqual(readFile(planted), b"planted\r\n")
        self.assertEqual(listDir(moved), [])
        self.assertEqual(len(os.listdir("/proc/self/fd")), opened)

    def test_linkAfterWriteNotStatted(self) -> None:
        """
        The commit cycle tells the file system of a message's file by the
        root's C{tmp/} it was created in and holds open, not by that
        directory's path: C{tmp/} replaced by a link (here one to nothing)
        once two messages are written there, one C{syncfs} still covers
        both, neither is fsynced on its own, and both are delivered.
        """
        messages = []
        for unique in ("M1", "M2"):
            delivery = Delivery(self.handler, unique)
            delivery.targets = [self.bob]
            _maildirdisk._writeChunks(delivery, [unique.encode() + b"\r\n"])
            messages.append(delivery)
        moved = os.path.join(self.root, "moved")
        os.rename(self.tmp, moved)
        os.symlink(os.path.join(self.outside, "nowhere"), self.tmp)
        syncfsCalls: list[int] = []
        filesFsynced: list[int] = []
        realFsync = _maildirdisk._fsync

        def syncfs(fd: int) -> None:
            syncfsCalls.append(fd)
            realFsync(fd)

        def fsync(fd: int) -> None:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                filesFsynced.append(fd)
            realFsync(fd)

        self.patch(_maildirdisk, "_syncfs", syncfs)
        self.patch(_maildirdisk, "_fsync", fsync)
        results, _, settled = _maildirdisk._commitCycle(messages, [], self.root, lambda: False)
        self.assertEqual((results, settled), ([None, None], True))
        self.assertEqual(filesFsynced, [])
        self.assertNotEqual(syncfsCalls, [])
        self.assertEqual(listDir(os.path.join(self.bob, "new")), ["M1", "M2"])
        self.assertEqual(listDir(moved), [])
        for delivery in messages:
            _maildirdisk._release(delivery)

    def test_linkAtStartRefused(self) -> None:
        """
        A root whose C{tmp/} is a link when the handler starts is refused
        with C{ELOOP} naming it, and the files older than 36 hours where
        the link points are left alone (the files of C{tmp/} left by a
        crash are removed at start).
        """
        from twisted_smtpd.handlers.maildir import STALE_TMP_SECONDS

        base = os.path.abspath(self.mktemp())
        root = os.path.join(base, "root")
        elsewhere = os.path.join(base, "elsewhere")
        os.makedirs(elsewhere)
        old = os.path.join(elsewhere, "old")
        with open(old, "wb") as f:
            f.write(b"not a message\n")
        stale = os.stat(old).st_mtime - STALE_TMP_SECONDS - 3600
        os.utime(old, (stale, stale))
        os.makedirs(os.path.join(root, "new"))
        os.symlink(elsewhere, os.path.join(root, "tmp"))
        error = self.assertRaises(
            OSError, MaildirHandler, root, perRecipient=True, hostname="mx.example"
        )
        self.assertEqual(error.errno, errno.ELOOP)
        self.assertEqual(
            error.strerror,
            f"Maildir directory {os.path.join(root, 'tmp')!r} cannot be used:"
            " symbolic link not followed",
        )
        self.assertEqual(listDir(elsewhere), ["old"])

    def test_singleMaildirTmpLinkFollowed(self) -> None:
        """
        Without C{perRecipient}, the Maildir's own C{tmp/} may be a link,
        as its owner, the operator, made it: the message goes through it.
        """
        base = os.path.abspath(self.mktemp())
        path = os.path.join(base, "maildir")
        elsewhere = os.path.join(base, "elsewhere")
        os.makedirs(elsewhere)
        os.makedirs(os.path.join(path, "new"))
        os.symlink(elsewhere, os.path.join(path, "tmp"))
        pool = ManualThreadPool()
        handler = MaildirHandler(
            path,
            reactor=ImmediateReactor(),
            threadpool=pool,  # type: ignore[arg-type]
        )
        d = handler.onData(stream := MessageStream(), makeSession())
        feed(stream, b"body\r\n")
        pool.runAll()
        name = self.successResultOf(d).removeprefix("OK: queued as ")
        self.assertEqual(readFile(os.path.join(path, "new", name)), b"body\r\n")
        self.assertEqual(listDir(elsewhere), [])


class PerRecipientWalkTests(SynchronousTestCase):
    """
    A recipient's Maildir is reached in one walk down from the root, each
    directory below it opened once, from its parent, without following a
    symbolic link; its directories are made only when its C{new/} is
    missing, as Postfix's C{local(8)} makes them.
    """

    def setUp(self) -> None:
        self.root, self.outside, self.pool, self.handler = _linkedRoot(self)
        self.bob = os.path.join(self.root, "domains", "example.org", "bob")
        self.opened: list[tuple[str, int | None]] = []
        self.made: list[str] = []
        realOpen, realMkdir = os.open, os.mkdir

        def recordingOpen(path: str, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & os.O_DIRECTORY:
                self.opened.append((path, kwargs.get("dir_fd")))
            return realOpen(path, flags, *args, **kwargs)

        def recordingMkdir(path: str, *args: Any, **kwargs: Any) -> None:
            self.made.append(path)
            realMkdir(path, *args, **kwargs)

        self.patch(os, "open", recordingOpen)
        self.patch(os, "mkdir", recordingMkdir)

    def deliver(self) -> str:
        """
        Deliver one message to bob@example.org; the name it was queued as.
        """
        envelope = Envelope(
            mailFrom=Address("alice@example.com"), rcptTo=[Address("bob@example.org")]
        )
        d = self.handler.onData(stream := MessageStream(), makeSession(envelope=envelope))
        feed(stream, b"Subject: walk\r\n\r\nbody\r\n")
        self.pool.runAll()
        name: str = self.successResultOf(d).removeprefix("OK: queued as ")
        return name

    def test_existingMaildirWalkedOnce(self) -> None:
        """
        A message to an existing Maildir opens the root's C{tmp/}, then
        C{domains/} (by its path, from the root as the operator named it),
        the domain, the Maildir and its C{new/}, each once, every one after
        C{domains/} from its parent's descriptor; nothing is made.
        """
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.bob, sub))
        del self.made[:], self.opened[:]
        name = self.deliver()
        self.assertEqual(listDir(os.path.join(self.bob, "new")), [name])
        paths = [path for path, _ in self.opened]
        self.assertEqual(
            paths,
            [
                os.path.join(self.root, "tmp"),
                os.path.join(self.root, "domains"),
                "example.org",
                "bob",
                "new",
            ],
        )
        self.assertNotIn(None, [parent for _, parent in self.opened[2:]])
        self.assertEqual(self.made, [])

    def test_newMaildirMade(self) -> None:
        """
        A first message to a recipient makes the directories leading to its
        Maildir and the Maildir's C{tmp/}, C{new/} and C{cur/} (mode 0700).
        """
        name = self.deliver()
        self.assertEqual(listDir(os.path.join(self.bob, "new")), [name])
        for sub in ("tmp", "new", "cur"):
            mode = os.stat(os.path.join(self.bob, sub)).st_mode
            self.assertEqual(stat.S_IMODE(mode), 0o700)
        self.assertEqual(self.made, ["domains", "example.org", "bob", "tmp", "new", "cur"])

    def test_missingTmpMadeForACopy(self) -> None:
        """
        A Maildir without its C{tmp/}, where no hard link can be made,
        gets its C{tmp/} made for the copy, which is delivered.
        """
        for sub in ("new", "cur"):
            os.makedirs(os.path.join(self.bob, sub))

        def link(source: str, destination: str, **kwargs: object) -> None:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

        self.patch(os, "link", link)
        name = self.deliver()
        self.assertEqual(listDir(os.path.join(self.bob, "new")), [name])
        self.assertEqual(listDir(os.path.join(self.bob, "tmp")), [])

    def test_reachedByPathFromTheFirstDirectory(self) -> None:
        """
        A directory reached again by its path below the root (a recipient
        looked up at RCPT, a directory not held open) opens C{domains/} by
        its path, then each directory below from its parent: not the root
        first.
        """
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.bob, sub))
        del self.opened[:]
        os.close(openBelow(os.path.join(self.bob, "new"), self.root))
        self.assertEqual(
            self.opened,
            [
                (os.path.join(self.root, "domains"), None),
                ("example.org", self.opened[1][1]),
                ("bob", self.opened[2][1]),
                ("new", self.opened[3][1]),
            ],
        )
        self.assertNotIn(None, [parent for _, parent in self.opened[1:]])
