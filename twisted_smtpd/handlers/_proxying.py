# -*- test-case-name: tests.test_relay -*-
"""
L{ProxyingHandler}: the common part of the relay and LMTP-delivery
handlers, which pass each command of a transaction on to a next hop and
answer with its verdict, as Postfix's before-queue proxy filter does.

At MAIL a session to the next hop is taken from a L{SessionPool} (or
opened) and MAIL is passed on with the parameters the next hop can take;
each RCPT is passed on and answered with the next hop's verdict; the body
is streamed on (BDAT when the next hop offers CHUNKING, else DATA) and the
reply after it is the next hop's.  A 250 is only ever given for what the
next hop accepted.

The message passed on begins with this server's C{Received:} field (RFC
5321 section 4.4), and one that arrives with too many of them is refused
(section 6.3): see L{twisted_smtpd.handlers._proxytrace}.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import partial
from typing import Any

from attrs import define, evolve, field
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.optionvalues import handlerSeconds
from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.replies import sanitiseText
from twisted_smtpd._core.session import Address, Envelope, Session
from twisted_smtpd._smtpclient.clientpool import SessionPool
from twisted_smtpd._smtpclient.clientsession import ClientSession
from twisted_smtpd._smtpclient.clientwire import (
    ClientReply,
    DeliveryError,
    remoteFailure,
    replyError,
)
from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers._proxyparams import (
    mailParameters,
    nextHopAddress,
    originalRecipient,
    sevenBitParameter,
)
from twisted_smtpd.handlers._proxyreports import Reports
from twisted_smtpd.handlers._proxyreports import describe as describe
from twisted_smtpd.handlers._proxytrace import TracedStream
from twisted_smtpd.handlers._tracefields import receivedField
from twisted_smtpd.interfaces import IMessageStream


def isLMTP(session: Session) -> bool:
    """
    Whether C{session} speaks LMTP, so that C{onData} may answer once per
    recipient.
    """
    return session.transmissionType.startswith("LMTP")


def relayedError(reply: ClientReply) -> SMTPError:
    """
    The refusal to give our client for a next hop's refusal: its code (421
    becomes 451) and its own words, sanitised when the reply is written.
    """
    return replyError(reply)


@define
class _Transaction:
    """
    A transaction passed on to the next hop.

    @ivar busy: Whether a RCPT is on its way to the next hop.
    @ivar ended: Whether the session ended while it was: the session to the
        next hop goes back to the pool once that RCPT is answered.
    @ivar gone: Whether the session to the next hop closed (421, 521) or
        failed during the transaction: it is given back already, and the
        rest of the transaction is refused (L{lostError}).
    """

    client: ClientSession
    sender: Address
    accepted: list[Address] = field(factory=list)
    busy: bool = False
    ended: bool = False
    gone: bool = False


#: The most C{Received:} fields a message passed on may arrive with: more
#: are taken for a mail loop (RFC 5321 section 6.3 suggests 100; Postfix's
#: C{hopcount_limit} is 50).
HOP_LIMIT = 50


#: The next hop's replies that say it closes the session (RFC 5321 section
#: 3.8, RFC 7504).
_CLOSING_CODES = (421, 521)


def _sessionEnds(reply: ClientReply) -> bool:
    """
    Whether the session to the next hop cannot go on after C{reply} to MAIL
    or RCPT: the next hop closes it (421, 521), or answered with neither a
    verdict nor an acceptance (a 354 there means it waits for a message
    no command asked for: the session is out of step, what is sent next
    would be read as message text).
    """
    return reply.code in _CLOSING_CODES or not (reply.positive or 400 <= reply.code < 600)


def _wantsFailureReport(address: Address) -> bool:
    """
    Whether a "failed" report is owed for C{address} (RFC 3461 section
    4.1): it gave no C{NOTIFY} (C{FAILURE} is then the default), or one
    naming C{FAILURE}; not for C{NEVER}, nor for C{SUCCESS} or C{DELAY}
    without C{FAILURE}, as Postfix's bounce daemon decides.
    """
    notify = address.dsn.notify if address.dsn else ()
    return not notify or "FAILURE" in notify


def lostError() -> SMTPError:
    """
    The refusal of what is left of a transaction whose session to the next
    hop is gone: later recipients, and the message itself (after its body:
    the server asks for the body before C{onData} answers).
    """
    return SMTPError(451, "Error: the session to the next hop was lost", "4.4.2")


class ProxyingHandler(BaseHandler, ABC):
    """
    Pass MAIL, each RCPT and the body on to a next hop, answering each with
    its verdict.  Subclasses say how to open a session (L{openSession}).

    @ivar pool: The sessions to the next hop.
    @ivar peer: The next hop's name for logs and texts.
    """

    _log = Logger()

    #: The DSN action for NOTIFY=SUCCESS when the next hop does not offer
    #: DSN (RFC 3464 section 2.3.3): C{"relayed"} onward, C{"delivered"}
    #: into a mail store.
    successAction = "relayed"

    def __init__(
        self,
        peer: str,
        *,
        reporterName: str,
        maxSessions: int,
        idleTimeout: float,
        timeout: float,
        logMessages: bool,
        closeOnShutdown: bool,
        reactor: Any,
        traceHeaders: bool = True,
        hopLimit: int = HOP_LIMIT,
    ) -> None:
        handlerSeconds("timeout", timeout)
        handlerSeconds("idleTimeout", idleTimeout, zero=True)
        if isinstance(hopLimit, bool) or not isinstance(hopLimit, int) or hopLimit < 1:
            raise ValueError(f"hopLimit must be a positive integer, got {hopLimit!r}")
        self.peer = peer
        # The name for the by clause of the Received: field.
        self._byName = reporterName
        self._traceHeaders = traceHeaders
        self._hopLimit = hopLimit
        # For log lines: the operator's words, escaped all the same.
        self._peerText = printable(peer)
        self._timeout = timeout
        self._logMessages = logMessages
        self._reactor = reactor
        self._transactions: dict[str, _Transaction] = {}
        #: The sessions whose MAIL is on its way to the next hop.
        self._mailing: set[str] = set()
        #: The requests for a session to the next hop, by session.
        self._acquiring: dict[str, Deferred[ClientSession]] = {}
        self.pool = SessionPool(
            self.openSession,
            reactor,
            maxSessions=maxSessions,
            idleTimeout=idleTimeout,
            waitTimeout=timeout,
            name=f"the next hop {self._peerText}",
        )
        self._reports = Reports(self._log, reporterName, self._peerText)
        if closeOnShutdown:
            reactor.addSystemEventTrigger("before", "shutdown", self.close)

    @abstractmethod
    def openSession(self) -> Deferred[ClientSession]:
        """
        Open a new session to the next hop (each kind of next hop says how).
        """

    def close(self) -> Deferred[None]:
        """
        Let the reports being sent finish, then close the sessions to the
        next hop (QUIT); call when the server stops.
        """

        async def closeAll() -> None:
            await self.reportsSent()
            await self.pool.close()

        return Deferred.fromCoroutine(closeAll())

    def reportsSent(self) -> Deferred[None]:
        """
        A L{Deferred} firing once the delivery status notifications being
        sent now are sent (or have failed, which is logged).
        """

        return self._reports.sent()

    # The transaction.

    def _end(self, session: Session) -> None:
        """
        Give back the session to the next hop held for C{session}'s
        transaction, if any.
        """
        transaction = self._transactions.pop(session.id, None)
        if transaction is None or transaction.gone:
            return
        if transaction.busy:
            # Its RCPT's reply is still to come: handed to the next message
            # now, the session would keep it waiting behind that reply.
            transaction.ended = True
        else:
            self.pool.release(transaction.client)

    async def onMailFrom(self, address: Address, session: Session) -> None:
        """
        Take a session to the next hop and pass MAIL on; answer with its
        verdict.

        @raise SMTPError: The next hop refused (its reply), cannot be
            reached (451), or cannot take what the message needs (554
            5.6.3, 553 5.6.7, 550 5.7.10, 550 5.7.30).
        """
        self._end(session)
        self._mailing.add(session.id)
        try:
            client = await self._mail(address, session)
        finally:
            # Gone from the set: the session ended (onClose) meanwhile.
            stillOpen = session.id in self._mailing
            self._mailing.discard(session.id)
        if client is not None and not stillOpen:
            # Its client left, or it timed out, while MAIL was on its way:
            # nobody will end this transaction.
            self.pool.release(client)
        elif client is not None:
            self._transactions[session.id] = _Transaction(client, address)

    async def _mail(self, address: Address, session: Session) -> ClientSession | None:
        """
        Take a session to the next hop and pass MAIL on.

        @return: The session to the next hop, which accepted MAIL, or
            C{None} when C{session} ended before one was free.
        """
        acquiring = self._acquiring[session.id] = self.pool.acquire()
        try:
            client = await acquiring
        except DeliveryError as e:
            self._log.warn(
                "{session} next hop {peer} unavailable: {error}",
                session=session.id,
                peer=self._peerText,
                error=" ".join(sanitiseText(str(e))),
            )
            raise remoteFailure(e) from None
        except CancelledError:
            if session.id in self._mailing:
                raise
            # The session ended (onClose) while it waited.
            return None
        finally:
            if self._acquiring.get(session.id) is acquiring:
                del self._acquiring[session.id]
        if session.id not in self._mailing:
            self.pool.release(client)
            return None
        try:
            parameters = mailParameters(
                address, client, self._fieldLength(address, session, client)
            )
            sender = nextHopAddress(address.address, client)
            reply = await client.mail(sender, parameters)
        except SMTPError as e:
            self.pool.release(client)
            if isinstance(e, DeliveryError):
                self._log.warn(
                    "{session} next hop {peer} failed at MAIL: {error}",
                    session=session.id,
                    peer=self._peerText,
                    error=" ".join(sanitiseText(str(e))),
                )
                raise remoteFailure(e) from None
            self._log.info(
                "{session} MAIL refused for the next hop {peer}: {code} {text}",
                session=session.id,
                peer=self._peerText,
                code=e.code,
                text=e.message,
            )
            raise
        if not reply.positive:
            if _sessionEnds(reply):
                # It closes, or is out of step: not kept for the next message.
                client.abort()
            self.pool.release(client)
            self._log.info(
                "{session} next hop {peer} refused MAIL: {reply}",
                session=session.id,
                peer=self._peerText,
                reply=describe(reply),
            )
            raise relayedError(reply)
        return client

    async def onRcptTo(self, address: Address, session: Session) -> None:
        """
        Pass RCPT on; answer with the next hop's verdict.
        """
        transaction = self._transactions.get(session.id)
        if transaction is None:
            raise SMTPError(451, "Error: no session to the next hop", "4.4.1")
        if transaction.gone:
            # Logged once, when it went.
            raise lostError()
        client = transaction.client
        parameters = ""
        recipient = nextHopAddress(address.address, client)
        if client.offers("DSN"):
            for key in ("NOTIFY", "ORCPT"):
                value = address.args.get(key)
                if isinstance(value, str):
                    if not client.offers("SMTPUTF8"):
                        value = sevenBitParameter(key, value)
                    parameters += f" {key}={value}"
            parameters += originalRecipient(address, client)
        transaction.busy = True
        try:
            reply = await client.rcpt(recipient, parameters)
        except DeliveryError as e:
            transaction.busy = False
            self._lose(transaction)
            self._log.warn(
                "{session} next hop {peer} failed at RCPT: {error}",
                session=session.id,
                peer=self._peerText,
                error=" ".join(sanitiseText(str(e))),
            )
            raise remoteFailure(e) from None
        except BaseException:
            transaction.busy = False
            if transaction.ended:
                self.pool.release(client)
            raise
        transaction.busy = False
        if _sessionEnds(reply):
            # The next hop ends the session (Postfix's smtp client then
            # defers the rest), or is out of step: so is the rest of this
            # transaction.
            self._lose(transaction)
            self._log.warn(
                "{session} next hop {peer} {what} at RCPT {address}: {reply}",
                session=session.id,
                peer=self._peerText,
                what="closed the session"
                if reply.code in _CLOSING_CODES
                else "out of step, session dropped,",
                address=printable(address.address),
                reply=describe(reply),
            )
            raise relayedError(reply)
        if transaction.ended:
            # The session ended (onClose) while RCPT was on its way.
            self.pool.release(client)
        if not reply.positive:
            self._log.info(
                "{session} next hop {peer} refused {address}: {reply}",
                session=session.id,
                peer=self._peerText,
                address=printable(address.address),
                reply=describe(reply),
            )
            raise relayedError(reply)
        transaction.accepted.append(address)

    async def onData(self, stream: IMessageStream, session: Session) -> object:
        """
        Stream the body on and answer with the next hop's reply (in LMTP
        mode, one per recipient).
        """
        transaction = self._transactions.pop(session.id, None)
        recipients = list(session.envelope.rcptTo)
        if transaction is None or transaction.gone or transaction.accepted != recipients:
            if transaction is not None and not transaction.gone:
                self.pool.release(transaction.client)
            # The server drains a stream the handler leaves alone.
            raise lostError()
        client = transaction.client
        field = self._field(session, client)
        traced = TracedStream(stream, field, self._hopLimit, partial(self._loop, session))
        try:
            if client.offers("CHUNKING", "PIPELINING"):
                finals = await client.bdat(traced, len(recipients))
            else:
                finals = await client.data(traced, len(recipients))
            if any(final.code in _CLOSING_CODES for final in finals):
                # The next hop closes the session (a 421 to DATA, or after
                # the body for one recipient at least): not kept for the
                # next message.
                client.abort()
        except DeliveryError as e:
            self._log.warn(
                "{session} next hop {peer} failed during the message: {error}",
                session=session.id,
                peer=self._peerText,
                error=" ".join(sanitiseText(str(e))),
            )
            raise remoteFailure(e) from None
        finally:
            self.pool.release(client)
        if len(finals) != len(recipients):
            finals = [finals[0]] * len(recipients)
        return self._answer(session, transaction, list(zip(recipients, finals, strict=True)))

    def _field(self, session: Session, client: ClientSession) -> bytes:
        """
        The C{Received:} field to write before C{session}'s message, if
        any: in ASCII unless the message was sent with C{SMTPUTF8} and goes
        on with it, to a C{client} whose next hop offers it (one that does
        not gets the message without it, and no UTF-8 header field from
        this server: RFC 6532 section 3.7).
        """
        if not self._traceHeaders:
            return b""
        utf8 = session.envelope.smtpUtf8 and client.offers("SMTPUTF8")
        return receivedField(session, self._byName, ascii=not utf8)

    def _fieldLength(self, address: Address, session: Session, client: ClientSession) -> int:
        """
        The length of the field L{_field} will write before the message
        C{address} begins, for its C{SIZE}: C{onMailFrom} runs before the
        session's envelope is this transaction's.  The recipients are not
        known yet, so the C{for} clause the field gets with exactly one is
        not counted: C{SIZE} is the client's estimate (RFC 1870 section 4),
        which the next hop compares with its limit at MAIL, and Postfix's
        C{smtpd} passes the client's on to its proxy filter unchanged.
        """
        envelope = Envelope(address, smtpUtf8="SMTPUTF8" in address.args)
        return len(self._field(evolve(session, envelope=envelope), client))

    def _loop(self, session: Session, count: int) -> None:
        """
        Log the refusal of C{session}'s message for its hops: the session
        to the next hop is dropped before the body ends.
        """
        self._log.warn(
            "{session} message refused: more than {limit} Received: fields"
            " ({count} so far), a mail loop: not passed to {peer}",
            session=session.id,
            limit=self._hopLimit,
            count=count,
            peer=self._peerText,
        )

    def _lose(self, transaction: _Transaction) -> None:
        """
        The session to the next hop of C{transaction} closed or failed: drop
        it (once), and refuse the rest of the transaction.
        """
        if not transaction.gone:
            transaction.gone = True
            transaction.client.abort()
            self.pool.release(transaction.client)

    def onClose(self, session: Session) -> None:
        """
        Give back the session to the next hop of an unfinished transaction,
        or leave the queue for one.
        """
        self._mailing.discard(session.id)
        acquiring = self._acquiring.pop(session.id, None)
        if acquiring is not None:
            acquiring.cancel()
        self._end(session)

    # The answer after the body.

    def _answer(
        self,
        session: Session,
        transaction: _Transaction,
        results: list[tuple[Address, ClientReply]],
    ) -> object:
        accepted = [(a, r) for a, r in results if r.positive]
        refused = [(a, r) for a, r in results if not r.positive]
        for address, reply in refused:
            if reply.detail is not None:
                # No reply came for it (LMTP, RFC 2033 section 4.2).
                self._log.warn(
                    "{session} next hop {peer} failed before its reply for {address}: {reply}",
                    session=session.id,
                    peer=self._peerText,
                    address=printable(address.address),
                    reply=describe(reply),
                )
                continue
            self._log.warn(
                "{session} next hop {peer} refused the message for {address}: {reply}",
                session=session.id,
                peer=self._peerText,
                address=printable(address.address),
                reply=describe(reply),
            )
        if accepted and self._logMessages:
            self._log.info(
                "{session} passed to {peer} for {count} recipients: {reply}",
                session=session.id,
                peer=self._peerText,
                count=len(accepted),
                reply=describe(accepted[0][1]),
            )
        if accepted and not transaction.client.offers("DSN"):
            # RFC 3461 section 4: the next hop cannot report success, so this
            # server does.
            wanted = [(a, r) for a, r in accepted if a.dsn and "SUCCESS" in a.dsn.notify]
            if wanted:
                sender = transaction.sender.address
                self._reports.send(self.pool, session, sender, wanted, self.successAction)
        if isLMTP(session):
            return [
                " ".join(sanitiseText(r.text)) if r.positive else relayedError(r)
                for _, r in results
            ]
        if not accepted:
            temporary = [r for _, r in refused if r.temporary or r.code == 421]
            raise relayedError((temporary or [r for _, r in refused])[0])
        if refused:
            # Only an LMTP next hop answers per recipient after the body: the
            # others have the message, so the reply must be 250; the refused
            # recipients are reported to the sender, and not tried again.
            wanted = [(a, r) for a, r in refused if _wantsFailureReport(a)]
            if wanted:
                sender = transaction.sender.address
                self._reports.send(self.pool, session, sender, wanted, "failed")
        return " ".join(sanitiseText(accepted[0][1].text))
