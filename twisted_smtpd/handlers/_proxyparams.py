# -*- test-case-name: tests.test_relayextensions -*-
"""
The addresses and ESMTP parameters a proxying handler
(L{twisted_smtpd.handlers._proxying}) passes on to its next hop: those of
MAIL, as the next hop can take them, and, for a next hop without
C{SMTPUTF8}, the 7-bit form of C{ENVID} and C{ORCPT} and of an address
whose domain only is not ASCII.
"""

from __future__ import annotations

from twisted_smtpd._core.address import MAX_ENVID, MAX_ORCPT, MAX_SIZE_DIGITS
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.hostname import asciiAddress
from twisted_smtpd._core.session import Address
from twisted_smtpd._core.xtext import encodeUtf8Address
from twisted_smtpd._smtpclient.clientsession import ClientSession

#: The largest C{SIZE} a MAIL command can declare: twenty digits (RFC 1870
#: section 3, C{size-value ::= 1*20DIGIT}).
_MAX_SIZE = 10**MAX_SIZE_DIGITS - 1


def nextHopAddress(address: str, client: ClientSession) -> str:
    """
    C{address} as the next hop of C{client} can take it: as it is when it
    is ASCII or the next hop offers C{SMTPUTF8}, else its all-ASCII form
    (L{asciiAddress}).

    @raise SMTPError: 553 5.6.7 when it has none.
    """
    if address.isascii() or client.offers("SMTPUTF8"):
        return address
    converted = asciiAddress(address)
    if converted is None:
        raise SMTPError(553, "Error: the next hop does not support SMTPUTF8", "5.6.7")
    return converted


def originalRecipient(address: Address, client: ClientSession) -> str:
    """
    The C{ORCPT} to add for C{address}, a recipient passed on in its
    all-ASCII form (L{nextHopAddress}) to a next hop offering DSN, when
    the client gave none: the address as the client gave it, of type
    C{utf-8} in its 7-bit form (RFC 6533 section 3), which RFC 3461
    section 5.2.1 lets a relay add, so that the next hop's reports name
    the recipient as it was given.  C{""} when none is to be added, or it
    would pass RFC 3461's bound of 500 characters.
    """
    if address.address.isascii() or "ORCPT" in address.args:
        return ""
    if client.offers("SMTPUTF8") or not client.offers("DSN"):
        return ""
    value = "utf-8;" + encodeUtf8Address(address.address)
    return f" ORCPT={value}" if len(value) <= MAX_ORCPT else ""


def _xtextOctets(character: str) -> str:
    return "".join(f"+{octet:02X}" for octet in character.encode("utf-8"))


def sevenBitParameter(key: str, value: str) -> str:
    """
    The value of C{ENVID} or C{ORCPT}, as the client sent it, in the 7-bit
    form a next hop that is not given C{SMTPUTF8} can take: each non-ASCII
    character (which RFC 6531 allows only with C{SMTPUTF8}) as xtext, its
    UTF-8 octets as C{+XX} (RFC 3461 section 4), or, in a C{utf-8} address
    of C{ORCPT}, as the C{\\x{HEX}} escape of RFC 6533 section 3
    (C{utf-8-addr-xtext}).  The rest of the value is already xtext.

    @raise SMTPError: 553 5.6.7 when the 7-bit form is longer than RFC 3461
        allows (100 characters for C{ENVID}, 500 for C{ORCPT}).
    """
    if value.isascii():
        return value
    if key == "ORCPT":
        addressType, semicolon, address = value.partition(";")
        if addressType.lower() == "utf-8":
            escaped = "".join(c if c.isascii() else f"\\x{{{ord(c):X}}}" for c in address)
        else:
            escaped = "".join(c if c.isascii() else _xtextOctets(c) for c in address)
        value, limit = addressType + semicolon + escaped, MAX_ORCPT
    else:
        value, limit = "".join(c if c.isascii() else _xtextOctets(c) for c in value), MAX_ENVID
    if len(value) > limit:
        raise SMTPError(553, f"Error: {key} too long for a next hop without SMTPUTF8", "5.6.7")
    return value


def mailParameters(address: Address, client: ClientSession, added: int = 0) -> str:
    """
    The MAIL parameters to pass on, or the refusal when the next hop
    lacks an extension the message needs.  C{SMTPUTF8} goes with a sender
    that is not ASCII when the next hop offers it; to one that does not,
    the sender goes in its all-ASCII form (L{nextHopAddress}) or is
    refused there.

    @param added: The octets the message grows by on its way (the
        C{Received:} field written before it), added to its C{SIZE} (at
        most twenty digits, RFC 1870 section 3).
    """
    args = address.args
    parameters = ""
    body = str(args.get("BODY", "")).upper()
    if body == "BINARYMIME":
        # RFC 3030 section 3: a binary message cannot be sent to a
        # server without BINARYMIME (nor, here, without PIPELINING for
        # the chunks): refused before the body.
        if not client.offers("CHUNKING", "BINARYMIME", "PIPELINING"):
            raise SMTPError(
                554, "Error: the next hop does not accept binary messages (BINARYMIME)", "5.6.3"
            )
        parameters += " BODY=BINARYMIME"
    elif body == "8BITMIME":
        if not client.offers("8BITMIME"):
            raise SMTPError(
                554, "Error: the next hop does not accept 8-bit messages (8BITMIME)", "5.6.3"
            )
        parameters += " BODY=8BITMIME"
    elif body == "7BIT" and client.offers("8BITMIME"):
        parameters += " BODY=7BIT"
    if isinstance(args.get("SIZE"), str) and client.offers("SIZE"):
        # Never past twenty digits: a client's SIZE near the largest grows
        # to the largest, which a next hop with a size limit refuses as too
        # large (552), not to a value it would refuse as bad syntax (501).
        parameters += f" SIZE={min(int(args['SIZE']) + added, _MAX_SIZE)}"
    if client.offers("SMTPUTF8") and (not address.address.isascii() or "SMTPUTF8" in args):
        parameters += " SMTPUTF8"
    if "REQUIRETLS" in args:
        # RFC 8689 section 4.2.1.
        if not client.verified:
            raise SMTPError(
                550, "Error: REQUIRETLS: no verified TLS session to the next hop", "5.7.10"
            )
        if not client.offers("REQUIRETLS"):
            raise SMTPError(550, "Error: the next hop does not support REQUIRETLS", "5.7.30")
        parameters += " REQUIRETLS"
    if client.offers("DSN"):
        for key in ("RET", "ENVID"):
            value = args.get(key)
            if isinstance(value, str):
                if not client.offers("SMTPUTF8"):
                    value = sevenBitParameter(key, value)
                parameters += f" {key}={value}"
    return parameters
