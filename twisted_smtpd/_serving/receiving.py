# -*- test-case-name: tests.test_protocol -*-
"""
One message body on its way from the connection to C{onData}: the decoder,
the stream handed to the handler, the handler's answer, and the replies they
make together once both the body and the answer are in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.replies import Reply, sanitiseText
from twisted_smtpd._core.session import Session
from twisted_smtpd._serving.hookanswers import codeRefusal, replyTextRefusal
from twisted_smtpd._serving.hooks import (
    callHook,
    failureReply,
    replacedAttribute,
    returnedFailure,
)
from twisted_smtpd._stream import MessageStream

_PENDING = object()
#: What an SMTP C{onData} may answer per recipient, as in LMTP (a tuple,
#: made once: C{list | tuple} makes a union object at every test).
_SEQUENCES = (list, tuple)


class BodyDecoder(Protocol):
    """
    What turns raw bytes into body chunks: L{twisted_smtpd._core.data.DataDecoder}.
    """

    byteLength: int
    sizeExceeded: bool
    bareNewlineSeen: bool
    final: bool

    def feedFrom(self, data: bytes, begin: int) -> tuple[list[bytes], int]: ...

    def flush(self) -> bytes: ...


def _ownFailure(reason: Failure) -> Failure:
    """
    A new failure of the same kind and text as C{reason}, a connection's
    end, for the stream of this session alone.  Twisted hands every
    connection the same few instances (C{twisted.internet.main.CONNECTION_LOST},
    the reactor's own): a handler raising one in a coroutine (C{await
    stream.collect()}) would add its frames, its session among them, to that
    instance's traceback, which nothing ever frees.
    """
    value = reason.value
    assert value is not None
    return Failure(type(value)(*value.args))


def errorFromReply(reply: Reply) -> SMTPError:
    """
    The L{SMTPError} standing for a catalogue reply, to fail a stream with.
    """
    return SMTPError(reply.code, "\n".join(reply.lines), reply.enhanced)


def dataReply(result: object, log: Callable[[Failure], None], onData: object = None) -> Reply:
    """
    The 250 reply for what C{onData} returned: its text, or the default.
    A text that is an aiosmtpd-style refusal (C{"554 rejected"}), or a
    4xx or 5xx reply code (C{554}, C{b"554 rejected"}), is the handler's
    bug, given to C{log} and answered 451 (L{replyTextRefusal},
    L{codeRefusal}).
    """
    if isinstance(result, str):
        if not result:
            return catalogue.DATA_OK
        if result[0] in "2345":
            refusal = replyTextRefusal("onData", onData, result, log)
            if refusal is not None:
                return refusal
        return Reply(250, "2.0.0", sanitiseText(result))
    if result is not None:
        refusal = codeRefusal("onData", result, log)
        if refusal is not None:
            return refusal
    return catalogue.DATA_OK


def bodyFailureReply(failure: Failure, log: Callable[[Failure], None]) -> Reply:
    """
    The reply for C{onData} (or an entry of its LMTP list) failing with
    C{failure}: an L{SMTPError}'s own reply, 2xx included, unless its code
    is 3xx.  A 354 or any other intermediate reply after a message's end
    would tell the client to go on sending: it is logged as the handler's
    bug and answered 451.  Any other exception is answered 451 and given to
    C{log}.
    """
    value = failure.value
    if isinstance(value, SMTPError) and 300 <= value.code < 400:
        try:
            raise TypeError(
                f"onData answered with a {value.code} reply; a message needs a 2xx, 4xx or 5xx one"
            ) from value
        except TypeError:
            log(Failure())
        return catalogue.LOCAL_ERROR
    return failureReply(failure, log)


def lmtpReply(item: object, log: Callable[[Failure], None], onData: object = None) -> Reply:
    """
    The reply for one recipient's entry in an LMTP result list: an
    exception other than L{SMTPError} is answered 451 and given to C{log},
    as it would be raised from C{onData}.
    """
    if isinstance(item, BaseException):
        item = Failure(item)
    if isinstance(item, Failure):
        return bodyFailureReply(item, log)
    return dataReply(item, log, onData)


class MessageReceiver:
    """
    Feed a body through a decoder into a L{MessageStream}, call C{onData},
    and call C{done} with the replies once the body has ended and C{onData}
    has answered.

    @ivar stream: The stream the handler reads.
    @ivar ended: Whether the body's end was seen.
    @ivar finished: Whether C{done} was called.
    """

    #: The handler's C{onData}, once called.
    _onData: object = None

    def __init__(
        self,
        decoder: BodyDecoder,
        stream: MessageStream,
        replyCount: int,
        lmtp: bool,
        rejectBareNewline: bool,
        done: Callable[[list[Reply], int], None],
        logFailure: Callable[[Failure, str], None],
    ) -> None:
        self._decoder = decoder
        #: The decoder (L{twisted_smtpd._core.data.ChunkDecoder} for BDAT).
        self.decoder = decoder
        self.stream = stream
        self._replyCount = replyCount
        self._lmtp = lmtp
        self._rejectBareNewline = rejectBareNewline
        self._done = done
        self._logFailure = logFailure
        self._outcome: object = _PENDING
        self.ended = False
        self.finished = False
        #: Whether raw bytes belong to the body now (all of DATA; one BDAT
        #: chunk at a time).
        self.reading = True
        self.abandoned = False
        # Set by start; made here, so that every instance has the same
        # attributes (CPython shares their keys, and reads them faster).
        self._session: Session | None = None
        self._kept: tuple[object, ...] = ()

    def _log(self, failure: Failure) -> None:
        """
        Log C{onData}'s unexpected failure (with the session's
        C{logFailure}).
        """
        self._logFailure(failure, "onData")

    def start(self, onData: Callable[..., object], session: Session) -> None:
        """
        Call the handler's C{onData} with the stream.
        """
        self._onData = onData
        self._session = session
        envelope = session.envelope
        # keptAttributes, written out: this runs for every message (DATA
        # has just read this envelope's recipients).
        self._kept = (
            envelope,
            session.transaction,
            session.xClient,
            session.xForward,
            envelope.rcptTo,
        )
        try:
            result = callHook(onData, self.stream, session)
        except BaseException:
            # Any exception, as a Deferred would take it (runHook).
            self._answered(Failure())
            return
        if isinstance(result, Deferred):
            result.addBoth(self._answered)
        else:
            self._answered(result)

    def feed(self, data: bytes, begin: int) -> int:
        """
        Take raw bytes of the body, C{data[begin:]}.

        @return: C{-1} while the body goes on; once it ended, where the bytes
            that followed its end (the next pipelined commands) start in
            C{data}.
        """
        decoder = self._decoder
        stream = self.stream
        chunks, rest = decoder.feedFrom(data, begin)
        for chunk in chunks:
            stream._write(chunk)
        if decoder.sizeExceeded and not stream.sizeExceeded:
            stream.sizeExceeded = True
            stream._fail(errorFromReply(catalogue.SIZE_EXCEEDED))
        if rest < 0:
            return rest
        self.reading = False
        if not decoder.final:
            # A BDAT chunk ended; the message goes on.
            return rest
        self.ended = True
        if not stream.ended:
            if self._rejectBareNewline and decoder.bareNewlineSeen:
                stream._fail(errorFromReply(catalogue.BARE_NEWLINE))
            else:
                stream._finish()
        if self._outcome is not _PENDING and not self.finished:
            self._finish()
        return rest

    def flushHeld(self) -> None:
        """
        Hand the short pieces the decoder holds to be joined on to the
        stream now, however few (the session's deadline sweep does, about
        once a second): a body trickling in reaches the handler as it
        comes, not once 4 KiB of it are in.
        """
        if not self.ended:
            piece = self._decoder.flush()
            if piece:
                self.stream._write(piece)

    def refuse(self, reply: Reply) -> None:
        """
        The message is refused before its end (a BDAT chunk past the size
        limit): its stream fails with C{reply}'s error, and the session
        answers the client itself; C{onData}'s answer is ignored.
        """
        self.finished = True
        stream = self.stream
        if not stream.ended:
            stream.sizeExceeded = True
            stream._fail(errorFromReply(reply))

    def abandon(self, reason: Failure) -> None:
        """
        The connection is gone: fail the stream, never reply.

        The handler's stream fails with C{reason} when it is an
        L{SMTPError}, with a new one of the same kind (L{_ownFailure}) when
        it is a L{ConnectionDone} or L{ConnectionLost}; any other
        cause the transport gives (an C{OpenSSL.SSL.Error}: a client's TLS
        record that does not decrypt) becomes a L{ConnectionLost} carrying
        its text, so that a handler passing it on is not taken for one
        failing with a traceback: for the handler, the connection was lost.
        """
        self.abandoned = True
        if not self.stream.ended:
            if reason.check(ConnectionDone, ConnectionLost):
                reason = _ownFailure(reason)
            elif not reason.check(SMTPError):
                reason = Failure(ConnectionLost(reason.getErrorMessage()))
            self.stream._fail(reason)

    def _answered(self, outcome: object) -> None:
        if not isinstance(outcome, Failure):
            # An exception returned, not raised, refuses as raised.
            outcome = returnedFailure(outcome) or outcome
        session = self._session
        kept = self._kept
        replaced = None
        # unchanged, written out: this runs for every message.
        if session is not None and not (
            (envelope := session.envelope) is kept[0]
            and envelope.rcptTo is kept[4]
            and session.transaction is kept[1]
            and session.xClient is kept[2]
            and session.xForward is kept[3]
        ):
            replaced = replacedAttribute(session, kept, "onData")
        if replaced is not None:
            # The handler's bug, answered 451 as if onData had raised it.
            bug = Failure(TypeError(replaced))
            if isinstance(outcome, Failure):
                self._log(bug)
            else:
                outcome = bug
        if self.finished or (self.abandoned and not self.ended):
            # A handler passing on the stream's own failure (the client went
            # away, the server timed it out) is not an error worth a traceback.
            if isinstance(outcome, Failure) and not outcome.check(
                SMTPError, ConnectionDone, ConnectionLost
            ):
                self._log(outcome)
            return None
        self._outcome = outcome
        stream = self.stream
        if not stream.attached:
            stream.drain().addErrback(_ignore)
        elif isinstance(outcome, Failure) and not stream.ended:
            stream.stopProducing()
        if self.ended:
            self._finish()
        return None

    def _finish(self) -> None:
        self.finished = True
        decoder = self._decoder
        outcome = self._outcome
        count = self._replyCount
        replies: list[Reply]
        if decoder.sizeExceeded:
            replies = [catalogue.SIZE_EXCEEDED] * count
        elif self._rejectBareNewline and decoder.bareNewlineSeen:
            replies = [catalogue.BARE_NEWLINE] * count
        elif isinstance(outcome, Failure):
            replies = [bodyFailureReply(outcome, self._log)] * count
        elif self._lmtp and isinstance(outcome, list | tuple):
            logged: set[int] = set()

            def logOnce(failure: Failure) -> None:
                # An exception shared by several recipients is one error.
                if id(failure.value) not in logged:
                    logged.add(id(failure.value))
                    self._log(failure)

            if len(outcome) > count:
                # Which entry is whose cannot be told: none may say 250.
                replies = [self._wrongLength(outcome, count)] * count
            else:
                # An entry shared by several recipients is answered once.
                answered: dict[int, Reply] = {}
                replies = []
                for item in outcome:
                    reply = answered.get(id(item))
                    if reply is None:
                        reply = answered[id(item)] = lmtpReply(item, logOnce, self._onData)
                    replies.append(reply)
                if len(replies) < count:
                    # A 250 says the handler kept the message for that
                    # recipient: one with no entry was never said to be.
                    replies += [self._wrongLength(outcome, count)] * (count - len(replies))
        elif outcome is None:
            # What nearly every handler answers: tested first, for speed.
            replies = [catalogue.DATA_OK] * count
        elif isinstance(outcome, _SEQUENCES):
            # An LMTP-style list in SMTP, which has one reply.
            # A (code, text) pair is one answer, not an entry per recipient.
            refusal = codeRefusal("onData", outcome, self._log)
            replies = [refusal or self._oneReply(outcome)]
        else:
            replies = [dataReply(outcome, self._log, self._onData)] * count
        self._done(replies, decoder.byteLength)

    def _oneReply(self, outcome: list[object] | tuple[object, ...]) -> Reply:
        """
        The one SMTP reply for a list of per-recipient results: 250 when
        every entry accepts (or none is given); the first refusal when
        every entry refuses.  A mix cannot be one reply, as a 250 says the
        message is kept for every recipient: it is logged as the handler's
        bug and answered 451.
        """
        logged: set[int] = set()

        def logOnce(failure: Failure) -> None:
            if id(failure.value) not in logged:
                logged.add(id(failure.value))
                self._log(failure)

        answered: dict[int, Reply] = {}
        refusals: list[Reply] = []
        for item in outcome:
            reply = answered.get(id(item))
            if reply is None:
                reply = answered[id(item)] = lmtpReply(item, logOnce, self._onData)
            if reply.code >= 400:
                refusals.append(reply)
        if not refusals:
            return catalogue.DATA_OK
        if len(refusals) == len(outcome):
            return refusals[0]
        try:
            raise TypeError(
                f"onData refused {len(refusals)} of {len(outcome)} recipients in a list,"
                " which an SMTP session cannot answer with one reply"
            )
        except TypeError:
            self._log(Failure())
        return catalogue.LOCAL_ERROR

    def _wrongLength(self, outcome: list[object] | tuple[object, ...], count: int) -> Reply:
        """
        The reply for the recipients an LMTP result list of the wrong
        length leaves without a known answer: the handler's bug, logged
        once, and answered 451 (the client tries again later).
        """
        try:
            raise TypeError(
                f"onData answered {len(outcome)} results for {count} recipients;"
                " an LMTP list needs one entry per accepted recipient"
            )
        except TypeError:
            self._log(Failure())
        return catalogue.LOCAL_ERROR


def _ignore(failure: Failure) -> None:
    """
    Swallow the failure of a body nobody reads; its reply says why already.
    """
