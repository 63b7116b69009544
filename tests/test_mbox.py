# -*- test-case-name: tests.test_mbox -*-
"""
Tests for L{MboxHandler} and its mboxrd conversion.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import mailbox
import math
import os
import socket
import stat
import subprocess
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.disklog import DiskErrorLog
from tests.test_client import endpointFor, startServer
from tests.test_handlers import (
    ImmediateReactor,
    ManualThreadPool,
    Upstream,
    feed,
    listDir,
    makeSession,
)
from twisted_smtpd import SMTPError
from twisted_smtpd._core.session import Address, Envelope
from twisted_smtpd._smtpclient.client import deliver
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import _spool, mbox
from twisted_smtpd.handlers.mbox import MboxHandler, MboxrdEncoder, fromLine
from twisted_smtpd.interfaces import ISMTPHandler

BODY = (
    b"From: alice@example.com\r\n"
    b"Subject: mbox\r\n"
    b"\r\n"
    b"From here on\r\n"
    b">From quoted already\r\n"
    b"Fromage is not quoted\r\n"
    b".dot\r\n"
)
CONVERTED = (
    b"From: alice@example.com\n"
    b"Subject: mbox\n"
    b"\n"
    b">From here on\n"
    b">>From quoted already\n"
    b"Fromage is not quoted\n"
    b".dot\n"
)


def encode(chunks: list[bytes]) -> bytes:
    encoder = MboxrdEncoder()
    return b"".join(encoder.encode(c) for c in chunks) + encoder.end()


class EncoderTests(SynchronousTestCase):
    """
    L{MboxrdEncoder} converts a message to mboxrd.
    """

    def test_convert(self) -> None:
        """
        CRLF becomes LF, C{>*From } lines get one more C{>}, and a blank
        line follows the message.
        """
        self.assertEqual(encode([BODY]), CONVERTED + b"\n")

    def test_everySplit(self) -> None:
        """
        The conversion is the same wherever the chunks are cut.
        """
        whole = encode([BODY])
        for cut in range(len(BODY) + 1):
            self.assertEqual(encode([BODY[:cut], BODY[cut:]]), whole)
        self.assertEqual(encode([bytes([b]) for b in BODY]), whole)

    def test_missingNewline(self) -> None:
        """
        A last line without a line end gets one; an empty message is just
        the blank line.
        """
        self.assertEqual(encode([b"From x\r\nend"]), b">From x\nend\n\n")
        self.assertEqual(encode([]), b"\n")

    @given(
        st.lists(st.sampled_from([b">", b"From ", b"Fr", b"om ", b"\r", b"\n", b"x", b" "])),
        st.lists(st.integers(min_value=0, max_value=64)),
    )
    def test_sameAsWhole(self, pieces: list[bytes], cuts: list[int]) -> None:
        """
        A message made of quoting marks, C{From } and its pieces, CR, LF
        and other bytes, cut into chunks anywhere, converts to the mboxrd
        form of the whole message: each line with CRLF turned into LF and
        one more C{>} if it is a C{>*From } line, a line end added to an
        unfinished last line, then the blank line.
        """
        message = b"".join(pieces)
        lines = message.replace(b"\r\n", b"\n").split(b"\n")
        expected = b"\n".join(
            b">" + line if line.lstrip(b">").startswith(b"From ") else line for line in lines
        )
        if expected and not expected.endswith(b"\n"):
            expected += b"\n"
        expected += b"\n"
        chunks = []
        rest = message
        for cut in cuts:
            chunks.append(rest[:cut])
            rest = rest[cut:]
        chunks.append(rest)
        self.assertEqual(encode(chunks), expected)

    def test_longLineHeldBackBounded(self) -> None:
        """
        A message of one 16 MiB line, fed 64 KiB at a time (a body in
        C{BINARYMIME} needs no line ends), is passed on as it comes: the
        encoder holds back no more than a few bytes, and memory peaks under
        1 MiB (the whole line was held, and copied again with each chunk,
        before).
        """
        for line in [b"x" * (1 << 16), b">" * (1 << 16)]:
            encoder = MboxrdEncoder()
            tracemalloc.start()
            self.addCleanup(tracemalloc.stop)
            tracemalloc.reset_peak()
            size = 0
            for _ in range(256):
                size += len(encoder.encode(line))
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            self.assertLess(peak, 1 << 20)
            self.assertGreaterEqual(size, 255 * len(line))
            self.assertEqual(size + len(encoder.end()), 256 * len(line) + 2)

    def test_quoteAfterLongRun(self) -> None:
        """
        A line of many C{>} passed on before C{From } arrives still gets
        its one more C{>}; one ending in something else does not.
        """
        self.assertEqual(encode([b">" * 5, b">" * 5, b"From x\r\n"]), b">" * 11 + b"From x\n\n")
        self.assertEqual(encode([b">" * 5, b"Fro", b"mage\r\n"]), b">" * 5 + b"Fromage\n\n")

    def test_fromLine(self) -> None:
        """
        The separator names the sender (C{MAILER-DAEMON} for C{<>}) and the
        date in C{asctime} form.
        """
        self.assertEqual(
            fromLine("alice@example.com", 0), b"From alice@example.com Thu Jan  1 00:00:00 1970\n"
        )
        self.assertTrue(fromLine("", 0).startswith(b"From MAILER-DAEMON "))
        self.assertTrue(fromLine('"a b"@example.com', 0).startswith(b'From "a_b"@example.com '))

    def test_fromLineASCII(self) -> None:
        """
        The separator of an internationalized sender (RFC 6531) is ASCII:
        each non-ASCII character, a C1 control, a line separator or a
        bidirectional override among them, in the embedded form of RFC
        6533 section 3 (C{\\x{HEX}}).
        """
        self.assertEqual(
            fromLine("jos\u00e9@\u0444.example", 0),
            b"From jos\\x{E9}@\\x{444}.example Thu Jan  1 00:00:00 1970\n",
        )
        self.assertEqual(
            fromLine("a\u0085\u2028\u202e\U0001f600 b@example.com", 0),
            b"From a\\x{85}\\x{2028}\\x{202E}\\x{1F600}_b@example.com Thu Jan  1 00:00:00 1970\n",
        )


class MboxHandlerTests(SynchronousTestCase):
    """
    L{MboxHandler} appends durably, in a thread pool run by hand.
    """

    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp(), "mbox")
        os.makedirs(os.path.dirname(self.path))
        self.pool = ManualThreadPool()
        self.handler = MboxHandler(
            self.path,
            reactor=ImmediateReactor(),
            threadpool=self.pool,  # type: ignore[arg-type]
        )

    def deliver(self, body: bytes, sender: str = "alice@example.com") -> object:
        session = makeSession(envelope=Envelope(mailFrom=Address(sender)))
        stream = MessageStream()
        d = self.handler.onData(stream, session)
        feed(stream, body, chunkSize=7)
        self.assertNoResult(d)
        self.pool.runAll()
        return d

    def test_interface(self) -> None:
        """
        L{MboxHandler} provides L{ISMTPHandler}.
        """
        self.assertTrue(verifyObject(ISMTPHandler, self.handler))

    def test_readBack(self) -> None:
        """
        Messages read back with L{mailbox.mbox} have their senders and
        bodies; the file is private to its owner.
        """
        self.assertEqual(self.successResultOf(self.deliver(BODY)), "OK: delivered to mbox")
        self.successResultOf(self.deliver(b"Subject: second\r\n\r\nno final newline", ""))
        box = mailbox.mbox(self.path, create=False)
        messages = list(box)
        box.close()
        self.assertEqual(len(messages), 2)
        self.assertTrue(messages[0].get_from().startswith("alice@example.com "))
        self.assertTrue(messages[1].get_from().startswith("MAILER-DAEMON "))
        self.assertEqual(messages[0].as_bytes(), CONVERTED)
        self.assertEqual(messages[1]["Subject"], "second")
        self.assertEqual(messages[1].get_payload(), "no final newline\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_readBackInternationalSender(self) -> None:
        """
        A message from an internationalized sender (RFC 6531) reads back
        with L{mailbox.mbox}, as do the messages around it: its C{From }
        line is ASCII (Python's reader failed with C{UnicodeDecodeError}
        on a UTF-8 one).
        """
        self.successResultOf(self.deliver(BODY))
        self.successResultOf(self.deliver(BODY, "\u043f\u0440\u0438\u043c\u0435\u0440@x.example"))
        self.successResultOf(self.deliver(BODY))
        box = mailbox.mbox(self.path, create=False)
        messages = list(box)
        box.close()
        self.assertEqual([m.as_bytes() for m in messages], [CONVERTED] * 3)
        self.assertTrue(
            messages[1].get_from().startswith("\\x{43F}\\x{440}\\x{438}\\x{43C}\\x{435}\\x{440}@x.")
        )

    def test_afterCutShortMessage(self) -> None:
        """
        A message appended to a mailbox whose last message was cut short
        in the middle of a line (its writer killed in the middle of an
        append) starts after a blank line, and reads back as a message of
        its own, not as the end of the one cut short.
        """
        cut = b"From bob@example.com Thu Jan  1 00:00:00 1970\nSubject: cut\n\nhalf a li"
        for previous, separator in [(cut, b"\n\n"), (cut + b"ne\n", b"\n"), (b"\n", b"")]:
            with open(self.path, "wb") as f:
                f.write(previous)
            self.successResultOf(self.deliver(BODY))
            with open(self.path, "rb") as f:
                content = f.read()
            self.assertEqual(
                content[: len(previous) + len(separator) + 5], previous + separator + b"From "
            )
            box = mailbox.mbox(self.path, create=False)
            messages = list(box)
            box.close()
            self.assertEqual(messages[-1].as_bytes(), CONVERTED)
            self.assertEqual(len(messages), 2 if previous.startswith(b"From ") else 1)

    def test_writableButNotReadable(self) -> None:
        """
        A mailbox the server may write but not read (mode 0620, its group
        allowed to write only) still gets its messages, without the look
        at its end that a separator needs.
        """
        self.successResultOf(self.deliver(BODY))
        size = os.path.getsize(self.path)
        realOpen = mbox.openRegular

        def openRegular(path: str, flags: int, mode: int) -> int:
            if flags & os.O_RDWR:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            return realOpen(path, flags, mode)

        self.patch(mbox, "openRegular", openRegular)
        self.successResultOf(self.deliver(BODY))
        box = mailbox.mbox(self.path, create=False)
        self.assertEqual([m.as_bytes() for m in box], [CONVERTED, CONVERTED])
        box.close()
        self.assertGreater(os.path.getsize(self.path), size)

    def test_streamFailure(self) -> None:
        """
        A body that does not arrive whole writes nothing and passes the
        failure on.
        """
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession())
        stream._write(b"Subject: partial\r\n")
        stream._fail(ConnectionLost())
        self.failureResultOf(d, ConnectionLost)
        self.assertEqual(self.pool.jobs, [])
        self.assertFalse(os.path.exists(self.path))

    def test_diskFull(self) -> None:
        """
        A failed append is answered 452 when the disk is full, with one log
        line naming the session, and the file is cut back to what it was.
        """
        log = DiskErrorLog(self)
        self.successResultOf(self.deliver(BODY))
        size = os.path.getsize(self.path)

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(mbox, "_fsync", full)
        error = self.failureResultOf(self.deliver(BODY), SMTPError).value
        self.assertEqual((error.code, error.enhanced), (452, "4.3.1"))
        self.assertEqual(os.path.getsize(self.path), size)
        log.assertLines(1, "s1d Appending to ", "No space left on device (ENOSPC)")

    def test_fileTooBig(self) -> None:
        """
        A mailbox grown past what the system lets the process write
        (C{EFBIG}: a file size limit, or the file system's) is full for
        good: 552 5.2.2, as Postfix's C{local} answers; the file is cut back
        to what it was.
        """
        log = DiskErrorLog(self)
        self.successResultOf(self.deliver(BODY))
        size = os.path.getsize(self.path)

        def tooBig(fd: int) -> None:
            raise OSError(errno.EFBIG, "File too large")

        self.patch(mbox, "_fsync", tooBig)
        error = self.failureResultOf(self.deliver(BODY), SMTPError).value
        self.assertEqual((error.code, error.enhanced), (552, "5.2.2"))
        self.assertEqual(os.path.getsize(self.path), size)
        log.assertLines(1, "s1d Appending to ", "File too large (EFBIG)")

    def test_waitsForLock(self) -> None:
        """
        An append waits while another program holds the mailbox's C{flock}.
        """
        self.successResultOf(self.deliver(BODY))
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as other:
            fcntl.flock(other, fcntl.LOCK_EX)
            thread = threading.Thread(
                target=self.handler._append, args=(b"From x\n", io.BytesIO(b""))
            )
            thread.start()
            thread.join(0.3)
            self.assertTrue(thread.is_alive())
            self.assertEqual(os.path.getsize(self.path), size)
            fcntl.flock(other, fcntl.LOCK_UN)
            thread.join(30)
        self.assertFalse(thread.is_alive())
        self.assertEqual(os.path.getsize(self.path), size + 8)

    def appendWhileLocked(self, meanwhile: Callable[[], None]) -> None:
        """
        Start an append of a small message while another program holds the
        mailbox's C{flock}, call C{meanwhile}, let the lock go and wait for
        the append.
        """
        with open(self.path, "rb") as other:
            fcntl.flock(other, fcntl.LOCK_EX)
            thread = threading.Thread(
                target=self.handler._append, args=(b"From x\n", io.BytesIO(b"late\r\n"))
            )
            thread.start()
            thread.join(0.3)
            self.assertTrue(thread.is_alive())
            meanwhile()
            fcntl.flock(other, fcntl.LOCK_UN)
        thread.join(30)
        self.assertFalse(thread.is_alive())

    def test_removedWhileWaitingForLock(self) -> None:
        """
        A mailbox removed by the program holding its lock (C{movemail}
        takes the messages, then removes the file) while an append waits
        for the lock gets the message in a new file at its path, not in the
        removed one, where it would be lost after its 250.
        """
        self.successResultOf(self.deliver(BODY))
        self.appendWhileLocked(lambda: os.unlink(self.path))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"From x\nlate\n\n")

    def test_replacedWhileWaitingForLock(self) -> None:
        """
        A mailbox renamed away and replaced by the program holding its lock
        while an append waits for the lock gets the message in the file now
        at its path.
        """
        self.successResultOf(self.deliver(BODY))
        size = os.path.getsize(self.path)
        moved = self.path + ".1"

        def replace() -> None:
            os.rename(self.path, moved)
            with open(self.path, "wb"):
                pass

        self.appendWhileLocked(replace)
        self.assertEqual(os.path.getsize(moved), size)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"From x\nlate\n\n")

    def test_replacedWithoutEnd(self) -> None:
        """
        A mailbox replaced again every time its locks are taken, for
        C{lockTimeout} seconds, is answered 451 with one log line, not
        tried without end.
        """
        log = DiskErrorLog(self)
        self.handler = MboxHandler(
            self.path,
            reactor=ImmediateReactor(),
            threadpool=self.pool,  # type: ignore[arg-type]
            lockTimeout=0.05,
        )
        lockFile = self.handler._lockFile

        def lockThenReplace(fd: int, deadline: float) -> None:
            lockFile(fd, deadline)
            os.unlink(self.path)

        self.patch(self.handler, "_lockFile", lockThenReplace)
        error = self.failureResultOf(self.deliver(BODY), SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        log.assertLines(1, "Appending to ", "mailbox replaced while locking")

    def test_namedPipeRefused(self) -> None:
        """
        A named pipe found at the mbox path (the mailbox replaced while the
        server runs) is not written: the message is answered 451 with one
        log line naming it, at once, rather than the append waiting without
        end for a reader, holding the handler's lock.
        """
        log = DiskErrorLog(self)
        os.mkfifo(self.path)
        result: list[object] = []
        thread = threading.Thread(
            target=lambda: result.append(self.deliver(BODY * 5000)), daemon=True
        )
        thread.start()
        thread.join(10)
        if thread.is_alive():
            # Let the blocked append go, so that no thread is left behind.
            reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self.addCleanup(os.close, reader)
            while thread.is_alive():
                with contextlib.suppress(BlockingIOError):
                    os.read(reader, 1 << 16)
                thread.join(0.01)
            self.fail("the append waited on the named pipe")
        error = self.failureResultOf(result[0], SMTPError).value  # type: ignore[arg-type]
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        log.assertLines(1, "Appending to ", "not a regular file (a named pipe) (EINVAL)")

    def symlinkAt(self, owner: int) -> str:
        """
        Make the mbox path a symbolic link, owned by C{owner} where the test
        runs as root (else by the user running it), to a mailbox elsewhere.

        @return: The path the link names.
        """
        target = os.path.abspath(self.mktemp())
        with open(target, "wb") as f:
            f.write(b"From x\nkept\n\n")
        os.symlink(target, self.path)
        if os.geteuid() == 0:
            os.lchown(self.path, owner, owner)
        return target

    def test_symlinkRefused(self) -> None:
        """
        A mailbox path that is a symbolic link not owned by root (another
        user of the mail directory pointing it at a file the server may
        write) is not followed, as Postfix's C{local} refuses it: the
        message is answered 451 with one log line, and the file the link
        names is left as it was.
        """
        log = DiskErrorLog(self)
        target = self.symlinkAt(65534)
        error = self.failureResultOf(self.deliver(BODY), SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        log.assertLines(1, "Appending to ", "mailbox is a symbolic link not owned by root")
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"From x\nkept\n\n")

    def test_danglingSymlinkNotCreated(self) -> None:
        """
        A symbolic link to nothing at the mbox path does not make the
        server create the file it names.
        """
        log = DiskErrorLog(self)
        target = os.path.abspath(self.mktemp())
        os.symlink(target, self.path)
        if os.geteuid() == 0:
            os.lchown(self.path, 65534, 65534)
        error = self.failureResultOf(self.deliver(BODY), SMTPError).value
        self.assertEqual(error.code, 451)
        log.assertLines(1, "Appending to ", "(ELOOP)")
        self.assertFalse(os.path.lexists(target))

    def test_symlinkReplacingMailboxRefused(self) -> None:
        """
        A mailbox replaced by such a symbolic link while an append waits
        for its locks is not written through the link either.
        """
        log = DiskErrorLog(self)
        self.successResultOf(self.deliver(BODY))
        target = os.path.abspath(self.mktemp())
        with open(target, "wb") as f:
            f.write(b"From x\nkept\n\n")
        lockFile = self.handler._lockFile

        def lockThenReplace(fd: int, deadline: float) -> None:
            lockFile(fd, deadline)
            if not os.path.islink(self.path):
                os.unlink(self.path)
                os.symlink(target, self.path)
                if os.geteuid() == 0:
                    os.lchown(self.path, 65534, 65534)

        self.patch(self.handler, "_lockFile", lockThenReplace)
        error = self.failureResultOf(self.deliver(BODY), SMTPError).value
        self.assertEqual(error.code, 451)
        log.assertLines(1, "Appending to ", "mailbox is a symbolic link not owned by root")
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"From x\nkept\n\n")

    def test_hardLinkRefused(self) -> None:
        """
        A mailbox path that is one of several hard links to a file (another
        user of the mail directory linking it to a file the server may
        write) is not appended to, as Postfix's C{local} refuses it: the
        message is answered 451 with one log line, the file left as it was.
        """
        log = DiskErrorLog(self)
        target = os.path.abspath(self.mktemp())
        with open(target, "wb") as f:
            f.write(b"From x\nkept\n\n")
        os.link(target, self.path)
        error = self.failureResultOf(self.deliver(BODY), SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        log.assertLines(1, "Appending to ", "mailbox has 2 hard links (EPERM)")
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"From x\nkept\n\n")

    def test_rootsSymlinkFollowed(self) -> None:
        """
        A symbolic link owned by root, which only the administrator can
        have made, is followed: the message is appended to the file it
        names.
        """
        if os.geteuid() != 0:
            raise SkipTest("only root can make a symbolic link owned by root")
        target = self.symlinkAt(0)
        self.assertEqual(self.successResultOf(self.deliver(BODY)), "OK: delivered to mbox")
        box = mailbox.mbox(target, create=False)
        self.assertEqual([m.as_bytes() for m in box][-1], CONVERTED)
        box.close()

    def test_dotLockHeldWhileAppending(self) -> None:
        """
        The mailbox's dot lock (C{<mbox>.lock}, as procmail and Postfix's
        C{local} make it) exists while the message is written and fsynced,
        and is removed after.
        """
        seen: list[bool] = []
        realFsync = mbox._fsync

        def fsync(fd: int) -> None:
            seen.append(os.path.exists(self.path + ".lock"))
            realFsync(fd)

        self.patch(mbox, "_fsync", fsync)
        self.successResultOf(self.deliver(BODY))
        # The file, then (the mailbox being new) its directory.
        self.assertEqual(seen, [True, True])
        self.assertEqual(listDir(os.path.dirname(self.path)), ["mbox"])

    def test_newMailboxEntryFsynced(self) -> None:
        """
        The first message, which creates the mailbox, is answered only once
        the directory holding it is fsynced too, after the file: fsyncing
        the file alone does not make its name durable, and a crash could
        lose the mailbox and the message acknowledged in it.  Later
        appends to the same file fsync it alone.
        """
        synced: list[str] = []
        realFsync = mbox._fsync

        def fsync(fd: int) -> None:
            synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
            realFsync(fd)

        self.patch(mbox, "_fsync", fsync)
        self.successResultOf(self.deliver(BODY))
        self.assertEqual(synced, ["file", "dir"])
        del synced[:]
        self.successResultOf(self.deliver(BODY))
        self.assertEqual(synced, ["file"])

    def test_newMailboxEntryFsyncFails(self) -> None:
        """
        A mailbox whose directory cannot be fsynced after its first message
        is cut back to empty and the message answered 451, as any other
        failed append: the client keeps it.
        """
        realFsync = mbox._fsync

        def fsync(fd: int) -> None:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise OSError(errno.EIO, "Input/output error")
            realFsync(fd)

        self.patch(mbox, "_fsync", fsync)
        failure = self.failureResultOf(self.deliver(BODY), SMTPError)
        self.assertEqual(failure.value.code, 451)
        self.assertEqual(os.path.getsize(self.path), 0)

    def test_waitsForDotLock(self) -> None:
        """
        An append waits while another program holds the mailbox's dot lock
        (a writer that takes no kernel lock), and goes on once it is
        removed.
        """
        self.successResultOf(self.deliver(BODY))
        size = os.path.getsize(self.path)
        lock = self.path + ".lock"
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        thread = threading.Thread(target=self.handler._append, args=(b"From x\n", io.BytesIO(b"")))
        thread.start()
        thread.join(0.3)
        self.assertTrue(thread.is_alive())
        self.assertEqual(os.path.getsize(self.path), size)
        os.unlink(lock)
        thread.join(30)
        self.assertFalse(thread.is_alive())
        self.assertEqual(os.path.getsize(self.path), size + 8)
        self.assertFalse(os.path.exists(lock))

    def test_dotLockTimeout(self) -> None:
        """
        A dot lock another program keeps for C{lockTimeout} seconds leaves
        the mailbox as it is and the message answered 451, with one log
        line saying so; the other program's lock is left in place.
        """
        log = DiskErrorLog(self)
        self.successResultOf(self.deliver(BODY))
        size = os.path.getsize(self.path)
        self.handler = MboxHandler(
            self.path,
            reactor=ImmediateReactor(),
            threadpool=self.pool,  # type: ignore[arg-type]
            lockTimeout=0.05,
        )
        lock = self.path + ".lock"
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        error = self.failureResultOf(self.deliver(BODY), SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(os.path.getsize(self.path), size)
        self.assertTrue(os.path.exists(lock))
        log.assertLines(
            1, "Appending to ", "mailbox locked by another program (its dot lock) for 0.05 s"
        )

    def test_staleDotLockRemoved(self) -> None:
        """
        A dot lock older than 500 seconds (left by a program killed while
        it held it) is removed, and the message appended.
        """
        lock = self.path + ".lock"
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        old = os.stat(lock).st_mtime - 501
        os.utime(lock, (old, old))
        self.successResultOf(self.deliver(BODY))
        self.assertFalse(os.path.exists(lock))
        self.assertGreater(os.path.getsize(self.path), len(CONVERTED))

    def quickHandler(self) -> None:
        """
        Make the handler give up waiting for locks after 0.05 s.
        """
        self.handler = MboxHandler(
            self.path,
            reactor=ImmediateReactor(),
            threadpool=self.pool,  # type: ignore[arg-type]
            lockTimeout=0.05,
        )

    def dotLock(self, content: bytes) -> str:
        lock = self.path + ".lock"
        with open(lock, "xb") as f:
            f.write(content)
        return lock

    def test_deadServersDotLockRemoved(self) -> None:
        """
        A dot lock left by a process of this server that is gone (killed in
        the middle of an append) is removed at once, not after 500 s: the
        server restarted after a crash appends again without waiting.
        """
        self.quickHandler()
        seen: list[bytes] = []
        realFsync = mbox._fsync

        def fsync(fd: int) -> None:
            with open(self.path + ".lock", "rb") as f:
                seen.append(f.read())
            realFsync(fd)

        self.patch(mbox, "_fsync", fsync)
        self.successResultOf(self.deliver(BODY))
        # The file's fsync, then its new directory's, the lock held for both.
        mark, again = seen
        self.assertEqual(again, mark)
        self.assertEqual(mark.split(b" ")[0], str(os.getpid()).encode())
        child = subprocess.Popen(["true"])
        child.wait()
        self.dotLock(mark.replace(str(os.getpid()).encode(), str(child.pid).encode(), 1))
        self.successResultOf(self.deliver(BODY))
        self.assertFalse(os.path.exists(self.path + ".lock"))

    def test_livingOrForeignDotLockKept(self) -> None:
        """
        A dot lock of a process of this server still running, or one whose
        content is another program's (a pid alone, as liblockfile writes
        it, even of a process gone), is not taken for stale before 500 s.
        """
        log = DiskErrorLog(self)
        self.quickHandler()
        child = subprocess.Popen(["true"])
        child.wait()
        # Another process of this server, running.
        living = subprocess.Popen(["sleep", "30"])
        self.addCleanup(living.wait)
        self.addCleanup(living.kill)
        for content in [
            f"{living.pid} {socket.gethostname()} twisted-smtpd\n".encode(),
            f"{child.pid}\n".encode(),
            f"{child.pid} elsewhere.example twisted-smtpd\n".encode(),
        ]:
            lock = self.dotLock(content)
            error = self.failureResultOf(self.deliver(BODY), SMTPError).value
            self.assertEqual(error.code, 451)
            os.unlink(lock)
        log.assertLines(3, "Appending to ", "its dot lock")

    def test_lockTimeout(self) -> None:
        """
        A mailbox another program keeps locked for C{lockTimeout} seconds
        is left as it is and the message answered 451, with one log line
        naming the file: the client does not wait without end.
        """
        log = DiskErrorLog(self)
        self.successResultOf(self.deliver(BODY))
        size = os.path.getsize(self.path)
        self.handler = MboxHandler(
            self.path,
            reactor=ImmediateReactor(),
            threadpool=self.pool,  # type: ignore[arg-type]
            lockTimeout=0.05,
        )
        with open(self.path, "rb") as other:
            fcntl.flock(other, fcntl.LOCK_EX)
            error = self.failureResultOf(self.deliver(BODY), SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(os.path.getsize(self.path), size)
        log.assertLines(1, "Appending to ", "mailbox locked by another program for 0.05 s")
        self.successResultOf(self.deliver(BODY))
        self.assertGreater(os.path.getsize(self.path), size)

    def test_lockTimeoutWithinServer(self) -> None:
        """
        A mailbox another delivery of this server holds for C{lockTimeout}
        seconds is answered 451 too, and its one log line says so, not that
        another program holds it.
        """
        log = DiskErrorLog(self)
        self.handler = MboxHandler(
            self.path,
            reactor=ImmediateReactor(),
            threadpool=self.pool,  # type: ignore[arg-type]
            lockTimeout=0.05,
        )
        with self.handler._lock:
            error = self.failureResultOf(self.deliver(BODY), SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        log.assertLines(1, "Appending to ", "mailbox locked by another delivery of this server")
        self.successResultOf(self.deliver(BODY))

    def test_lockTimeoutPositive(self) -> None:
        """
        A C{lockTimeout} that is not positive is refused at construction.
        """
        self.assertRaises(ValueError, MboxHandler, self.path, lockTimeout=0)

    def test_lockTimeoutFinite(self) -> None:
        """
        An infinite C{lockTimeout}, or one longer than a lock can be waited
        for, is refused at construction rather than failing every append.
        """
        for timeout in [math.inf, math.nan, threading.TIMEOUT_MAX * 2]:
            e = self.assertRaises(ValueError, MboxHandler, self.path, lockTimeout=timeout)
            self.assertIn("lockTimeout must be positive and finite", str(e))


class ImmediateThreadPool:
    """
    A thread pool running each job at once, in the calling thread.
    """

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, object], None], func: Callable[..., object], *args: Any
    ) -> None:
        try:
            result = func(*args)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class MboxStreamingTests(SynchronousTestCase):
    """
    L{MboxHandler} spools the message to disk as it arrives: memory stays
    bounded whatever the message's size.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "mbox")

    def handler(self, pool: object) -> MboxHandler:
        return MboxHandler(self.path, reactor=ImmediateReactor(), threadpool=pool)  # type: ignore[arg-type]

    def test_mboxBoundedMemory(self) -> None:
        """
        A 32 MiB message is appended whole and exact while the memory
        allocated during its delivery peaks under 2 MiB: the body is not
        kept in memory (it was, whole, before).
        """
        handler = self.handler(ImmediateThreadPool())
        line = b"From the start, a line to be quoted in the mbox, 64 bytes long\r\n"
        chunkLines = 1024
        chunks = 512
        stream = MessageStream()
        session = makeSession(envelope=Envelope(mailFrom=Address("alice@example.com")))
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        tracemalloc.reset_peak()
        d = handler.onData(stream, session)
        for _ in range(chunks):
            stream._write(line * chunkLines)
        stream._finish()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.assertEqual(self.successResultOf(d), "OK: delivered to mbox")
        self.assertLess(peak, 2 << 20)
        converted = b">" + line.replace(b"\r\n", b"\n")
        with open(self.path, "rb") as f:
            first = f.readline()
            self.assertTrue(first.startswith(b"From alice@example.com "))
            digest = hashlib.sha256()
            size = 0
            while block := f.read(1 << 20):
                digest.update(block)
                size += len(block)
        expected = hashlib.sha256()
        for _ in range(chunks):
            expected.update(converted * chunkLines)
        expected.update(b"\n")
        self.assertEqual(
            (size, digest.hexdigest()),
            (len(converted) * chunkLines * chunks + 1, expected.hexdigest()),
        )
        self.assertEqual(listDir(self.directory), ["mbox"])

    def test_quotingAcrossBlocks(self) -> None:
        """
        The spool is converted a few bytes at a time: C{From } lines split
        across blocks are still quoted, and a message without a final line
        end gets one.
        """
        self.patch(mbox, "_BLOCK", 3)
        self.patch(_spool, "SPOOL_THRESHOLD", 4)
        handler = self.handler(ImmediateThreadPool())
        stream = MessageStream()
        d = handler.onData(stream, makeSession(envelope=Envelope(mailFrom=Address("a@b"))))
        feed(stream, BODY + b"From end", chunkSize=5)
        self.successResultOf(d)
        with open(self.path, "rb") as f:
            content = f.read()
        self.assertEqual(content.split(b"\n", 1)[1], CONVERTED + b">From end\n\n")

    def test_spoolFlowControl(self) -> None:
        """
        While a spool write is in flight and the threshold is reached again,
        the client is paused; it is resumed once the write is done.  The
        spool is an anonymous file in the mbox's directory: nothing is left
        there.
        """
        pool = ManualThreadPool()
        handler = self.handler(pool)
        upstream = Upstream()
        stream = MessageStream(upstream, maxBuffer=1000)
        d = handler.onData(stream, makeSession())
        chunk = b"x" * 65536 + b"\r\n"
        for _ in range(4):
            stream._write(chunk)
        self.assertEqual(len(pool.jobs), 1)
        for _ in range(4):
            stream._write(chunk)
        self.assertFalse(upstream.paused)
        stream._write(chunk)
        self.assertTrue(upstream.paused)
        pool.runOne()
        self.assertFalse(upstream.paused)
        stream._finish()
        pool.runAll()
        self.assertEqual(self.successResultOf(d), "OK: delivered to mbox")
        with open(self.path, "rb") as f:
            f.readline()
            self.assertEqual(f.read(), (b"x" * 65536 + b"\n") * 9 + b"\n")
        self.assertEqual(listDir(self.directory), ["mbox"])

    def test_spoolTinyPieces(self) -> None:
        """
        A body arriving two octets at a time (tiny TLS records) is written
        out once the memory its pieces take reaches the spool's threshold,
        not only their octets (about twenty times as much); the mbox gets
        it whole.
        """
        pool = ManualThreadPool()
        handler = self.handler(pool)
        stream = MessageStream(Upstream())
        d = handler.onData(stream, makeSession())
        pieces = 8_000
        written = False
        for _ in range(pieces):
            stream._write(b"xy")
            if pool.jobs:
                pool.runOne()
                written = True
        # 16,000 octets, far below the threshold in octets: written out.
        self.assertTrue(written)
        stream._write(b"\r\n")
        stream._finish()
        pool.runAll()
        self.assertEqual(self.successResultOf(d), "OK: delivered to mbox")
        with open(self.path, "rb") as f:
            f.readline()
            self.assertEqual(f.read(), b"xy" * pieces + b"\n\n")

    def test_spoolWriteFailure(self) -> None:
        """
        A spool that cannot be written answers 451 (452 for a full disk),
        logs the failure and appends nothing.
        """
        log = DiskErrorLog(self)

        def full(directory: str | None) -> Any:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(_spool, "_createSpool", full)
        handler = self.handler(ImmediateThreadPool())
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, b"x" * 300000 + b"\r\n")
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (452, "4.3.1"))
        log.assertLines(1, "No space left on device (ENOSPC)")
        self.assertFalse(os.path.exists(self.path))

    def test_spoolTooBig(self) -> None:
        """
        A spool grown past what the system lets the process write
        (C{EFBIG}: a file size limit) is the message's own file too big,
        C{552 5.3.4}, as Postfix's C{smtpd} answers for its queue file, not
        the mailbox full; the log line names the spool's directory, and
        the mbox is not touched.
        """
        log = DiskErrorLog(self)

        def tooBig(spool: Any, chunks: list[bytes]) -> None:
            raise OSError(errno.EFBIG, "File too large")

        self.patch(_spool, "_writeChunks", tooBig)
        handler = self.handler(ImmediateThreadPool())
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, b"x" * 300000 + b"\r\n")
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (552, "5.3.4"))
        log.assertLines(
            1, f"s1d spooling the message into {self.directory} failed: File too large (EFBIG)"
        )
        self.assertFalse(os.path.exists(self.path))

    def test_bodyFailureAfterSpill(self) -> None:
        """
        A large body that does not arrive whole (size limit, lost
        connection) appends nothing and passes its failure on.
        """
        handler = self.handler(ImmediateThreadPool())
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        stream._write(b"x" * 600000)
        stream._fail(ConnectionLost())
        self.failureResultOf(d, ConnectionLost)
        self.assertFalse(os.path.exists(self.path))

    def test_spoolDirectory(self) -> None:
        """
        L{Spool} makes its file in the directory it is given.
        """
        made: list[str | None] = []
        real = _spool._createSpool

        def record(directory: str | None) -> Any:
            made.append(directory)
            return real(directory)

        self.patch(_spool, "_createSpool", record)
        handler = self.handler(ImmediateThreadPool())
        stream = MessageStream()
        d = handler.onData(stream, makeSession())
        feed(stream, b"y" * 300000)
        self.successResultOf(d)
        self.assertEqual(made, [self.directory])


class MboxServerTests(TestCase):
    """
    L{MboxHandler} behind a real server.
    """

    async def test_delivered(self) -> None:
        """
        A message sent over SMTP is in the mbox when the 250 arrives.
        """
        path = os.path.join(self.mktemp(), "mbox")
        os.makedirs(os.path.dirname(path))
        server, port = await startServer(self, MboxHandler(path, reactor=reactor))
        result = await deliver(
            endpointFor(port),
            sender="alice@example.com",
            recipients=["bob@example.org"],
            stream=BODY,
            heloName="client.example",
            tls="none",
            reactor=reactor,
        )
        self.assertEqual(result.recipients[0].reply.code, 250)
        box = mailbox.mbox(path, create=False)
        self.assertEqual([m.as_bytes() for m in box], [CONVERTED])
        box.close()
