# -*- test-case-name: tests.test_relay -*-
"""
L{LMTPDeliveryHandler}: hand every message to an LMTP server (RFC 2033),
such as Dovecot's or Cyrus's delivery service, and report its verdict for
each recipient.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._client import deliver
from twisted_smtpd._clientwire import DeliveryError, DeliveryResult, remoteFailure, replyError
from twisted_smtpd._session import Session
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers.relay import defaultHeloName, describe, isLMTP
from twisted_smtpd.interfaces import IMessageStream


class LMTPDeliveryHandler(BaseHandler):
    """
    Stream each message to the LMTP server at C{endpoint}, in plain text
    (LMTP is for trusted local links).

    When our server speaks LMTP too, C{onData} answers once per recipient
    with the LMTP server's reply for it, so each recipient's fate is passed
    on exactly.  When it speaks SMTP, which has a single reply after the
    body, the reply is 250 if every recipient was accepted, else the first
    refusal, a temporary one first if any: beware that the recipients the
    LMTP server did accept then have the message, and get it again if the
    client retries.

    A failure of the LMTP server as a whole (unreachable, timeout, refused
    greeting) is a temporary failure (451).

    @ivar endpoint: The endpoint description given.
    """

    _log = Logger()

    def __init__(
        self,
        endpoint: str,
        *,
        heloName: str | None = None,
        timeout: float = 300.0,
        reactor: Any = None,
    ) -> None:
        """
        @param endpoint: A Twisted client endpoint string:
            C{"unix:/run/dovecot/lmtp"}, C{"tcp:127.0.0.1:24"}.
        @param heloName: The name for LHLO; this host's fully qualified
            name by default.
        @param timeout: Seconds to wait for the connection and each reply.
        @param reactor: The reactor (the global one by default).
        @raise ValueError: C{endpoint} is not a valid endpoint string.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor = reactor
        self.endpoint = endpoint
        self._endpoint: IStreamClientEndpoint = clientFromString(reactor, endpoint)
        self._heloName = heloName or defaultHeloName()
        self._timeout = timeout

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[object]:
        """
        Stream the message to the LMTP server.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with one result per
            recipient (in LMTP
            mode) or the 250 text, or failing with L{SMTPError}; if the body
            does not arrive whole, nothing is delivered and the stream's
            failure is passed on.
        """
        envelope = session.envelope
        sender = envelope.mailFrom.address if envelope.mailFrom is not None else ""
        d: Deferred[Any] = deliver(
            self._endpoint,
            sender=sender,
            recipients=[address.address for address in envelope.rcptTo],
            stream=stream,
            heloName=self._heloName,
            lmtp=True,
            tls="none",
            smtpUtf8=envelope.smtpUtf8,
            timeout=self._timeout,
            reactor=self._reactor,
        )
        d.addCallbacks(self._delivered, self._failed, callbackArgs=(session,))
        return d

    def _delivered(self, result: DeliveryResult, session: Session) -> object:
        for r in result.refused:
            self._log.info(
                "{session} LMTP {endpoint} refused {address}: {reply}",
                session=session.id,
                endpoint=self.endpoint,
                address=r.address,
                reply=describe(r.reply),
            )
        if isLMTP(session):
            return [r.reply.text if r.accepted else replyError(r.reply) for r in result.recipients]
        refused = result.refused
        if not refused:
            return result.recipients[0].reply.text
        temporary = [r for r in refused if r.reply.temporary]
        raise replyError((temporary or refused)[0].reply)

    def _failed(self, failure: Failure) -> Failure:
        error = failure.value
        if not isinstance(error, DeliveryError):
            return failure
        self._log.warn(
            "LMTP delivery to {endpoint} failed: {error}", endpoint=self.endpoint, error=str(error)
        )
        raise remoteFailure(error, self.endpoint)
