# -*- test-case-name: tests.test_relay -*-
"""
L{RelayHandler}: forward every accepted message to a smarthost.

Each command of a transaction is passed on to the smarthost and answered
with its verdict: MAIL and each RCPT at once, the message after its body.
The client gets a 250 only for what the smarthost accepted: a 250 after
the body means the smarthost has the message.  Sessions to the smarthost
are kept open and reused (L{twisted_smtpd._smtpclient.clientpool.SessionPool}).
"""

from __future__ import annotations

import re
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.logger import Logger

from twisted_smtpd._core.files import readRegular
from twisted_smtpd._core.hostname import UnusableMachineName, machineName
from twisted_smtpd._smtpclient.client import TLS_MODES, TLSMode
from twisted_smtpd._smtpclient.clientprotocol import Request
from twisted_smtpd._smtpclient.clientsession import ClientSession, ResumingTLS, openSession
from twisted_smtpd._smtpclient.clientwire import UnverifiedClientTLS, refuseRenegotiation
from twisted_smtpd.handlers._proxying import HOP_LIMIT, ProxyingHandler, describe, isLMTP

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


def loadTrustRoot(path: str) -> Any:
    """
    A trust root holding every certificate of the PEM bundle at C{path}.

    @raise ValueError: The file holds no certificate, is not a regular file
        (a named pipe would block the start) or is larger than 16 MiB.
    @raise OSError: It cannot be read.
    """
    data = readRegular(path, "CA certificates")
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ValueError(f"no PEM certificate in {path!r}")
    return trustRootFromCertificates([Certificate.loadPEM(block) for block in blocks])


def defaultHeloName() -> str:
    """
    This host's fully qualified name, for EHLO, as an ASCII domain: a name
    in U-labels is given in A-labels (RFC 5321 section 4.1.2, RFC 6531
    section 3.7.1).

    @raise ValueError: If it cannot be written so, saying to set
        C{heloName}.
    """
    try:
        return machineName()
    except UnusableMachineName as e:
        raise ValueError(e.advice("heloName")) from None


class RelayHandler(ProxyingHandler):
    """
    Pass each transaction on to the smarthost C{host}:C{port} over SMTP, as
    a before-queue proxy: every reply the client gets is the smarthost's
    verdict (what a 250 means is written in C{docs/relaying.md}).

      - MAIL is passed on with the parameters the smarthost can take (SIZE,
        BODY, SMTPUTF8 when an address needs it, REQUIRETLS over verified
        TLS only, RET and ENVID when it offers DSN); a message needing an
        extension it lacks is refused at MAIL: 554 5.6.3 for BINARYMIME or
        8BITMIME, 553 5.6.7 for SMTPUTF8, 550 5.7.10 / 5.7.30 for
        REQUIRETLS;
      - to a smarthost without SMTPUTF8, a sender or recipient whose local
        part is ASCII and whose domain is in U-labels goes with its domain
        in A-labels (the same mailbox), not refused; one whose local part
        is not ASCII gets 553 5.6.7;
      - each RCPT is passed on (with NOTIFY and ORCPT when it offers DSN)
        and answered with its reply: 250 only if it accepted the
        recipient;
      - the body is streamed on behind this server's C{Received:} field
        (unless C{traceHeaders} is off), with BDAT when it offers CHUNKING
        (byte for byte), else DATA; the reply after the body is its reply
        (in LMTP mode, repeated for every recipient);
      - a message whose header section holds more than C{hopLimit}
        C{Received:} fields (a mail loop) is refused with 554 5.4.6, and
        the session to the smarthost dropped before the body's end, so
        that it delivers nothing;
      - when it does not offer DSN, recipients asking NOTIFY=SUCCESS get a
        "relayed" report (RFC 3461 section 4), sent through the smarthost;
      - a smarthost that cannot be reached, times out, fails TLS or refuses
        the session (greeting, EHLO, AUTH) makes the reply temporary (451).

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
        maxSessions: int = 4,
        idleTimeout: float = 30.0,
        logMessages: bool = True,
        closeOnShutdown: bool = False,
        traceHeaders: bool = True,
        hopLimit: int = HOP_LIMIT,
        reactor: Any = None,
    ) -> None:
        """
        @param host: The smarthost; its certificate must be valid for this
            name when STARTTLS is used.
        @param port: Its port.
        @param tls: C{"opportunistic"} (STARTTLS when offered; with
            C{verify=False} and no credentials, a failed handshake is
            followed by one more try in plain text on a new connection, as
            Postfix at security level C{may}), C{"required"} (refuse a
            smarthost that does not offer it: 451 4.7.5) or C{"none"}.
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
        @param maxSessions: The most sessions open to the smarthost at once;
            more messages at the same time wait for one.
        @param idleTimeout: Seconds an unused session stays open for the
            next message (0: one session per message).
        @param logMessages: Log a line per message passed on (failures and
            refusals are logged anyway).
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
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._creator: IOpenSSLClientConnectionCreator | None = None
        if self._tls != "none":
            if verify:
                creator = refuseRenegotiation(optionsForClientTLS(host, trustRoot=self._trustRoot))
            else:
                creator = UnverifiedClientTLS(host)
            self._creator = ResumingTLS(creator)
        super().__init__(
            f"{host}:{port}",
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
        Connect to the smarthost: EHLO, STARTTLS, AUTH as configured.
        """
        endpoint = HostnameEndpoint(self._reactor, self.host, self.port, timeout=self._timeout)
        request = Request(
            sender="",
            recipients=(),
            stream=None,
            lmtp=False,
            heloName=self._heloName,
            tls=self._tls,
            tlsCreator=self._creator,
            verify=self._verify,
            username=self._username,
            password=self._password,
            smtpUtf8=False,
            requireTls=False,
            timeout=self._timeout,
        )
        return Deferred.fromCoroutine(openSession(endpoint, request, self._reactor, self.peer))


__all__ = ["RelayHandler", "defaultHeloName", "describe", "isLMTP", "loadTrustRoot"]
