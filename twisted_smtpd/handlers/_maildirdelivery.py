# -*- test-case-name: tests.test_maildir -*-
"""
One message on its way into the Maildir of a L{MaildirHandler
<twisted_smtpd.handlers.MaildirHandler>}: the consumer its body is written
to, held in memory or spilled to its C{tmp/} file as it arrives, and given
to the handler's committer once it ended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_smtpd._stream import CHUNK_OVERHEAD
from twisted_smtpd.handlers import _maildirdirs
from twisted_smtpd.handlers._diskfailure import diskError, logDiskFailure
from twisted_smtpd.handlers._maildirdisk import _discard, _writeChunks

if TYPE_CHECKING:
    from twisted_smtpd.handlers.maildir import MaildirHandler


def failedPath(delivery: Delivery, error: BaseException | None) -> str:
    """
    What the log line of a failed delivery names: the file or directory
    the system refused, where the error tells it (a recipient's Maildir),
    else the message's file in C{new/}, or with C{perRecipient}, whose
    messages never go into the root's C{new/}, its file in C{tmp/}.
    """
    name = getattr(error, "filename", None)
    if isinstance(name, str) and name.startswith("/") and not name.startswith("/proc/"):
        return name
    if delivery.targets:
        return delivery.tmpPath
    return delivery.newPath


@implementer(IConsumer)
class Delivery:
    """
    One message on its way into the Maildir.

    Its state is changed on the reactor thread only, except C{fd}, which
    belongs to the single disk job in flight for it (a spill write, the
    commit, or the clean-up), never to two at once.
    """

    __slots__ = (
        "afterTrace",
        "buffered",
        "chunks",
        "created",
        "delivered",
        "ended",
        "failedRecipient",
        "failure",
        "fd",
        "handler",
        "openedAt",
        "paused",
        "producer",
        "recipients",
        "result",
        "session",
        "spilled",
        "targets",
        "tmpDirectory",
        "tmpFd",
        "toSync",
        "unique",
        "unnamed",
        "writing",
    )

    def __init__(self, handler: MaildirHandler, unique: str, session: str = "") -> None:
        self.handler = handler
        self.unique = unique
        self.session = session  # The id of its session, for its log lines.
        #: The directory of its tmp file: C{tmp/} of the handler's Maildir.
        self.tmpDirectory = handler._tmpDirectory
        #: With per-recipient Maildirs, the descriptor of C{tmpDirectory},
        #: reached without following a link, from the creation of its tmp
        #: file (named in it) to the file's removal.
        self.tmpFd: int | None = None
        #: The per-recipient Maildirs to deliver to; empty for C{path} itself.
        self.targets: Sequence[str] = ()
        #: The first recipient of each of C{targets}, as it was given.
        self.recipients: Mapping[str, str] = {}
        #: The recipient whose Maildir failed the message, if one did.
        self.failedRecipient: str | None = None
        #: The files committed into C{new/} directories so far: each
        #: directory and name.
        self.delivered: list[tuple[_maildirdirs.Directory, str]] = []
        #: The directories whose entries must be made durable for it, open
        #: until it is answered.
        self.toSync: list[_maildirdirs.Directory] = []
        #: The directories whose entries changed when its tmp file was
        #: opened (C{tmp/} made again), to be fsynced for it.
        self.created: list[str] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        #: Whether trace header lines were written and no octet of the
        #: body yet (L{write}).
        self.afterTrace = False
        #: The descriptor of its tmp file, once created.
        self.fd: int | None = None
        #: Whether its tmp file is unnamed (C{O_TMPFILE}) rather than
        #: C{tmpPath}.
        self.unnamed = handler.unnamedFiles
        #: When C{fd} was opened, in the order of all openings.
        self.openedAt = 0
        self.spilled = False
        self.writing = False
        #: Registered as streaming: it can be paused and resumed.
        self.producer: IProducer | None = None
        self.paused = False
        self.ended = False
        self.failure: Failure | None = None
        self.result: Deferred[str] = Deferred()

    @property
    def tmpPath(self) -> str:
        """
        Its file's path in C{tmp/}: the file itself where it is named, the
        name of its (unnamed) file otherwise.
        """
        return self.tmpDirectory + "/" + self.unique

    @property
    def newPath(self) -> str:
        """
        Its file's path in the handler's C{new/}.
        """
        return self.handler._newPrefix + self.unique

    # IConsumer, fed by the message stream.

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        if self.failure is not None:
            return
        if self.afterTrace and data:
            self.afterTrace = False
            if data[:1] in (b" ", b"\t"):
                # A first line beginning with white space would continue
                # the Received: field: an empty line goes before it, as
                # Postfix's smtpd writes one.
                data = b"\r\n" + data
        self.chunks.append(data)
        # The memory it takes (CHUNK_OVERHEAD), not only its octets.
        self.buffered += len(data) + CHUNK_OVERHEAD
        if self.buffered >= self.handler.spillThreshold:
            if not self.writing:
                self._spill()
            elif not self.paused and self.producer is not None:
                self.paused = True
                cast(IPushProducer, self.producer).pauseProducing()

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
                cast(IPushProducer, self.producer).resumeProducing()

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
        logDiskFailure(
            self.handler._log,
            failure,
            "{session} Writing message {name} into {directory} failed",
            session=self.session,
            name=self.unique,
            directory=self.tmpDirectory,
        )
        if self.failure is None:
            self.failure = Failure(diskError(failure.value))
        self.chunks, self.buffered = [], 0
        if self.ended:
            self._finish()
        else:
            # Keep reading so that the client gets its reply at the end.
            self._resume()

    # The end of the body.

    def bodyEnded(self, byteCount: int) -> None:
        self.ended = True
        handler = self.handler
        handler._receiving -= 1
        if not self.writing:
            if self.failure is None:
                handler._submit(self)
            else:
                self._finish()

    def bodyFailed(self, failure: Failure) -> None:
        self.ended = True
        self.handler._receiving -= 1
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
