"""
Ready-made handlers.

L{LMTPDeliveryHandler}, L{PipeHandler} and L{RelayHandler} are imported on
first use: a server that does not relay or pipe does not load the SMTP
client, the DSN builder and the process machinery they need (about 3 MiB of
memory).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from twisted_smtpd.handlers._base import BaseHandler
from twisted_smtpd.handlers.chain import ChainHandler
from twisted_smtpd.handlers.debugging import DebuggingHandler
from twisted_smtpd.handlers.maildir import MaildirHandler
from twisted_smtpd.handlers.mbox import MboxHandler
from twisted_smtpd.handlers.sink import SinkHandler

if TYPE_CHECKING:
    from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler
    from twisted_smtpd.handlers.pipe import PipeHandler
    from twisted_smtpd.handlers.relay import RelayHandler

_ON_FIRST_USE = {
    "LMTPDeliveryHandler": "lmtp",
    "PipeHandler": "pipe",
    "RelayHandler": "relay",
}

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


def __getattr__(name: str) -> object:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value: object = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
