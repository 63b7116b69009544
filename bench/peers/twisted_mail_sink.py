"""
Twisted's own C{twisted.mail.smtp.ESMTP} as a sink, for the side-by-side
benchmarks.

    python twisted_mail_sink.py PORT

Listens on 127.0.0.1:PORT with the default reactor; every recipient gets a
message object that drops each line.  Logging is off (no per-connection log
lines), and no C{Received:} header is built.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IAddress
from twisted.logger import ILogObserver, LogEvent, globalLogBeginner
from twisted.mail import smtp
from zope.interface import implementer, provider


@implementer(smtp.IMessage)
class Dropped:
    def lineReceived(self, line: bytes) -> None:
        pass

    def eomReceived(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def connectionLost(self) -> None:
        pass


@implementer(smtp.IMessageDelivery)
class DropAll:
    def receivedHeader(
        self, helo: tuple[bytes, bytes], origin: smtp.Address, recipients: list[smtp.User]
    ) -> None:
        return None

    def validateFrom(self, helo: tuple[bytes, bytes], origin: smtp.Address) -> smtp.Address:
        return origin

    def validateTo(self, user: smtp.User) -> Callable[[], smtp.IMessage]:
        return Dropped


class QuietESMTP(smtp.ESMTP):
    noisy = False


class Factory(smtp.SMTPFactory):
    protocol = QuietESMTP
    domain = b"localhost"
    noisy = False

    def buildProtocol(self, addr: IAddress | None) -> smtp.SMTP:
        protocol: smtp.SMTP = smtp.SMTPFactory.buildProtocol(self, addr)
        protocol.delivery = DropAll()
        return protocol


@provider(ILogObserver)
def discard(event: LogEvent) -> None:
    """
    Drop every log event: logging is off.
    """


if __name__ == "__main__":
    globalLogBeginner.beginLoggingTo([discard], redirectStandardIO=False)
    from twisted.internet import reactor

    reactor.listenTCP(int(sys.argv[1]), Factory(), backlog=1024, interface="127.0.0.1")
    reactor.run()
