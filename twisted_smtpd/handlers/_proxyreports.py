# -*- test-case-name: tests.test_relay,tests.test_relayextensions -*-
"""
The delivery status notifications (RFC 3464) a proxying handler
(L{twisted_smtpd.handlers._proxying}) sends to a message's sender through
its own next hop, after the reply: a success a next hop without DSN cannot
report, and the recipients a next hop refused after the body when the
client was given 250 for the others.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._core.dsn import RecipientStatus, buildReport
from twisted_smtpd._core.hostname import asciiAddress
from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.replies import sanitiseText
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd._smtpclient.clientpool import SessionPool
from twisted_smtpd._smtpclient.clientsession import ClientSession
from twisted_smtpd._smtpclient.clientwire import ClientReply, DeliveryError
from twisted_smtpd._stream import MessageStream


def describe(reply: ClientReply, detail: bool = True) -> str:
    """
    A next hop's reply as one safe line for logs and reports.

    @param detail: For a reply made here for one that never came, give
        what went wrong (for a log line), not the generic words (for a
        report to the sender).
    """
    words = reply.detail if detail and reply.detail is not None else reply.text
    text = " ".join(sanitiseText(words))
    return f"{reply.code} {reply.enhanced + ' ' if reply.enhanced else ''}{text}"[:400]


def _status(reply: ClientReply) -> str:
    return reply.enhanced or f"{reply.code // 100}.0.0"


class Reports:
    """
    The reports of one proxying handler, each sent without delaying the
    reply, and logged in the handler's log.
    """

    def __init__(self, log: Logger, reporterName: str, peerText: str) -> None:
        """
        @param log: The handler's log.
        @param reporterName: The C{Reporting-MTA} of the reports.
        @param peerText: The next hop's name for log lines, escaped.
        """
        self._log = log
        self._reporterName = reporterName
        self._peerText = peerText
        self._sending: list[Deferred[None]] = []

    def sent(self) -> Deferred[None]:
        """
        A L{Deferred} firing once the reports being sent now are sent (or
        have failed, which is logged).
        """

        async def wait() -> None:
            while self._sending:
                await self._sending[0]

        return Deferred.fromCoroutine(wait())

    def send(
        self,
        pool: SessionPool,
        session: Session,
        sender: str,
        results: Sequence[tuple[Address, ClientReply]],
        action: str,
    ) -> None:
        """
        Send a DSN about C{results} to C{sender}, through a session of
        C{pool}, without delaying the reply; never for the null sender.
        """
        if not sender:
            self._log.info(
                "{session} no {action} report for a message from <>",
                session=session.id,
                action=action,
            )
            return
        statuses = [
            RecipientStatus(
                address=a.address,
                orcpt=a.dsn.orcpt if a.dsn else None,
                action=action,
                status=_status(r),
                diagnostic=describe(r, detail=False),
            )
            for a, r in results
        ]
        envid = session.envelope.dsn.envid
        # A sender with an all-ASCII form (its domain only in U-labels) may
        # have gone to a next hop without SMTPUTF8 so: the report to it
        # then goes the same way, made for that form.
        forms = dict.fromkeys([sender, asciiAddress(sender) or sender])
        try:
            reports = {
                form: buildReport(
                    reportingMta=self._reporterName,
                    sender=form,
                    recipients=statuses,
                    envid=envid,
                    received=session.clientHostname or None,
                )
                for form in forms
            }
        except Exception:
            # The next hop has the message: a report that cannot be made
            # must not turn its acceptance into a failure the client would
            # send the message again for.
            self._log.failure(
                "{session} {action} report could not be made", session=session.id, action=action
            )
            return
        d = Deferred.fromCoroutine(self._send(pool, session.id, reports, action))
        self._sending.append(d)

        def sent(result: object) -> None:
            self._sending.remove(d)
            if isinstance(result, Failure):
                self._log.failure("{session} report failed", result, session=session.id)

        d.addBoth(sent)

    async def _send(
        self, pool: SessionPool, sessionId: str, reports: dict[str, bytes], action: str
    ) -> None:
        """
        @param reports: The report for the sender as given, first, and,
            when that is not ASCII but has an all-ASCII form, the report
            for that form, sent instead to a next hop without C{SMTPUTF8}.
        """
        sender, report = next(iter(reports.items()))
        try:
            client = await pool.acquire()
        except DeliveryError as e:
            self._log.error(
                "{session} {action} report to {sender} not sent: {error}",
                session=sessionId,
                action=action,
                sender=printable(sender),
                error=" ".join(sanitiseText(str(e))),
            )
            return
        if not client.offers("SMTPUTF8"):
            sender, report = list(reports.items())[-1]
        try:
            outcome = await self._inject(client, sender, report)
        except DeliveryError as e:
            outcome = describe(ClientReply(e.code, e.enhanced, e.message))
        finally:
            pool.release(client)
        if outcome:
            self._log.error(
                "{session} {action} report to {sender} refused by {peer}: {reply}",
                session=sessionId,
                action=action,
                sender=printable(sender),
                peer=self._peerText,
                reply=outcome,
            )
        else:
            self._log.info(
                "{session} {action} report sent to {sender} through {peer}",
                session=sessionId,
                action=action,
                sender=printable(sender),
                peer=self._peerText,
            )

    async def _inject(self, client: ClientSession, sender: str, report: bytes) -> str | None:
        """
        Send C{report} from C{<>} to C{sender} on C{client}.

        @return: C{None} when the next hop accepted it, else its refusal.
        """
        # A sender that is not ASCII is written in the report's To field
        # in UTF-8 and named in RCPT: both need SMTPUTF8 (RFC 6531), which
        # the next hop offered to take the message from that sender (one
        # without it took the sender's all-ASCII form, which L{_send}
        # gives here instead).
        reply = await client.mail("", "" if sender.isascii() else " SMTPUTF8")
        if reply.positive:
            reply = await client.rcpt(sender, "")
        if not reply.positive:
            return describe(reply)
        stream = MessageStream()
        stream._write(report)
        stream._finish()
        finals = await client.data(stream, 1)
        return None if finals[0].positive else describe(finals[0])
