"""
Ready-made handlers.
"""

from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers.debugging import DebuggingHandler
from twisted_smtpd.handlers.maildir import MaildirHandler
from twisted_smtpd.handlers.sink import SinkHandler

__all__ = ["BaseHandler", "DebuggingHandler", "MaildirHandler", "SinkHandler"]
