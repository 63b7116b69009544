"""
An LMTP server (RFC 2033) delivering into one Maildir per mailbox, with a
quota: the answer after the message says, recipient by recipient, whether
it was delivered.

    python examples/lmtp_mailbox.py --root ./mail --mailbox alice --mailbox bob \\
        --quota 1000000 --listen unix:/run/lmtp.sock

A mail server (Postfix's C{lmtp:} transport, for example) hands each message
over once for all its recipients.  Unknown mailboxes are refused at RCPT
(C{550 5.1.1}); after the message, a full mailbox gets C{552 5.2.2} while
the others get C{250}, each in its own reply.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from twisted.internet import defer, task
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from twisted_smtpd import Address, ServerOptions, Session, SMTPError, SMTPServer
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream


class MailboxHandler(BaseHandler):
    """
    Deliver into C{<root>/<mailbox>/new/}, each mailbox holding at most
    C{quota} bytes.
    """

    log = Logger()

    def __init__(self, root: str, mailboxes: list[str], quota: int) -> None:
        self.root = root
        self.mailboxes = frozenset(m.lower() for m in mailboxes)
        self.quota = quota
        for mailbox in self.mailboxes:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(root, mailbox, sub), exist_ok=True)

    def mailboxOf(self, address: Address) -> str:
        return address.address.partition("@")[0].lower()

    def onRcptTo(self, address: Address, session: Session) -> None:
        if self.mailboxOf(address) not in self.mailboxes:
            raise SMTPError(550, "No such mailbox here", "5.1.1")

    def used(self, mailbox: str) -> int:
        new = os.path.join(self.root, mailbox, "new")
        return sum(os.path.getsize(os.path.join(new, name)) for name in os.listdir(new))

    async def onData(self, stream: IMessageStream, session: Session) -> list[str | SMTPError]:
        # The body is streamed into a spool file as it arrives...
        spool = tempfile.NamedTemporaryFile(dir=self.root, delete=False)  # noqa: SIM115
        try:
            with spool:
                size = await stream.pipeToFile(spool)
            with open(spool.name, "rb") as f:
                message = f.read()
            # ...then each recipient gets its own result, in envelope order.
            results: list[str | SMTPError] = []
            for number, rcpt in enumerate(session.envelope.rcptTo):
                mailbox = self.mailboxOf(rcpt)
                if self.used(mailbox) + size > self.quota:
                    self.log.info("{mailbox} is full", mailbox=mailbox)
                    results.append(SMTPError(552, f"Mailbox {mailbox} is full", "5.2.2"))
                    continue
                name = f"{session.id}.{session.transaction}.{number}"
                tmp = os.path.join(self.root, mailbox, "tmp", name)
                with open(tmp, "wb") as f:
                    f.write(message)
                os.rename(tmp, os.path.join(self.root, mailbox, "new", name))
                results.append(f"OK: delivered to {mailbox}")
            return results
        finally:
            os.unlink(spool.name)


async def main(reactor: object, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="mail")
    parser.add_argument("--mailbox", action="append", default=[])
    parser.add_argument("--quota", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--listen", default="tcp:2424:interface=127.0.0.1")
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)

    handler = MailboxHandler(args.root, args.mailbox, args.quota)
    server = SMTPServer(handler, ServerOptions(lmtp=True, size=args.quota))
    port = await server.listen(args.listen)
    address = port.getHost()  # a unix: listener has a path, not a port
    where = f"port {address.port}" if hasattr(address, "port") else os.fsdecode(address.name)
    print(f"listening on {where}", flush=True)
    await defer.Deferred()  # until SIGINT or SIGTERM stops the reactor


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
