# -*- test-case-name: tests.test_protocol -*-
"""
The mail transaction commands of a session: MAIL, RCPT, RSET, DATA and BDAT
(RFC 5321 sections 4.1.1.2 to 4.1.1.5, RFC 3030).  Functions of the
protocol, so that a connection carries no per-command objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.python.failure import Failure

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.data import ChunkDecoder, DataDecoder
from twisted_smtpd._core.grammar import Phase, Verb, parseBdat, parseMail, parseRcpt
from twisted_smtpd._core.replies import CommandError, Reply
from twisted_smtpd._core.session import Address, Envelope
from twisted_smtpd._serving.deadlines import transferStarted
from twisted_smtpd._serving.flow import StreamUpstream
from twisted_smtpd._serving.hooks import ACCEPTING_DEFAULTS
from twisted_smtpd._serving.logging import clientAddress, unlogged
from twisted_smtpd._serving.receiving import MessageReceiver, errorFromReply
from twisted_smtpd._stream import MessageStream

if TYPE_CHECKING:
    from twisted_smtpd._serving.context import CommandContext, SessionControl

# The phases as module constants: reading a member off its enum class costs
# a lookup through the class each time, and every message reads several.
_GREETED = Phase.GREETED
_MAIL = Phase.MAIL
_RCPT = Phase.RCPT


def resetTransaction(p: SessionControl) -> None:
    """
    End the mail transaction, and a message in progress with it.
    """
    # RSET, HELO/EHLO/LHLO and STARTTLS end any BDAT transfer too (RFC 5321
    # section 4.1.4): its stream fails, its state is gone.  XCLIENT, refused
    # inside a transaction, never gets here in one.
    if p.receiver is not None:
        p.abandonMessage(catalogue.RESET)
    session = p.session
    if session.xForward:
        # XFORWARD attributes apply to the next transaction only: RSET,
        # HELO, EHLO, STARTTLS, XCLIENT and the end of a message drop them,
        # with or without a MAIL before, as Postfix's mail_reset does.
        session.xForward = {}
    if session.envelope.mailFrom is not None:
        session.transaction += 1
        # A new object: handlers may keep the old one.
        session.envelope = Envelope()
    phase = p.phase
    if phase is _MAIL or phase is _RCPT:
        p.phase = _GREETED


def inTransaction(p: SessionControl) -> bool:
    """
    Whether MAIL was accepted or a message's reply is still owed.
    """
    phase = p.phase
    return phase is _MAIL or phase is _RCPT or p.receiver is not None


def abandonMessage(p: SessionControl, reply: Reply) -> None:
    """
    Drop a message in progress, failing its stream with C{reply}'s error.
    """
    if p.receiver is not None:
        p.receiver.abandon(Failure(errorFromReply(reply)))
        p.receiver = None


def messageLost(p: SessionControl, receiver: MessageReceiver) -> None:
    """
    The client went away in the middle of a message (its body, or between
    two BDAT chunks): one line saying so and how much had come, as Postfix
    logs C{lost connection after DATA}, but for a client of
    C{ignoredHosts}.  Nothing was delivered and no reply was sent.
    """
    session = p.session
    if unlogged(p):
        return
    p.log.info(
        "{session} {client} connection lost during {command} after {size} bytes: message dropped",
        session=session.id,
        client=clientAddress(session.remoteAddress),
        command="BDAT" if isinstance(receiver.decoder, ChunkDecoder) else "DATA",
        size=receiver.decoder.byteLength,
    )


def mail(p: SessionControl, argument: bytes) -> None:
    """
    MAIL FROM: check policy and the size, ask C{onMailFrom}, start the
    transaction.
    """
    options = p.options
    session = p.session
    if p.draining:
        p.closeWith(catalogue.SHUTDOWN)
        return
    factory = p.server
    if factory is not None and factory.authRequired and session.user is None:
        p.fail(catalogue.authRequired(options.authRequiredMessage))
        return
    request = parseMail(argument, options.lenientAddresses)
    if request.bodyType == "binarymime" and "BDAT" in options.disabledCommands:
        # RFC 3030 section 3: a BINARYMIME body needs BDAT.  Without it the
        # parameter is one the server does not offer (Postfix: 555).
        p.fail(catalogue.UNKNOWN_PARAMETER)
        return
    if options.size and request.size is not None and request.size > options.size:
        p.fail(catalogue.SIZE_EXCEEDED_MAIL)
        return
    if request.requireTls and not session.secure:
        p.fail(catalogue.REQUIRETLS_NEEDS_TLS)
        return
    # Positional (mailFrom, rcptTo, dsn, bodyType, smtpUtf8, requireTls,
    # size): attrs' __init__ takes them in half the time of keywords.
    envelope = Envelope(
        request.address,
        [],
        request.dsn,
        request.bodyType,
        request.smtpUtf8,
        request.requireTls,
        request.size,
    )
    onMailFrom = p.handler.onMailFrom
    if getattr(onMailFrom, "__func__", None) in ACCEPTING_DEFAULTS:
        # BaseHandler's default accepts, as runHook would say: no hook to
        # call, no callbacks to make.
        _mailAccepted(p, envelope)
        return

    def accepted(result: object) -> None:
        _mailAccepted(p, envelope)

    def refused(reply: Reply) -> None:
        # A sender the handler refuses ends what XFORWARD said of it, as
        # Postfix's mail_cmd resets after a refusing restriction.
        session.xForward = {}
        p.fail(reply)

    p.hook(onMailFrom, (request.address, session), accepted, refused)


def _mailAccepted(p: SessionControl, envelope: Envelope) -> None:
    """
    MAIL accepted: the transaction starts with C{envelope}.
    """
    p.session.envelope = envelope
    p.phase = _MAIL
    p.rcptAccepted = 0
    factory = p.server
    if factory is not None and "mail" in factory.wanted:
        # emit's own test, first: no observer of the default configuration
        # wants this event, and the call with its keyword costs more.
        p.emit("mail", address=envelope.mailFrom)
    p.reply(catalogue.MAIL_OK)


def rcpt(p: SessionControl, argument: bytes) -> None:
    """
    RCPT TO: check the recipient limit, ask C{onRcptTo}, add it.
    """
    session = p.session
    envelope = session.envelope
    if p.receiver is not None:
        p.fail(catalogue.BDAT_IN_PROGRESS)
        return
    address = parseRcpt(argument, envelope.smtpUtf8, p.options.lenientAddresses)
    if len(envelope.rcptTo) >= p.options.maxRecipients:
        p.fail(catalogue.TOO_MANY_RECIPIENTS)
        return
    onRcptTo = p.handler.onRcptTo
    if getattr(onRcptTo, "__func__", None) in ACCEPTING_DEFAULTS:
        # BaseHandler's default accepts, as runHook would say.
        _rcptAccepted(p, envelope, address)
        return

    def accepted(result: object) -> None:
        _rcptAccepted(p, envelope, address)

    p.hook(onRcptTo, (address, session), accepted, p.fail)


def _rcptAccepted(p: SessionControl, envelope: Envelope, address: Address) -> None:
    """
    RCPT accepted: C{address} joins C{envelope}, unless the transaction
    ended while the hook decided.
    """
    if p.session.envelope is envelope:
        envelope.rcptTo.append(address)
        p.phase = _RCPT
    # Answered 250: in LMTP, one reply is owed after the message.
    p.rcptAccepted += 1
    factory = p.server
    if factory is not None and "rcpt" in factory.wanted:
        # As for MAIL: emit's own test, first.
        p.emit("rcpt", address=address)
    p.reply(catalogue.RCPT_OK)


def rset(p: SessionControl, argument: bytes) -> None:
    """
    RSET: drop the transaction, and a BDAT message in progress with it.
    """
    if argument:
        p.fail(catalogue.SYNTAX_ERROR)
        return
    p.abandonMessage(catalogue.RESET)
    p.resetTransaction()
    p.reply(catalogue.RESET)
    if p.draining:
        p.closeWith(catalogue.SHUTDOWN)


def data(p: SessionControl, argument: bytes) -> None:
    """
    DATA: send 354 and stream the body into C{onData}.
    """
    options = p.options
    session = p.session
    if argument:
        p.fail(catalogue.SYNTAX_ERROR)
        return
    if p.receiver is not None:
        p.fail(catalogue.BDAT_IN_PROGRESS)
        return
    envelope = session.envelope
    if envelope.bodyType == "binarymime":
        p.fail(catalogue.BINARYMIME_NEEDS_BDAT)
        return
    if not envelope.rcptTo:
        # The handler took every recipient away (the phase says one was
        # accepted): a 250 would be for a message to nobody, and in LMTP
        # the body would get no reply at all.
        p.fail(catalogue.NO_VALID_RECIPIENTS)
        return
    p.reply(catalogue.START_DATA)
    decoder = DataDecoder(options.size, options.bareNewline)
    receiver = p.receiver = _newReceiver(p, decoder, options.bareNewline == "reject")
    transferStarted(p)
    receiver.start(p.handler.onData, session)


def _newReceiver(
    p: SessionControl, decoder: DataDecoder | ChunkDecoder, rejectBareNewline: bool
) -> MessageReceiver:
    """
    The receiver of a new message's body, whose stream pauses reading from
    the client while this message is the one read.
    """
    options = p.options
    upstream = StreamUpstream(p)
    lmtp = options.lmtp
    # Positional: a keyword costs a class's call about 800 instructions.
    receiver = MessageReceiver(
        decoder,
        MessageStream(upstream),
        p.rcptAccepted if lmtp else 1,
        lmtp,
        rejectBareNewline,
        p.messageDone,
        p.logFailure,
    )
    upstream.carries(receiver)
    return receiver


def bdat(p: SessionControl, argument: bytes) -> None:
    """
    BDAT (RFC 3030): read the announced octets as they are.  The first chunk
    starts C{onData}; every chunk but the last gets 250 at once, the last one
    the message's reply.  An empty chunk that is not the last counts as a
    junk command once answered (L{emptyChunkAnswered}).  A chunk that
    takes the message past the size limit, and every chunk after it, is
    dropped (L{oversized}).
    """
    try:
        size, last = parseBdat(argument)
    except CommandError:
        malformedBdat(p)
        return
    options = p.options
    receiver = p.receiver
    if receiver is None:
        session = p.session
        if not session.envelope.rcptTo:
            # As for DATA: the handler took every recipient away.
            refuseBdat(p, argument, catalogue.NO_VALID_RECIPIENTS)
            emptyChunkAnswered(p, size, last)
            return
        receiver = p.receiver = _newReceiver(p, ChunkDecoder(options.size), False)
        transferStarted(p)
        receiver.start(p.handler.onData, session)
    decoder = receiver.decoder
    assert isinstance(decoder, ChunkDecoder)
    if decoder.sizeExceeded or (options.size and size > options.size - decoder.byteLength):
        oversized(p, receiver, decoder, size, last)
        emptyChunkAnswered(p, size, last)
        return
    decoder.expect(size, last)
    receiver.reading = True
    if size == 0:
        p.bodyReceived(receiver, b"", 0)
        if not (last or p.closing):
            # emptyChunkAnswered, inline.
            p.countJunk()


def emptyChunkAnswered(p: SessionControl, size: int, last: bool) -> None:
    """
    A BDAT chunk was answered (an empty one at once, whatever its reply):
    if it was empty and not the last, it moved nothing on, and counts as a
    junk command (L{SessionControl.countJunk}), or a client could send it
    without end; counted after its reply, as the commands of
    L{commands._junk <twisted_smtpd._serving.commands._junk>} are.
    Postfix refuses such a chunk instead (C{551 5.7.1 Null BDAT request}),
    failing the transaction, which RFC 3030 does not call for.
    """
    if not (size or last or p.closing):
        p.countJunk()


def oversized(
    p: SessionControl, receiver: MessageReceiver, decoder: ChunkDecoder, size: int, last: bool
) -> None:
    """
    A BDAT chunk of a message that it takes past the size limit, or that
    came after the one that did: its octets are read and dropped (never
    decoded, never buffered), then it is answered 552 5.3.4, as RFC 3030
    section 4.2 allows and Postfix does, and the client learns at once that
    sending more is useless.

    The chunk that passes the limit refuses the message: its stream fails
    with the 552, its C{message} event is its one log line, and it counts
    once towards C{maxErrors}, as a message refused after its end does.
    The chunks after it (sent before the client read the 552, RFC 3030
    section 2) get L{catalogue.BDAT_DISCARDED}, with no log line of their
    own, and each counts towards C{maxErrors} as any refusal does (once,
    however many LMTP recipients); the LAST chunk (one reply per recipient
    in LMTP), or RSET, ends the transaction.  A client gone before the
    last octet of the chunk that refused the message still leaves its
    C{message} event, marked C{unanswered} (L{chunkLost}).  A chunk too
    large to drop (L{dropLimit}) is not read: its reply is sent and the
    session ends.
    """
    # The chunk's octets go to the discard, never to the decoder (a new
    # receiver starts reading); whether it is the LAST one is still told,
    # for the replies a session closing meanwhile owes (repliesOwed).
    receiver.reading = False
    decoder.final = last
    first = not decoder.sizeExceeded
    if first:
        decoder.sizeExceeded = True
        receiver.refuse(catalogue.SIZE_EXCEEDED)
    total = decoder.byteLength + size

    def refused(p: SessionControl, unanswered: bool) -> None:
        count = p.rcptAccepted if last and p.options.lmtp else 1
        replies = (catalogue.SIZE_EXCEEDED,) * count
        p.emit("message", size=total, replies=replies, seconds=None, unanswered=unanswered)

    limit = dropLimit(p, decoder.byteLength, size)
    if limit is not None:
        # Too many octets to drop: the chunk is not read, its refusal is
        # sent and the session ends.
        reply = catalogue.SIZE_EXCEEDED if first else catalogue.BDAT_DISCARDED
        if first:
            refused(p, False)
        for _ in range((p.rcptAccepted if last and p.options.lmtp else 1) - 1):
            p.reply(reply)
        # The message's refusal is its message event: no reject repeats it.
        p.closeForLimit(reply, limit, told=first)
        return

    def read(p: SessionControl) -> None:
        count = p.rcptAccepted if last and p.options.lmtp else 1
        reply = catalogue.SIZE_EXCEEDED if first else catalogue.BDAT_DISCARDED
        if first:
            refused(p, False)
        for _ in range(count):
            p.reply(reply)
        if last:
            p.resetTransaction()
        # Each one, the chunks after the first included: a refusal like
        # any other, or a client could send chunks to drop without end
        # (Postfix's skip_bdat counts each as an error too).
        p.countError()
        if last and p.draining:
            p.closeWith(catalogue.SHUTDOWN)

    if size:
        p.discard = RefusedChunk(
            size, catalogue.BDAT_DISCARDED, read, (lambda p: refused(p, True)) if first else None
        )
    else:
        read(p)


#: The least a BDAT transfer may be read and dropped past the size limit.
DROP_SLACK = 64 * 2**20


def dropLimit(p: SessionControl, taken: int, size: int) -> str | None:
    """
    Whether a BDAT chunk of C{size} octets may be read and dropped, in a
    transfer that took C{taken} octets of its message before: not when
    that takes it past one and a half times the size limit (and at least
    L{DROP_SLACK} past it), as Postfix 3.12's
    C{skip_bdat} stops reading there, or a client could announce a chunk
    of up to 10**18 octets to be dropped and keep its session busy for
    ever (each read resets the idle timeout).  Without a size limit there
    is none.

    @return: The limit the chunk passes, described for a log line, or
        C{None} when it may be dropped.
    """
    most = p.options.size
    if not most:
        return None
    # At least DROP_SLACK past the limit: a client that sends an oversized
    # message in one chunk (without SIZE) reads its 552 after the chunk, as
    # before; a connection closed with its octets unread is reset, and the
    # reset can take the 552 with it (a next hop then answers 451 and
    # retries a message it should bounce).
    most += max(most // 2, DROP_SLACK)
    if taken + size <= most:
        return None
    return f"BDAT discard limit ({most} octets)"


class RefusedChunk:
    """
    The octets of a refused BDAT chunk still to be read and dropped, and the
    reply owed once they are.

    @ivar remaining: Octets still to drop.
    @ivar reply: The refusal, sent after the last octet.
    @ivar done: What answers the chunk after its last octet, in place of
        sending C{reply} as a refused command's.
    @ivar lost: What tells of the chunk when the client goes away before
        its last octet (L{chunkLost}), or C{None} when nothing need be.
    """

    __slots__ = ("done", "lost", "remaining", "reply")

    def __init__(
        self,
        remaining: int,
        reply: Reply,
        done: Callable[[SessionControl], None] | None = None,
        lost: Callable[[SessionControl], None] | None = None,
    ) -> None:
        self.remaining = remaining
        self.reply = reply
        self.done = done
        self.lost = lost


def refuse(p: SessionControl, verb: Verb, argument: bytes, reply: Reply) -> None:
    """
    Refuse a command with C{reply}.  A refused BDAT is still followed by its
    chunk: see L{refuseBdat}.
    """
    if verb is Verb.BDAT:
        refuseBdat(p, argument, reply)
    else:
        p.fail(reply)


def refuseBdat(p: SessionControl, argument: bytes, reply: Reply) -> None:
    """
    Refuse a BDAT command whose chunk follows it.

    RFC 3030 section 2: the octets announced follow the command whatever the
    reply, so they are read and dropped (never buffered, never taken as
    commands) and C{reply} is sent after the last of them; its C{reject}
    event, which names the size as the command's argument, is the one log
    line.  When the size cannot be read, where the chunk ends is unknown:
    the session ends with C{521}, as Postfix does; a chunk too large to
    drop (L{dropLimit}) is not read, and the session ends after C{reply}.
    """
    try:
        size = parseBdat(argument)[0]
    except CommandError:
        malformedBdat(p)
        return
    if size == 0:
        p.fail(reply)
        return
    receiver = p.receiver
    limit = dropLimit(p, 0 if receiver is None else receiver.decoder.byteLength, size)
    if limit is not None:
        p.closeForLimit(reply, limit)
        return
    p.discard = RefusedChunk(size, reply)
    if p.receiver is None:
        transferStarted(p)


def discardRefused(p: SessionControl, refused: RefusedChunk, buffer: bytes, begin: int) -> int:
    """
    Drop what C{buffer[begin:]} holds of a refused BDAT chunk; once it is
    all gone, send the refusal (and take commands again).

    @return: Where what is left of C{buffer} starts.
    """
    take = min(refused.remaining, len(buffer) - begin)
    refused.remaining -= take
    p.times.rateBytes += take
    if not refused.remaining:
        p.discard = None
        if refused.done is None:
            p.fail(refused.reply)
        else:
            refused.done(p)
    return begin + take


def chunkLost(p: SessionControl) -> None:
    """
    The client went away in the middle of a refused BDAT chunk: what it
    refused is told if it must be, as the chunk's last octet would have
    (the C{message} event of a message the chunk took past the size
    limit, marked C{unanswered}: its 552 was never sent).
    """
    refused = p.discard
    if refused is not None:
        p.discard = None
        if refused.lost is not None:
            refused.lost(p)


def malformedBdat(p: CommandContext) -> None:
    """
    A BDAT line without a readable size: close with C{521} (its C{reject}
    event is the one log line).
    """
    p.closeWith(catalogue.BDAT_SYNTAX_CLOSE)
