"""
Ready-made handlers.

Every handler but L{BaseHandler} is imported on first use, so that a server
loads only the deliveries it runs: one that does not relay or pipe does not
load the SMTP client, the DSN builder and the process machinery of
L{LMTPDeliveryHandler}, L{PipeHandler} and L{RelayHandler} (about 3 MiB of
memory), and a sink does not load the disk code of L{MaildirHandler} and
L{MboxHandler}.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from twisted_smtpd.handlers._base import BaseHandler

if TYPE_CHECKING:
    from twisted_smtpd.handlers.chain import ChainHandler
    from twisted_smtpd.handlers.debugging import DebuggingHandler
    from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler
    from twisted_smtpd.handlers.maildir import MaildirHandler
    from twisted_smtpd.handlers.mbox import MboxHandler
    from twisted_smtpd.handlers.pipe import PipeHandler
    from twisted_smtpd.handlers.relay import RelayHandler
    from twisted_smtpd.handlers.sink import SinkHandler

_ON_FIRST_USE = {
    "ChainHandler": "chain",
    "DebuggingHandler": "debugging",
    "LMTPDeliveryHandler": "lmtp",
    "MaildirHandler": "maildir",
    "MboxHandler": "mbox",
    "PipeHandler": "pipe",
    "RelayHandler": "relay",
    "SinkHandler": "sink",
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
