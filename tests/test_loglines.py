# -*- test-case-name: tests.test_loglines -*-
"""
The example session lines of C{docs/operator.md} ("Sessions") are the lines
C{twistd smtpd} writes for those events, in text and in JSON, but for the
time.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core.replies import Reply
from twisted_smtpd._core.session import Address, Envelope, Session, TLSInfo
from twisted_smtpd._serving.logging import SessionLogger
from twisted_smtpd._serving.logwriter import BufferedLogWriter

OPERATOR = Path(__file__).resolve().parents[1] / "docs" / "operator.md"

_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000 ")
_JSON_TIME = re.compile(r'"time": ?"[^"]*"')


def documented(language: str, after: str) -> list[str]:
    """
    The lines of the first C{language} block after the heading C{after}.
    """
    page = OPERATOR.read_text(encoding="utf-8")
    section = page[page.index(after) :]
    match = re.search(rf"^```{language}\n(.*?)^```", section, re.S | re.M)
    assert match is not None
    return match.group(1).splitlines()


def written(json: bool, *events: tuple[str, Session, dict[str, Any]]) -> list[str]:
    """
    The lines C{twistd smtpd}'s writer makes of C{events}.
    """
    out = io.StringIO()
    writer = BufferedLogWriter(out, json=json, reactor=Clock())
    logger = SessionLogger(writer=writer)
    for event, session, data in events:
        logger(event, session, data)
    writer.flush()
    return out.getvalue().splitlines()


def _session(sid: str, host: str, name: str = "", **kwargs: Any) -> Session:
    return Session(id=sid, remoteAddress=(host, 51234), clientHostname=name, **kwargs)


def exampleEvents() -> list[tuple[str, Session, dict[str, Any]]]:
    """
    The events of the documented example, in its order.
    """
    mail = "mail.example.org"
    sender = Address("alice@example.org")
    envelope = Envelope(sender, [Address("bob@example.com"), Address("carol@example.com")])
    k3 = _session(
        "k3x9q2ab",
        "192.0.2.7",
        mail,
        localAddress=("198.51.100.1", 25),
        tls=TLSInfo(
            servername="mx.example.com", protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384"
        ),
    )
    k3rcpt = _session("k3x9q2ab", "192.0.2.7", mail, envelope=Envelope(sender))
    k3message = _session("k3x9q2ab", "192.0.2.7", mail, envelope=envelope)
    t4 = _session("t4u5v6w7", "203.0.113.9")
    unknown = Reply(550, "5.1.1", ("Recipient address rejected: User unknown",))
    invalid = Reply(535, "5.7.8", ("Error: authentication credentials invalid",))
    tooMany = Reply(421, "4.7.0", ("Error: too many failed authentication attempts",))
    notRecognised = Reply(500, "5.5.2", ("Error: command not recognized",))
    queued = Reply(250, "2.0.0", ("OK: queued as 1767348001.M1P42Q7.mx",))
    return [
        ("connect", k3, {}),
        ("secure", k3, {}),
        (
            "reject",
            k3rcpt,
            {"reply": unknown, "command": "RCPT", "argument": b"TO:<x@example.com>"},
        ),
        ("message", k3message, {"replies": (queued,), "size": 5120}),
        ("close", k3, {}),
        ("auth", _session("p0q1r2s3", "192.0.2.8"), {"method": "PLAIN", "username": "alice"}),
        (
            "reject",
            t4,
            {"reply": invalid, "command": "AUTH", "username": "admin", "mechanism": "PLAIN"},
        ),
        ("reject", t4, {"reply": tooMany, "command": "AUTH", "lockout": True, "failures": 3}),
        (
            "reject",
            _session("b2c3d4e5", "198.51.100.4"),
            {"reply": notRecognised, "command": None, "argument": b"FOO"},
        ),
    ]


class SessionLinesTests(SynchronousTestCase):
    def test_text(self) -> None:
        """
        The text lines of the example, but for the connection-limit line
        (logged by the factory, see C{tests.test_logging}), are the
        writer's, and start with the time as it writes it.
        """
        lines = [
            line
            for line in documented("text", "### Sessions")
            if " refused: connection limit " not in line
        ]
        made = written(False, *exampleEvents())
        for line in lines + made:
            self.assertRegex(line, _TIME.pattern + r"\[twisted_smtpd\.session#info\] ")
        self.assertEqual(
            [_TIME.sub("", line) for line in made], [_TIME.sub("", line) for line in lines]
        )

    def test_json(self) -> None:
        """
        The JSON line of the example is the one the writer makes of that
        failed login, the same keys in the same order and the same
        separators.
        """
        (line,) = documented("json", "`--log-format json` writes")
        (failed,) = [e for e in exampleEvents() if e[2].get("username") == "admin"]
        (made,) = written(True, failed)
        self.assertEqual(json.loads(made).keys(), json.loads(line).keys())
        self.assertEqual(_JSON_TIME.sub("", made), _JSON_TIME.sub("", line))
