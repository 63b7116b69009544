# -*- test-case-name: tests.test_handlers -*-
"""
L{BaseHandler}: every hook of L{ISMTPHandler} with its permissive default.
"""

from __future__ import annotations

from zope.interface import implementer

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import Address, AuthRequest, Session
from twisted_smtpd.interfaces import IMessageStream, _SMTPHandlerInterface


@implementer(_SMTPHandlerInterface)
class BaseHandler:
    """
    Accept everything, refuse AUTH, drain and accept every message.

    Subclass it and override only the hooks you need.
    """

    def onConnect(self, session: Session) -> object:
        """
        Accept the connection.
        """
        return None

    def onHelo(self, hostname: str, session: Session) -> object:
        """
        Accept any greeting.
        """
        return None

    def onSecure(self, session: Session) -> object:
        """
        Accept any TLS session.
        """
        return None

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        """
        Refuse: no credentials are configured.
        """
        raise SMTPError(535, "Error: authentication credentials invalid", "5.7.8")

    def onMailFrom(self, address: Address, session: Session) -> object:
        """
        Accept any sender.
        """
        return None

    def onRcptTo(self, address: Address, session: Session) -> object:
        """
        Accept any recipient.
        """
        return None

    def onData(self, stream: IMessageStream, session: Session) -> object:
        """
        Discard the body and accept the message.
        """
        return stream.drain()

    def onClose(self, session: Session) -> object:
        """
        Nothing to do.
        """
        return None
