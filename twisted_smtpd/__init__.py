"""
twisted-smtpd: an embeddable SMTP and LMTP server for Twisted.  For example::

    from twisted_smtpd import SMTPServer
    from twisted_smtpd.handlers import MaildirHandler

    SMTPServer(MaildirHandler("Maildir")).listen("tcp:2525:interface=127.0.0.1")
"""

from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import (
    Address,
    AddressDSN,
    AuthRequest,
    AuthResult,
    Envelope,
    EnvelopeDSN,
    Session,
    TLSInfo,
)
from twisted_smtpd._core.version import __version__
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd._serving.service import SMTPServer

__all__ = [
    "Address",
    "AddressDSN",
    "AuthRequest",
    "AuthResult",
    "Envelope",
    "EnvelopeDSN",
    "SMTPError",
    "SMTPServer",
    "SMTPServerFactory",
    "ServerOptions",
    "Session",
    "TLSInfo",
    "__version__",
]
