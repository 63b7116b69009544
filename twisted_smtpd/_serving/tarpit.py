# -*- test-case-name: tests.test_errorsleep -*-
"""
Postfix's error tarpit (C{smtpd_soft_error_limit} and
C{smtpd_error_sleep_time}): a client that has made C{softErrorLimit}
errors without delivering a message gets every further reply
C{errorSleep} seconds late, its refusals and the replies that accept
alike, so that harvesting recipients or guessing passwords goes at one
answer per C{errorSleep} until C{maxErrors} ends the session.

Postfix's C{smtpd_chat_reply} sleeps before writing any reply while
C{error_count >= smtpd_soft_error_limit}, reading nothing meanwhile.
Here each reply is held by a timer of the reactor, and the session holds
the commands read behind it as it does for a hook that has not answered
(L{SessionControl.holdForHook
<twisted_smtpd._serving.context.SessionControl.holdForHook>}): one reply
(with any other the same command's handling adds) is held at a time,
never a queue.

The switch costs a session under the limit nothing per reply: when the
error count reaches C{softErrorLimit} (where an error is counted, a path
only refusals take), L{ErrorTarpit.intercept} puts the tarpit's L{hold
<ErrorTarpit.hold>} in the session's own attributes as its C{reply},
ahead of the class's method; the count forgiven (a message accepted) or
the session ending takes it away again.  The L{ErrorTarpit} is made the
first time, with its one log line.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Protocol

from twisted.logger import Logger

from twisted_smtpd._serving.deadlines import Times, handlerAnswered
from twisted_smtpd._serving.flow import PAUSE_HOOK
from twisted_smtpd._serving.logging import NAMESPACE, clientAddress

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from twisted_smtpd._core.options import ServerOptions
    from twisted_smtpd._core.replies import Reply
    from twisted_smtpd._core.session import Session

_sessionLog = Logger(namespace=NAMESPACE)

#: A held reply: the reply, and whether it is made once per text from
#: outside (C{perText} of the session's C{reply}).
Held = tuple["Reply", bool]


class Holding(Protocol):
    """
    A session, as its tarpit holds it.
    """

    session: Session
    times: Times
    closing: bool

    @property
    def options(self) -> ServerOptions: ...

    @property
    def clock(self) -> IReactorTime: ...

    def reply(self, reply: Reply, perText: bool = False) -> None: ...

    def holdForHook(self) -> int: ...

    def hookAnswered(self, token: int) -> None: ...

    def setPause(self, reason: int, paused: bool) -> None: ...


class ErrorTarpit:
    """
    The replies a session past C{softErrorLimit} holds, and the timer that
    sends them.

    @ivar held: The replies being held, in order: those of one command's
        handling (a session holding one handles no other command), or
        none.
    """

    __slots__ = ("_after", "_call", "_then", "_token", "held")

    def __init__(self, p: Holding, errors: int) -> None:
        """
        Log, once per session, that it reached the soft limit: one line in
        the C{twisted_smtpd.session} namespace whether or not sessions are
        logged, as for the other limits.

        @param errors: The errors counted so far.
        """
        self._call: IDelayedCall | None = None
        self._after: list[Callable[[], None]] = []
        self._then: Callable[[], None] | None = None
        self._token = 0
        self.held: list[Held] = []
        _sessionLog.info(
            "{session} {client} soft error limit reached ({errors} errors):"
            " replies delayed by {seconds:g} s",
            session=p.session.id,
            client=clientAddress(p.session.remoteAddress),
            errors=errors,
            seconds=p.options.errorSleep,
        )

    @property
    def holding(self) -> bool:
        """
        Whether a reply is held now.
        """
        return self._call is not None

    def intercept(self, p: Holding) -> None:
        """
        From now on, every reply of C{p} is held (L{hold}): its error count
        reached C{softErrorLimit}.
        """
        # An attribute of the session's own, found before the class's
        # method: the sessions under the limit keep the method, unchanged.
        vars(p)["reply"] = partial(self.hold, p)

    def _restore(self, p: Holding) -> None:
        # The class's reply again, at once.
        vars(p).pop("reply", None)

    def hold(self, p: Holding, reply: Reply, perText: bool = False) -> None:
        """
        Hold C{reply} for C{errorSleep} seconds, then send it and take
        commands again; commands read meanwhile wait.  A reply added while
        one is held (by the same command's handling: one per LMTP
        recipient) goes with it.

        @param perText: As for the session's C{reply}.
        """
        self.held.append((reply, perText))
        if self._call is not None:
            return
        # A hook's answer: the hook answered, and the time its reply is
        # held is not the handler's (handlerTimeout).
        handlerAnswered(p)
        self._token = p.holdForHook()
        self._call = p.clock.callLater(p.options.errorSleep, self._release, p)

    def later(self, f: Callable[[], None]) -> None:
        """
        Call C{f} once the held reply is sent (the count of a held refusal:
        the one that reaches C{maxErrors} is late too, and the 421 follows
        it).
        """
        self._after.append(f)

    def then(self, f: Callable[[], None]) -> None:
        """
        Call C{f} once the held reply is sent, in place of taking commands
        again (the switch to TLS after the 220 of STARTTLS, which holds
        them until the handshake): reading goes on meanwhile.
        """
        self._then = f

    def _send(self, p: Holding) -> Callable[[], None] | None:
        # Send the held replies with the class's reply, then what waited
        # for them; what comes next (then) is the caller's.
        held, after, then = self.held, self._after, self._then
        self._call = self._then = None
        self.held, self._after = [], []
        send = type(p).reply
        for reply, perText in held:
            send(p, reply, perText)
        for f in after:
            f()
        return then

    def _release(self, p: Holding) -> None:
        then = self._send(p)
        if then is not None and not p.closing:
            p.setPause(PAUSE_HOOK, False)
            then()
        else:
            p.hookAnswered(self._token)

    def releaseNow(self, p: Holding) -> None:
        """
        Send the held reply now and take commands again, and hold no reply
        after it (the client shut its sending side: holding its last
        replies would only keep its connection).
        """
        self._restore(p)
        call = self._call
        if call is not None:
            call.cancel()
            self._release(p)

    def leave(self, p: Holding) -> None:
        """
        Hold no reply from now on, and send the held reply at once (a
        message accepted forgives the errors before it: Postfix's
        C{common_post_message_handling} resets C{error_count} before its
        250, which is not delayed).  The caller takes commands again.
        """
        self._restore(p)
        call = self._call
        if call is not None:
            call.cancel()
            self._send(p)

    def cancel(self, p: Holding) -> list[Held]:
        """
        Stop holding: the session ends.

        @return: The replies that were held, for a session that closes to
            send before its last reply; none when the held reply is the
            C{220} of STARTTLS (L{then}): a client starts its handshake on
            that reply, and would read the plaintext reply that closes the
            session behind it as TLS records (a record that does not
            decrypt), so the closing reply alone answers STARTTLS (RFC 5321
            section 3.8: a C{421} may answer any command).
        """
        self._restore(p)
        call, held = self._call, self.held
        if self._then is not None:
            held = []
        self._call = self._then = None
        self.held, self._after = [], []
        if call is not None:
            call.cancel()
        return held
