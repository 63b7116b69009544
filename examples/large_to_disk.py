"""
Receive messages of any size straight to disk: the body is written to a
file as it arrives, never held in memory, and reading from the client
pauses while the disk catches up.

    python examples/large_to_disk.py --spool ./spool --size 1000000000 \\
        --listen tcp:2525:interface=127.0.0.1

Each message is written to C{<spool>/tmp/} and renamed into C{<spool>/new/}
once it has arrived whole; a message cut short (a lost connection, the size
limit) leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import sys

from twisted.internet import defer, task
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from twisted_smtpd import ServerOptions, Session, SMTPServer
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream


class SpoolHandler(BaseHandler):
    """
    Stream each message into a file of C{spool}.
    """

    log = Logger()

    def __init__(self, spool: str) -> None:
        self.spool = spool
        for sub in ("tmp", "new"):
            os.makedirs(os.path.join(spool, sub), exist_ok=True)

    async def onData(self, stream: IMessageStream, session: Session) -> str:
        name = f"{session.id}.{session.transaction}.eml"
        tmp = os.path.join(self.spool, "tmp", name)
        try:
            with open(tmp, "wb") as f:
                size = await stream.pipeToFile(f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        os.rename(tmp, os.path.join(self.spool, "new", name))
        self.log.info("stored {size} bytes as {name}", size=size, name=name)
        return f"OK: stored as {name}"


async def main(reactor: object, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spool", default="spool")
    parser.add_argument("--size", type=int, default=1024**3, help="largest message, in bytes")
    parser.add_argument("--listen", default="tcp:2525:interface=127.0.0.1")
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)

    server = SMTPServer(SpoolHandler(args.spool), ServerOptions(size=args.size))
    port = await server.listen(args.listen)
    address = port.getHost()  # a unix: listener has a path, not a port
    where = f"port {address.port}" if hasattr(address, "port") else os.fsdecode(address.name)
    print(f"listening on {where}", flush=True)
    await defer.Deferred()  # until SIGINT or SIGTERM stops the reactor


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
