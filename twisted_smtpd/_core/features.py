# -*- test-case-name: tests.test_features -*-
"""
Pure: what a session advertises in its EHLO/LHLO reply, and the
transmission type for C{Received:} headers.
"""

from __future__ import annotations

from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Session


def extensions(
    options: ServerOptions,
    *,
    secure: bool,
    startTLS: bool,
    authMethods: tuple[str, ...],
    chunking: bool = False,
) -> tuple[str, ...]:
    """
    The EHLO/LHLO keywords for a session (RFC 5321 section 4.1.1.1), in the
    order Postfix lists them.

    @param secure: Whether the session is encrypted.
    @param startTLS: Whether STARTTLS can be offered (a certificate is there).
    @param authMethods: The SASL mechanisms to advertise now; empty for none.
    @param chunking: Whether BDAT is implemented.  CHUNKING and BINARYMIME
        are not advertised when BDAT is in C{disabledCommands}: a client
        taking them at their word would send a chunk the server refuses.
    """
    o = options
    ext: list[str] = []
    if o.lmtp or not o.hidePIPELINING:
        # An LMTP server must implement PIPELINING (RFC 2033 section 5).
        ext.append("PIPELINING")
    if not o.hideSize:
        ext.append(f"SIZE {o.size}" if o.size else "SIZE")
    if startTLS and not secure and not o.hideSTARTTLS:
        ext.append("STARTTLS")
    if authMethods:
        ext.append("AUTH " + " ".join(authMethods))
    if o.enhancedStatusCodes:
        ext.append("ENHANCEDSTATUSCODES")
    if not o.hide8BITMIME:
        ext.append("8BITMIME")
    if not o.hideDSN:
        ext.append("DSN")
    if not o.hideSMTPUTF8:
        ext.append("SMTPUTF8")
    if chunking and not o.hideCHUNKING and "BDAT" not in o.disabledCommands:
        ext.append("CHUNKING")
        ext.append("BINARYMIME")
    if secure and not o.hideREQUIRETLS:
        ext.append("REQUIRETLS")
    return tuple(ext)


def transmissionType(openingCommand: str | None, secure: bool, authenticated: bool) -> str:
    """
    The RFC 3848 C{with} keyword: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, LMTP,
    LMTPS, LMTPA, LMTPSA.
    """
    base = {"EHLO": "ESMTP", "LHLO": "LMTP"}.get(openingCommand or "", "SMTP")
    if base == "SMTP":
        return base
    return base + ("S" if secure else "") + ("A" if authenticated else "")


def messageTransmissionType(session: Session) -> str:
    """
    The C{with} keyword of a C{Received:} field for the message of
    C{session}'s transaction: its C{transmissionType}, or for a message
    sent with C{SMTPUTF8} the RFC 6531 (section 4.3) one: C{UTF8SMTP},
    C{UTF8SMTPS}, C{UTF8SMTPA}, C{UTF8SMTPSA}, C{UTF8LMTP}, ...
    """
    kind = session.transmissionType
    if session.envelope.smtpUtf8 and kind != "SMTP":
        return "UTF8" + kind.removeprefix("E")
    return kind


def updateTransmissionType(session: Session) -> None:
    """
    Recompute C{session.transmissionType} after a change of greeting, TLS
    or authentication.
    """
    session.transmissionType = transmissionType(
        session.openingCommand, session.secure, session.user is not None
    )
