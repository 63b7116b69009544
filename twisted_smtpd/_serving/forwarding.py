# -*- test-case-name: tests.test_forwarding -*-
"""
What a trusted front end says about the real client: a PROXY header
(recorded here, checked by L{twisted_smtpd._serving.proxy}), Postfix's XCLIENT and
XFORWARD commands.  Each is believed only from the networks configured for
it (C{useProxy}, C{useXClient}, C{useXForward}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.features import updateTransmissionType
from twisted_smtpd._core.grammar import XCLIENT_ATTRIBUTES, XFORWARD_ATTRIBUTES, Phase
from twisted_smtpd._core.optionvalues import trusted
from twisted_smtpd._core.printable import addressLiteral
from twisted_smtpd._core.session import (
    LOCAL_CLIENT_NAME,
    ProxyInfo,
    Session,
    unixPeer,
    unmapped,
)
from twisted_smtpd._core.xclient import (
    UNAVAILABLE,
    canonicalAddress,
    parseXClient,
    parseXForward,
)
from twisted_smtpd._serving.flow import PAUSE_HOOK
from twisted_smtpd._serving.greeting import runConnectHooks
from twisted_smtpd._serving.proxied import proxyDetails

if TYPE_CHECKING:
    from twisted_smtpd._serving.context import CommandContext, SessionControl

_UNAVAILABLE = frozenset({UNAVAILABLE, "[TEMPUNAVAIL]"})

#: The client's address when XCLIENT says it is unavailable, as Postfix
#: writes it (C{CLIENT_ADDR_UNKNOWN}): logged as C{unknown[unknown]}.
UNKNOWN_ADDRESS = "unknown"


def _port(value: str | None, default: int, unavailable: int | None = None) -> int:
    """
    A port attribute's value (checked by C{parseXClient}: ASCII digits up
    to 65535), C{default} when it was not given, C{unavailable} (or
    C{default} when that is C{None}) for C{[UNAVAILABLE]}.
    """
    if value is None:
        return default
    if value in _UNAVAILABLE:
        return default if unavailable is None else unavailable
    return int(value)


def connected(session: Session, transport: Any) -> None:
    """
    Note in C{session} what a PROXY header (already checked against
    C{useProxy} by L{twisted_smtpd._serving.proxy}) said; until a reverse
    lookup or XCLIENT names it, the client's name is its address literal
    (C{[192.0.2.1]}, C{[IPv6:2001:db8::1]}), or C{localhost} for a UNIX
    socket's client, as Postfix names it.  Addresses are in the form
    L{twisted_smtpd._core.session.hostPort} gives them: an IPv4-mapped
    address as IPv4.
    """
    address = session.remoteAddress
    session.clientHostname = LOCAL_CLIENT_NAME if unixPeer(address) else addressLiteral(address[0])
    details = proxyDetails(transport)
    if details is not None:
        frontEnd, header = details
        attributes = {
            "PROXY": unmapped(str(getattr(frontEnd, "host", ""))),
            "VERSION": str(header.version),
        }
        if header.source is not None:
            attributes["SOURCE"] = unmapped(header.source[0])
        if header.destination is not None:
            attributes["DESTINATION"] = unmapped(header.destination[0])
        session.proxy = ProxyInfo(attributes)


def advertised(p: CommandContext) -> tuple[str, ...]:
    """
    The XCLIENT and XFORWARD keywords for a trusted client.
    """
    options = p.options
    out = []
    if options.useXClient and trusted(options.useXClient, p.connectedFrom):
        out.append("XCLIENT " + " ".join(sorted(XCLIENT_ATTRIBUTES)))
    if options.useXForward and trusted(options.useXForward, p.connectedFrom):
        out.append("XFORWARD " + " ".join(sorted(XFORWARD_ATTRIBUTES)))
    return tuple(out)


def _allowed(p: CommandContext, networks: Any) -> bool:
    if not networks or not trusted(networks, p.connectedFrom):
        p.fail(catalogue.NOT_AUTHORIZED)
        return False
    if p.phase in (Phase.MAIL, Phase.RCPT):
        p.fail(catalogue.AUTH_IN_TRANSACTION)
        return False
    return True


def xclient(p: SessionControl, argument: bytes) -> None:
    """
    XCLIENT: take the real client's attributes, then start the session
    again with a new greeting, as Postfix does.

    Once it names an address, XCLIENT and XFORWARD are trusted by that
    address (L{CommandContext.connectedFrom}), no longer by the front end's.

    An attribute the front end says is unavailable (C{[UNAVAILABLE]},
    C{[TEMPUNAVAIL]}) is unknown, as in Postfix, never the front end's own:
    C{ADDR} makes the address L{UNKNOWN_ADDRESS} (C{unknown[unknown]} in
    the logs), C{PORT} the port 0, C{NAME} the name unknown (the address
    literal, as without a reverse name); C{DESTADDR} and C{DESTPORT} make
    the address the client connected to L{UNKNOWN_ADDRESS} and port 0
    (Postfix's C{SERVER_ADDR_UNKNOWN}, C{SERVER_PORT_UNKNOWN}).

    A C{NAME} an earlier XCLIENT sent stays the client's name when a later
    one sends only C{ADDR}, as in Postfix ("XCLIENT attributes persist
    until the end of an SMTP session", XCLIENT_README); so does a C{HELO},
    while the name given in an EHLO before XCLIENT is forgotten, as
    Postfix forgets it.
    """
    if not _allowed(p, p.options.useXClient):
        return
    attributes = parseXClient(argument)
    session = p.session
    session.xClient.update(attributes)
    previousAddress = host, port = session.remoteAddress
    address = attributes.get("ADDR")
    if address is not None:
        unavailable = address in _UNAVAILABLE
        host = UNKNOWN_ADDRESS if unavailable else canonicalAddress(address)
        session.clientHostname = addressLiteral(host)
    port = _port(attributes.get("PORT"), port, 0)
    session.remoteAddress = (host, port)
    if address is not None:
        # Trust follows the client XCLIENT named, as Postfix's xclient_cmd
        # matches smtpd_authorized_xclient_hosts again: a client outside
        # the trusted networks, whose commands the front end now passes
        # on, can send neither XCLIENT nor XFORWARD (XCLIENT_README: "Once
        # ADDR is sent, the client is usually no longer authorized").
        p.connectedFrom = host
    # A NAME persists, as in Postfix, whose xclient_cmd changes the name
    # only for NAME: a later XCLIENT sending only ADDR keeps it.
    name = session.xClient.get("NAME")
    if name is not None:
        session.clientHostname = addressLiteral(host) if name in _UNAVAILABLE else name
    # The greeting name is the HELO an XCLIENT gave, never the one the
    # front end (or the client before) sent in its EHLO: Postfix's
    # xclient_cmd resets it (helo_reset).
    helo = session.xClient.get("HELO")
    session.hostNameAppearsAs = None if helo is None or helo in _UNAVAILABLE else helo
    # The session starts over as another client's: logged in as LOGIN names,
    # never as whoever authenticated before (Postfix resets its SASL state).
    login = attributes.get("LOGIN")
    session.user = None if login is None or login in _UNAVAILABLE else login
    if login is None:
        # Logged out: xClient no longer names a login that is over.
        session.xClient.pop("LOGIN", None)
    local, localPort = session.localAddress
    destination = attributes.get("DESTADDR")
    if destination is not None:
        local = UNKNOWN_ADDRESS if destination in _UNAVAILABLE else canonicalAddress(destination)
    session.localAddress = (local, _port(attributes.get("DESTPORT"), localPort, 0))
    p.resetTransaction()
    p.phase = Phase.CONNECTED
    session.openingCommand = None
    updateTransmissionType(p.session)
    p.setPause(PAUSE_HOOK, True)
    runConnectHooks(p, previousAddress)


def xforward(p: CommandContext, argument: bytes) -> None:
    """
    XFORWARD: record the original client's attributes for the next
    transaction (C{session.xForward}).
    """
    if not _allowed(p, p.options.useXForward):
        return
    attributes = parseXForward(argument)
    p.session.xForward.update(attributes)
    p.reply(catalogue.OK)
