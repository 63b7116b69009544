# -*- test-case-name: tests.test_handlers -*-
"""
L{MaildirHandler}: durable delivery into a Maildir.

A message is written to C{tmp/}, made durable, closed and renamed into
C{new/}, and C{new/} itself is fsynced, all before the 250 reply is allowed
out: a 250 means the message is on disk.  Where the file system allows it
(Linux, C{O_TMPFILE}), the file in C{tmp/} has no name: once durable it is
linked into C{new/} instead of renamed, which saves a directory entry per
message and leaves nothing in C{tmp/} after a crash.

All disk work runs in a thread pool.  Small messages stay in memory until the
body ends; a message that grows past L{MaildirHandler.spillThreshold} is
written to its C{tmp/} file as it arrives, one write at a time, pausing the
client while a write is in flight and the buffer is full.  Finished messages
go to a single committer which takes every message waiting and commits them
as a group (see L{twisted_smtpd.handlers._maildirdisk}): all their files are
written, their data made durable by one C{syncfs(2)} (an C{fsync} per file
where that is missing), they are renamed into C{new/}, and the next flush,
which also covers the data of the next group (or, when no message waits,
an fsync of C{new/} at once), makes their names durable before they are
answered; messages finishing while a cycle runs form the next one.  An idle
committer given a message while other bodies are still arriving starts its
cycle once a turn of the reactor brings no further message, or none is left
arriving (at most L{GATHER_LIMIT} seconds after the first), so that clients
answered together share the next flush again; a message alone starts it at
once.

With C{perRecipient}, each recipient gets its own copy in the Maildir
C{<path>/domains/<domain>/<localpart>/}: the message is written and fsynced once in
C{<path>/tmp/}, hard-linked (copied where links are not possible) into every
recipient's C{new/}, and each of those directories, and every directory
created on the way, is fsynced before the reply.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd.handlers import _maildirdisk
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers._diskfailure import describe, diskError, logDiskFailure
from twisted_smtpd.handlers._maildirbelow import openBelow, openChild
from twisted_smtpd.handlers._maildirdelivery import Delivery, failedPath
from twisted_smtpd.handlers._maildirdisk import (
    _commitCycle,
    _discard,
    _release,
    _unlinkAll,
)
from twisted_smtpd.handlers._maildirnames import (
    DOMAINS,
    _hostPart,
    _nameOn,
    _safeName,
    recipientDirectory,
)
from twisted_smtpd.handlers._maildirnames import _uniqueName as _uniqueName
from twisted_smtpd.handlers._tracefields import traceHeaderLines
from twisted_smtpd.interfaces import IMessageStream

#: Files in C{tmp/} older than this are left over from a crash and removed
#: when the handler starts: the Maildir convention's 36 hours, long enough
#: that no delivery in progress (in this process or another) can own them.
STALE_TMP_SECONDS = 36 * 3600

#: The longest time, in seconds, the committer waits for more messages
#: before it starts a cycle while messages keep finishing turn after turn.
GATHER_LIMIT = 0.002


def removeStaleTemporaryFiles(
    directory: str,
    now: float,
    fd: int | None = None,
    failures: list[tuple[str, OSError]] | None = None,
) -> int:
    """
    Remove the files in a Maildir's C{tmp/} last modified more than
    L{STALE_TMP_SECONDS} before C{now}: deliveries a crash interrupted,
    which never got their 250.  A file that cannot be removed (immutable,
    or another user's in a sticky directory) is left, and the others are
    still removed: none of them is a message anyone was promised.

    @param fd: A descriptor of C{directory} (one reached without following
        a symbolic link) to list and remove its files through, rather than
        its path.
    @param failures: Where each file left, with the error of its removal,
        is added; they are not kept without it.
    @return: How many were removed.
    """
    removed = 0
    with os.scandir(directory if fd is None else fd) as entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and (
                    now - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_SECONDS
                ):
                    if fd is None:
                        os.unlink(entry.path)
                    else:
                        os.unlink(entry.name, dir_fd=fd)
                    removed += 1
            except FileNotFoundError:
                continue
            except OSError as e:
                if failures is not None:
                    failures.append((entry.name, e))
    return removed


def _writable(directory: str) -> bool:
    """
    Whether this process may make and remove files in C{directory}, as its
    effective user and groups: those it writes with (a root that switched
    them, as C{twistd --uid} checks its options, is not taken for root).
    """
    mode = os.W_OK | os.X_OK
    if os.access in os.supports_effective_ids:
        return os.access(directory, mode, effective_ids=True)
    return os.access(directory, mode)


def _exists(new: str, root: str) -> bool:
    """
    Whether the directory C{new}, below C{root}, exists, reached without
    following a symbolic link below C{root}.

    @raise OSError: C{ELOOP} for a symbolic link on the way; the system's
        error for a directory that cannot be looked at.
    """
    try:
        fd = openBelow(new, root)
    except (FileNotFoundError, NotADirectoryError):
        return False
    os.close(fd)
    return True


def _removeStaleBelow(root: str, failures: list[tuple[str, OSError]]) -> int:
    """
    L{removeStaleTemporaryFiles} in the C{tmp/} of the root of
    per-recipient Maildirs, that directory reached without following a
    symbolic link, as the messages written there are (L{openChild}).

    @param failures: As for L{removeStaleTemporaryFiles}.
    @raise OSError: C{ELOOP} if C{root/tmp} is a symbolic link.
    """
    tmp = os.path.join(root, "tmp")
    try:
        fd = openChild(root, "tmp")
    except OSError as e:
        raise OSError(e.errno, f"Maildir directory {tmp!r} cannot be used: {e.strerror}") from e
    try:
        return removeStaleTemporaryFiles(tmp, time.time(), fd, failures)
    finally:
        os.close(fd)


def _known(exists: bool) -> None:
    """
    Refuse a recipient whose Maildir does not exist.
    """
    if not exists:
        raise SMTPError(550, "Recipient address rejected: User unknown", "5.1.1")


class MaildirHandler(BaseHandler):
    """
    Deliver every message into the Maildir at C{path}, durably.

    The reply to an accepted message is C{"OK: queued as <name>"}, C{<name>}
    being the file's name in C{new/}.  A message that did not arrive whole
    (size limit, lost connection) leaves nothing behind and its failure is
    passed on.  A disk failure answers 452 (disk or quota full) or 451, and
    is logged.  In LMTP mode, one file is written for the message and the
    same reply given for every recipient.  A C{tmp/}, C{new/} or C{cur/}
    removed while the handler runs is made again by the next message; the
    Maildir itself is not (one removed whole may be a file system not
    mounted): its messages are answered 451 until it is back.

    With C{perRecipient}, every distinct recipient gets a copy in the Maildir
    C{<path>/domains/<domain>/<localpart>/}, created when first needed: the
    domains live in their own directory, so that none of them (C{tmp},
    C{new}, C{cur}) can land in the folders of the Maildir at C{path}.
    Both names are normalised (Unicode NFKC and lower case; a domain in
    Unicode is named by its A-label, IDNA 2008 with the UTS 46 mapping, as
    clients without C{SMTPUTF8} spell it), and a
    recipient whose local part or domain is empty, begins with a dot, holds
    a C{/}, a backslash, a control or invisible formatting character, or is
    longer than 255 bytes is refused at RCPT with 553 5.1.3.  A bare local part
    (C{<postmaster>}) belongs to C{hostname}.  With C{existingOnly}, a
    recipient whose Maildir does not exist is refused at RCPT with 550
    5.1.1 instead of having one made: only the operator makes mailboxes.
    No symbolic link below C{path} is followed (see
    L{twisted_smtpd.handlers._maildirbelow}): a recipient's Maildir reached
    through one fails the message with 451 4.3.0 (with C{existingOnly},
    refuses that recipient with 451 4.3.0 at RCPT), logged naming the
    recipient and the link; nor is C{path/tmp}, where each message is
    written first (a link there fails the message with 451 4.3.0, and
    refuses the handler at start); C{path} itself may be a link.  Without
    C{perRecipient}, C{path}'s C{tmp/} and C{new/} are the operator's and
    followed.
    The reply comes once every
    copy and every directory it touched is fsynced; if any copy fails, none
    is kept and the message fails as a whole.

    @ivar path: The Maildir's absolute path.
    @ivar commitBatches: How many commit cycles have run; each flushes once
        (one C{syncfs}, or one fsync per file and per changed directory).
    @ivar spillThreshold: Bytes a message may hold in memory before it is
        written to its tmp file as it arrives.
    """

    _log = Logger()
    spillThreshold = 1 << 20

    def __init__(
        self,
        path: str,
        *,
        reactor: Any = None,
        threadpool: ThreadPool | None = None,
        traceHeaders: bool = False,
        hostname: str | None = None,
        perRecipient: bool = False,
        existingOnly: bool = False,
    ) -> None:
        """
        Create C{path/tmp}, C{path/new} and C{path/cur} (mode 0700) if
        missing.

        @param path: The Maildir directory.
        @param reactor: The reactor (the global one by default).
        @param threadpool: Where disk work runs; C{reactor.getThreadPool()}
            by default.
        @param traceHeaders: Whether to prepend C{Return-Path:} and
            C{Received:} header lines to each message; a message whose
            first line begins with white space (which would continue the
            C{Received:} field) gets an empty line after them, as Postfix's
            C{smtpd} writes one.
        @param hostname: The name for the C{by} clause of C{Received:} and
            the domain of bare local parts, the host's fully qualified name by
            default.
        @param perRecipient: Whether to deliver a copy to each recipient's
            own Maildir under C{path} rather than one to C{path}.
        @param existingOnly: With C{perRecipient}, accept only the
            recipients whose Maildir exists (its C{new/} directory); the
            others are refused at RCPT with 550 5.1.1, as a server that knows
            its users refuses unknown ones.  Without it, any recipient's
            Maildir is made at its first message.
        @raise OSError: If the directories cannot be created or are not
            writable; with C{perRecipient}, C{ELOOP} if C{path/tmp} is a
            symbolic link.
        @raise ValueError: If C{path} is empty, C{perRecipient} is set and
            C{hostname} cannot be a directory name, or C{existingOnly} is set
            without C{perRecipient}.
        """
        if not path:
            raise ValueError("Maildir path must not be empty")
        if existingOnly and not perRecipient:
            raise ValueError("existingOnly needs perRecipient: one Maildir has no users")
        self.path = os.path.abspath(path)
        for sub in ("tmp", "new", "cur"):
            directory = os.path.join(self.path, sub)
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as e:
                raise OSError(
                    e.errno, f"Cannot create Maildir directory {directory!r}: {e.strerror}"
                ) from e
            if not _writable(directory):
                raise PermissionError(
                    errno.EACCES, f"Maildir directory {directory!r} is not writable"
                )
        tmp = os.path.join(self.path, "tmp")
        self._tmpDirectory = tmp
        self._newDirectory = os.path.join(self.path, "new")
        self._newPrefix = os.path.join(self._newDirectory, "")
        #: Whether messages are written as unnamed files in C{tmp/}
        #: (C{O_TMPFILE}) and linked into C{new/}, rather than named in
        #: C{tmp/} and renamed: one directory entry less per message.
        #: Never with C{perRecipient}: one file is linked into several
        #: Maildirs, or copied, by its name.
        self.unnamedFiles = False
        failures: list[tuple[str, OSError]] = []
        if perRecipient:
            removed = _removeStaleBelow(self.path, failures)
        else:
            self.unnamedFiles = _maildirdisk.unnamedFilesWork(tmp)
            removed = removeStaleTemporaryFiles(tmp, time.time(), failures=failures)
        if removed:
            self._log.warn(
                "removed {count} file(s) older than 36 hours from {tmp}: deliveries"
                " interrupted by a crash, never acknowledged",
                count=removed,
                tmp=tmp,
            )
        if failures:
            name, error = failures[0]
            self._log.warn(
                "could not remove {count} file(s) older than 36 hours from {tmp},"
                " first {name}: {error}",
                count=len(failures),
                tmp=tmp,
                name=printable(name),
                error=describe(error),
            )
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor = reactor
        self._threadpool = threadpool
        self._traceHeaders = traceHeaders
        self._name = hostname
        if (traceHeaders or perRecipient) and hostname is None:
            self._name = socket.getfqdn()
        self._perRecipient = perRecipient
        self._existingOnly = existingOnly
        self._localDomain = ""
        if perRecipient:
            assert self._name is not None
            localDomain = _safeName(self._name)
            if localDomain is None:
                raise ValueError(f"host name {self._name!r} cannot be a directory name")
            self._localDomain = localDomain
        self._host = _hostPart(socket.gethostname())
        self._pending: list[Delivery] = []
        self._placed: list[Delivery] = []
        self._committing = False
        self._starting: Any = None
        #: How many messages' bodies are still arriving.
        self._receiving = 0
        self._gatherSince = 0.0
        self._seen = 0
        self.commitBatches = 0

    def _pool(self) -> ThreadPool:
        if self._threadpool is None:
            self._threadpool = self._reactor.getThreadPool()
        assert self._threadpool is not None
        return self._threadpool

    def _inThread(self, f: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._pool(), f, *args)

    def onRcptTo(self, address: Address, session: Session) -> Deferred[None] | None:
        """
        Accept any recipient; with C{perRecipient}, only those whose Maildir
        names are safe, and with C{existingOnly}, whose Maildir exists
        (looked up in the thread pool: a slow disk does not stop the
        reactor).

        @raise SMTPError: 553 5.1.3 for a mailbox name that cannot be a
            directory; 550 5.1.1 (from the Deferred) for a Maildir that does
            not exist; 451 4.3.0 (from the Deferred, logged) for one that
            cannot be looked at or is reached through a symbolic link below
            C{path}, which is never followed.
        """
        if not self._perRecipient:
            return None
        domain, local = recipientDirectory(address.address, self._localDomain)
        if not self._existingOnly:
            return None
        new = os.path.join(self.path, DOMAINS, domain, local, "new")
        d = self._inThread(_exists, new, self.path)
        return d.addCallbacks(_known, self._lookupFailed, errbackArgs=(address, session))

    def _lookupFailed(self, failure: Failure, address: Address, session: Session) -> None:
        """
        A recipient's Maildir could not be looked up (a symbolic link on the
        way, a directory this process may not read): one log line, and the
        recipient is refused for now (451 4.3.0).
        """
        error = failure.value
        path = getattr(error, "filename", None) or self.path
        line = "{session} Looking up {path} for {recipient} failed"
        recipient = printable(address.address)
        fields = {"session": session.id, "path": path, "recipient": recipient}
        logDiskFailure(self._log, failure, line, **fields)
        raise diskError(error)

    def _targets(self, session: Session) -> dict[str, str]:
        """
        The distinct per-recipient Maildirs of C{session}'s envelope, in
        order, each with its first recipient.
        """
        targets: dict[str, str] = {}
        for rcpt in session.envelope.rcptTo:
            domain, local = recipientDirectory(rcpt.address, self._localDomain)
            targets.setdefault(os.path.join(self.path, DOMAINS, domain, local), rcpt.address)
        return targets

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[str]:
        """
        Stream the body into a new file of the Maildir.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with C{"OK: queued as
            <name>"} once the
            file is renamed into C{new/} and C{new/} is fsynced; failing with
            the stream's failure if the body did not arrive whole, or with
            L{SMTPError} 451/452 on a disk failure.
        """
        delivery = Delivery(self, _nameOn(self._host), session.id)
        if self._perRecipient:
            # One file linked into several Maildirs, or copied: by its name.
            delivery.unnamed = False
            try:
                delivery.recipients = self._targets(session)
                delivery.targets = list(delivery.recipients)
            except SMTPError as e:
                delivery.failure = Failure(e)
        if self._traceHeaders:
            assert self._name is not None
            header = traceHeaderLines(session, self._name)
            delivery.chunks.append(header)
            delivery.buffered = len(header)
            delivery.afterTrace = True
        self._receiving += 1
        d: Deferred[Any] = stream.pipe(delivery)
        d.addCallbacks(delivery.bodyEnded, delivery.bodyFailed)
        return delivery.result

    # The committer.

    def _submit(self, delivery: Delivery) -> None:
        self._pending.append(delivery)
        if self._committing or self._starting is not None:
            return
        if not self._receiving:
            # No other body is on its way: nothing to wait for.
            self._startBatch()
        else:
            self._gatherSince = self._reactor.seconds()
            self._seen = len(self._pending)
            self._starting = self._reactor.callLater(0, self._gather)

    def _gather(self) -> None:
        """
        Start a cycle once a turn of the reactor brought no other message
        to commit, or no other body is on its way: clients answered together
        by the last cycle finish their next messages over a few turns, which
        then share one flush.  Arrivals that go on are cut off after
        L{GATHER_LIMIT} seconds.
        """
        self._starting = None
        if self._committing or not self._pending:
            return
        grown = len(self._pending) != self._seen
        elapsed = self._reactor.seconds() - self._gatherSince
        if grown and self._receiving and elapsed < GATHER_LIMIT:
            self._seen = len(self._pending)
            self._starting = self._reactor.callLater(0, self._gather)
            return
        self._startBatch()

    def _startBatch(self) -> None:
        batch, self._pending = self._pending, []
        placed, self._placed = self._placed, []
        self._committing = True
        self.commitBatches += 1
        d = self._inThread(_commitCycle, batch, placed, self.path, self._waiting)
        d.addBoth(self._batchDone, batch, placed)

    def _waiting(self) -> bool:
        # Called in the pool thread: a list's length is read atomically.
        return len(self._pending) > 0

    def _batchDone(
        self,
        outcome: tuple[list[Failure | None], list[Failure | None], bool] | Failure,
        batch: list[Delivery],
        placed: list[Delivery],
    ) -> None:
        self._committing = False
        if isinstance(outcome, Failure):
            # Not expected: the cycle catches every disk error itself.
            for delivery in batch + placed:
                _unlinkAll(delivery.delivered)
                _release(delivery)
            for delivery in batch:
                with contextlib.suppress(OSError):
                    _discard(delivery)
            outcome = [outcome] * len(batch), [outcome] * len(placed), True
        results, placedResults, settled = outcome
        for delivery, failure in zip(placed, placedResults, strict=True):
            self._answer(delivery, failure)
        for delivery, failure in zip(batch, results, strict=True):
            if failure is None and not settled:
                self._placed.append(delivery)
            else:
                self._answer(delivery, failure)
        if self._pending or self._placed:
            self._startBatch()

    def _answer(self, delivery: Delivery, failure: Failure | None) -> None:
        if failure is None:
            delivery.result.callback(f"OK: queued as {delivery.unique}")
        else:
            path = failedPath(delivery, failure.value)
            line, sid = "{session} Delivering {path} failed", delivery.session
            recipient = delivery.failedRecipient
            if recipient is None:
                logDiskFailure(self._log, failure, line, session=sid, path=path)
            else:
                line = "{session} Delivering {path} for {recipient} failed"
                recipient = printable(recipient)
                fields = {"session": sid, "path": path, "recipient": recipient}
                logDiskFailure(self._log, failure, line, **fields)
            delivery.result.errback(diskError(failure.value))
