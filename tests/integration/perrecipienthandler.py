# -*- test-case-name: tests.integration.test_lmtpclients -*-
"""
A handler for C{twistd smtpd --lmtp --handler
tests.integration.perrecipienthandler:make}: it answers each recipient of a
message on its own, as an LMTP delivery agent does, by the recipient's
local part: C{ok...} is delivered, C{busy...} gets 452, C{gone...} gets 550,
C{broken...} raises (451), and a message with any C{hang...} recipient is
never answered (for C{--handler-timeout}).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from twisted_smtpd import Session, SMTPError
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream


class PerRecipient(BaseHandler):
    """
    One answer per recipient, by its local part.
    """

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[object]:
        """
        Read the message, then answer each recipient.
        """
        locals_ = [address.address.split("@")[0] for address in session.envelope.rcptTo]

        def answer(body: bytes) -> object:
            if any(local.startswith("hang") for local in locals_):
                return Deferred()
            results: list[object] = []
            for local in locals_:
                if local.startswith("busy"):
                    results.append(SMTPError(452, "mailbox busy", "4.2.1"))
                elif local.startswith("gone"):
                    results.append(SMTPError(550, "no such mailbox", "5.1.1"))
                elif local.startswith("broken"):
                    results.append(RuntimeError("mailbox store failed"))
                else:
                    results.append(f"delivered {len(body)} octets to {local}")
            return results

        d: Deferred[bytes] = stream.collect()  # type: ignore[assignment]
        return d.addCallback(answer)


def make() -> PerRecipient:
    """
    The C{--handler} callable.
    """
    return PerRecipient()
