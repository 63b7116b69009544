# -*- test-case-name: tests.test_protocol -*-
"""
Every wait of a session has a deadline: client silence (C{socketTimeout}),
a command line (or AUTH answer) whose first octets came but whose end does
not (the same timeout, from its first octet, so that a client trickling a
line one octet at a time does not hold the session), replies the client
leaves unread (the same timeout, counted while writing
makes no progress), the TLS handshake (C{tlsHandshakeTimeout}), a message
transfer slower than C{minDataRate} (from the start of DATA, or from a
message's first BDAT chunk to its last), the handler (C{handlerTimeout}: a
hook that has not answered, or a message body the handler stopped reading),
and the close itself: a session that
was told 421 and is still connected L{CLOSE_GRACE} seconds later (its client
does not read, or a TLS handshake never finished) is aborted; a lingering
close (L{lingering <twisted_smtpd._serving.lingering>}) ends within the same
time, or after L{LINGER_SILENCE} seconds without a read.

L{check} is called about once a second for every session by the factory's
single timer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.logger import LogLevel

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.data import ChunkDecoder
from twisted_smtpd._serving import lingering
from twisted_smtpd._serving.flow import PAUSE_WRITE, lostIfReset, socketUnder
from twisted_smtpd._serving.lingering import LINGER_SILENCE
from twisted_smtpd._serving.logging import clientAddress, unlogged
from twisted_smtpd._serving.tlsfailures import TIMEOUT, tellHandshakeFailed

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from twisted_smtpd._core.options import ServerOptions
    from twisted_smtpd._core.replies import Reply
    from twisted_smtpd._serving.context import SessionControl

#: Seconds a polite close (421, then closing once the replies are sent) may
#: take before the connection is aborted.
CLOSE_GRACE = 5.0


class Times:
    """
    When things happened on one connection, for its deadlines.

    @ivar lastActivity: When the client last sent something (or read a
        reply it had left unread, or was kept waiting by a hook).
    @ivar lineSince: When the first octets of a command line still
        incomplete came, or C{None}.
    @ivar handshakeSince: When the TLS handshake in progress began, or
        C{None}.
    @ivar closingSince: When the session began to close.
    @ivar lingerSince: When the sending side of a lingering close was shut
        (L{lingering <twisted_smtpd._serving.lingering>}), or C{None}.
    @ivar rateSince: When the current C{minDataRate} window began.
    @ivar rateBytes: Octets of the message transfer in that window.
    @ivar pendingSeen: Octets waiting in the send buffer at the last check,
        while the client does not read.
    @ivar waitSince: When the session began to wait for a hook to answer,
        or C{None}.
    @ivar waitingFor: What the session waits for since C{waitSince}, for
        the log line when it times out (C{"onRcptTo did not answer"}).
    @ivar streamSince: When the handler stopped reading the message body
        (its stream paused the reading), or C{None}.  Apart from
        C{waitSince}: between two BDAT chunks a hook (C{onHelo}) may run
        while the stream is paused, and the end of either wait must not end
        the deadline of the other.
    """

    __slots__ = (
        "closingSince",
        "handshakeSince",
        "lastActivity",
        "lineSince",
        "lingerSince",
        "pendingSeen",
        "rateBytes",
        "rateSince",
        "streamSince",
        "waitSince",
        "waitingFor",
    )

    def __init__(self) -> None:
        self.lastActivity = self.closingSince = self.rateSince = 0.0
        self.handshakeSince: float | None = None
        self.lineSince: float | None = None
        self.lingerSince: float | None = None
        self.waitSince: float | None = None
        self.waitingFor = ""
        self.streamSince: float | None = None
        self.pendingSeen = self.rateBytes = 0


class Waiting(Protocol):
    """
    A session that may wait for its handler.
    """

    times: Times

    @property
    def clock(self) -> IReactorTime: ...


def pendingBytes(transport: object) -> int | None:
    """
    How many bytes wait in the send buffer of the socket under C{transport}
    (through TLS and PROXY wrappers), or C{None} when it cannot be told.
    """
    for _ in range(4):
        buffered: Any = getattr(transport, "dataBuffer", None)
        if isinstance(buffered, bytes | memoryview | bytearray):
            t: Any = transport
            return len(buffered) - int(getattr(t, "offset", 0)) + int(getattr(t, "_tempDataLen", 0))
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def interval(options: ServerOptions) -> float:
    """
    How often the factory's timer should call L{check}.
    """
    shortest: float = min(
        options.socketTimeout, options.tlsHandshakeTimeout, options.handlerTimeout, CLOSE_GRACE
    )
    if options.minDataRate is not None:
        shortest = min(shortest, options.minDataRate[1])
    return min(1.0, shortest / 4)


def check(p: SessionControl, now: float) -> None:
    """
    Enforce C{p}'s deadlines at time C{now}.
    """
    if not p.connected:
        return
    session = p.session.id
    client = clientAddress(p.session.remoteAddress)
    if p.closing:
        if p.times.lingerSince is not None:
            # A lingering close: its bounds, with a line at debug level.
            if now - p.times.lastActivity >= LINGER_SILENCE:
                bound = f"silence ({LINGER_SILENCE:g} s)"
            elif now - p.times.closingSince >= CLOSE_GRACE:
                bound = f"time limit ({CLOSE_GRACE:g} s)"
            else:
                return
            if lingering.cut(p, bound):
                return
        if now - p.times.closingSince >= CLOSE_GRACE:
            if not p.refused and not unlogged(p):
                # A connection refused at connect has its one line, the
                # refusal: an implicit TLS client that never finishes the
                # handshake its 421 waits for adds none.
                p.log.info(
                    "{session} {client} close not done after {seconds:g} s: connection aborted",
                    session=session,
                    client=client,
                    seconds=CLOSE_GRACE,
                )
            p.abort()
        return
    options = p.options
    if p.times.handshakeSince is not None:
        if now - p.times.handshakeSince >= options.tlsHandshakeTimeout:
            # Logged here: not again as a failed handshake.
            p.times.handshakeSince = None
            if not unlogged(p):
                p.log.info(
                    "{session} {client} TLS handshake timeout ({seconds:g} s): connection aborted",
                    session=session,
                    client=client,
                    seconds=options.tlsHandshakeTimeout,
                )
                tellHandshakeFailed(p, TIMEOUT, "handshake timeout")
            p.abort()
        return
    late = _handlerLate(p.times, now, options.handlerTimeout)
    if late is not None:
        # Before the replies left unread: a client reading them a few
        # octets at a time would otherwise keep the session, and the late
        # hook with it, for as long as it likes.
        handlerTimedOut(p, late)
        return
    receiver = p.receiver
    if receiver is not None:
        # Short body pieces held to be joined wait a second at most: a
        # handler passing the body on does not leave its next hop waiting
        # past its own timeout for the next 4 KiB of a trickling body.
        receiver.flushHeld()
    if p.pauses & PAUSE_WRITE:
        # The client does not read its replies: only progress in sending
        # them counts as its activity.
        pending = pendingBytes(p.transport)
        if pending is not None and pending < p.times.pendingSeen:
            p.times.lastActivity = now
        p.times.pendingSeen = pending if pending is not None else 0
        if now - p.times.lastActivity >= options.socketTimeout:
            timeout(p, "write timeout: replies unread")
        return
    p.times.pendingSeen = 0
    if p.waiting or p.pauses:
        if lostIfReset(socketUnder(p.transport)):
            # Reset while the session did not read: it ends now, not when
            # the hook answers or the handler reads again.
            return
        # Waiting for our own hook or a slow handler is not the client's
        # silence; the handler has its own deadline (L{_handlerLate}).
        p.times.lastActivity = now
        if p.times.lineSince is not None:
            p.times.lineSince = now
        p.times.rateSince = now
        p.times.rateBytes = 0
        return
    if now - p.times.lastActivity >= options.socketTimeout:
        timeout(p, "timeout")
        return
    lineSince = p.times.lineSince
    if lineSince is not None and now - lineSince >= options.socketTimeout:
        timeout(p, "timeout: command line incomplete")
        return
    rate = options.minDataRate
    if rate is None or (p.receiver is None and p.discard is None):
        # Only a message transfer (or a refused BDAT chunk being dropped) is
        # measured; its first window starts with it (L{transferStarted}).  A
        # BDAT message is measured from its first chunk to its last, the
        # time between chunks included.
        return
    least, seconds = rate
    if now - p.times.rateSince >= seconds:
        if p.times.rateBytes < least:
            if not unlogged(p):
                p.log.info(
                    "{session} {client} data rate below {least} bytes per {seconds:g} s "
                    "({received} bytes): connection closed",
                    session=session,
                    client=client,
                    least=least,
                    seconds=seconds,
                    received=p.times.rateBytes,
                )
            closeOwing(p, catalogue.TOO_SLOW)
            return
        p.times.rateSince = now
        p.times.rateBytes = 0


def lineStarted(p: SessionControl, incomplete: bool) -> None:
    """
    The first octets of a command line are in, without its end (or the
    rest of a line refused as too long is still coming, when
    C{incomplete}): its deadline runs from the first.  With C{incomplete}
    false, the line ended.
    """
    times = p.times
    if not incomplete:
        times.lineSince = None
    elif times.lineSince is None:
        times.lineSince = p.clock.seconds()


def transferStarted(p: SessionControl) -> None:
    """
    A message transfer begins (DATA, the first BDAT chunk of a message, or
    a refused chunk to drop): its first C{minDataRate} window starts now.
    """
    p.times.rateSince = p.clock.seconds()
    p.times.rateBytes = 0


def timeout(p: SessionControl, what: str) -> None:
    """
    Log C{what} timed out, answer 421 and close.  A message in progress is
    dropped, and the line says so, with how much of it had come, as
    Postfix logs C{timeout after DATA (N bytes)}.
    """
    text = "{session} {client} {what} ({seconds:g} s)"
    receiver = p.receiver
    if receiver is not None:
        command = "BDAT" if isinstance(receiver.decoder, ChunkDecoder) else "DATA"
        what += f" during {command} after {receiver.decoder.byteLength} bytes"
        text += ": message dropped"
    level = None if unlogged(p) else LogLevel.info
    _closeLate(p, catalogue.TIMEOUT, level, text, what, p.options.socketTimeout)


def _closeLate(
    p: SessionControl,
    reply: Reply,
    level: LogLevel | None,
    text: str,
    what: str,
    seconds: float,
) -> None:
    """
    End C{p} on a deadline: one log line at C{level} (C{text} gets the
    session, the client, C{what} was late and the deadline's C{seconds};
    none when C{level} is C{None}), the message in progress dropped with
    C{reply}, then C{reply} and close.
    """
    if level is not None:
        p.log.emit(
            level,
            text,
            session=p.session.id,
            client=clientAddress(p.session.remoteAddress),
            what=what,
            seconds=seconds,
        )
    closeOwing(p, reply)


def repliesOwed(p: SessionControl) -> int:
    """
    How many replies the client waits for now: one, but in LMTP, once a
    message's body is being sent with DATA or with its LAST BDAT chunk (or
    has ended and awaits its replies), one per accepted recipient (RFC 2033
    section 4.2).
    """
    receiver = p.receiver
    if receiver is None or not p.options.lmtp:
        return 1
    decoder = receiver.decoder
    if isinstance(decoder, ChunkDecoder) and not decoder.final:
        # A chunk before the LAST one, or between two: one reply per BDAT.
        return 1
    return p.rcptAccepted


def closeOwing(p: SessionControl, reply: Reply) -> None:
    """
    Drop the message in progress with C{reply}, send C{reply} as every reply
    the client waits for (L{repliesOwed}), then close.  An LMTP client
    waiting for one reply per recipient gets C{reply} for each, as Dovecot's
    LMTP server fails every reply of a command it fails, not the first
    recipient's alone and a closed connection for the others (which Postfix
    takes as a message that may be sent more than once).
    """
    count = repliesOwed(p)
    p.abandonMessage(reply)
    for _ in range(count - 1):
        p.reply(reply)
    p.closeWith(reply)


def waitForHandler(p: Waiting, what: str) -> None:
    """
    The session waits for a hook of its handler from now on.  L{check}
    ends the wait after C{handlerTimeout}, logging C{what} it waited for.
    """
    times = p.times
    times.waitSince = p.clock.seconds()
    times.waitingFor = what


def handlerAnswered(p: Waiting) -> None:
    """
    The hook the session waited for answered.
    """
    p.times.waitSince = None


#: What a session whose handler stopped reading its message waits for.
STOPPED_READING = "onData stopped reading the message"


def streamPaused(p: Waiting, paused: bool) -> None:
    """
    The handler stopped reading the message body (C{paused}), or reads it
    again: while it does not, L{check} ends the session after
    C{handlerTimeout}, whatever hooks begin and end meanwhile.
    """
    p.times.streamSince = p.clock.seconds() if paused else None


def _handlerLate(times: Times, now: float, limit: float) -> str | None:
    """
    What the session has waited for from its handler for C{limit} seconds
    or more at C{now} (a hook's answer, or the reading of the message), or
    C{None}.
    """
    since = times.waitSince
    if since is not None and now - since >= limit:
        return times.waitingFor
    since = times.streamSince
    if since is not None and now - since >= limit:
        return STOPPED_READING
    return None


def handlerTimedOut(p: SessionControl, what: str) -> None:
    """
    The handler did not answer within C{handlerTimeout}: log C{what} the
    session waited for, answer 421 and close.  The hook is left to finish,
    as when a client leaves in the middle of it: what it answers then is
    not sent, C{onClose} tells the handler the session ended, and a
    message C{onData} still accepts is a C{message} event marked
    C{unanswered} (its client was told 421 and will send it again).
    """
    times = p.times
    times.waitSince = times.streamSince = None
    _closeLate(
        p,
        catalogue.HANDLER_TIMEOUT,
        LogLevel.warn,
        "{session} {client} handler timeout: {what} ({seconds:g} s)",
        what,
        p.options.handlerTimeout,
    )


def shutdown(p: SessionControl, force: bool) -> None:
    """
    The server is closing: end C{p} with 421 now when it is idle (or when
    C{force}), else once its transaction is over; abort it at once in the
    middle of a TLS handshake, where no 421 can reach the client.  A
    transaction cut by C{force} (C{closeTimeout} is over) leaves one log
    line (none for a client of C{ignoredHosts}): its message, if any, was
    not accepted.
    """
    p.draining = True
    if p.closing:
        # A lingering close ends now (a server that stops does not linger).
        lingering.stop(p)
        return
    if p.times.handshakeSince is not None:
        if not unlogged(p):
            p.log.info(
                "{session} {client} shutdown during the TLS handshake: connection aborted",
                session=p.session.id,
                client=clientAddress(p.session.remoteAddress),
            )
        p.times.handshakeSince = None
        p.abort()
    elif not p.inTransaction():
        closeOwing(p, catalogue.SHUTDOWN)
    elif force:
        if not unlogged(p):
            p.log.info(
                "{session} {client} shutdown: transaction cut after the close timeout"
                " ({seconds:g} s)",
                session=p.session.id,
                client=clientAddress(p.session.remoteAddress),
                seconds=p.options.closeTimeout,
            )
        closeOwing(p, catalogue.SHUTDOWN)
