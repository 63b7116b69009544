"""
Accept mail only for the recipients on an allow-list, and store it in a
Maildir.

    python examples/allowlist.py --allow alice@example.com --allow bob@example.com \\
        --maildir ./Maildir --listen tcp:2525:interface=127.0.0.1

Any other recipient is refused at RCPT with C{550 5.1.1}, so the client
learns it before sending the message, and a message for several recipients
is kept for the allowed ones only.
"""

from __future__ import annotations

import argparse
import os
import sys

from twisted.internet import defer, task
from twisted.logger import globalLogBeginner, textFileLogObserver

from twisted_smtpd import Address, ServerOptions, Session, SMTPError, SMTPServer
from twisted_smtpd.handlers import MaildirHandler


class AllowListHandler(MaildirHandler):
    """
    A Maildir delivery that accepts only the recipients in C{allowed}.
    """

    def __init__(self, path: str, allowed: list[str]) -> None:
        super().__init__(path)
        self.allowed = frozenset(address.lower() for address in allowed)

    def onRcptTo(self, address: Address, session: Session) -> None:
        if address.address.lower() not in self.allowed:
            raise SMTPError(550, "No such user here", "5.1.1")


async def main(reactor: object, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allow", action="append", default=[], metavar="ADDRESS")
    parser.add_argument("--maildir", default="Maildir")
    parser.add_argument("--listen", default="tcp:2525:interface=127.0.0.1")
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)

    server = SMTPServer(AllowListHandler(args.maildir, args.allow), ServerOptions())
    port = await server.listen(args.listen)
    address = port.getHost()  # a unix: listener has a path, not a port
    where = f"port {address.port}" if hasattr(address, "port") else os.fsdecode(address.name)
    print(f"listening on {where}", flush=True)
    await defer.Deferred()  # until SIGINT or SIGTERM stops the reactor


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
