# -*- test-case-name: tests.test_auth -*-
"""
The AUTH command (RFC 4954) inside a session: policy, the SASL exchange
(L{twisted_smtpd._core.sasl}) and the decision (C{onAuth} or a C{twisted.cred}
portal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.features import updateTransmissionType
from twisted_smtpd._core.grammar import Phase, Verb
from twisted_smtpd._core.replies import Reply
from twisted_smtpd._core.sasl import (
    Challenge,
    Done,
    Failed,
    Mechanism,
    Step,
    createMechanism,
    xoauth2FailureChallenge,
)
from twisted_smtpd._core.session import AuthRequest, AuthResult, Session
from twisted_smtpd._serving.hooks import callHook, handlerBug
from twisted_smtpd._serving.logging import refusal

if TYPE_CHECKING:
    from twisted_smtpd._serving.context import CommandContext


class AuthCommand:
    """
    AUTH for one session.

    @ivar failures: Failed attempts so far.
    """

    def __init__(self, protocol: CommandContext) -> None:
        self._protocol = protocol
        self._mechanism: Mechanism | None = None
        self._pendingFailure: Reply | None = None
        self._authenticator: Callable[[AuthRequest, Session], object] | None = None
        self.failures = 0
        #: The request being decided, for the log line of its refusal;
        #: C{None} once it is decided.
        self.request: AuthRequest | None = None

    @property
    def active(self) -> bool:
        """
        Whether the next client line belongs to a SASL exchange.
        """
        return self._mechanism is not None or self._pendingFailure is not None

    def command(self, argument: bytes) -> None:
        """
        Handle C{AUTH mechanism [initial-response]}.
        """
        p = self._protocol
        factory = p.server
        options = p.options
        self.request = None
        if factory is None or not factory.authEnabled:
            p.fail(catalogue.AUTH_NOT_ENABLED)
            return
        if p.phase is Phase.CONNECTED:
            p.fail(catalogue.NEED_LHLO if options.lmtp else catalogue.NEED_HELO)
            return
        if p.session.user is not None:
            p.fail(catalogue.ALREADY_AUTHENTICATED)
            return
        if p.phase in (Phase.MAIL, Phase.RCPT):
            p.fail(catalogue.AUTH_IN_TRANSACTION)
            return
        if not (p.session.secure or options.allowInsecureAuth):
            # Not offered before TLS (RFC 4954 section 4: 538); without
            # STARTTLS the session cannot get there, and AUTH is not
            # enabled on it at all (Postfix's answer).
            startTLS = factory.startTLSAvailable
            p.fail(catalogue.AUTH_NEEDS_TLS if startTLS else catalogue.AUTH_NOT_ENABLED)
            return
        parts = argument.split(None, 1)
        if not parts or len(parts[0]) > 20:
            p.fail(catalogue.SYNTAX_ERROR)
            return
        name = parts[0].decode("ascii", "replace").upper()
        if name not in factory.authMechanisms:
            p.fail(catalogue.AUTH_UNRECOGNIZED)
            return
        limit = factory.limits.authCommand(p.session.remoteAddress[0], factory.reactor.seconds())
        if limit is not None:
            p.refuseForLimit(catalogue.AUTH_RATE, limit)
            return
        mechanism = createMechanism(name, hostname=options.name)
        self._advance(mechanism, mechanism.start(parts[1] if len(parts) > 1 else None))

    def line(self, line: bytes) -> None:
        """
        Handle a client line inside the exchange.
        """
        pending = self._pendingFailure
        if pending is not None:
            # The client's (empty) answer to the XOAUTH2 error challenge:
            # the failure it ends was counted and logged with the challenge.
            self._pendingFailure = None
            self._protocol.reply(pending)
            self._afterFailure()
            return
        mechanism = self._mechanism
        assert mechanism is not None
        self._advance(mechanism, mechanism.step(line))

    def abort(self, reply: Reply) -> None:
        """
        End the exchange in progress with C{reply}, as a failed attempt: the
        client's line could not be an answer (it was too long).
        """
        self._mechanism = None
        if self._pendingFailure is not None:
            # The attempt was counted and logged with the XOAUTH2 error
            # challenge: only the line is refused.
            self._pendingFailure = None
            self._protocol.reply(reply)
            self._afterFailure()
            return
        self._failed(reply)

    def _advance(self, mechanism: Mechanism, step: Step) -> None:
        p = self._protocol
        if isinstance(step, Challenge):
            self._mechanism = mechanism
            p.reply(catalogue.challenge(step.text))
            return
        self._mechanism = None
        if isinstance(step, Failed):
            p.fail(step.reply)
            return
        assert isinstance(step, Done)
        self._decide(step.request)

    def _decide(self, request: AuthRequest) -> None:
        p = self._protocol
        self.request = request
        factory = p.server
        assert factory is not None

        def accepted(result: object) -> None:
            if result is None or result is False:
                # No login: a hook that forgot to return, or one answering
                # as aiosmtpd's auth_callback does.
                refused(catalogue.AUTH_FAILED)
                return
            user = result.user if isinstance(result, AuthResult) else result
            if _namesNobody(user):
                # The handler's bug, not the client's credentials: logged,
                # and a temporary error, so that the client neither gets in
                # nor is told its password is wrong.
                refused(
                    handlerBug(
                        p,
                        "onAuth",
                        f"onAuth answered {result!r}, which names no user: return"
                        " AuthResult(user=...) to accept; None or False, or raise"
                        " SMTPError(535, ...), to refuse",
                    )
                )
                return
            if not _mayActAs(request, result):
                # Logged as a failed login naming the identity asked for.
                refused(catalogue.AUTH_NOT_AUTHORIZED)
                return
            self.request = None
            message = result.message if isinstance(result, AuthResult) else None
            p.session.user = user
            updateTransmissionType(p.session)
            p.emit("auth", method=request.method, username=request.username)
            p.reply(
                Reply(235, "2.7.0", catalogue.sanitiseText(message))
                if message
                else catalogue.AUTH_OK
            )

        def refused(reply: Reply) -> None:
            if reply is catalogue.LOCAL_ERROR:
                # The decision failed unexpectedly (already logged): a
                # temporary authentication failure (RFC 4954 section 6),
                # as Postfix answers one.  An SMTPError keeps its reply.
                reply = catalogue.AUTH_TEMPORARY_FAILURE
            if request.method == "XOAUTH2" and reply.code == 535:
                # Google's dialogue: an error challenge first, then 535.
                # The attempt has failed now, whether or not the client
                # answers the challenge: counted and logged now.
                self.failures += 1
                p.emit("reject", **refusal(reply, Verb.AUTH, b"", self, False))
                self.request = None
                self._pendingFailure = reply
                p.reply(catalogue.challenge(xoauth2FailureChallenge().text))
                return
            self._failed(reply)

        self._authenticator = factory.authenticator(request.method)
        p.hook(self.onAuth, (request, p.session), accepted, refused)

    def onAuth(self, request: AuthRequest, session: Session) -> object:
        """
        Ask what decides AUTH (C{onAuth} or the portal), under its name for
        the log lines; a late answer is still heard when the session is
        gone by then (L{_answeredLate}).
        """
        authenticator = self._authenticator
        assert authenticator is not None
        result = callHook(authenticator, request, session)
        if isinstance(result, Deferred):
            result.addBoth(self._answeredLate, request)
        return result

    def _answeredLate(self, result: object, request: AuthRequest) -> object:
        """
        Log a refusal of C{request} that came after its session ended (the
        client left, or the session timed out waiting): a failed login all
        the same, which the client may have guessed from the wait.  A login
        that may not act as the authorization identity it asked for is one
        too, as in a session that waited.  Nothing
        else is done with it; C{result} passes on unchanged.
        """
        p = self._protocol
        if p.connected and not p.closing:
            return result
        if isinstance(result, Failure):
            error = result.value
            if not isinstance(error, SMTPError) or error.code < 400:
                # Logged as the handler's failure.
                return result
            reply = error.toReply()
        elif result is None or result is False:
            reply = catalogue.AUTH_FAILED
        elif not _namesNobody(
            result.user if isinstance(result, AuthResult) else result
        ) and not _mayActAs(request, result):
            # A login that may not act as the identity it asked for: the
            # failed login the session would have logged.
            reply = catalogue.AUTH_NOT_AUTHORIZED
        else:
            return result
        self.failures += 1
        self.request = request
        p.emit("reject", **refusal(reply, Verb.AUTH, b"", self, False))
        self.request = None
        return result

    def _failed(self, reply: Reply) -> None:
        p = self._protocol
        self.failures += 1
        p.fail(reply)
        self.request = None
        if self.failures >= p.options.maxAuthFailures:
            p.closeWith(catalogue.TOO_MANY_AUTH_FAILURES)

    def _afterFailure(self) -> None:
        """
        The refusal of an attempt already counted and logged was sent: it
        counts towards C{maxErrors}, and the lockout comes after it.
        """
        p = self._protocol
        p.countError()
        if self.failures >= p.options.maxAuthFailures:
            p.closeWith(catalogue.TOO_MANY_AUTH_FAILURES)


def _namesNobody(user: object) -> bool:
    """
    Whether C{user}, what an accepting C{onAuth} gave as the user, names
    nobody: C{None}, C{True} or C{False} (a yes or no, such as aiosmtpd's
    C{auth_callback} answers, is no user), an empty string or C{0}.
    Anything else, a name or an avatar object, is a user.
    """
    if user is None or isinstance(user, bool):
        return True
    return isinstance(user, str | bytes | int) and not user


def _mayActAs(request: AuthRequest, result: object) -> bool:
    """
    Whether an accepted login may act as the authorization identity it asked
    for (RFC 4616 section 2): always when it asked for none or for its own;
    otherwise only when the handler's L{AuthResult} names that identity.  A
    C{twisted.cred} login never does.
    """
    wanted = request.authorizationIdentity
    if wanted is None or wanted == request.username:
        return True
    return isinstance(result, AuthResult) and result.authorizationIdentity == wanted
