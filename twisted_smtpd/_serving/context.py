# -*- test-case-name: tests.test_layout -*-
"""
What the functions that act on a session may see and do of it: the
interfaces between L{SMTPProtocol<twisted_smtpd._serving.protocol.SMTPProtocol>}
and the modules that hold its commands and its life cycle.

L{CommandContext} is all a command needs: the session, its configuration,
the handler, replies, hooks and events.  L{SessionControl} adds what the
start of a session, the message transfer, STARTTLS and the deadlines need of
the connection underneath.  Each function is typed with the smaller one it
can use, and C{mypy} refuses anything else; no module reaches into the
protocol's private state (C{tests.test_layout} checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.logger import Logger
    from twisted.python.failure import Failure

    from twisted_smtpd._core.grammar import Phase
    from twisted_smtpd._core.options import ServerOptions
    from twisted_smtpd._core.replies import Reply
    from twisted_smtpd._core.session import Session
    from twisted_smtpd._serving.authcommand import AuthCommand
    from twisted_smtpd._serving.deadlines import Times
    from twisted_smtpd._serving.receiving import MessageReceiver
    from twisted_smtpd._serving.server import SMTPServerFactory
    from twisted_smtpd._serving.tarpit import ErrorTarpit
    from twisted_smtpd._serving.transaction import RefusedChunk
    from twisted_smtpd.interfaces import ISMTPHandler


class CommandContext(Protocol):
    """
    One session, as its commands see it.

    @ivar session: The L{Session} handlers see.
    @ivar phase: Where the session is in the command sequence.
    @ivar rcptAccepted: How many RCPT commands of the transaction were
        answered 250: in LMTP, the replies owed after its message (RFC
        2033 section 4.2), whatever the handler did to the envelope.
    @ivar auth: The AUTH exchange, made on the first AUTH command.
    @ivar connectedFrom: The IP address XCLIENT and XFORWARD are trusted
        by: the client the connection came from (the one a PROXY header
        named), until an XCLIENT names another address: then that one, as
        Postfix's C{xclient_cmd} decides C{smtpd_authorized_xclient_hosts}
        again, so that a client behind a front end that passes its commands
        on cannot send XCLIENT or XFORWARD itself.
    """

    session: Session
    phase: Phase
    rcptAccepted: int
    auth: AuthCommand | None
    connectedFrom: str

    @property
    def options(self) -> ServerOptions:
        """
        The server's configuration.
        """

    @property
    def handler(self) -> ISMTPHandler:
        """
        The handler whose hooks decide.
        """

    @property
    def server(self) -> SMTPServerFactory | None:
        """
        The factory serving the session (C{None} for a protocol built alone,
        in unit tests): policy shared by its sessions.
        """

    @property
    def log(self) -> Logger:
        """
        Where the session's log lines go.
        """

    @property
    def connected(self) -> bool:
        """
        Whether the connection is still up.
        """

    @property
    def closing(self) -> bool:
        """
        Whether the session is ending: nothing more is read.
        """

    def reply(self, reply: Reply, perText: bool = False) -> None:
        """
        Send C{reply}; replies leave in command order.  C{perText} says it
        is made once per text from outside (the replies to HELO and EHLO):
        its encoded form is cached apart from the fixed replies'.
        """

    def fail(self, reply: Reply) -> None:
        """
        Send the refusal C{reply} and count it towards C{maxErrors}.
        """

    def refuseForLimit(self, reply: Reply, limit: str) -> None:
        """
        Refuse the command for a limit of the client's address reached,
        logged in one line, and count it towards C{maxErrors}.
        """

    def closeWith(self, reply: Reply) -> None:
        """
        Send C{reply} and end the session.
        """

    def closeForLimit(self, reply: Reply, limit: str, told: bool = False) -> None:
        """
        Send C{reply} and end the session for a limit reached, logged in
        one line naming the client; C{told} when C{reply}'s own event was
        already emitted (a message's refusal), so that no second one is.
        """

    def countJunk(self) -> None:
        """
        Count a command that moves no message on; past
        C{maxJunkCommands}, each counts towards C{maxErrors}.
        """

    def countError(self) -> None:
        """
        Count an error towards C{maxErrors} without a refused command (a
        message refused before its end).
        """

    def logFailure(self, failure: Failure, hookName: str) -> None:
        """
        Log a hook's unexpected failure.
        """

    def hook(
        self,
        fn: Callable[..., object],
        args: tuple[object, ...],
        accepted: Callable[[object], None],
        refused: Callable[[Reply], None],
    ) -> None:
        """
        Call the handler hook C{fn} with C{args}: C{accepted} gets its value,
        C{refused} the reply for its refusal; no command is read until it
        answers.
        """

    def emit(self, event: str, **data: Any) -> None:
        """
        Tell the server's observers (log lines, metrics) of C{event}.
        """

    def resetTransaction(self) -> None:
        """
        End the mail transaction, and a message in progress with it.
        """


class SessionControl(CommandContext, Protocol):
    """
    One session with its connection: what the start of a session, the
    message transfer, STARTTLS and the deadlines need.

    @ivar receiver: The message being received, or C{None}.
    @ivar discard: A refused BDAT chunk being dropped, or C{None}.
    @ivar times: When things happened, for the deadlines.
    @ivar draining: Whether the server is shutting down: the session ends
        after its transaction.
    @ivar refused: Whether the session was refused before it began (by
        C{onConnect} or a connection limit): C{onClose} is not called.
    @ivar began: Whether the session began (its C{connect} event, then
        C{onConnect}): one that ends before (its client gone, or the server
        closing, during the reverse lookup or an implicit TLS handshake)
        has no C{close} event and no C{onClose} either.
    @ivar tarpit: The error tarpit, made when the session first reached
        C{softErrorLimit}, or C{None}.
    """

    receiver: MessageReceiver | None
    discard: RefusedChunk | None
    times: Times
    draining: bool
    refused: bool
    began: bool
    tarpit: ErrorTarpit | None

    @property
    def transport(self) -> Any:
        """
        The connection.
        """

    @property
    def clock(self) -> IReactorTime:
        """
        The time source of the deadlines.
        """

    @property
    def implicitTLS(self) -> bool:
        """
        Whether the connection began with TLS (RFC 8314).
        """

    @property
    def pauses(self) -> int:
        """
        The reasons reading is paused (L{PAUSE_HOOK
        <twisted_smtpd._serving.flow.PAUSE_HOOK>} and the others, or-ed), or
        C{0}.
        """

    @property
    def waiting(self) -> bool:
        """
        Whether commands are held: a hook has not answered, or a TLS
        handshake is in progress.
        """

    def setPause(self, reason: int, paused: bool) -> None:
        """
        Add or remove one reason to pause reading.
        """

    def hookThenResume(
        self,
        fn: Callable[..., object],
        accepted: Callable[[object], None],
        refused: Callable[[Reply], None],
    ) -> None:
        """
        Call a hook taking only the session while reading is held, then read
        again.
        """

    def holdForHook(self) -> int:
        """
        A hook answers later: stop taking commands until it does.

        @return: A token for L{hookAnswered}.
        """

    def hookAnswered(self, token: int) -> None:
        """
        The hook that L{holdForHook} returned C{token} for answered: take
        commands again, unless its answer started another hook.
        """

    def messageDone(self, replies: list[Reply], size: int) -> None:
        """
        A message's replies are known (one, or one per LMTP recipient).
        """

    def bodyReceived(self, receiver: MessageReceiver, data: bytes, begin: int) -> None:
        """
        Hand C{data[begin:]}, read from the connection, to the message receiver.
        """

    def abandonMessage(self, reply: Reply) -> None:
        """
        Drop a message in progress, failing its stream with C{reply}'s error.
        """

    def inTransaction(self) -> bool:
        """
        Whether MAIL was accepted or a message's reply is still owed.
        """

    def beginTLS(self, contextFactory: object) -> None:
        """
        Switch the connection to TLS after the STARTTLS reply: send what is
        queued, drop the plaintext read behind it, hold commands until the
        handshake ends.
        """

    def abort(self) -> None:
        """
        Drop the connection now, whatever is still queued.
        """
