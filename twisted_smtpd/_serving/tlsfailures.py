# -*- test-case-name: tests.test_tlsfailures -*-
"""
Why a TLS handshake failed, as one of a few fixed kinds (the C{reason}
label of C{smtpd_tls_handshake_failures_total}), and which listener it
failed on (its C{listener} label): OpenSSL's reasons are mapped onto the
kinds, never used as label values themselves, so that no client can add
series.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.protocols.tls import TLSMemoryBIOFactory

from twisted_smtpd._serving.tlshalfclose import HalfClosingTLS

if TYPE_CHECKING:
    from twisted_smtpd._serving.context import SessionControl

#: The handshake did not finish within C{tlsHandshakeTimeout}.
TIMEOUT = "timeout"
#: No protocol version or cipher in common, the client does not speak TLS
#: at all (plaintext, an HTTP request, garbage), or it sends what TLS does
#: not allow: a malformed record, message or extension (a ClientHello with
#: an extension twice, a length that does not add up), an alert out of
#: place or too many warning alerts.
PROTOCOL = "protocol"
#: A certificate was refused: the client's by the server (none sent, or one
#: that does not verify), or the server's by the client (an alert such as
#: C{unknown ca}, C{bad certificate}, C{certificate expired}).
CERTIFICATE = "certificate"
#: The client closed or reset the connection in the middle of the handshake.
CLOSED = "closed"
#: Any other TLS error.
OTHER = "other"

#: Every value of the C{reason} label.
REASONS = (TIMEOUT, PROTOCOL, CERTIFICATE, CLOSED, OTHER)

#: The C{listener} label of a handshake after STARTTLS (no endpoint string
#: is one word).
STARTTLS = "starttls"

# Words of OpenSSL's reason strings (lower case), checked in this order.
_CERTIFICATE_WORDS = ("certificate", "unknown ca", "unknown_ca")
_CLOSED_WORDS = ("unexpected eof",)
_PROTOCOL_WORDS = (
    "protocol",  # unsupported protocol, tlsv1 alert protocol version, unknown protocol
    "version",  # wrong version number, version too low, wrong ssl version
    "cipher",  # no shared cipher, no ciphers available
    "signature algorithm",
    "shared group",
    "inappropriate fallback",
    "http request",
    "https proxy request",
    "packet length too long",
    "record length",
    "record layer failure",
    "unexpected message",
    "decode error",
    "handshake failure",  # sslv3 alert handshake failure: nothing in common
    "suitable groups",
    "key share",  # bad key share, no suitable key share
    # Malformed input: what OpenSSL (3.2 to 4.0) says of records, messages
    # and extensions TLS does not allow, a decode_error or
    # illegal_parameter alert sent (RFC 8446 section 6.2).
    "length",  # length mismatch, length too short, bad packet length, ...
    "message",  # extra data in message, excessive message size, ccs messages
    "extension",  # bad extension, missing sigalgs extension, unsolicited ...
    "tlsext",  # parse tlsext, clienthello tlsext
    "tls ext ",  # tls ext invalid servername
    "illegal parameter",  # the client's alert
    "bad packet",
    "unexpected record",
    "bad record type",
    "record too small",
    "record overflow",
    "invalid record",
    "not on record boundary",
    "mixed handshake and non handshake data",
    "app data in handshake",
    "early data",
    "ccs",  # ccs received early, got a fin before a ccs
    "hello",  # bad hello request, fragmented client hello
    "hrr",
    "compression algorithm",
    "point compression",
    "ecpoint",
    "dh value",
    "extms",
    "fragment",
    "invalid session id",
    # Alerts where TLS has no place for them.
    "warn alerts",  # too many warn alerts: 5 warning alerts in a row
    "alert type",  # unknown alert type
    "invalid alert",
    "renegotiat",  # no renegotiation (a warning alert), renegotiation mismatch
)


def failureReason(error: BaseException | None) -> str:
    """
    The kind of a failed handshake, one of L{REASONS} but L{TIMEOUT}.

    @param error: What ended the handshake: an C{OpenSSL.SSL.Error} with
        OpenSSL's reasons, or the loss of the connection.
    """
    if isinstance(error, SSL.SysCallError):
        # An end of file or a socket error under OpenSSL: (-1,
        # "Unexpected EOF"), (errno, text).
        return CLOSED
    if isinstance(error, SSL.Error):
        texts = [
            str(entry[-1]).lower()
            for entry in (error.args[0] if error.args and isinstance(error.args[0], list) else [])
            if entry
        ]
        for words, kind in (
            (_CERTIFICATE_WORDS, CERTIFICATE),
            (_CLOSED_WORDS, CLOSED),
            (_PROTOCOL_WORDS, PROTOCOL),
        ):
            if any(word in text for text in texts for word in words):
                return kind
        return OTHER
    if isinstance(error, ConnectionDone | ConnectionLost):
        # ConnectionAborted, a reset and a FIN are all kinds of these.
        return CLOSED
    return OTHER


class ListenerTLSFactory(TLSMemoryBIOFactory):
    """
    The TLS layer of an C{ssl:} listener, which knows the listener's
    endpoint string, for the C{listener} label of its failed handshakes,
    and reads a client's close_notify as a half-close (L{HalfClosingTLS}).

    @ivar listener: The endpoint string.
    """

    protocol = HalfClosingTLS

    def __init__(self, contextFactory: Any, wrappedFactory: Any, listener: str) -> None:
        super().__init__(contextFactory, False, wrappedFactory)
        self.listener = listener


def listenerLabel(transport: object, implicitTLS: bool) -> str:
    """
    The C{listener} label of a handshake on C{transport}: L{STARTTLS} after
    STARTTLS, else the endpoint string of the C{ssl:} listener
    (L{ListenerTLSFactory}), or C{""} for an implicit TLS connection made
    otherwise (a factory served on an endpoint of its user's making).
    """
    if not implicitTLS:
        return STARTTLS
    listener = getattr(getattr(transport, "factory", None), "listener", None)
    return listener if isinstance(listener, str) else ""


def tellHandshakeFailed(p: SessionControl, reason: str, error: str) -> None:
    """
    Tell the observers of C{p}'s server that its TLS handshake failed: a
    C{tlsfailed} event with the C{reason} (one of L{REASONS}), the
    C{listener} (L{listenerLabel}) and OpenSSL's C{error} text.
    """
    p.emit(
        "tlsfailed",
        reason=reason,
        listener=listenerLabel(p.transport, p.implicitTLS),
        error=error,
    )
