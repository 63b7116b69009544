# -*- test-case-name: tests.test_auth -*-
"""
AUTH through C{twisted.cred}: a portal (or bare credentials checkers)
decides PLAIN, LOGIN and CRAM-MD5 without any C{onAuth} code.

Loaded only when there are checkers or a portal: what a server without
them needs is in L{twisted_smtpd._serving.authmechanisms}.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials, IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import AuthRequest, AuthResult
from twisted_smtpd._serving.authmechanisms import decidableMechanisms, ownsOnAuth

__all__ = [
    "AvatarIdRealm",
    "CramMD5Credentials",
    "ISMTPUser",
    "PasswordCredentials",
    "authenticate",
    "checkPortalOffered",
    "credentialsFor",
    "decidableMechanisms",
    "offeredMechanisms",
    "ownsOnAuth",
    "portalDecides",
    "portalFromCheckers",
]

_log = Logger()


class ISMTPUser(Interface):
    """
    The avatar interface a portal is asked for: a realm returns the object
    to keep in C{session.user} (L{AvatarIdRealm} returns the avatar id).
    """


@implementer(IUsernamePassword)
class PasswordCredentials:
    """
    A user name and password from PLAIN or LOGIN, compared in constant time.
    """

    def __init__(self, username: bytes, password: bytes) -> None:
        self.username = username
        self.password = password

    def checkPassword(self, password: bytes | str) -> bool:
        """
        Whether C{password} is the one given, in constant time.
        """
        if isinstance(password, str):
            password = password.encode("utf-8")
        return hmac.compare_digest(password, self.password)


@implementer(IUsernameHashedPassword)
class CramMD5Credentials:
    """
    A CRAM-MD5 response (RFC 2195): checkers holding the plain secret verify
    it in constant time through L{AuthRequest.validatePassword}.
    """

    def __init__(self, request: AuthRequest) -> None:
        self.username = request.username.encode("utf-8")
        self._request = request

    def checkPassword(self, password: bytes | str) -> bool:
        """
        Whether C{password} is the secret that produced the response.
        """
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        return self._request.validatePassword(password)


@implementer(IRealm)
class AvatarIdRealm:
    """
    A realm whose avatar is simply the avatar id the checker returned.
    """

    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any) -> tuple[Any, ...]:
        """
        Hand back the avatar id as the avatar.
        """
        name = avatarId.decode("utf-8", "replace") if isinstance(avatarId, bytes) else avatarId
        return (interfaces[0], name, _noLogout)


def _noLogout() -> None:
    """
    Nothing to release.
    """


def portalFromCheckers(checkers: Iterable[ICredentialsChecker]) -> Portal:
    """
    A portal over C{checkers} whose avatars are the user names.
    """
    return Portal(AvatarIdRealm(), list(checkers))


def portalDecides(portal: Portal, method: str) -> bool:
    """
    Whether C{portal} has a checker for the credentials of the AUTH
    mechanism C{method}: PLAIN and LOGIN need one for L{IUsernamePassword},
    CRAM-MD5 one for L{IUsernameHashedPassword}; no checker can verify an
    XOAUTH2 bearer token.
    """
    kind = {"PLAIN": PasswordCredentials, "LOGIN": PasswordCredentials}.get(
        method, CramMD5Credentials if method == "CRAM-MD5" else None
    )
    if kind is None:
        return False
    return any(i.implementedBy(kind) for i in portal.listCredentialsInterfaces())


def checkPortalOffered(options: ServerOptions, portal: Portal, onAuth: bool) -> None:
    """
    Refuse a portal (the server's checkers) with which no AUTH mechanism
    would be offered: with C{AUTH} in C{disabledCommands}, or C{authMethods}
    naming none the portal (or, for XOAUTH2, the handler's own C{onAuth})
    can decide.  AUTH would then be neither offered nor required, and mail
    taken from anyone, as C{twistd smtpd} refuses C{--auth} with nothing to
    offer.

    @raise ValueError: Saying why no mechanism is left.
    """
    if "AUTH" in options.disabledCommands:
        raise ValueError("checkers (a portal) and AUTH in disabledCommands exclude each other")
    methods = options.authMethods
    if not decidableMechanisms(methods, portal, onAuth):
        raise ValueError(
            f"authMethods {','.join(methods) or '()'}: the checkers (the portal) can decide"
            " none of them, so mail would be taken without AUTH (XOAUTH2 needs a handler"
            " with onAuth, CRAM-MD5 a checker holding plain passwords)"
        )


def offeredMechanisms(
    methods: Sequence[str], portal: Portal | None, onAuth: bool
) -> tuple[str, ...]:
    """
    The mechanisms of C{methods} to offer: L{decidableMechanisms}.  A
    mechanism a portal cannot decide is left out with one warning:
    advertised, it could only be answered with 504 (RFC 4954 section 4).
    """
    offered = decidableMechanisms(methods, portal, onAuth)
    dropped = [m for m in methods if m not in offered]
    if portal is not None and dropped:
        _log.warn(
            "AUTH mechanisms not offered, nothing can decide them: {dropped}"
            " (XOAUTH2 needs a handler's onAuth, the others a checker for their credentials)",
            dropped=",".join(dropped),
        )
    return offered


def credentialsFor(request: AuthRequest) -> ICredentials | None:
    """
    The C{twisted.cred} credentials for an AUTH request, or C{None} for
    mechanisms a portal cannot judge (XOAUTH2).
    """
    if request.method in ("PLAIN", "LOGIN") and request.password is not None:
        return PasswordCredentials(
            request.username.encode("utf-8"), request.password.encode("utf-8")
        )
    if request.method == "CRAM-MD5":
        return CramMD5Credentials(request)
    return None


def authenticate(portal: Portal, request: AuthRequest) -> Deferred[AuthResult]:
    """
    Log in through C{portal}.

    @return: A L{Deferred} firing with the L{AuthResult}, or failing with
        L{SMTPError} 535 for bad credentials and 504 for a mechanism the
        portal cannot check; any other failure passes through (and becomes
        C{454 4.7.0}, a temporary authentication failure).
    """
    credentials = credentialsFor(request)
    if credentials is None:
        raise SMTPError(*_args(catalogue.AUTH_UNRECOGNIZED))
    d: Deferred[Any] = portal.login(credentials, None, ISMTPUser)

    def loggedIn(result: tuple[Any, Any, Any]) -> AuthResult:
        return AuthResult(user=result[1])

    def refused(failure: Failure) -> Failure:
        if failure.check(UnauthorizedLogin):
            raise SMTPError(*_args(catalogue.AUTH_FAILED))
        if failure.check(UnhandledCredentials):
            raise SMTPError(*_args(catalogue.AUTH_UNRECOGNIZED))
        return failure

    return d.addCallbacks(loggedIn, refused)


def _args(reply: catalogue.Reply) -> tuple[int, str, str | None]:
    return (reply.code, "\n".join(reply.lines), reply.enhanced)
