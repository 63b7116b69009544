# -*- test-case-name: tests.test_errorsleep -*-
"""
Postfix's error tarpit (C{smtpd_soft_error_limit} and
C{smtpd_error_sleep_time}): a client that has made C{softErrorLimit}
errors without delivering a message gets each further refusal of a command
C{errorSleep} seconds late, so that harvesting recipients or guessing
passwords goes at one answer per C{errorSleep} until C{maxErrors} ends the
session.

Postfix sleeps before writing the reply, reading nothing meanwhile.  Here
the refusal is held by a timer of the reactor, and the session holds the
commands read behind it as it does for a hook that has not answered
(L{SessionControl.holdForHook
<twisted_smtpd._serving.context.SessionControl.holdForHook>}): the held
refusal is one reply, never a queue.  An L{ErrorTarpit} is made the first
time a session's refusal is held, with its one log line; a session that
never gets there costs nothing but the comparison of its error count with
the limit where a refusal is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from twisted.logger import Logger

from twisted_smtpd._serving.deadlines import Times, handlerAnswered
from twisted_smtpd._serving.logging import NAMESPACE, clientAddress

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from twisted_smtpd._core.options import ServerOptions
    from twisted_smtpd._core.replies import Reply
    from twisted_smtpd._core.session import Session

_sessionLog = Logger(namespace=NAMESPACE)


class Holding(Protocol):
    """
    A session, as its tarpit holds it.
    """

    session: Session
    times: Times

    @property
    def options(self) -> ServerOptions: ...

    @property
    def clock(self) -> IReactorTime: ...

    def holdForHook(self) -> int: ...

    def hookAnswered(self, token: int) -> None: ...


class ErrorTarpit:
    """
    The refusal a session past C{softErrorLimit} holds, and the timer that
    sends it.

    @ivar held: The refusals being held, in order: one (a session holding
        one handles no command), or none.
    """

    __slots__ = ("_call", "_send", "_token", "held")

    def __init__(self, p: Holding, errors: int) -> None:
        """
        Log, once per session, that it passed the soft limit: one line in
        the C{twisted_smtpd.session} namespace whether or not sessions are
        logged, as for the other limits.

        @param errors: The errors counted so far.
        """
        self._call: IDelayedCall | None = None
        self._send: Callable[[Reply], None] | None = None
        self._token = 0
        self.held: list[Reply] = []
        _sessionLog.info(
            "{session} {client} soft error limit reached ({errors} errors):"
            " refusals delayed by {seconds:g} s",
            session=p.session.id,
            client=clientAddress(p.session.remoteAddress),
            errors=errors,
            seconds=p.options.errorSleep,
        )

    def hold(self, p: Holding, reply: Reply, send: Callable[[Reply], None]) -> None:
        """
        Hold C{reply} for C{errorSleep} seconds, then C{send} it and take
        commands again; commands read meanwhile wait.

        @param send: What sends C{reply} and counts it.
        """
        self.held.append(reply)
        if self._call is not None:
            # A second refusal of the same command's handling: it follows
            # the first, with it.
            return
        self._send = send
        # A hook's refusal: the hook answered, and the time the refusal is
        # held is not the handler's (handlerTimeout).
        handlerAnswered(p)
        self._token = p.holdForHook()
        self._call = p.clock.callLater(p.options.errorSleep, self._release, p)

    def _release(self, p: Holding) -> None:
        held, send = self.held, self._send
        self._call = self._send = None
        self.held = []
        assert send is not None
        for reply in held:
            send(reply)
        p.hookAnswered(self._token)

    def releaseNow(self, p: Holding) -> None:
        """
        Send the held refusal now and take commands again (the client shut
        its sending side: holding its last replies would only keep its
        connection).
        """
        call = self._call
        if call is not None:
            call.cancel()
            self._release(p)

    def cancel(self) -> list[Reply]:
        """
        Stop holding: the session ends.

        @return: The refusals that were held, for a session that closes to
            send before its last reply.
        """
        call, held = self._call, self.held
        self._call = self._send = None
        self.held = []
        if call is not None:
            call.cancel()
        return held
