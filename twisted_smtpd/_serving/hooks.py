# -*- test-case-name: tests.test_protocol -*-
"""
Calling handler hooks: a plain value is used as it is, with no Deferred made
on the hot path; C{async def} hooks go through C{txaio.as_future}, their
answer awaited until it is no Deferred or coroutine; a Deferred is waited
for.  And checking a handler when the server is built
(L{checkHandler}).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from inspect import iscoroutinefunction
from time import perf_counter
from types import CoroutineType
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.answercodes import answerCode, startsWithCode
from twisted_smtpd._core.errors import SMTPError, logText
from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.replies import Reply
from twisted_smtpd._core.session import Envelope, Session
from twisted_smtpd._serving.deadlines import waitForHandler
from twisted_smtpd._serving.hookanswers import codeRefusal, replyTextRefusal
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers._hookcheck import HOOKS, presentHooks
from twisted_smtpd.interfaces import ISMTPHandler

if TYPE_CHECKING:
    from twisted_smtpd._serving.context import CommandContext, SessionControl

#: C{txaio.as_future} for Twisted, set at the first coroutine a hook gives
#: (L{_loadAsFuture}): a server whose hooks are plain functions never loads
#: txaio.
_asFuture: Callable[..., Deferred[Any]] | None = None


def _loadAsFuture() -> Callable[..., Deferred[Any]]:
    """
    Load txaio, select Twisted and keep its C{as_future} in L{_asFuture}.
    """
    global _asFuture
    import txaio

    # txaio selects its framework at run time, so its API is not typed
    # statically.
    api: Any = txaio
    api.use_twisted()
    asFuture: Callable[..., Deferred[Any]] = api.as_future
    _asFuture = asFuture
    return asFuture


_ASYNC: dict[Any, bool] = {}

_log = Logger()


def _isAsync(fn: Callable[..., object]) -> bool:
    key = getattr(fn, "__func__", fn)
    known = _ASYNC.get(key)
    if known is None:
        known = iscoroutinefunction(key)
        if len(_ASYNC) < 4096:
            _ASYNC[key] = known
    return known


def callHook(fn: Callable[..., object], *args: object) -> object:
    """
    Call a hook.

    @return: Its plain result, or a L{Deferred} when it answers later (an
        C{async def} hook, a Deferred, or a coroutine returned by a plain
        function).
    @raise BaseException: Whatever the hook raised synchronously.
    """
    # _isAsync, inline: every message's onData comes this way.
    key = getattr(fn, "__func__", fn)
    known = _ASYNC.get(key)
    if known is None:
        known = _isAsync(fn)
    if known:
        answer: Deferred[Any] = (_asFuture or _loadAsFuture())(_answerOf, fn(*args))
        return answer
    result = fn(*args)
    if isinstance(result, CoroutineType):
        later: Deferred[Any] = (_asFuture or _loadAsFuture())(_answerOf, result)
        return later
    return result


async def _answerOf(coroutine: Coroutine[Any, Any, object]) -> object:
    """
    What a hook's coroutine answers: its return value, or, when that is a
    L{Deferred} or a coroutine again (an C{async def} hook returning
    C{self.lookup(address)} without awaiting it), what that gives, waited
    for.  Taken as a plain value, a Deferred would accept at once whatever
    it fires with later (a refusal, then logged as unhandled); handed back
    to Twisted as a coroutine's result, older versions fail an assertion
    inside the callback that resumed the coroutine, and the hook never
    answers.
    """
    answer = await coroutine
    while isinstance(answer, Deferred | CoroutineType):
        answer = await answer
    return answer


#: BaseHandler's hooks that only accept: a handler that inherits them is not
#: called for them at all.
ACCEPTING_DEFAULTS = frozenset(
    {
        BaseHandler.onConnect,
        BaseHandler.onHelo,
        BaseHandler.onSecure,
        BaseHandler.onMailFrom,
        BaseHandler.onRcptTo,
    }
)


class _CompletedHandler(BaseHandler):
    """
    A handler that provides only some hooks, completed with the accepting
    defaults of L{BaseHandler} for the others (as aiosmtpd does).

    @ivar wrapped: The handler given.
    @ivar close: The handler's own C{close}, when it has one: the server's
        stop calls it to close the handler's connections.
    """

    close: Callable[[], object]

    def __init__(self, wrapped: object, present: Sequence[str]) -> None:
        self.wrapped = wrapped
        for name in present:
            setattr(self, name, getattr(wrapped, name))
        close = getattr(wrapped, "close", None)
        if callable(close):
            self.close = close

    def __repr__(self) -> str:
        return f"<completed {self.wrapped!r}>"


def checkHandler(handler: object) -> ISMTPHandler:
    """
    Check a handler when the server is built, not at the first connection
    (L{presentHooks}): a handler may provide only some hooks; the others
    accept, as L{BaseHandler}'s do.

    @return: C{handler}, or when it lacks hooks, a handler completed with
        the defaults.
    @raise TypeError: Naming the handler's class and the attribute.
    """
    present = presentHooks(handler, "handler")
    if len(present) == len(HOOKS):
        return cast(ISMTPHandler, handler)
    return _CompletedHandler(handler, present)


def failureReply(failure: Failure, log: Callable[[Failure], None]) -> Reply:
    """
    The reply for a failed hook: an L{SMTPError}'s own, else 451 after
    logging the traceback.
    """
    value = failure.value
    if isinstance(value, SMTPError):
        return errorReply(value)
    log(failure)
    return catalogue.LOCAL_ERROR


#: The enhanced status codes already warned of, with their reply codes: one
#: line each, for at most this many.
_warnedEnhanced: set[tuple[int, str]] = set()
_MAX_WARNED_ENHANCED = 256


def errorReply(error: SMTPError) -> Reply:
    """
    The reply for a handler's L{SMTPError}.  An enhanced status code that
    is malformed or of another class than the reply code (C{SMTPError(550,
    "...", "4.1.1")}) is sent as the generic one of the code's class
    (RFC 3463 section 3), and logged once so that the handler's author
    sees it.
    """
    reply = error.toReply()
    enhanced = error.enhanced
    if enhanced is not None and reply.enhanced != enhanced:
        key = (error.code, enhanced[:40])
        if key not in _warnedEnhanced and len(_warnedEnhanced) < _MAX_WARNED_ENHANCED:
            _warnedEnhanced.add(key)
            _log.warn(
                "A handler's SMTPError({code}, ...) has the enhanced status code {enhanced},"
                " malformed or not of the reply code's class: sent as {sent}; logged once",
                code=error.code,
                enhanced=repr(printable(enhanced[:40])),
                sent=reply.enhanced,
            )
    return reply


def resetEnhancedWarnings() -> None:
    """
    Forget which enhanced status codes were warned of.
    """
    _warnedEnhanced.clear()


def runHook(
    p: SessionControl,
    fn: Callable[..., object],
    args: tuple[object, ...],
    accepted: Callable[[object], None],
    refused: Callable[[Reply], None],
) -> None:
    """
    Call a handler hook for session C{p}.  A plain value is handled at
    once; a Deferred or coroutine holds commands until it answers, so
    replies stay in order.  For observers that want it, each answer is a C{hook} event
    with the time it took.
    """
    if getattr(fn, "__func__", None) in ACCEPTING_DEFAULTS:
        # BaseHandler's default accepts: nothing to call.
        accepted(None)
        return
    factory = p.server
    started = perf_counter() if factory is not None and "hook" in factory.wanted else 0.0
    kept = keptAttributes(p.session)
    try:
        result = callHook(fn, *args)
    except SMTPError as e:
        _timed(p, fn, started)
        keptSession(p, fn, kept)
        refused(errorReply(e) if e.code >= 400 else _refusal(p, fn, Failure()))
        return
    except BaseException:
        # As a Deferred takes it: a hook's KeyboardInterrupt, SystemExit or
        # asyncio.CancelledError is its failure, answered 451.  Left to the
        # reactor, it would drop the connection with no reply (or leave it
        # without its greeting, raised by onConnect).
        _timed(p, fn, started)
        keptSession(p, fn, kept)
        refused(_refusal(p, fn, Failure()))
        return
    if not isinstance(result, Deferred):
        _timed(p, fn, started)
        returned = returnedFailure(result)
        bug = keptSession(p, fn, kept)
        if returned is not None:
            refused(_refusal(p, fn, returned))
        elif bug is not None:
            refused(bug)
        elif result is not None and (reply := _answerRefusal(p, fn, result)):
            refused(reply)
        else:
            accepted(result)
        return
    token = p.holdForHook()
    waitForHandler(p, f"{_name(fn)} did not answer")

    def ok(value: object) -> None:
        returned = returnedFailure(value)
        if returned is not None:
            failed(returned)
            return
        _timed(p, fn, started)
        bug = keptSession(p, fn, kept)
        if p.connected and not p.closing:
            if bug is not None:
                refused(bug)
            elif value is not None and (reply := _answerRefusal(p, fn, value)):
                refused(reply)
            else:
                accepted(value)
            p.hookAnswered(token)

    def failed(failure: Failure) -> None:
        _timed(p, fn, started)
        keptSession(p, fn, kept)
        if p.connected and not p.closing:
            refused(_refusal(p, fn, failure))
            p.hookAnswered(token)
        elif not failure.check(SMTPError):
            p.logFailure(failure, _name(fn))

    result.addCallbacks(ok, failed)


#: The attributes of a session the server goes on using after a hook,
#: with the type each must keep.
_KEPT_TYPES: tuple[tuple[str, type], ...] = (
    ("envelope", Envelope),
    ("transaction", int),
    ("xClient", dict),
    ("xForward", dict),
)


def keptAttributes(session: Session) -> tuple[object, ...]:
    """
    The values of the attributes of C{session} named in L{_KEPT_TYPES},
    then the envelope's C{rcptTo}, for L{replacedAttribute} to put back.
    """
    envelope = session.envelope
    return (
        envelope,
        session.transaction,
        session.xClient,
        session.xForward,
        getattr(envelope, "rcptTo", None),
    )


def keptSession(
    p: CommandContext, fn: Callable[..., object], kept: tuple[object, ...]
) -> Reply | None:
    """
    L{replacedAttribute} for hook C{fn} of session C{p}, logged as the
    handler's bug (L{handlerBug}).

    @return: The reply to the hook's command (L{handlerBug}'s 451), or
        C{None} when nothing was replaced.
    """
    if unchanged(p.session, kept):
        return None
    hookName = _name(fn)
    problem = replacedAttribute(p.session, kept, hookName)
    return None if problem is None else handlerBug(p, hookName, problem)


def unchanged(session: Session, kept: tuple[object, ...]) -> bool:
    """
    Whether C{session} holds the very objects of C{kept}
    (L{keptAttributes}): what a hook leaves as it found it, checked by
    identity alone, the cheapest test of every hook's answer.
    """
    envelope = session.envelope
    return (
        envelope is kept[0]
        and session.transaction is kept[1]
        and session.xClient is kept[2]
        and session.xForward is kept[3]
        and getattr(envelope, "rcptTo", None) is kept[4]
    )


def replacedAttribute(session: Session, kept: tuple[object, ...], hookName: str) -> str | None:
    """
    Undo a hook's replacing of a session attribute the server goes on
    using (L{_KEPT_TYPES}, and the envelope's C{rcptTo} list) with a value
    of another type (C{session.envelope = None}, which the next RSET or
    EHLO would fail on with a traceback, dropping the client).  A new
    L{Envelope}, number, C{dict} or C{list} is the handler's to set.

    @param kept: The attributes' values before the hook was called
        (L{keptAttributes}), put back.
    @return: What the hook did, for the log, or C{None} when it replaced
        nothing.
    """
    envelope = session.envelope
    if (
        isinstance(envelope, Envelope)
        and isinstance(envelope.rcptTo, list)
        and isinstance(session.transaction, int)
        and isinstance(session.xClient, dict)
        and isinstance(session.xForward, dict)
    ):
        return None
    problem = None
    for (name, kind), value in zip(_KEPT_TYPES, kept, strict=False):
        replaced = getattr(session, name)
        if not isinstance(replaced, kind):
            problem = problem or _replacedText(hookName, name, replaced)
            # What it was, unless replaced between two hooks: a new one.
            setattr(session, name, value if isinstance(value, kind) else kind())
    recipients = session.envelope.rcptTo
    if not isinstance(recipients, list):
        problem = problem or _replacedText(hookName, "envelope.rcptTo", recipients)
        keptRecipients = kept[-1]
        session.envelope.rcptTo = keptRecipients if isinstance(keptRecipients, list) else []
    return problem


def _replacedText(hookName: str, name: str, value: object) -> str:
    return (
        f"{hookName} replaced session.{name} with a {type(value).__name__}:"
        " the server's own is kept"
    )


def returnedFailure(result: object) -> Failure | None:
    """
    The failure a hook answered with by returning it rather than raising
    it (C{return SMTPError(535, ...)}, a L{Failure}): it refuses as raised.
    Taken as a plain value, it would accept: log in a client C{onAuth}
    meant to refuse, accept a recipient or a message.

    @return: The failure, or C{None} for any other answer.
    """
    if isinstance(result, Failure):
        return result
    if isinstance(result, BaseException):
        return Failure(result)
    return None


def runCloseHook(p: SessionControl) -> None:
    """
    Tell C{onClose} the session is over; what it returns or raises is only
    logged, as nobody is left to answer.  An C{async def} C{onClose} (or one
    returning a coroutine) is run like every other hook.
    """
    try:
        result = callHook(p.handler.onClose, p.session)
    except BaseException:
        # Any exception (KeyboardInterrupt, asyncio.CancelledError), or the
        # rest of the connection's end would not happen: the server's close
        # would wait for this session for good.
        _closeFailed(p, Failure())
    else:
        if isinstance(result, Deferred):
            result.addErrback(lambda failure: _closeFailed(p, failure))


def _closeFailed(p: SessionControl, failure: Failure) -> None:
    """
    Log how C{onClose} failed.  An L{SMTPError} (a handler whose hooks
    share one refusing helper) is one line naming its code and text, made
    printable: at close there is no reply to give it, and its traceback
    would tell nothing more.  Any other failure is the handler's error,
    logged with its traceback.
    """
    error = failure.value
    if not isinstance(error, SMTPError):
        p.logFailure(failure, "onClose")
        return
    p.log.warn(
        "{session} onClose refused with {refusal}: there is no reply at close, nothing is done",
        session=p.session.id,
        refusal=logText(error),
    )


def handlerBug(p: CommandContext, hookName: str, problem: str) -> Reply:
    """
    The reply to a hook whose answer cannot be used: the handler's bug,
    logged as a L{TypeError} saying C{problem}, and answered 451 (a
    temporary error: the client may try again once it is fixed).
    """
    try:
        raise TypeError(problem)
    except TypeError:
        p.logFailure(Failure(), hookName)
    return catalogue.LOCAL_ERROR


def _answerRefusal(p: CommandContext, fn: Callable[..., object], answer: object) -> Reply | None:
    """
    L{replyTextRefusal} or L{codeRefusal} for hook C{fn} of session C{p}
    and its answer, not C{None}: a text that does not start with a code,
    what hooks answer every message, costs one test.
    """
    if isinstance(answer, str):
        if not startsWithCode(answer):
            return None
    elif answerCode(answer) is None:
        return None
    name = _name(fn)

    def log(failure: Failure) -> None:
        p.logFailure(failure, name)

    if isinstance(answer, str):
        return replyTextRefusal(name, fn, answer, log)
    return codeRefusal(name, answer, log)


def _name(fn: Callable[..., object]) -> str:
    return getattr(fn, "__name__", "hook")


def _refusal(p: SessionControl, fn: Callable[..., object], failure: Failure) -> Reply:
    """
    The reply for a hook that failed with C{failure}, which refuses what
    the hook was asked: an L{SMTPError}'s own reply, unless its code is
    below 400.  A positive reply there would tell the client its command
    was accepted while the server drops it (a recipient answered 250 that
    never gets the message): such an error is logged as the handler's bug
    and answered 451.
    """
    value = failure.value
    if isinstance(value, SMTPError) and value.code < 400:
        name = _name(fn)
        try:
            raise TypeError(
                f"{name} refused with a {value.code} reply; a refusal needs a 4xx or 5xx code"
            ) from value
        except TypeError:
            p.logFailure(Failure(), name)
        return catalogue.LOCAL_ERROR
    return failureReply(failure, lambda f: p.logFailure(f, _name(fn)))


def _timed(p: CommandContext, fn: Callable[..., object], started: float) -> None:
    if started:
        p.emit("hook", hook=_name(fn), seconds=perf_counter() - started)
