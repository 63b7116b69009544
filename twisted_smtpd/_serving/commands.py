# -*- test-case-name: tests.test_protocol -*-
"""
The commands of a session outside a mail transaction: EHLO, HELO and LHLO
(RFC 5321 section 4.1.1.1, RFC 2033), AUTH's entry point, NOOP, QUIT, VRFY and
HELP.  Functions of the protocol, dispatched by verb.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.features import extensions, updateTransmissionType
from twisted_smtpd._core.grammar import (
    LMTP_REFUSED,
    SMTP_REFUSED,
    Phase,
    Verb,
    looksLikeBdat,
    parseHelo,
)
from twisted_smtpd._core.optionchecks import MAX_HELO_TEXT
from twisted_smtpd._core.replies import CommandError
from twisted_smtpd._serving import forwarding as _forwarding
from twisted_smtpd._serving import tlscommand as _tlscommand
from twisted_smtpd._serving import transaction as _transaction

if TYPE_CHECKING:
    from twisted_smtpd._core.replies import Reply
    from twisted_smtpd._serving.context import CommandContext, SessionControl


def ehlo(p: CommandContext, argument: bytes) -> None:
    """
    EHLO (LHLO in LMTP): ask C{onHelo}, then list the extensions.
    """
    options = p.options
    verb = "LHLO" if options.lmtp else "EHLO"
    hostname = parseHelo(argument, options.lenientAddresses, verb)

    def accepted(result: object) -> None:
        _greeted(p, verb, hostname)
        factory = p.server
        ext = extensions(
            options,
            secure=p.session.secure,
            startTLS=factory is not None and factory.startTLSAvailable,
            authMethods=_authMechanisms(p),
            chunking=True,
        )
        ext += _forwarding.advertised(p)
        p.reply(catalogue.ehlo(options.name, _heloText(p), ext), perText=True)
        _junkAnswered(p)

    def refused(reply: Reply) -> None:
        p.fail(reply)
        _junkAnswered(p)

    p.hook(p.handler.onHelo, (hostname, p.session), accepted, refused)


def _authMechanisms(p: CommandContext) -> tuple[str, ...]:
    """
    The AUTH mechanisms to list in EHLO now: none unless AUTH is enabled and
    the session is encrypted (or insecure AUTH is allowed).
    """
    factory = p.server
    options = p.options
    if factory is None or not factory.authEnabled or "AUTH" in options.disabledCommands:
        return ()
    if not (p.session.secure or options.allowInsecureAuth):
        return ()
    return factory.authMechanisms


def helo(p: CommandContext, argument: bytes) -> None:
    """
    HELO: ask C{onHelo}, then greet without extensions.
    """
    hostname = parseHelo(argument, p.options.lenientAddresses, "HELO")

    def accepted(result: object) -> None:
        _greeted(p, "HELO", hostname)
        p.reply(catalogue.helo(_heloText(p)), perText=True)
        _junkAnswered(p)

    def refused(reply: Reply) -> None:
        p.fail(reply)
        _junkAnswered(p)

    p.hook(p.handler.onHelo, (hostname, p.session), accepted, refused)


def _heloText(p: CommandContext) -> str:
    """
    The HELO/EHLO reply text, the client's name cut (C{...}) where the
    reply's first line would pass 512 octets (RFC 5321 section 4.5.3.1.5):
    L{ServerOptions} keeps room for an address literal, not for every
    name.
    """
    options = p.options
    client = p.session.clientHostname
    text = options.heloResponse % (options.name, client)
    over = len(text.encode("utf-8", "replace")) - MAX_HELO_TEXT
    if over > 0:
        client = client.encode("utf-8", "replace")[: -over - 3].decode("utf-8", "ignore")
        text = options.heloResponse % (options.name, client + "...")
    return text


def _greeted(p: CommandContext, verb: str, hostname: str) -> None:
    p.resetTransaction()
    p.phase = Phase.GREETED
    p.session.openingCommand = verb
    p.session.hostNameAppearsAs = hostname
    updateTransmissionType(p.session)
    p.emit("helo", hostname=hostname)


def auth(p: CommandContext, argument: bytes) -> None:
    """
    AUTH: the exchange's state is made on first use, and the SASL code
    loaded at the first AUTH of the process.
    """
    command = p.auth
    if command is None:
        from twisted_smtpd._serving.authcommand import AuthCommand

        command = p.auth = AuthCommand(p)
    command.command(argument)


def noop(p: CommandContext, argument: bytes) -> None:
    """
    NOOP (RFC 5321 section 4.1.1.9): its argument is ignored.
    """
    p.reply(catalogue.OK)


def quit(p: CommandContext, argument: bytes) -> None:
    """
    QUIT: 221, then close.
    """
    p.closeWith(catalogue.closing(p.options.name))


def vrfy(p: CommandContext, argument: bytes) -> None:
    """
    VRFY: 252, as RFC 5321 section 3.5.3 allows, never a mailbox lookup.
    """
    if not argument:
        p.fail(catalogue.SYNTAX_ERROR)
        return
    p.reply(catalogue.VRFY)


def help(p: CommandContext, argument: bytes) -> None:
    """
    HELP: 214 with a pointer to the standard.
    """
    p.reply(catalogue.HELP)


def lineTooLong(p: CommandContext, line: bytes) -> None:
    """
    Refuse a line too long to be a command (or an answer inside AUTH, which
    that ends); a BDAT line too long to be read ends the session, as its size
    cannot be trusted.  The refusal's C{reject} event is its only log line.

    @param line: The line, or as much of it as was read.
    """
    auth = p.auth
    if auth is not None and auth.active:
        auth.abort(catalogue.LINE_TOO_LONG)
    elif looksLikeBdat(line):
        _transaction.malformedBdat(p)
    else:
        p.fail(catalogue.LINE_TOO_LONG)


Action = Callable[["SessionControl", bytes], None]


def _junk(action: Action, hooked: bool = False) -> Action:
    """
    C{action}, for a command a client can repeat without end and move no
    message on, counted (L{SessionControl.countJunk}) once it is answered,
    as Postfix's C{smtpd_proto} counts a junk command after its action
    has replied: the reply of the command whose count reaches
    C{softErrorLimit} is not held, and the one whose count reaches
    C{maxErrors} is sent before the C{421}.

    @param hooked: Whether C{action} asks a hook (HELO, EHLO), whose
        answer may come later: then C{action} counts the command itself
        once it is answered (L{_junkAnswered}), and only its refusal for a
        bad argument is counted here.
    """

    def counted(p: SessionControl, argument: bytes) -> None:
        try:
            action(p, argument)
        except CommandError as e:
            p.fail(e.reply)
        else:
            if hooked:
                return
        if not p.closing:
            p.countJunk()

    return counted


def _junkAnswered(p: CommandContext) -> None:
    """
    A junk command whose answer came from a hook (HELO, EHLO) was
    answered: count it (L{_junk}), unless the answer ended the session.
    """
    if not p.closing:
        p.countJunk()


#: The function for each command verb.
DISPATCH: dict[Verb, Action] = {
    Verb.EHLO: _junk(ehlo, hooked=True),
    Verb.LHLO: _junk(ehlo, hooked=True),
    Verb.HELO: _junk(helo, hooked=True),
    Verb.MAIL: _transaction.mail,
    Verb.RCPT: _transaction.rcpt,
    Verb.DATA: _transaction.data,
    Verb.BDAT: _transaction.bdat,
    Verb.RSET: _junk(_transaction.rset),
    Verb.NOOP: _junk(noop),
    Verb.QUIT: quit,
    Verb.VRFY: _junk(vrfy),
    Verb.HELP: _junk(help),
    Verb.STARTTLS: _tlscommand.startTLS,
    Verb.AUTH: auth,
    Verb.XCLIENT: _forwarding.xclient,
    Verb.XFORWARD: _forwarding.xforward,
}


def run(p: SessionControl, verb: Verb, argument: bytes, disabled: frozenset[Verb]) -> None:
    """
    Run a command, unless it is disabled, out of its place in the session,
    or unknown to the server.
    """
    if verb in disabled:
        _transaction.refuse(p, verb, argument, catalogue.NOT_IMPLEMENTED)
        return
    # checkPhase's lookup, without its call and exception on every command.
    refused = (LMTP_REFUSED if p.options.lmtp else SMTP_REFUSED).get((verb, p.phase))
    if refused is not None:
        _transaction.refuse(p, verb, argument, refused)
        return
    action = DISPATCH.get(verb)
    if action is None:
        p.fail(catalogue.NOT_IMPLEMENTED)
        return
    try:
        action(p, argument)
    except CommandError as e:
        p.fail(e.reply)
