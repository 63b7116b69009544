"""
Twisted's own C{twisted.mail.smtp.ESMTP} as a sink, for the side-by-side
benchmarks.

    python twisted_mail_sink.py PORT

Listens on 127.0.0.1:PORT with the default reactor; every recipient gets a
message object that drops each line.  Logging is off (no per-connection log
lines), and no C{Received:} header is built.
"""

import sys

from twisted.internet import defer
from twisted.logger import globalLogBeginner
from twisted.mail import smtp
from zope.interface import implementer


@implementer(smtp.IMessage)
class Dropped:
    def lineReceived(self, line):
        pass

    def eomReceived(self):
        return defer.succeed(None)

    def connectionLost(self):
        pass


@implementer(smtp.IMessageDelivery)
class DropAll:
    def receivedHeader(self, helo, origin, recipients):
        return None

    def validateFrom(self, helo, origin):
        return origin

    def validateTo(self, user):
        return Dropped


class QuietESMTP(smtp.ESMTP):
    noisy = False


class Factory(smtp.SMTPFactory):
    protocol = QuietESMTP
    domain = b"localhost"
    noisy = False

    def buildProtocol(self, addr):
        protocol = smtp.SMTPFactory.buildProtocol(self, addr)
        protocol.delivery = DropAll()
        return protocol


if __name__ == "__main__":
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    from twisted.internet import reactor

    reactor.listenTCP(int(sys.argv[1]), Factory(), backlog=1024, interface="127.0.0.1")
    reactor.run()
