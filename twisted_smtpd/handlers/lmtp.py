# -*- test-case-name: tests.test_relay -*-
"""
L{LMTPDeliveryHandler}: hand every message to an LMTP server (RFC 2033),
such as Dovecot's or Cyrus's delivery service, passing its verdict for each
recipient on: at RCPT, and after the body.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from twisted_smtpd._smtpclient.clientprotocol import Request
from twisted_smtpd._smtpclient.clientsession import ClientSession, openSession
from twisted_smtpd.handlers._proxying import HOP_LIMIT, ProxyingHandler
from twisted_smtpd.handlers.relay import defaultHeloName


class LMTPDeliveryHandler(ProxyingHandler):
    """
    Pass each transaction on to the LMTP server at C{endpoint}, in plain
    text (LMTP is for trusted local links), as a before-queue proxy: MAIL
    and each RCPT are answered with the LMTP server's verdict, so a
    recipient it does not know is refused at RCPT.

    After the body an LMTP server answers once per recipient.  When our
    server speaks LMTP too, each recipient gets its own reply, exactly.
    When it speaks SMTP, which has a single reply after the body:

      - every recipient accepted: 250;
      - none accepted: the first temporary refusal if any (so that the
        client tries again, and no recipient gets a second copy), else the
        first permanent one;
      - some accepted, some refused: 250, since the message is stored for
        the accepted recipients and a retry would duplicate it; every
        refused recipient (temporary refusals included: this server keeps
        no queue to try again) is reported to the sender in a "failed"
        delivery status notification (RFC 3464), sent through the same
        LMTP server (so it reaches local senders only; see
        C{docs/relaying.md}), never for the null sender, nor for a
        recipient whose NOTIFY leaves out FAILURE (NEVER, SUCCESS, DELAY).

    A recipient asking NOTIFY=SUCCESS of an LMTP server without DSN gets a
    "delivered" report.

    The message passed on begins with this server's C{Received:} field
    (unless C{traceHeaders} is off); one whose header section holds more
    than C{hopLimit} C{Received:} fields (a mail loop) is refused with 554
    5.4.6, and the session to the LMTP server dropped before the body's
    end, so that it stores nothing.

    A failure of the LMTP server as a whole (unreachable, timeout, refused
    greeting) is a temporary failure (451).

    @ivar endpoint: The endpoint description given.
    """

    _log = Logger()

    # A mail store has delivered the message when it accepts it.
    successAction = "delivered"

    def __init__(
        self,
        endpoint: str,
        *,
        heloName: str | None = None,
        timeout: float = 300.0,
        maxSessions: int = 4,
        idleTimeout: float = 30.0,
        logMessages: bool = True,
        closeOnShutdown: bool = False,
        traceHeaders: bool = True,
        hopLimit: int = HOP_LIMIT,
        reactor: Any = None,
    ) -> None:
        """
        @param endpoint: A Twisted client endpoint string:
            C{"unix:/run/dovecot/lmtp"}, C{"tcp:127.0.0.1:24"}.
        @param heloName: The name for LHLO; this host's fully qualified
            name by default.
        @param timeout: Seconds to wait for the connection and each reply.
        @param maxSessions: The most sessions open at once.
        @param idleTimeout: Seconds an unused session stays open.
        @param logMessages: Log a line per message delivered.
        @param closeOnShutdown: Close the sessions (QUIT) when the reactor
            shuts down, as C{twistd smtpd} does.
        @param traceHeaders: Whether to write a C{Received:} field (naming
            the client, this server by C{heloName}, the session id and the
            date) before each message passed on, as RFC 5321 section 4.4
            asks of a relay; C{MAIL}'s C{SIZE} passed on grows by its
            length.
        @param hopLimit: The most C{Received:} fields a message's header
            section may hold: one with more is taken for a mail loop
            (RFC 5321 section 6.3) and refused with 554 5.4.6, the session
            to the next hop being dropped before the body ends so that
            nothing is delivered; 50 by default, as Postfix's
            C{hopcount_limit}.
        @param reactor: The reactor (the global one by default).
        @raise ValueError: C{endpoint} is not a valid endpoint string, or
            C{hopLimit} is not a positive integer.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.endpoint = endpoint
        self._endpoint: IStreamClientEndpoint = clientFromString(reactor, endpoint)
        self._heloName = heloName or defaultHeloName()
        super().__init__(
            endpoint,
            reporterName=self._heloName,
            maxSessions=maxSessions,
            idleTimeout=idleTimeout,
            timeout=timeout,
            logMessages=logMessages,
            closeOnShutdown=closeOnShutdown,
            reactor=reactor,
            traceHeaders=traceHeaders,
            hopLimit=hopLimit,
        )

    def openSession(self) -> Deferred[ClientSession]:
        """
        Connect to the LMTP server and say LHLO.
        """
        request = Request(
            sender="",
            recipients=(),
            stream=None,
            lmtp=True,
            heloName=self._heloName,
            tls="none",
            tlsCreator=None,
            verify=False,
            username=None,
            password=None,
            smtpUtf8=False,
            requireTls=False,
            timeout=self._timeout,
        )
        return Deferred.fromCoroutine(openSession(self._endpoint, request, self._reactor))
