"""
A message submission server (RFC 6409): STARTTLS, then AUTH against a
password file, and each user may only send as themselves.

    python examples/submission.py --tls-cert mail.pem --tls-key mail.key \\
        --passwords passwords.txt --maildir ./Outbox \\
        --listen tcp:587:interface=0.0.0.0

C{passwords.txt} holds C{user:password} lines, the user being the address
they send as (C{alice@example.com:secret}).  AUTH is offered only once the
session is encrypted (C{538 5.7.11} before), MAIL needs AUTH first
(C{530 5.7.0}), and a sender address other than the user's own gets
C{553 5.7.1}.  Accepted messages go to a Maildir; a real server would hand
them to L{twisted_smtpd.handlers.RelayHandler} instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from twisted.cred.checkers import FilePasswordDB
from twisted.internet import defer, task
from twisted.logger import globalLogBeginner, textFileLogObserver

from twisted_smtpd import Address, ServerOptions, Session, SMTPError, SMTPServer
from twisted_smtpd.handlers import MaildirHandler


class SubmissionHandler(MaildirHandler):
    """
    A Maildir delivery that lets authenticated users send as themselves only.
    """

    def onMailFrom(self, address: Address, session: Session) -> None:
        if address.address.lower() != str(session.user).lower():
            raise SMTPError(553, f"Not authorised to send as <{address.address}>", "5.7.1")


async def main(reactor: object, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    parser.add_argument("--passwords", required=True, help="a file of user:password lines")
    parser.add_argument("--maildir", default="Outbox")
    parser.add_argument("--listen", default="tcp:587:interface=127.0.0.1")
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)

    options = ServerOptions(
        certificate=args.tls_cert,
        privateKey=args.tls_key,
        authMethods=["PLAIN", "LOGIN"],
        maxRecipients=100,
        size=25 * 1024 * 1024,
    )
    checker = FilePasswordDB(args.passwords, cache=True)
    server = SMTPServer(SubmissionHandler(args.maildir), options, checkers=[checker])
    port = await server.listen(args.listen)
    address = port.getHost()  # a unix: listener has a path, not a port
    where = f"port {address.port}" if hasattr(address, "port") else os.fsdecode(address.name)
    print(f"listening on {where}", flush=True)
    await defer.Deferred()  # until SIGINT or SIGTERM stops the reactor


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
