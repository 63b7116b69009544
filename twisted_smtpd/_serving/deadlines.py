# -*- test-case-name: tests.test_protocol -*-
"""
Every wait of a session has a deadline: client silence (C{socketTimeout}),
replies the client leaves unread (the same timeout, counted while writing
makes no progress), the TLS handshake (C{tlsHandshakeTimeout}), a message
transfer slower than C{minDataRate} (from the start of DATA, or from a
message's first BDAT chunk to its last), and the close itself: a session that
was told 421 and is still connected L{CLOSE_GRACE} seconds later (its client
does not read, or a TLS handshake never finished) is aborted.

L{check} is called about once a second for every session by the factory's
single timer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._serving.flow import PAUSE_WRITE

if TYPE_CHECKING:
    from twisted_smtpd._core.options import ServerOptions
    from twisted_smtpd._serving.protocol import SMTPProtocol

#: Seconds a polite close (421, then closing once the replies are sent) may
#: take before the connection is aborted.
CLOSE_GRACE = 5.0


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
    shortest: float = min(options.socketTimeout, options.tlsHandshakeTimeout, CLOSE_GRACE)
    if options.minDataRate is not None:
        shortest = min(shortest, options.minDataRate[1])
    return min(1.0, shortest / 4)


def check(p: SMTPProtocol, now: float) -> None:
    """
    Enforce C{p}'s deadlines at time C{now}.
    """
    if not p._connected:
        return
    session = p.session.id
    client = p.session.remoteAddress[0]
    if p._closing:
        if now - p._closingSince >= CLOSE_GRACE:
            p._log.info(
                "{session} {client} close not done after {seconds:g} s: connection aborted",
                session=session,
                client=client,
                seconds=CLOSE_GRACE,
            )
            abort(p)
        return
    options = p._options
    if p._handshakeSince is not None:
        if now - p._handshakeSince >= options.tlsHandshakeTimeout:
            p._log.info(
                "{session} {client} TLS handshake timeout ({seconds:g} s): connection aborted",
                session=session,
                client=client,
                seconds=options.tlsHandshakeTimeout,
            )
            abort(p)
        return
    if p._pauses & PAUSE_WRITE:
        # The client does not read its replies: only progress in sending
        # them counts as its activity.
        pending = pendingBytes(p.transport)
        if pending is not None and pending < p._pendingSeen:
            p._lastActivity = now
        p._pendingSeen = pending if pending is not None else 0
        if now - p._lastActivity >= options.socketTimeout:
            timeout(p, "write timeout: replies unread")
        return
    p._pendingSeen = 0
    if p._waiting or p._pauses:
        # Waiting for our own hook or a slow handler is not the client's
        # silence.
        p._lastActivity = now
        p._rateSince = now
        p._rateBytes = 0
        return
    if now - p._lastActivity >= options.socketTimeout:
        timeout(p, "timeout")
        return
    rate = options.minDataRate
    if rate is None or (p._receiver is None and p._discard is None):
        # Only a message transfer (or a refused BDAT chunk being dropped) is
        # measured; its first window starts with it (L{transferStarted}).  A
        # BDAT message is measured from its first chunk to its last, the
        # time between chunks included.
        return
    least, seconds = rate
    if now - p._rateSince >= seconds:
        if p._rateBytes < least:
            p._log.info(
                "{session} {client} data rate below {least} bytes per {seconds:g} s "
                "({received} bytes): connection closed",
                session=session,
                client=client,
                least=least,
                seconds=seconds,
                received=p._rateBytes,
            )
            p.abandonMessage(catalogue.TOO_SLOW)
            p._closeWith(catalogue.TOO_SLOW)
            return
        p._rateSince = now
        p._rateBytes = 0


def transferStarted(p: SMTPProtocol) -> None:
    """
    A message transfer begins (DATA, the first BDAT chunk of a message, or
    a refused chunk to drop): its first C{minDataRate} window starts now.
    """
    p._rateSince = p._clock.seconds()
    p._rateBytes = 0


def timeout(p: SMTPProtocol, what: str) -> None:
    """
    Log C{what} timed out, answer 421 and close.
    """
    p._log.info(
        "{session} {client} {what} ({seconds:g} s)",
        session=p.session.id,
        client=p.session.remoteAddress[0],
        what=what,
        seconds=p._options.socketTimeout,
    )
    p.abandonMessage(catalogue.TIMEOUT)
    p._closeWith(catalogue.TIMEOUT)


def abort(p: SMTPProtocol) -> None:
    """
    Drop the connection now, whatever is still queued.
    """
    p.abandonMessage(catalogue.TIMEOUT)
    p._closing = True
    p._closingSince = p._clock.seconds()
    p._buffer = b""
    transport: Any = p.transport
    transport.abortConnection()


def shutdown(p: SMTPProtocol, force: bool) -> None:
    """
    The server is closing: end C{p} with 421 now when it is idle (or when
    C{force}), else once its transaction is over; abort it at once in the
    middle of a TLS handshake, where no 421 can reach the client.
    """
    p._draining = True
    if p._closing:
        return
    if p._handshakeSince is not None:
        p._log.info(
            "{session} {client} shutdown during the TLS handshake: connection aborted",
            session=p.session.id,
            client=p.session.remoteAddress[0],
        )
        abort(p)
    elif force or not p.inTransaction():
        p.abandonMessage(catalogue.SHUTDOWN)
        p._closeWith(catalogue.SHUTDOWN)
