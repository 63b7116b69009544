# -*- test-case-name: tests.test_protocol -*-
"""
The mail transaction commands of a session: MAIL, RCPT, RSET and DATA
(RFC 5321 sections 4.1.1.2 to 4.1.1.5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from twisted_smtpd import _replies as catalogue
from twisted_smtpd._data import DataDecoder
from twisted_smtpd._grammar import Phase, parseMail, parseRcpt
from twisted_smtpd._receiving import MessageReceiver
from twisted_smtpd._session import Envelope
from twisted_smtpd._stream import MessageStream

if TYPE_CHECKING:
    from twisted_smtpd._protocol import SMTPProtocol


@implementer(IPushProducer)
class StreamUpstream:
    """
    What a L{MessageStream} pauses when its consumer cannot keep up: reading
    from the session's connection.
    """

    def __init__(self, protocol: SMTPProtocol) -> None:
        self._protocol = protocol

    def pauseProducing(self) -> None:
        """
        Stop reading from the client.
        """
        self._protocol._setPause("stream", True)

    def resumeProducing(self) -> None:
        """
        Read from the client again.
        """
        self._protocol._setPause("stream", False)

    def stopProducing(self) -> None:
        """
        The stream wants no more flow control.
        """
        self._protocol._setPause("stream", False)


class TransactionCommands:
    """
    MAIL, RCPT, RSET and DATA for one session.
    """

    def __init__(self, protocol: SMTPProtocol) -> None:
        self._protocol = protocol

    def mail(self, argument: bytes) -> None:
        """
        MAIL FROM: check policy and the size, ask C{onMailFrom}, start the
        transaction.
        """
        p = self._protocol
        options = p._options
        session = p.session
        if p._draining:
            p._closeWith(catalogue.SHUTDOWN)
            return
        factory = p._serverFactory
        if factory is not None and factory.authRequired and session.user is None:
            p._fail(catalogue.authRequired(options.authRequiredMessage))
            return
        request = parseMail(argument, options.lenientAddresses)
        if options.size and request.size is not None and request.size > options.size:
            p._fail(catalogue.SIZE_EXCEEDED_MAIL)
            return
        if request.requireTls and not session.secure:
            p._fail(catalogue.REQUIRETLS_NEEDS_TLS)
            return
        envelope = Envelope(
            mailFrom=request.address,
            dsn=request.dsn,
            bodyType=request.bodyType,
            smtpUtf8=request.smtpUtf8,
            requireTls=request.requireTls,
            size=request.size,
        )

        def accepted(result: object) -> None:
            session.envelope = envelope
            p._phase = Phase.MAIL
            p._emit("mail", address=request.address)
            p._send(catalogue.MAIL_OK)

        p._hook(p._handler.onMailFrom, (request.address, session), accepted, p._fail)

    def rcpt(self, argument: bytes) -> None:
        """
        RCPT TO: check the recipient limit, ask C{onRcptTo}, add it.
        """
        p = self._protocol
        session = p.session
        envelope = session.envelope
        address = parseRcpt(argument, envelope.smtpUtf8, p._options.lenientAddresses)
        if len(envelope.rcptTo) >= p._options.maxRecipients:
            p._fail(catalogue.TOO_MANY_RECIPIENTS)
            return

        def accepted(result: object) -> None:
            if session.envelope is envelope:
                envelope.rcptTo.append(address)
                p._phase = Phase.RCPT
            p._emit("rcpt", address=address)
            p._send(catalogue.RCPT_OK)

        p._hook(p._handler.onRcptTo, (address, session), accepted, p._fail)

    def rset(self, argument: bytes) -> None:
        """
        RSET: drop the transaction.
        """
        p = self._protocol
        if argument:
            p._fail(catalogue.SYNTAX_ERROR)
            return
        p._resetTransaction()
        p._send(catalogue.RESET)
        if p._draining:
            p._closeWith(catalogue.SHUTDOWN)

    def data(self, argument: bytes) -> None:
        """
        DATA: send 354 and stream the body into C{onData}.
        """
        p = self._protocol
        options = p._options
        session = p.session
        if argument:
            p._fail(catalogue.SYNTAX_ERROR)
            return
        if session.envelope.bodyType == "binarymime":
            p._fail(catalogue.BINARYMIME_NEEDS_BDAT)
            return
        p._send(catalogue.START_DATA)
        receiver = MessageReceiver(
            DataDecoder(options.size, options.bareNewline),
            MessageStream(upstream=StreamUpstream(p)),
            replyCount=len(session.envelope.rcptTo) if options.lmtp else 1,
            lmtp=options.lmtp,
            rejectBareNewline=options.bareNewline == "reject",
            done=p._messageDone,
            log=p._logDataFailure,
        )
        p._receiver = receiver
        receiver.start(p._handler.onData, session)
