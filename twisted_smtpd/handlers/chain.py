# -*- test-case-name: tests.test_chain -*-
"""
L{ChainHandler}: run filters in front of a delivery handler.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._core.answercodes import answerCode, startsWithCode
from twisted_smtpd._core.errors import SMTPError, logText
from twisted_smtpd._core.session import Address, AuthRequest, Session
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers._hookcheck import presentHooks
from twisted_smtpd.handlers._sessionwork import SessionWork
from twisted_smtpd.interfaces import IMessageStream, ISMTPHandler


def _overridesAuth(handler: ISMTPHandler) -> bool:
    """
    Whether C{handler} answers AUTH itself rather than with
    L{BaseHandler.onAuth}'s refusal (the test the server makes to decide
    whether to offer AUTH); a handler with no C{onAuth} at all does not.
    """
    return getattr(type(handler), "onAuth", BaseHandler.onAuth) is not BaseHandler.onAuth


def _refusal(result: object) -> bool:
    """
    Whether a hook answered C{result} to refuse without raising: an
    exception returned (C{return SMTPError(550, ...)}), which the server
    takes as raised, or a reply code of 4xx or 5xx, as a reply's text
    (C{"550 No such user"}, as an aiosmtpd hook answers), an C{int}, bytes
    or a C{(code, text)} pair (L{answerCode}), which the server refuses
    with 451 as the handler's error.  Passed over, either would be replaced
    by the next handler's answer, and the chain would accept what its
    filter refused.
    """
    if isinstance(result, BaseException):
        return True
    if isinstance(result, str):
        # A str subclass's own methods never decide it.
        text = str.__str__(result)
        return startsWithCode(text) and text[0] in "45"
    code = answerCode(result)
    return code is not None and code >= 400


def _checkMember(handler: ISMTPHandler) -> None:
    """
    Refuse a handler of the chain as the server refuses a handler
    (L{presentHooks}): a hook misspelt (C{onRcpt}), which would never be
    called, so that what the filter means to refuse would be accepted; a
    hook that is not callable; no hook at all; a class given for its
    instance; a hook written with C{yield} but not decorated, whose body a
    call would never run.

    @raise TypeError: Naming the handler's class and the hook.
    """
    presentHooks(handler, "chain member")


class ChainHandler(BaseHandler):
    """
    Filters, then a delivery handler.

    For C{onConnect}, C{onHelo}, C{onSecure}, C{onMailFrom} and
    C{onRcptTo}, each filter's hook runs in order, then the delivery's;
    each hook may return a L{Deferred <twisted.internet.defer.Deferred>} or be a coroutine, and the
    next one
    only runs once it has finished.  The first refusal (an L{SMTPError},
    or any other failure, raised or returned, or a reply's text with a 4xx
    or 5xx code returned) stops the chain and is the reply, as the server
    would answer it from that handler alone.  C{onClose}
    goes to every handler in the same order, even when one fails (the
    failure is logged); at the server's stop, L{close} closes every handler
    that has a C{close}.  A session that ends while a hook of the chain is
    still running (its client left, or the server timed it out) is told
    C{onClose} at once: the handlers after the one running are then not
    called for that hook, as none may begin anything (take a session to a
    next hop) for a session it was told is over.

    A handler of the chain may provide only some hooks: it accepts for the
    others, as the server takes such a handler.

    C{onData} goes to the delivery handler only: a filter with an C{onData}
    of its own (a delivery handler put among the filters) is never given
    the message, which is logged once, as a warning, when the chain is
    made.  C{onAuth} goes to the
    first handler of the chain that implements it (that does not inherit
    L{BaseHandler.onAuth}).  When none does, the chain has no C{onAuth} of
    its own either, so that the server does not offer AUTH for it: the
    object made is then a plain L{ChainHandler}, else an instance of a
    subclass adding C{onAuth}.  For example::

        ChainHandler(SpamFilter(), Greylist(), delivery=MaildirHandler("Maildir"))

    @ivar filters: The filters, in order.
    @ivar delivery: The delivery handler.
    """

    _log = Logger()

    def __new__(cls, *filters: ISMTPHandler, delivery: ISMTPHandler) -> ChainHandler:
        if cls is ChainHandler and any(_overridesAuth(h) for h in (*filters, delivery)):
            cls = _AuthenticatingChain
        return super().__new__(cls)

    def __init__(self, *filters: ISMTPHandler, delivery: ISMTPHandler) -> None:
        for handler in (*filters, delivery):
            _checkMember(handler)
        for handler in filters:
            if getattr(type(handler), "onData", BaseHandler.onData) is not BaseHandler.onData:
                # A delivery handler put among the filters (the message
                # meant for two mailboxes) holds nothing: say so once.
                self._log.warn(
                    "ChainHandler: filter {handler!r} has an onData of its own, which the"
                    " chain never calls: only the delivery handler gets the message",
                    handler=handler,
                )
        self.filters = filters
        self.delivery = delivery
        self._handlers = (*filters, delivery)
        self._authHandler: ISMTPHandler | None = next(
            (h for h in self._handlers if _overridesAuth(h)), None
        )
        #: The hooks running for each session.
        self._work = SessionWork()

    def _run(self, name: str, session: Session, *args: object) -> Deferred[object]:
        """
        Call hook C{name} of every handler in turn with C{args}, each after
        the previous one finished, stopping at the first failure, or once
        C{session} has ended.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the delivery's result.
        """
        sid = session.id
        work = self._work
        work.begin(sid)

        async def chain() -> object:
            result: object = None
            try:
                for handler in self._handlers:
                    if work.ended(sid):
                        # The handlers left were told the session is over:
                        # a hook called now could take what nobody gives
                        # back (a session to the next hop).
                        break
                    hook: Callable[..., object] | None = getattr(handler, name, None)
                    if hook is None:
                        # A handler providing only some hooks accepts for
                        # the others, as the server takes it.
                        continue
                    result = await maybeDeferred(hook, *args)
                    if _refusal(result):
                        # Refused by returning, not raising: the handlers
                        # after it are not asked, and the server answers
                        # what it returned as it would for that handler.
                        break
            finally:
                work.finish(sid)
            return result

        return Deferred.fromCoroutine(chain())

    def onConnect(self, session: Session) -> Deferred[object]:
        """
        Every handler's C{onConnect}, in order.
        """
        return self._run("onConnect", session, session)

    def onHelo(self, hostname: str, session: Session) -> Deferred[object]:
        """
        Every handler's C{onHelo}, in order.
        """
        return self._run("onHelo", session, hostname, session)

    def onSecure(self, session: Session) -> Deferred[object]:
        """
        Every handler's C{onSecure}, in order.
        """
        return self._run("onSecure", session, session)

    def onMailFrom(self, address: Address, session: Session) -> Deferred[object]:
        """
        Every handler's C{onMailFrom}, in order.
        """
        return self._run("onMailFrom", session, address, session)

    def onRcptTo(self, address: Address, session: Session) -> Deferred[object]:
        """
        Every handler's C{onRcptTo}, in order.
        """
        return self._run("onRcptTo", session, address, session)

    def onData(self, stream: IMessageStream, session: Session) -> object:
        """
        The delivery handler's C{onData}; when it has none (it provides
        only some hooks), the body drained and the message accepted, as the
        server takes such a handler (L{BaseHandler.onData}).
        """
        onData = getattr(self.delivery, "onData", None)
        if onData is None:
            return stream.drain()
        return onData(stream, session)

    def onClose(self, session: Session) -> Deferred[None]:
        """
        Every handler's C{onClose}, in order, whatever each one does.
        """
        self._work.close(session.id)

        async def closeAll() -> None:
            for handler in self._handlers:
                onClose = getattr(handler, "onClose", None)
                if onClose is None:
                    continue
                # Whatever it fails with, an asyncio.CancelledError or a
                # KeyboardInterrupt included: the handlers after it still
                # hear of the end (a relay gives its session back).
                await maybeDeferred(onClose, session).addErrback(self._closeFailed, handler)

        return Deferred.fromCoroutine(closeAll())

    def _closeFailed(self, failure: Failure, handler: ISMTPHandler) -> None:
        """
        Log the failure of C{handler}'s C{onClose}: an L{SMTPError} in one
        line (there is no reply at close to give it), any other with its
        traceback.
        """
        if isinstance(failure.value, SMTPError):
            self._log.warn(
                "onClose of {handler!r} refused with {refusal}: there is no reply at close,"
                " nothing is done",
                handler=handler,
                refusal=logText(failure.value),
            )
            return
        self._log.failure("onClose of {handler!r} failed", failure, handler=handler)

    def close(self) -> Deferred[None]:
        """
        Close the connections of every handler of the chain that has a
        C{close} method (a next hop's pool, an HTTP pool, a broker's
        connection), all at once, each handler once however often it is in
        the chain.  The server calls it at its stop, as it calls any
        handler's C{close}, and bounds the wait.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} that fires
            once every C{close} has finished; one failing is logged and
            does not stop the others.
        """
        closing: list[Deferred[object]] = []
        seen: set[int] = set()
        for handler in self._handlers:
            close = getattr(handler, "close", None)
            if id(handler) in seen or not callable(close):
                continue
            seen.add(id(handler))
            closing.append(maybeDeferred(close).addErrback(self._closeFailedAtStop, handler))

        def closed(results: object) -> None:
            return None

        return DeferredList(closing).addCallback(closed)

    def _closeFailedAtStop(self, failure: Failure, handler: ISMTPHandler) -> None:
        """
        Log the failure of C{handler}'s C{close}.
        """
        self._log.failure("Closing {handler!r} failed", failure, handler=handler)


class _AuthenticatingChain(ChainHandler):
    """
    A L{ChainHandler} one of whose handlers implements C{onAuth}.
    """

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        """
        The C{onAuth} of the first handler implementing it.
        """
        assert self._authHandler is not None
        return self._authHandler.onAuth(auth, session)
