# -*- test-case-name: tests.integration.test_deliveries -*-
"""
A handler for C{twistd smtpd --handler tests.integration.recordinghandler:make}:
it records, for each message, the client address the server saw and the
message itself, so that tests can check what reached the handler.
"""

from __future__ import annotations

import json
import os

from twisted.internet.defer import Deferred

from twisted_smtpd import Session
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream


class RecordingHandler(BaseHandler):
    """
    Write one JSON file per message into C{directory}: the session's remote
    and local addresses, the envelope (each recipient's C{ORCPT} decoded
    and as sent) and the body; reply with C{reply}.
    """

    def __init__(self, directory: str, reply: str) -> None:
        self.directory = directory
        self.reply = reply
        self.count = 0

    def onData(self, stream: IMessageStream, session: Session) -> Deferred[str]:
        """
        Collect the body, write the record, answer with C{reply}.
        """
        self.count += 1
        name = os.path.join(self.directory, f"{session.id}.{self.count}.json")
        envelope = session.envelope
        record = {
            "remoteAddress": list(session.remoteAddress),
            "localAddress": list(session.localAddress),
            "mailFrom": envelope.mailFrom.address if envelope.mailFrom else None,
            "rcptTo": [address.address for address in envelope.rcptTo],
            "orcpt": [address.dsn.orcpt if address.dsn else None for address in envelope.rcptTo],
            "orcptSent": [address.args.get("ORCPT") for address in envelope.rcptTo],
        }

        def write(body: bytes) -> str:
            record["body"] = body.decode("utf-8", "replace")
            with open(name + ".tmp", "w", encoding="utf-8") as f:
                json.dump(record, f)
            os.rename(name + ".tmp", name)
            return self.reply

        d: Deferred[bytes] = stream.collect()  # type: ignore[assignment]
        return d.addCallback(write)


def make(directory: str, reply: str = "OK: recorded") -> RecordingHandler:
    """
    The C{--handler} callable: C{--handler-option directory=PATH} is
    required, C{--handler-option reply=TEXT} optional.
    """
    os.makedirs(directory, exist_ok=True)
    return RecordingHandler(directory, reply)


def notAHandler() -> object:
    """
    A callable that returns something that is not a handler.
    """
    return object()


def readRecords(directory: str) -> list[dict[str, object]]:
    """
    The records written so far, in no particular order.
    """
    records = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json"):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                records.append(json.load(f))
    return records
