"""
Ready-made handlers.
"""

from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers.chain import ChainHandler
from twisted_smtpd.handlers.debugging import DebuggingHandler
from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler
from twisted_smtpd.handlers.maildir import MaildirHandler
from twisted_smtpd.handlers.mbox import MboxHandler
from twisted_smtpd.handlers.pipe import PipeHandler
from twisted_smtpd.handlers.relay import RelayHandler
from twisted_smtpd.handlers.sink import SinkHandler

__all__ = [
    "BaseHandler",
    "ChainHandler",
    "DebuggingHandler",
    "LMTPDeliveryHandler",
    "MaildirHandler",
    "MboxHandler",
    "PipeHandler",
    "RelayHandler",
    "SinkHandler",
]
