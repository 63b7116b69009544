# -*- test-case-name: tests.test_client -*-
"""
A small streaming SMTP and LMTP client: L{deliver} hands one message to a
server in one dialogue.  (The relay and LMTP handlers instead drive a
session command by command, L{twisted_smtpd._smtpclient.clientsession}, over the same
L{ClientProtocol}.)

The dialogue is RFC 5321 (SMTP) or RFC 2033 (LMTP): the greeting, EHLO or
LHLO, STARTTLS (RFC 3207) when offered or required, AUTH PLAIN or LOGIN (RFC
4954) when credentials are given, MAIL, one RCPT per recipient (pipelined
with MAIL and DATA when the server offers PIPELINING, RFC 2920), DATA, the
body streamed with dot-stuffing and flow control, and QUIT.

The body is never held whole: an L{IMessageStream} is registered as the
streaming producer of the connection, so a slow server pauses the stream,
which pauses the client the message comes from.

The values, the reply parser, dot-stuffing and the non-verifying TLS
connection creator live in L{twisted_smtpd._smtpclient.clientwire}, which uses no
reactor; the names handlers need are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.internet.ssl import Certificate, optionsForClientTLS

from twisted_smtpd._smtpclient.clientconnect import connectWithin
from twisted_smtpd._smtpclient.clientprotocol import ClientProtocol, Request, TLSMode
from twisted_smtpd._smtpclient.clientsession import ProtocolFactory, withFallback
from twisted_smtpd._smtpclient.clientwire import (
    ClientReply,
    DeliveryError,
    DeliveryResult,
    RecipientResult,
    UnverifiedClientTLS,
    refuseRenegotiation,
)
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.interfaces import IMessageStream

__all__ = [
    "TLS_MODES",
    "ClientReply",
    "DeliveryError",
    "DeliveryResult",
    "RecipientResult",
    "TLSMode",
    "UnverifiedClientTLS",
    "deliver",
]

TLS_MODES: frozenset[str] = frozenset({"required", "opportunistic", "none"})


def _checkLine(name: str, value: str) -> None:
    if any(c in value for c in "\r\n\x00") or (name != "sender" and not value):
        raise ValueError(f"invalid {name}: {value!r}")


def deliver(
    endpoint: IStreamClientEndpoint,
    *,
    sender: str,
    recipients: Sequence[str],
    stream: IMessageStream | bytes,
    heloName: str,
    lmtp: bool = False,
    tls: TLSMode = "opportunistic",
    tlsHostname: str | None = None,
    trustRoot: Certificate | IOpenSSLTrustRoot | None = None,
    verify: bool = True,
    username: str | None = None,
    password: str | None = None,
    smtpUtf8: bool = False,
    requireTls: bool = False,
    timeout: float = 300.0,
    reactor: Any = None,
) -> Deferred[DeliveryResult]:
    """
    Hand one message to the SMTP or LMTP server at C{endpoint}.

    With C{tls="opportunistic"} STARTTLS is used when offered, with
    C{"required"} a server not offering it fails the delivery (451 4.7.5),
    with C{"none"} it is never used.  Once STARTTLS is used the server's
    certificate must be valid for C{tlsHostname} (checked with
    C{service_identity}); a failed check fails the delivery (451 4.7.5),
    there is no fall back to plain text.  Only with C{"opportunistic"},
    C{verify=False} and no credentials is a failed handshake followed by one
    more try in plain text on a new connection (as Postfix at security level
    C{may}).  Credentials are only sent over TLS, unless C{tls="none"} says
    plain text is intended.

    @param endpoint: Where the server listens.
    @param sender: The reverse-path (C{""} for C{<>}).
    @param recipients: The forward-paths, at least one.
    @param stream: The body (after dot-unstuffing), streamed; or C{bytes}.
    @param heloName: The name to give in EHLO/LHLO.
    @param lmtp: Speak LMTP (RFC 2033): LHLO, one reply per recipient.
    @param tls: C{"required"}, C{"opportunistic"} or C{"none"}.
    @param tlsHostname: The name the certificate must match, also sent as
        SNI; needed unless C{tls="none"} or C{verify=False}.
    @param trustRoot: The CAs to trust; the platform's by default.
    @param verify: C{False} accepts any certificate: INSECURE, it only keeps
        passive eavesdroppers out.
    @param username: For AUTH PLAIN (or LOGIN when only that is offered).
    @param password: Its password.
    @param smtpUtf8: Ask for SMTPUTF8 (RFC 6531) even for ASCII addresses;
        it is asked for anyway when an address is not ASCII.  A server not
        offering it fails the delivery (553 5.6.7), unless C{smtpUtf8} is
        false and each address that is not ASCII has an all-ASCII form (an
        ASCII local part, the domain in U-labels: it goes with the domain
        in A-labels).
    @param requireTls: The message carries REQUIRETLS (RFC 8689): it is only
        sent over TLS verified for C{tlsHostname}, to a server offering
        REQUIRETLS (which MAIL then carries); otherwise the delivery fails
        permanently (550 5.7.10 or 5.7.30).  STARTTLS is then required
        whatever C{tls} says.
    @param timeout: Seconds to wait for the connection and for each reply
        (and for the server to take each part of the body).
    @param reactor: The reactor for timeouts; the global one by default.
    @return: A L{Deferred} firing with a L{DeliveryResult} once every
        recipient has its final reply (in LMTP, when the connection is lost
        after some recipients' replies, the others get a 451 made here), or
        failing with L{DeliveryError}; if the stream fails (the body did not
        arrive whole), the connection is dropped before the final dot and
        the L{Deferred} fails with the stream's failure.
    @raise ValueError: An argument is invalid.
    """
    if tls not in TLS_MODES:
        raise ValueError(f"tls must be one of {', '.join(sorted(TLS_MODES))}")
    if not recipients:
        raise ValueError("at least one recipient is needed")
    _checkLine("sender", sender)
    for address in recipients:
        _checkLine("recipient", address)
    _checkLine("heloName", heloName)
    if (username is None) != (password is None):
        raise ValueError("username and password go together")
    if requireTls:
        tls = "required"
    creator: IOpenSSLClientConnectionCreator | None = None
    if tls != "none":
        if verify:
            if not tlsHostname:
                raise ValueError("tlsHostname is needed to verify the server's certificate")
            creator = refuseRenegotiation(optionsForClientTLS(tlsHostname, trustRoot=trustRoot))
        else:
            creator = UnverifiedClientTLS(tlsHostname)
    if isinstance(stream, bytes):
        body = MessageStream()
        body._write(stream)
        body._finish()
        stream = body
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    request = Request(
        sender=sender,
        recipients=tuple(recipients),
        stream=stream,
        lmtp=lmtp,
        heloName=heloName,
        tls=tls,
        tlsCreator=creator,
        username=username,
        password=password,
        smtpUtf8=smtpUtf8,
        requireTls=requireTls,
        verify=verify,
        timeout=timeout,
    )
    return Deferred.fromCoroutine(_connectAndRun(endpoint, request, reactor))


async def _connectAndRun(
    endpoint: IStreamClientEndpoint, request: Request, clock: Any
) -> DeliveryResult:
    # A failed handshake sent nothing of the message: plain text may follow.
    return await withFallback(lambda r: _run(endpoint, r, clock), request, str(endpoint))


async def _run(endpoint: IStreamClientEndpoint, request: Request, clock: Any) -> DeliveryResult:
    protocol: ClientProtocol = await connectWithin(
        endpoint, ProtocolFactory(request, clock), clock, request.timeout
    )
    return await protocol.run()
