"""
What the TLS tests over real sockets share: a server with a certificate of a
CA made for the test, the log lines written while a test runs, its
listeners on 127.0.0.1, and the wait for its sessions to end.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.certs import CertificateAuthority
from twisted_smtpd import SMTPServer
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd.handlers import BaseHandler

reactor: Any = _reactor

IMPLICIT = "ssl:0:interface=127.0.0.1"
PLAIN = "tcp:0:interface=127.0.0.1"


def tlsServer(case: TestCase, **options: Any) -> SMTPServer:
    """
    A server named C{mx.example.com} accepting everything, with a
    certificate of a CA made for C{case}, no reverse lookup, and
    C{options}.
    """
    ca = CertificateAuthority(os.path.abspath(case.mktemp()))
    issued = ca.server("mx.example.com")
    return SMTPServer(
        BaseHandler(),
        ServerOptions(
            name="mx.example.com",
            disableReverseLookup=True,
            certificate=issued.certificatePath,
            privateKey=issued.keyPath,
            **options,
        ),
    )


def logLines(case: TestCase) -> list[str]:
    """
    The text of every log event published from now to the end of C{case}.
    """
    lines: list[str] = []

    def catch(event: Any) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(catch)
    case.addCleanup(globalLogPublisher.removeObserver, catch)
    return lines


@inlineCallbacks
def listen(case: TestCase, server: SMTPServer, *descriptions: str) -> Any:
    """
    Listen on each endpoint of C{descriptions} until the end of C{case};
    fire with their ports, in order.
    """
    ports = []
    for description in descriptions:
        port = yield server.listen(description)
        case.addCleanup(port.stopListening)
        ports.append(port.getHost().port)
    return ports


@inlineCallbacks
def sessionsGone(case: TestCase, server: SMTPServer) -> Any:
    """
    Wait, for at most 10 seconds, for C{server} to hold no connection.
    """
    for _ in range(200):
        if not server.factory.connections:
            return
        yield deferLater(reactor, 0.05, lambda: None)
    case.fail(f"connections still open: {server.factory.connections}")
