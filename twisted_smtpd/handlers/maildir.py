# -*- test-case-name: tests.test_handlers -*-
"""
L{MaildirHandler}: durable delivery into a Maildir.

A message is written to C{tmp/}, flushed, fsynced, closed and renamed into
C{new/}, and C{new/} itself is fsynced, all before the 250 reply is allowed
out: a 250 means the message is on disk.

All disk work runs in a thread pool.  Small messages stay in memory until the
body ends; a message that grows past L{MaildirHandler.spillThreshold} is
written to its C{tmp/} file as it arrives, one write at a time, pausing the
client while a write is in flight and the buffer is full.  Finished messages
go to a single committer which takes every message waiting, commits each one
and then fsyncs C{new/} once for the whole batch; messages finishing while a
batch runs form the next one.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import socket
import time
from email.utils import formatdate
from typing import IO, Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from twisted_smtpd._errors import SMTPError
from twisted_smtpd._session import Session
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

# Indirections so that tests can observe and break the disk calls.
_fsync = os.fsync
_rename = os.rename

_counter = itertools.count(1)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def _uniqueName(hostname: str | None = None) -> str:
    """
    A new Maildir file name, C{<seconds>.M<microseconds>P<pid>Q<counter>.<host>}
    as the Maildir specification describes, unique across processes (pid) and
    within this one (counter).

    @param hostname: The host part, C{socket.gethostname()} by default; C{/}
        and C{:} in it are escaped as C{\\057} and C{\\072}.
    """
    if hostname is None:
        hostname = socket.gethostname()
    host = hostname.replace("/", "\\057").replace(":", "\\072")
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    return f"{seconds}.M{nanoseconds // 1000}P{os.getpid()}Q{next(_counter)}.{host}"


def _headerText(value: str) -> str:
    return _CONTROL.sub("", value)


def _traceHeaderLines(session: Session, name: str) -> bytes:
    """
    The C{Return-Path:} and C{Received:} header lines (RFC 5321 section 4.4)
    for a message arriving on C{session}.

    @param session: The session, with its envelope complete.
    @param name: The receiving host's name, for the C{by} clause.
    """
    mailFrom = session.envelope.mailFrom
    sender = "" if mailFrom is None else mailFrom.address
    ip = session.remoteAddress[0]
    rdns = session.clientHostname
    if not rdns or rdns.startswith("["):
        rdns = "unknown"
    helo = session.hostNameAppearsAs or rdns
    received = (
        f"from {helo} ({rdns} [{ip}]) by {name} with {session.transmissionType}"
        f" id {session.id}; {formatdate(localtime=True)}"
    )
    text = f"Return-Path: <{_headerText(sender)}>\r\nReceived: {_headerText(received)}\r\n"
    return text.encode("utf-8")


def _diskError(failure: Failure) -> SMTPError:
    """
    The reply for a local disk failure: 452 when the disk or quota is full,
    451 otherwise (RFC 3463 X.3.1 and X.3.0).
    """
    error = failure.value
    if isinstance(error, OSError) and error.errno in _NO_SPACE:
        return SMTPError(452, "Error: insufficient system storage", "4.3.1")
    return SMTPError(451, "Error: local error in processing", "4.3.0")


@implementer(IConsumer)
class _Delivery:
    """
    One message on its way into the Maildir.

    Its state is changed on the reactor thread only, except C{file}, which
    belongs to the single disk job in flight for it (a spill write, the
    commit, or the clean-up), never to two at once.
    """

    def __init__(self, handler: MaildirHandler, unique: str) -> None:
        self.handler = handler
        self.unique = unique
        self.tmpPath = os.path.join(handler.path, "tmp", unique)
        self.newPath = os.path.join(handler.path, "new", unique)
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.file: IO[bytes] | None = None
        self.spilled = False
        self.writing = False
        self.producer: IPushProducer | None = None
        self.paused = False
        self.ended = False
        self.failure: Failure | None = None
        self.result: Deferred[str] = Deferred()

    # IConsumer, fed by the message stream.

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        # Registered as streaming: it can be paused and resumed.
        self.producer = cast(IPushProducer, producer)

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        if self.failure is not None:
            return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered >= self.handler.spillThreshold:
            if not self.writing:
                self._spill()
            elif not self.paused and self.producer is not None:
                self.paused = True
                self.producer.pauseProducing()

    # Spilling a large body to its tmp file.

    def _spill(self) -> None:
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        self.writing = self.spilled = True
        d = self.handler._inThread(_writeChunks, self, chunks)
        d.addCallbacks(self._spillDone, self._spillFailed)

    def _resume(self) -> None:
        if self.paused:
            self.paused = False
            if self.producer is not None:
                self.producer.resumeProducing()

    def _spillDone(self, ignored: None) -> None:
        self.writing = False
        if self.ended:
            self._finish()
            return
        if self.buffered >= self.handler.spillThreshold:
            self._spill()
        self._resume()

    def _spillFailed(self, failure: Failure) -> None:
        self.writing = False
        self.handler._log.failure("Writing {path} failed", failure, path=self.tmpPath)
        if self.failure is None:
            self.failure = Failure(_diskError(failure))
        self.chunks, self.buffered = [], 0
        if self.ended:
            self._finish()
        else:
            # Keep reading so that the client gets its reply at the end.
            self._resume()

    # The end of the body.

    def bodyEnded(self, byteCount: int) -> None:
        self.ended = True
        if not self.writing:
            self._finish()

    def bodyFailed(self, failure: Failure) -> None:
        self.ended = True
        self.failure = failure
        self.chunks, self.buffered = [], 0
        if not self.writing:
            self._finish()

    def _finish(self) -> None:
        failure = self.failure
        if failure is None:
            self.handler._submit(self)
            return
        if not self.spilled:
            self.result.errback(failure)
            return

        def cleaned(ignored: object) -> None:
            self.result.errback(failure)

        self.handler._inThread(_discard, self).addBoth(cleaned)


def _createTmp(path: str) -> IO[bytes]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb")


def _writeChunks(delivery: _Delivery, chunks: list[bytes]) -> None:
    """
    In a pool thread: append C{chunks} to the message's tmp file.
    """
    if delivery.file is None:
        delivery.file = _createTmp(delivery.tmpPath)
    delivery.file.writelines(chunks)


def _discard(delivery: _Delivery) -> None:
    """
    In a pool thread: close and remove the message's tmp file, if any.
    """
    f, delivery.file = delivery.file, None
    if f is not None:
        with contextlib.suppress(OSError):
            f.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(delivery.tmpPath)


def _commitOne(delivery: _Delivery) -> None:
    """
    In a pool thread: write what is left of the message, fsync, close and
    rename it into C{new/}.
    """
    f = delivery.file
    if f is None:
        f = delivery.file = _createTmp(delivery.tmpPath)
    f.writelines(delivery.chunks)
    delivery.chunks = []
    f.flush()
    _fsync(f.fileno())
    delivery.file = None
    f.close()
    _rename(delivery.tmpPath, delivery.newPath)


def _syncDirectory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _fsync(fd)
    finally:
        os.close(fd)


def _commitBatch(newDirectory: str, batch: list[_Delivery]) -> list[Failure | None]:
    """
    In a pool thread: commit every message of C{batch}, then fsync
    C{newDirectory} once.

    @return: For each message, C{None} if it is safely in C{new/}, else the
        failure; a failed message's tmp file is removed.
    """
    results: list[Failure | None] = []
    committed: list[int] = []
    for index, delivery in enumerate(batch):
        try:
            _commitOne(delivery)
        except Exception:
            results.append(Failure())
            with contextlib.suppress(OSError):
                _discard(delivery)
        else:
            results.append(None)
            committed.append(index)
    if committed:
        try:
            _syncDirectory(newDirectory)
        except Exception:
            failure = Failure()
            for index in committed:
                results[index] = failure
                # The client will retry after 451: do not deliver twice.
                with contextlib.suppress(OSError):
                    os.unlink(batch[index].newPath)
    return results


class MaildirHandler(BaseHandler):
    """
    Deliver every message into the Maildir at C{path}, durably.

    The reply to an accepted message is C{"OK: queued as <name>"}, C{<name>}
    being the file's name in C{new/}.  A message that did not arrive whole
    (size limit, lost connection) leaves nothing behind and its failure is
    passed on.  A disk failure answers 452 (disk or quota full) or 451, and
    is logged.  In LMTP mode, one file is written for the message and the
    same reply given for every recipient.

    @ivar path: The Maildir's absolute path.
    @ivar commitBatches: How many commit batches have run; each ends with one
        fsync of C{new/}.
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
    ) -> None:
        """
        Create C{path/tmp}, C{path/new} and C{path/cur} (mode 0700) if
        missing.

        @param path: The Maildir directory.
        @param reactor: The reactor (the global one by default).
        @param threadpool: Where disk work runs; C{reactor.getThreadPool()}
            by default.
        @param traceHeaders: Whether to prepend C{Return-Path:} and
            C{Received:} header lines to each message.
        @param hostname: The name for the C{by} clause of C{Received:}, the
            host's fully qualified name by default.
        @raise OSError: If the directories cannot be created or are not
            writable.
        """
        if not path:
            raise ValueError("Maildir path must not be empty")
        self.path = os.path.abspath(path)
        for sub in ("tmp", "new", "cur"):
            directory = os.path.join(self.path, sub)
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as e:
                raise OSError(
                    e.errno, f"Cannot create Maildir directory {directory!r}: {e.strerror}"
                ) from e
            if not os.access(directory, os.W_OK | os.X_OK):
                raise PermissionError(
                    errno.EACCES, f"Maildir directory {directory!r} is not writable"
                )
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor = reactor
        self._threadpool = threadpool
        self._traceHeaders = traceHeaders
        self._name = hostname
        if traceHeaders and hostname is None:
            self._name = socket.getfqdn()
        self._host = socket.gethostname()
        self._newDirectory = os.path.join(self.path, "new")
        self._pending: list[_Delivery] = []
        self._committing = False
        self.commitBatches = 0

    def _pool(self) -> ThreadPool:
        if self._threadpool is None:
            self._threadpool = self._reactor.getThreadPool()
        assert self._threadpool is not None
        return self._threadpool

    def _inThread(self, f: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._pool(), f, *args)

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[str]:
        """
        Stream the body into a new file of the Maildir.

        @return: A L{Deferred} firing with C{"OK: queued as <name>"} once the
            file is renamed into C{new/} and C{new/} is fsynced; failing with
            the stream's failure if the body did not arrive whole, or with
            L{SMTPError} 451/452 on a disk failure.
        """
        delivery = _Delivery(self, _uniqueName(self._host))
        if self._traceHeaders:
            assert self._name is not None
            header = _traceHeaderLines(session, self._name)
            delivery.chunks.append(header)
            delivery.buffered = len(header)
        d: Deferred[Any] = stream.pipe(delivery)  # type: ignore[assignment]
        d.addCallbacks(delivery.bodyEnded, delivery.bodyFailed)
        return delivery.result

    # The committer.

    def _submit(self, delivery: _Delivery) -> None:
        self._pending.append(delivery)
        if not self._committing:
            self._startBatch()

    def _startBatch(self) -> None:
        batch, self._pending = self._pending, []
        self._committing = True
        self.commitBatches += 1
        d = self._inThread(_commitBatch, self._newDirectory, batch)
        d.addBoth(self._batchDone, batch)

    def _batchDone(self, outcome: list[Failure | None] | Failure, batch: list[_Delivery]) -> None:
        self._committing = False
        if self._pending:
            self._startBatch()
        if isinstance(outcome, Failure):
            outcome = [outcome] * len(batch)
        for delivery, failure in zip(batch, outcome, strict=True):
            if failure is None:
                delivery.result.callback(f"OK: queued as {delivery.unique}")
            else:
                self._log.failure("Delivering {path} failed", failure, path=delivery.newPath)
                delivery.result.errback(_diskError(failure))
