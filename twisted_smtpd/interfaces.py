# -*- test-case-name: tests.test_interfaces -*-
"""
The handler contract: L{ISMTPHandler}, and the message stream it is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from zope.interface import Attribute, Interface

from twisted_smtpd._core.session import Address, AuthRequest, Session


class _SMTPHandlerInterface(Interface):
    """
    What a server asks at each step of a session.

    Every hook may return a plain value, a L{twisted.internet.defer.Deferred}
    or be an C{async def} coroutine.  Raising (or failing with, or returning
    it: an exception returned is taken as raised)
    L{twisted_smtpd.SMTPError} answers the client with that reply (a 4xx or
    5xx one; only C{onData} may use a 2xx code); a 421 or 521 then closes
    the session, as those codes say (RFC 5321 section 3.8, RFC 7504).  Any
    other exception, an
    C{SMTPError} with a code below 400 from another hook, and one with a 3xx
    code from C{onData}, answers 451,
    is logged with its traceback, and the session goes on.  A hook that
    has not answered within the server's C{handlerTimeout} (600 s) has its
    command answered 421, which closes the session; the hook is left to
    finish (as when a client leaves in the middle of it) and its answer is
    not sent.  C{onClose} has no deadline.
    L{twisted_smtpd.handlers.BaseHandler} implements every hook with the
    permissive default.
    """

    def onConnect(session: Session) -> object:
        """
        A client connected; called before the greeting.

        @param session: The new L{twisted_smtpd.Session}.
        @return: Anything to accept; an L{SMTPError} refuses the connection
            with its reply (which should be 421 or 554), then closes it.
        """

    def onHelo(hostname: str, session: Session) -> object:
        """
        The client sent HELO, EHLO or LHLO.

        @param hostname: The name the client gave.
        @param session: The session.
        """

    def onSecure(session: Session) -> object:
        """
        A TLS handshake finished (STARTTLS or implicit TLS); C{session.tls}
        says what was agreed.  Raising closes the connection after the reply.
        """

    def onAuth(auth: AuthRequest, session: Session) -> object:
        """
        The client authenticates.

        @param auth: The L{twisted_smtpd.AuthRequest}.
        @param session: The session.
        @return: An L{twisted_smtpd.AuthResult} (or the user object itself)
            to accept; raise L{SMTPError} (535) to refuse (C{None} or
            C{False} refuse too, with C{535 5.7.8}).  A user that names
            nobody (C{True}, an empty string, C{0}, C{None} in an
            C{AuthResult}) logs nobody in: it is logged as the handler's
            bug and the client gets C{451 4.3.0}.  A reply code returned
            (an C{int} from 400 to 599, C{b"535 ..."}, C{(535, text)}) is
            the handler's bug too, answered C{454 4.7.0}: a user that is
            such a number goes in an L{twisted_smtpd.AuthResult}.  A PLAIN request whose
            C{authorizationIdentity} differs from its C{username} is refused
            (535 5.7.8) unless the result's C{authorizationIdentity} is that
            identity: the handler decides who may act as whom.
        """

    def onMailFrom(address: Address, session: Session) -> object:
        """
        Accept or refuse the reverse-path.

        @param address: The L{twisted_smtpd.Address} (C{""} for C{<>}).
        @param session: The session.
        """

    def onRcptTo(address: Address, session: Session) -> object:
        """
        Accept or refuse one recipient.

        @param address: The forward-path with its ESMTP parameters.
        @param session: The connection it arrived on.
        @return: Anything, a L{Deferred <twisted.internet.defer.Deferred>} or a coroutine to accept;
            raise or
            fail with L{SMTPError} to refuse with that reply.
        """

    def onData(stream: IMessageStream, session: Session) -> object:
        """
        The message body is arriving; called as soon as the client may send
        it, with the body streaming through C{stream}
        (L{IMessageStream}).  The reply is sent once the body has ended and
        the result is known.

        @return: A text for the 250 reply (a queue id) or C{None}; in LMTP
            mode, optionally a list with one entry per accepted recipient,
            each a text or an L{SMTPError} (another exception there is
            answered 451 and logged, as if C{onData} had raised it).  A
            list of another length is logged as the handler's error: the
            recipients a short list has no entry for, or all of them for a
            long list, are answered 451.
        """

    def onClose(session: Session) -> object:
        """
        The connection is gone.  Informational: it may be an C{async def}
        coroutine or return a Deferred like every hook, but the result is
        ignored and a failure only logged.  Not called for a session that
        never began: refused at connect (by a connection limit, or by
        C{onConnect} itself, whose refusal is then the end of the session
        for the handler), an implicit TLS connection whose handshake never
        finished, or a connection gone (or closed by a stopping server)
        during the reverse lookup of its client (C{onConnect} was never
        called).
        """


class _MessageStreamInterface(Interface):
    """
    A message body, streamed as it arrives (after dot-unstuffing).

    It is an L{twisted.internet.interfaces.IPushProducer}: a consumer that
    pauses it pauses reading from the client.
    """

    byteLength = Attribute("Bytes of body received so far.")
    sizeExceeded = Attribute(
        "Whether the body passed the size limit; if so the rest is discarded "
        "and the message is refused with 552."
    )
    ended = Attribute("Whether the whole body has arrived.")

    def pipe(consumer: IConsumer) -> Deferred[int]:
        """
        Write the body into an L{twisted.internet.interfaces.IConsumer},
        registering the stream as its streaming producer.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} that fires with the byte count when
            the body
            ended, or fails if it did not arrive whole.
        """

    def pipeToFile(fileObject: Any) -> Deferred[int]:
        """
        Write the body into a binary file object.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} as for L{pipe}.
        """

    def collect(maxBytes: int = ...) -> Deferred[bytes]:
        """
        Gather the whole body in memory: for small messages only.

        @param maxBytes: The most bytes gathered (10,240,000 by default, 0
            for no limit); a bigger body fails the L{Deferred
            <twisted.internet.defer.Deferred>} with a 552
            L{twisted_smtpd.SMTPError} and the rest is discarded.
        @return: A L{Deferred <twisted.internet.defer.Deferred>} that fires
            with the body as C{bytes}.
        """

    def drain() -> Deferred[int]:
        """
        Discard the body.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} that fires with the byte count at
            the end.
        """


if TYPE_CHECKING:

    class IMessageStream(Protocol):
        """
        What type checkers see of L{IMessageStream}: a protocol, so that
        code calling the stream's methods checks without the mypy-zope
        plugin.
        """

        byteLength: int
        sizeExceeded: bool
        ended: bool

        def pipe(self, consumer: IConsumer) -> Deferred[int]: ...

        def pipeToFile(self, fileObject: Any) -> Deferred[int]: ...

        def collect(self, maxBytes: int = ...) -> Deferred[bytes]: ...

        def drain(self) -> Deferred[int]: ...

        def pauseProducing(self) -> None: ...

        def resumeProducing(self) -> None: ...

        def stopProducing(self) -> None: ...

    class ISMTPHandler(Protocol):
        """
        What type checkers see of L{ISMTPHandler}: a protocol, so that a
        subclass of L{twisted_smtpd.handlers.BaseHandler} checks as a handler
        without the mypy-zope plugin.
        """

        def onConnect(self, session: Session) -> object: ...

        def onHelo(self, hostname: str, session: Session) -> object: ...

        def onSecure(self, session: Session) -> object: ...

        def onAuth(self, auth: AuthRequest, session: Session) -> object: ...

        def onMailFrom(self, address: Address, session: Session) -> object: ...

        def onRcptTo(self, address: Address, session: Session) -> object: ...

        def onData(self, stream: IMessageStream, session: Session) -> object: ...

        def onClose(self, session: Session) -> object: ...

else:
    IMessageStream = _MessageStreamInterface
    ISMTPHandler = _SMTPHandlerInterface
