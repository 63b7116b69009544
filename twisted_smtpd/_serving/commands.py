# -*- test-case-name: tests.test_protocol -*-
"""
The commands of a session outside a mail transaction: EHLO, HELO and LHLO
(RFC 5321 section 4.1.1.1, RFC 2033), AUTH's entry point, NOOP, QUIT, VRFY and
HELP.  Functions of the protocol, dispatched by verb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.features import extensions
from twisted_smtpd._core.grammar import Phase, looksLikeBdat, parseHelo
from twisted_smtpd._serving import forwarding as _forwarding
from twisted_smtpd._serving import transaction as _transaction
from twisted_smtpd._serving.authcommand import AuthCommand, advertisedMechanisms

if TYPE_CHECKING:
    from twisted_smtpd._serving.protocol import SMTPProtocol


def ehlo(p: SMTPProtocol, argument: bytes) -> None:
    """
    EHLO (LHLO in LMTP): ask C{onHelo}, then list the extensions.
    """
    options = p._options
    hostname = parseHelo(argument, options.lenientAddresses)
    verb = "LHLO" if options.lmtp else "EHLO"

    def accepted(result: object) -> None:
        _greeted(p, verb, hostname)
        factory = p._serverFactory
        ext = extensions(
            options,
            secure=p.session.secure,
            startTLS=factory is not None and factory.startTLSAvailable,
            authMethods=advertisedMechanisms(p),
            chunking=True,
        )
        ext += _forwarding.advertised(p)
        p._send(catalogue.ehlo(options.name, _heloText(p), ext))

    p._hook(p._handler.onHelo, (hostname, p.session), accepted, p._fail)


def helo(p: SMTPProtocol, argument: bytes) -> None:
    """
    HELO: ask C{onHelo}, then greet without extensions.
    """
    hostname = parseHelo(argument, p._options.lenientAddresses)

    def accepted(result: object) -> None:
        _greeted(p, "HELO", hostname)
        p._send(catalogue.helo(_heloText(p)))

    p._hook(p._handler.onHelo, (hostname, p.session), accepted, p._fail)


def _heloText(p: SMTPProtocol) -> str:
    return p._options.heloResponse % (p._options.name, p.session.clientHostname)


def _greeted(p: SMTPProtocol, verb: str, hostname: str) -> None:
    p._resetTransaction()
    p._phase = Phase.GREETED
    p.session.openingCommand = verb
    p.session.hostNameAppearsAs = hostname
    p.updateTransmissionType()
    p._emit("helo", hostname=hostname)


def auth(p: SMTPProtocol, argument: bytes) -> None:
    """
    AUTH: the exchange's state is made on first use.
    """
    command = p._auth
    if command is None:
        command = p._auth = AuthCommand(p)
    command.command(argument)


def noop(p: SMTPProtocol, argument: bytes) -> None:
    """
    NOOP (RFC 5321 section 4.1.1.9): its argument is ignored.
    """
    p._send(catalogue.OK)


def quit(p: SMTPProtocol, argument: bytes) -> None:
    """
    QUIT: 221, then close.
    """
    p._closeWith(catalogue.closing(p._options.name))


def vrfy(p: SMTPProtocol, argument: bytes) -> None:
    """
    VRFY: 252, as RFC 5321 section 3.5.3 allows, never a mailbox lookup.
    """
    if not argument:
        p._fail(catalogue.SYNTAX_ERROR)
        return
    p._send(catalogue.VRFY)


def help(p: SMTPProtocol, argument: bytes) -> None:
    """
    HELP: 214 with a pointer to the standard.
    """
    p._send(catalogue.HELP)


def lineTooLong(p: SMTPProtocol, line: bytes) -> None:
    """
    Refuse a line too long to be a command (or an answer inside AUTH, which
    that ends); a BDAT line too long to be read ends the session, as its size
    cannot be trusted.

    @param line: The line, or as much of it as was read.
    """
    p._log.info("{session} line too long", session=p.session.id)
    auth = p._auth
    if auth is not None and auth.active:
        auth.abort(catalogue.LINE_TOO_LONG)
    elif looksLikeBdat(line):
        _transaction.malformedBdat(p)
    else:
        p._fail(catalogue.LINE_TOO_LONG)
