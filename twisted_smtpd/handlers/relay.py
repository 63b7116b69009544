# -*- test-case-name: tests.test_relay -*-
"""
L{RelayHandler}: forward every accepted message to a smarthost.

The message is streamed to the smarthost while it arrives, and the client
gets its 250 only once the smarthost has accepted it: a 250 means the
smarthost has the message.
"""

from __future__ import annotations

import re
import socket
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._client import TLS_MODES, TLSMode, deliver
from twisted_smtpd._clientwire import (
    ClientReply,
    DeliveryError,
    DeliveryResult,
    remoteFailure,
    replyError,
    worstReply,
)
from twisted_smtpd._session import Session
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


def loadTrustRoot(path: str) -> Any:
    """
    A trust root holding every certificate of the PEM bundle at C{path}.

    @raise ValueError: The file holds no certificate.
    @raise OSError: It cannot be read.
    """
    with open(path, "rb") as f:
        data = f.read()
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ValueError(f"no PEM certificate in {path!r}")
    return trustRootFromCertificates([Certificate.loadPEM(block) for block in blocks])


def isLMTP(session: Session) -> bool:
    """
    Whether C{session} speaks LMTP, so that C{onData} may answer once per
    recipient.
    """
    return session.transmissionType.startswith("LMTP")


def describe(reply: ClientReply) -> str:
    """
    A reply as one line for logs and reply texts.
    """
    text = " ".join(reply.text.split("\n"))
    return f"{reply.code} {reply.enhanced + ' ' if reply.enhanced else ''}{text}"


def defaultHeloName() -> str:
    """
    This host's fully qualified name, for EHLO.
    """
    return socket.getfqdn()


class RelayHandler(BaseHandler):
    """
    Forward each message to the smarthost C{host}:C{port} over SMTP.

    Recipients are not checked at RCPT; after the body the message goes to
    the smarthost for every recipient, and:

      - if it accepts the message for every recipient, the reply is 250;
      - if it refuses the message for every recipient, or refuses it as a
        whole (sender, DATA, after the body), the reply repeats its refusal:
        a 5xx stays 5xx with its text, a 4xx stays 4xx (421 becomes 451);
        if recipients were refused differently, a temporary refusal wins so
        that the client tries again;
      - if it accepts some recipients and refuses others, the message is
        accepted (250): SMTP has a single reply after the body, so the
        refused recipients are named in the reply text (the first two) and
        logged as a warning, and are not retried;
      - if the smarthost cannot be reached, times out, fails TLS, or
        refuses the session itself (greeting, EHLO, AUTH), the reply is
        temporary (451), whatever its code.

    In LMTP mode of the server, C{onData} answers once per recipient with
    the smarthost's verdict for that recipient instead.

    @ivar host: The smarthost's name or address.
    @ivar port: Its port.
    """

    _log = Logger()

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        tls: str = "opportunistic",
        caCertificates: str | None = None,
        verify: bool = True,
        username: str | None = None,
        password: str | None = None,
        heloName: str | None = None,
        timeout: float = 300.0,
        reactor: Any = None,
    ) -> None:
        """
        @param host: The smarthost; its certificate must be valid for this
            name when STARTTLS is used.
        @param port: Its port.
        @param tls: C{"opportunistic"} (STARTTLS when offered),
            C{"required"} (never send without it) or C{"none"}.
        @param caCertificates: A PEM bundle of the CAs to trust; the
            platform's CAs by default.
        @param verify: C{False} accepts any certificate: INSECURE, it only
            keeps passive eavesdroppers out.
        @param username: For AUTH at the smarthost, only sent over TLS
            unless C{tls="none"}.
        @param password: Its password.
        @param heloName: The name for EHLO; this host's fully qualified name
            by default.
        @param timeout: Seconds to wait for the connection and each reply.
        @param reactor: The reactor (the global one by default).
        @raise ValueError: An argument is invalid.
        @raise OSError: C{caCertificates} cannot be read.
        """
        if not host:
            raise ValueError("relay host must not be empty")
        if not 0 < port < 65536:
            raise ValueError(f"invalid relay port: {port!r}")
        if tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {', '.join(sorted(TLS_MODES))}")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        self.host = host
        self.port = port
        self._tls = cast(TLSMode, tls)
        self._trustRoot = loadTrustRoot(caCertificates) if caCertificates else None
        self._verify = verify
        self._username = username
        self._password = password
        self._heloName = heloName or defaultHeloName()
        self._timeout = timeout
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor = reactor

    @property
    def _peer(self) -> str:
        return f"{self.host}:{self.port}"

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[object]:
        """
        Stream the message to the smarthost.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the 250 text (or, in
            LMTP mode,
            one result per recipient) once the smarthost has answered, or
            failing with L{SMTPError}; if the body does not arrive whole,
            nothing is delivered and the stream's failure is passed on.
        """
        envelope = session.envelope
        sender = envelope.mailFrom.address if envelope.mailFrom is not None else ""
        recipients = [address.address for address in envelope.rcptTo]
        endpoint = HostnameEndpoint(self._reactor, self.host, self.port, timeout=self._timeout)
        d: Deferred[Any] = deliver(
            endpoint,
            sender=sender,
            recipients=recipients,
            stream=stream,
            heloName=self._heloName,
            tls=self._tls,
            tlsHostname=self.host,
            trustRoot=self._trustRoot,
            verify=self._verify,
            username=self._username,
            password=self._password,
            smtpUtf8=envelope.smtpUtf8,
            requireTls=envelope.requireTls,
            timeout=self._timeout,
            reactor=self._reactor,
        )
        d.addCallbacks(self._delivered, self._failed, callbackArgs=(session,))
        return d

    def _delivered(self, result: DeliveryResult, session: Session) -> object:
        for r in result.refused:
            self._log.warn(
                "{session} relay {peer} refused {address}: {reply}",
                session=session.id,
                peer=self._peer,
                address=r.address,
                reply=describe(r.reply),
            )
        if isLMTP(session):
            return [
                f"OK: relayed to {self.host}" if r.accepted else replyError(r.reply)
                for r in result.recipients
            ]
        if not result.accepted:
            raise replyError(worstReply(result))
        self._log.info(
            "{session} relayed to {peer} for {count} recipients",
            session=session.id,
            peer=self._peer,
            count=len(result.accepted),
        )
        text = f"OK: relayed to {self.host}"
        refused = result.refused
        if refused:
            named = "; ".join(f"{r.address}: {describe(r.reply)}"[:160] for r in refused[:2])
            more = f"; and {len(refused) - 2} more" if len(refused) > 2 else ""
            text += f" (refused: {named}{more})"
        return text

    def _failed(self, failure: Failure) -> Failure:
        error = failure.value
        if not isinstance(error, DeliveryError):
            return failure
        self._log.warn(
            "relay to {peer} failed: {error}",
            peer=self._peer,
            error=str(error),
        )
        raise remoteFailure(error, self._peer)
