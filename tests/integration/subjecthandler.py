# -*- test-case-name: tests.integration.test_fail2banlines -*-
"""
A handler for C{twistd smtpd --handler tests.integration.subjecthandler:make}:
a content filter with a bug, as handlers have them: it fails on every
message with an exception naming the message's C{Subject:} as the standard
library's C{email} package reads it (folded lines and all), so that the
server logs the traceback.
"""

from __future__ import annotations

import email

from twisted.internet.defer import Deferred

from twisted_smtpd import Session
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream


class SubjectFilter(BaseHandler):
    """
    Fail on every message, naming its subject.
    """

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[str]:
        """
        Read the message, then fail naming its C{Subject:}.
        """

        def check(body: bytes) -> str:
            subject = email.message_from_bytes(body)["Subject"]
            raise RuntimeError(f"no rule for the subject {subject}")

        d: Deferred[bytes] = stream.collect()  # type: ignore[assignment]
        return d.addCallback(check)


def make() -> SubjectFilter:
    """
    The C{--handler} callable.
    """
    return SubjectFilter()
