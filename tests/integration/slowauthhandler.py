# -*- test-case-name: tests.integration.test_logs -*-
"""
A handler for C{twistd smtpd --handler tests.integration.slowauthhandler:make}:
it logs in C{alice} with the password C{secret} (PLAIN, LOGIN) or the
bearer token C{tok} (XOAUTH2), and refuses anything else only after
C{delay} seconds, as a server slowing down password guessing would.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.defer import Deferred, succeed

from twisted_smtpd import AuthRequest, AuthResult, Session, SMTPError
from twisted_smtpd.handlers import BaseHandler


class SlowRefusingHandler(BaseHandler):
    """
    Accept at once; refuse after C{delay} seconds.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def onAuth(self, auth: AuthRequest, session: Session) -> Deferred[AuthResult]:
        """
        Accept alice's secret or token at once; refuse the rest later.
        """
        from twisted.internet import reactor

        if auth.username == "alice" and (
            auth.accessToken == "tok" if auth.method == "XOAUTH2" else auth.password == "secret"
        ):
            return succeed(AuthResult(user="alice"))
        error = SMTPError(535, "Error: authentication credentials invalid", "5.7.8")

        def refuse() -> AuthResult:
            raise error

        return task.deferLater(reactor, self.delay, refuse)  # type: ignore[arg-type]


def make(delay: str = "0.5") -> SlowRefusingHandler:
    """
    The C{--handler} callable: C{--handler-option delay=SECONDS} is the
    time every refusal takes.
    """
    return SlowRefusingHandler(float(delay))
